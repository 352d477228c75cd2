//! Exact-match accuracy of greedy answers: each example's turns but the
//! last assistant one form the prompt (rendered with the run's template),
//! the model continues greedily until the assistant suffix or end of text,
//! and the answer must equal the reference exactly (surrounding whitespace
//! aside). The offline check that instruction tuning works (story QA).

use std::time::Instant;

use burn::tensor::{Int, Tensor, TensorData};
use kiln_data::instruct::{ChatTemplate, Example, Turn};
use kiln_data::Tokenizer;
use kiln_models::{Decoder, FusedOps, LanguageModel};
use serde::Serialize;

use crate::error::{Result, TrainerError};

#[derive(Debug, Clone, Serialize)]
pub struct QaResult {
    pub examples: usize,
    pub correct: usize,
    pub exact_match: f64,
    pub seconds: f64,
    /// Up to five wrong answers: (question tail, expected, got).
    pub misses: Vec<(String, String, String)>,
    /// Every answer, in the file's order (for paired comparisons of runs).
    #[serde(skip)]
    pub predictions: Vec<QaPrediction>,
}

/// One greedy answer.
#[derive(Debug, Clone, Serialize)]
pub struct QaPrediction {
    pub index: usize,
    pub expected: String,
    pub got: String,
    pub correct: bool,
}

/// The prompt turns and the reference answer of an example (its last turn,
/// which must be the assistant's).
fn split(example: &Example, index: usize) -> Result<(&[Turn], &str)> {
    match example.turns.split_last() {
        Some((last, rest)) if last.role == "assistant" && !rest.is_empty() => {
            Ok((rest, last.content.as_str()))
        }
        _ => Err(TrainerError::invalid(
            format!("--qa example {}", index + 1),
            "does not end with an assistant answer after a prompt",
        )),
    }
}

fn last_logits<B: FusedOps>(logits: Tensor<B, 3>) -> Result<Vec<f32>> {
    let [_, t, v] = logits.dims();
    logits
        .slice([0..1, t - 1..t, 0..v])
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| TrainerError::Internal(format!("reading logits: {e:?}")))
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy continuation of `prompt` until `stop` appears, end of text, or
/// `max_new` tokens; returns the text before `stop`.
fn greedy_answer<B: FusedOps>(
    model: &Decoder<B>,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    stop: &str,
    max_new: usize,
    device: &B::Device,
) -> Result<String> {
    let ctx = model.max_seq_len();
    let keep = &prompt[prompt
        .len()
        .saturating_sub(ctx.saturating_sub(max_new).max(1))..];
    let tensor = |ids: &[u32]| {
        let v: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        Tensor::<B, 2, Int>::from_data(TensorData::new(v, [1, ids.len()]), device)
    };
    let mut cache = model.new_cache();
    let mut logits = model.forward_cached(tensor(keep), &mut cache);
    let mut out = Vec::new();
    for _ in 0..max_new {
        let next = argmax(&last_logits(logits)?);
        if next == tokenizer.eot_id() {
            break;
        }
        out.push(next);
        let text = tokenizer.decode(&out)?;
        if !stop.is_empty() {
            if let Some(i) = text.find(stop) {
                return Ok(text[..i].to_string());
            }
        }
        if cache.len() >= ctx {
            break;
        }
        logits = model.forward_cached(tensor(&[next]), &mut cache);
    }
    Ok(tokenizer.decode(&out)?)
}

/// Exact match over `examples`; `max_new` bounds each answer's tokens.
pub fn exact_match<B: FusedOps>(
    model: &Decoder<B>,
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    examples: &[Example],
    max_new: usize,
    device: &B::Device,
) -> Result<QaResult> {
    let started = Instant::now();
    let bar = crate::eval::progress_bar(examples.len() as u64, true);
    let stop = template.role("assistant")?.suffix.clone();
    let (mut correct, mut misses, mut predictions) = (0, Vec::new(), Vec::new());
    for (i, ex) in examples.iter().enumerate() {
        let (turns, answer) = split(ex, i)?;
        let prompt = tokenizer.encode(&template.generation_prompt(turns)?)?;
        let got = greedy_answer(model, tokenizer, &prompt, &stop, max_new, device)?;
        let right = got.trim() == answer.trim();
        predictions.push(QaPrediction {
            index: i,
            expected: answer.to_string(),
            got: got.clone(),
            correct: right,
        });
        if right {
            correct += 1;
        } else if misses.len() < 5 {
            let q = turns.last().map_or("", |t| t.content.as_str());
            let tail: String = q.lines().last().unwrap_or("").to_string();
            misses.push((tail, answer.to_string(), got));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(QaResult {
        examples: examples.len(),
        correct,
        exact_match: correct as f64 / examples.len().max(1) as f64,
        seconds: started.elapsed().as_secs_f64(),
        misses,
        predictions,
    })
}
