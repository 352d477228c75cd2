//! Sophia's Gauss-Newton-Bartlett Hessian estimate (specs.md section 7): the
//! gradient of the loss against labels sampled from the model's own
//! predictive distribution, `y ~ Categorical(softmax(logits))`.

use burn::tensor::{Int, Tensor, TensorData};
use kiln_models::{LanguageModel, TrainBackend};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::grads::{GradStore, ParamTable};
use crate::loss::cross_entropy;

/// One label per row of `logits [rows, vocab]` (row-major), drawn from
/// softmax(row) with `rng`.
pub fn sample_labels(logits: &[f32], vocab: usize, rng: &mut ChaCha8Rng) -> Vec<i64> {
    logits
        .chunks(vocab)
        .map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let total: f64 = row.iter().map(|&l| ((l - max) as f64).exp()).sum();
            let mut r = rng.random::<f64>() * total;
            for (i, &l) in row.iter().enumerate() {
                r -= ((l - max) as f64).exp();
                if r <= 0.0 {
                    return i as i64;
                }
            }
            (vocab - 1) as i64
        })
        .collect()
}

/// A fresh RNG per refresh, from the run seed and the update count, so a
/// resumed run draws the same labels.
pub fn label_rng(seed: u64, updates: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ updates.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x50F1A)
}

/// The label RNG of one row of the global batch: the refresh's RNG on the
/// row's own stream, so that a row draws the same labels whichever rank
/// holds it.
pub fn row_rng(seed: u64, updates: u64, global_row: u64) -> ChaCha8Rng {
    let mut rng = label_rng(seed, updates);
    rng.set_stream(global_row);
    rng
}

/// Gradients of mean CE(logits(x), sampled labels), clipped to global norm
/// `clip` (0 = off; a data-parallel run clips after its reduce): Sophia's
/// `g_hat`. `rngs`: one label RNG per row of `x`.
pub fn sampled_label_grads<B, M>(
    model: &M,
    table: &ParamTable,
    x: Tensor<B, 2, Int>,
    fused: bool,
    clip: f64,
    rngs: &mut [ChaCha8Rng],
) -> GradStore<B::InnerBackend>
where
    B: TrainBackend,
    M: LanguageModel<B> + burn::module::AutodiffModule<B>,
{
    let logits = model.forward(x); // [b, t, vocab]
    let [b, t, vocab] = logits.dims();
    let host: Vec<f32> = logits
        .clone()
        .detach()
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap_or_default();
    let labels: Vec<i64> = host
        .chunks(t * vocab)
        .zip(rngs.iter_mut())
        .flat_map(|(row, rng)| sample_labels(row, vocab, rng))
        .collect();
    let y = Tensor::<B, 2, Int>::from_data(TensorData::new(labels, [b, t]), &logits.device());
    label_grads(model, table, logits, y, fused, clip)
}

/// Gradients of mean CE(`logits`, `y`) (the model's graph), clipped to
/// global norm `clip` (0 = off).
pub fn label_grads<B, M>(
    model: &M,
    table: &ParamTable,
    logits: Tensor<B, 3>,
    y: Tensor<B, 2, Int>,
    fused: bool,
    clip: f64,
) -> GradStore<B::InnerBackend>
where
    B: TrainBackend,
    M: LanguageModel<B> + burn::module::AutodiffModule<B>,
{
    let loss = cross_entropy(logits, y, fused);
    let mut grads = GradStore::default();
    grads.accumulate::<B, _>(model, table, loss.backward());
    grads.clip_global_norm(clip);
    grads
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_labels_follow_the_softmax() {
        // Two rows: one almost one-hot on id 2, one uniform over 4 ids.
        let logits = [0.0, 0.0, 20.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let mut rng = label_rng(7, 3);
        let mut counts = [[0usize; 4]; 2];
        for _ in 0..4000 {
            let y = sample_labels(&logits, 4, &mut rng);
            counts[0][y[0] as usize] += 1;
            counts[1][y[1] as usize] += 1;
        }
        assert!(counts[0][2] > 3990, "peaked row: {:?}", counts[0]);
        for c in counts[1] {
            assert!((850..1150).contains(&c), "uniform row: {:?}", counts[1]);
        }
    }
}
