//! RMSNorm (Zhang & Sennrich 2019) as Llama uses it: `x / rms(x) * w`, eps 1e-5.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::ops::{rms_norm, FusedOps};

#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// `[dim]`, initialised to ones.
    pub weight: Param<Tensor<B, 1>>,
    pub eps: f64,
    /// Use the fused kernel (`[training] fused_ops`); false = composed ops.
    pub fused: bool,
}

impl<B: Backend> RmsNorm<B> {
    pub fn new(dim: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([dim], device)),
            eps,
            fused: true,
        }
    }
}

impl<B: FusedOps> RmsNorm<B> {
    /// `[B, T, dim] -> [B, T, dim]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        if self.fused {
            return rms_norm(x, self.weight.val(), self.eps as f32);
        }
        let inv_rms = x
            .clone()
            .powi_scalar(2)
            .mean_dim(2)
            .add_scalar(self.eps)
            .sqrt()
            .recip(); // [B, T, 1]
        x * inv_rms * self.weight.val().unsqueeze() // [B, T, dim]
    }
}
