//! Next-token cross-entropy. Per-token values are kept available so a trained
//! model can score documents (perplexity per document) later.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};
use kiln_models::ops::cross_entropy_rows;
use kiln_models::FusedOps;

/// Negative log-likelihood of each target, `[B, T, V]` x `[B, T]` -> `[B, T]`.
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
    let logp = log_softmax(logits.reshape([b * t, v]), 1); // [B*T, V]
    let picked = logp.gather(1, targets.reshape([b * t, 1])); // [B*T, 1]
    picked.reshape([b, t]).neg()
}

/// Mean cross-entropy over every position, `[1]`.
pub fn cross_entropy<B: FusedOps>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    fused: bool,
) -> Tensor<B, 1> {
    token_nll(logits, targets, fused).mean()
}
