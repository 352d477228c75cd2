//! Evaluation: the mean next-token loss of a model over a whole split (every
//! token scored once, [`kiln_data::WholeSplit`]) or over fixed batches (the
//! training-time estimate), with a progress bar on stderr once an evaluation
//! has run for a second.
//!
//! The loss is averaged over scored tokens, so a split's end-aligned window,
//! which scores fewer targets than a full one, weighs by what it scores.

use kiln_data::instruct::IGNORE;
use std::time::{Duration, Instant};

use burn::tensor::ElementConversion;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use kiln_data::{Batch, EvalBatch, WholeSplit};
use kiln_models::{FusedOps, LanguageModel};

use crate::loss::token_nll;
use crate::objective::batch_tensors;

/// Evaluations shorter than this draw no bar (it would only flicker).
const QUIET_FOR: Duration = Duration::from_secs(1);

/// What an evaluation measured.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalResult {
    /// Mean negative log-likelihood per scored token (NaN when none).
    pub loss: f64,
    /// Targets scored.
    pub tokens: usize,
    /// Windows (rows) run through the model.
    pub windows: usize,
    pub seconds: f64,
}

impl EvalResult {
    pub fn ppl(&self) -> f64 {
        self.loss.exp()
    }

    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }

    /// Several evaluations as one: the loss per scored token over all.
    pub fn combined(parts: &[EvalResult]) -> EvalResult {
        let tokens: usize = parts.iter().map(|p| p.tokens).sum();
        let nll: f64 = parts
            .iter()
            .filter(|p| p.tokens > 0)
            .map(|p| p.loss * p.tokens as f64)
            .sum();
        EvalResult {
            loss: if tokens > 0 {
                nll / tokens as f64
            } else {
                f64::NAN
            },
            tokens,
            windows: parts.iter().map(|p| p.windows).sum(),
            seconds: parts.iter().map(|p| p.seconds).sum(),
        }
    }
}

/// Scores every target of `split` once (see [`WholeSplit`] for the windows).
/// `progress`: draw a bar (scored tokens, rate, ETA) on stderr once the
/// evaluation has taken a second.
pub fn evaluate_split<B: FusedOps, M: LanguageModel<B>>(
    model: &M,
    split: &WholeSplit<'_>,
    device: &B::Device,
    fused: bool,
    progress: bool,
) -> EvalResult {
    let bar = progress_bar(split.scored_tokens() as u64, progress);
    let result = eval_loop(model, split.batches(), device, fused, &bar, progress);
    bar.finish_and_clear();
    result
}

/// Mean loss over fixed `batches` (all targets scored), as the training loop
/// estimates validation loss; same value as a mean of per-batch means
/// weighted by rows, since every row scores `seq_len` targets.
pub fn evaluate_batches<B: FusedOps, M: LanguageModel<B>>(
    model: &M,
    batches: &[Batch],
    device: &B::Device,
    fused: bool,
    progress: bool,
) -> EvalResult {
    let total: usize = batches.iter().map(|b| b.batch_size * b.seq_len).sum();
    let bar = progress_bar(total as u64, progress);
    let scored = batches.iter().map(|b| EvalBatch {
        batch: b.clone(),
        scored: b.seq_len,
    });
    let result = eval_loop(model, scored, device, fused, &bar, progress);
    bar.finish_and_clear();
    result
}

/// The evaluation loop over any scored batches, for a caller that owns its
/// progress display (the training loop's bar, or [`ProgressBar::hidden`]):
/// `bar` is advanced by the targets each batch scores and left unfinished.
pub fn evaluate_with<B: FusedOps, M: LanguageModel<B>>(
    model: &M,
    batches: impl IntoIterator<Item = EvalBatch>,
    device: &B::Device,
    fused: bool,
    bar: &ProgressBar,
) -> EvalResult {
    eval_loop(model, batches, device, fused, bar, false)
}

/// `reveal`: `bar` was made hidden by [`progress_bar`]; draw it on stderr
/// once the evaluation has run for [`QUIET_FOR`].
fn eval_loop<B: FusedOps, M: LanguageModel<B>>(
    model: &M,
    batches: impl IntoIterator<Item = EvalBatch>,
    device: &B::Device,
    fused: bool,
    bar: &ProgressBar,
    reveal: bool,
) -> EvalResult {
    let started = Instant::now();
    let mut shown = !reveal;
    let mut nll_sum = 0.0f64;
    let mut tokens = 0usize;
    let mut windows = 0usize;
    for eb in batches {
        let (rows, seq) = (eb.batch.batch_size, eb.batch.seq_len);
        let scored = eb.scored.min(seq);
        if rows == 0 || scored == 0 {
            continue;
        }
        let (x, y) = batch_tensors::<B>(&eb.batch, device);
        let nll = token_nll(model.forward(x), y, fused); // [B, T]
        let nll = if scored < seq {
            nll.slice([0..rows, seq - scored..seq]) // [B, scored]
        } else {
            nll
        };
        // Targets that take loss (instruction data ignores prompts and padding).
        let counted = eb
            .batch
            .targets
            .chunks(seq)
            .map(|row| row[seq - scored..].iter().filter(|&&t| t != IGNORE).count())
            .sum::<usize>();
        if counted == rows * scored {
            // Mean in the backend (as the training loop's estimate), then
            // weighted by the targets it covers in f64.
            let mean: f32 = nll.mean().into_scalar().elem();
            nll_sum += mean as f64 * (rows * scored) as f64;
        } else {
            let sum: f32 = nll.sum().into_scalar().elem(); // ignored targets hold 0
            nll_sum += sum as f64;
        }
        tokens += counted;
        windows += rows;
        bar.inc((rows * scored) as u64);
        if !shown && started.elapsed() >= QUIET_FOR {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            shown = true;
        }
    }
    EvalResult {
        loss: if tokens == 0 {
            f64::NAN
        } else {
            nll_sum / tokens as f64
        },
        tokens,
        windows,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// A bar over `total` scored tokens with rate and ETA. It starts hidden;
/// [`evaluate_split`] and [`evaluate_batches`] show it on stderr after a
/// second when `progress` is set (indicatif draws nothing when stderr is not
/// a terminal).
pub fn progress_bar(total: u64, progress: bool) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template(
            "eval {bar:30} {human_pos}/{human_len} tokens, {rate} [{elapsed_precise}<{eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0} tokens/s", s.per_sec());
        }),
    );
    bar
}
