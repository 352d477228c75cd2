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
    masked_mean_over(nll, scored as f64)
}

/// `nll [B, T]` summed and divided by `divisor`, the number of scored
/// targets the mean is over: on N data-parallel ranks, the global
/// micro-batch's count over N, so that the mean over ranks of the
/// gradients is the gradient of the global batch's mean (rank counts
/// differ on instruction data). A whole batch of scored targets takes
/// `mean()` (the same bits as before the divisor existed).
pub fn masked_mean_over<B: FusedOps>(nll: Tensor<B, 2>, divisor: f64) -> Tensor<B, 1> {
    if divisor == nll.shape().num_elements() as f64 {
        nll.mean()
    } else {
        nll.sum().div_scalar(divisor.max(1e-30))
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
