//! Text generation with a KV cache: the prompt is run once (prefill), then
//! one token per step. Temperature 0 is greedy decoding.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use kiln_data::Tokenizer;
use kiln_models::{Decoder, FusedOps, LanguageModel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, TrainerError};

#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub seed: u64,
}

fn ids_tensor<B: Backend>(ids: &[u32], device: &B::Device) -> Tensor<B, 2, Int> {
    let v: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(v, [1, ids.len()]), device)
}

/// Picks the next token from last-position logits.
pub fn sample_token(logits: &[f32], opts: &SampleOptions, rng: &mut ChaCha8Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0
    };
    if opts.temperature <= 0.0 {
        return argmax() as u32;
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    if let Some(k) = opts.top_k.filter(|&k| k > 0 && k < logits.len()) {
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        idx.truncate(k);
    }
    let max = idx
        .iter()
        .map(|&i| logits[i])
        .fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i] - max) as f64) / opts.temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    if !(total.is_finite() && total > 0.0) {
        return argmax() as u32;
    }
    let mut r = rng.random::<f64>() * total;
    for (w, &i) in weights.iter().zip(&idx) {
        r -= w;
        if r <= 0.0 {
            return i as u32;
        }
    }
    idx[idx.len() - 1] as u32
}

/// Prompt + up to `max_new_tokens` generated tokens, decoded. Stops at the
/// end-of-text token.
pub fn generate<B: FusedOps>(
    model: &Decoder<B>,
    tokenizer: &Tokenizer,
    prompt: &str,
    opts: &SampleOptions,
    device: &B::Device,
) -> Result<String> {
    let ctx = model.max_seq_len();
    let mut ids = tokenizer.encode(prompt)?;
    if ids.is_empty() {
        ids.push(tokenizer.eot_id());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut cache = model.new_cache();
    // Prefill with the last ctx-1 prompt tokens.
    let start = ids.len().saturating_sub(ctx.saturating_sub(1).max(1));
    let mut logits = model.forward_cached(ids_tensor::<B>(&ids[start..], device), &mut cache);
    for _ in 0..opts.max_new_tokens {
        let [_, t, v] = logits.dims();
        let last: Vec<f32> = logits
            .slice([0..1, t - 1..t, 0..v])
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| TrainerError::Internal(format!("reading logits: {e:?}")))?;
        let next = sample_token(&last, opts, &mut rng);
        if next == tokenizer.eot_id() {
            break;
        }
        ids.push(next);
        if cache.len() >= ctx {
            // Context full: restart the cache on the most recent half window.
            cache = model.new_cache();
            let keep = ids.len() - ctx / 2;
            logits = model.forward_cached(ids_tensor::<B>(&ids[keep..], device), &mut cache);
        } else {
            logits = model.forward_cached(ids_tensor::<B>(&[next], device), &mut cache);
        }
    }
    Ok(tokenizer.decode(&ids)?)
}
