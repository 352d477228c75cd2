//! Token embedding table `[vocab, dim]`, also used as the output head when
//! embeddings are shared (MobileLLM).

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};

use super::Linear;
use crate::ops::FusedOps;

#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    /// `[vocab, dim]`, the same layout as Hugging Face's `embed_tokens.weight`.
    pub weight: Param<Tensor<B, 2>>,
    /// The tied head multiplies through `FusedOps::matmul` (see `Linear`).
    pub fused: bool,
}

impl<B: Backend> Embedding<B> {
    pub fn new(vocab: usize, dim: usize, std: f64, device: &B::Device) -> Self {
        let w = Tensor::random([vocab, dim], Distribution::Normal(0.0, std), device);
        Self {
            weight: Param::from_tensor(w),
            fused: true,
        }
    }

    /// `[B, T]` token ids -> `[B, T, dim]`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, t] = tokens.dims();
        let dim = self.weight.dims()[1];
        let flat = tokens.reshape([b * t]); // [B*T]
        self.weight.val().select(0, flat).reshape([b, t, dim]) // [B, T, dim]
    }

    /// The table as the tied head's projection, so the head multiplies in
    /// `Linear::project` like every other projection. It shares the parameter
    /// (same id and autodiff node: both uses' gradients add up) and reads
    /// `[vocab, dim]` as `[d_out, d_in]` through a strided view, never a copy.
    pub fn head(&self) -> Linear<B> {
        Linear {
            weight: self.weight.clone(),
            bias: None,
            fused: self.fused,
            transposed: true,
            // The tied head is rebuilt each forward: no adapter of its own.
            lora: None,
            quant: None,
            calib: None,
        }
    }
}

impl<B: FusedOps> Embedding<B> {
    /// Tied output head: `[B, T, dim] -> [B, T, vocab]` as `h @ E^T`.
    pub fn attend(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        self.head().forward(h)
    }
}
