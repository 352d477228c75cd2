//! Token embedding table `[vocab, dim]`, also used as the output head when
//! embeddings are shared (MobileLLM).

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};

use crate::ops::precision::autocast_matmul;
use crate::ops::{matmul, FusedOps};

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
}

impl<B: FusedOps> Embedding<B> {
    /// Tied output head: `[B, T, dim] -> [B, T, vocab]` as `h @ E^T`.
    pub fn attend(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d] = h.dims();
        let vocab = self.weight.dims()[0];
        // One 2-D GEMM: the broadcast 3-D form costs ~1.7x more in backward.
        let h = h.reshape([b * t, d]); // [B*T, dim]
        let e_t = self.weight.val().transpose(); // [dim, vocab], a strided view
        let fused = self.fused;
        let logits = autocast_matmul(
            h,
            e_t,
            |a, b| {
                if fused {
                    matmul(a, b)
                } else {
                    a.matmul(b)
                }
            },
        ); // [B*T, vocab]
        logits.reshape([b, t, vocab]) // [B, T, vocab]
    }
}
