//! Next-token cross-entropy. Per-token values are kept available so a trained
//! model can score documents (perplexity per document) later.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};
use kiln_models::ops::{cross_entropy_rows, IGNORE_INDEX};
use kiln_models::FusedOps;

/// Negative log-likelihood of each target, `[B, T, V]` x `[B, T]` -> `[B, T]`;
/// 0 (with zero gradient) where the target is [`IGNORE_INDEX`].
/// `fused` runs the one-pass kernel; otherwise composed log_softmax + gather.
pub fn token_nll<B: FusedOps>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    fused: bool,
) -> Tensor<B, 2> {
    let [b, t, v] = logits.dims();
    if fused {
        return cross_entropy_rows(logits.reshape([b * t, v]), targets.reshape([b * t]))
            .reshape([b, t]);
    }
    let ignored = targets.clone().equal_elem(IGNORE_INDEX); // [B, T]
    let safe = targets.mask_fill(ignored.clone(), 0); // [B, T]
    let logp = log_softmax(logits.reshape([b * t, v]), 1); // [B*T, V]
    let picked = logp.gather(1, safe.reshape([b * t, 1])); // [B*T, 1]
    picked.reshape([b, t]).neg().mask_fill(ignored, 0.0) // [B, T]
}

/// Mean of `nll [B, T]` over the `scored` positions that take loss (the
/// others hold 0); a batch with none scores 0.
pub fn masked_mean<B: FusedOps>(nll: Tensor<B, 2>, scored: usize) -> Tensor<B, 1> {
    if scored == nll.shape().num_elements() {
        nll.mean()
    } else {
        nll.sum().div_scalar(scored.max(1) as f64)
    }
}

/// Mean cross-entropy over every position, `[1]`.
pub fn cross_entropy<B: FusedOps>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    fused: bool,
) -> Tensor<B, 1> {
    token_nll(logits, targets, fused).mean()
}
