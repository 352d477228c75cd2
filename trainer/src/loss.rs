//! Next-token cross-entropy. Per-token values are kept available so a trained
//! model can score documents (perplexity per document) later.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Negative log-likelihood of each target, `[B, T, V]` x `[B, T]` -> `[B, T]`.
pub fn token_nll<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    let [b, t, v] = logits.dims();
    let logp = log_softmax(logits.reshape([b * t, v]), 1); // [B*T, V]
    let picked = logp.gather(1, targets.reshape([b * t, 1])); // [B*T, 1]
    picked.reshape([b, t]).neg()
}

/// Mean cross-entropy over every position, `[1]`.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    token_nll(logits, targets).mean()
}
