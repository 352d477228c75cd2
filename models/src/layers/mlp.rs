//! The SwiGLU feed-forward of Llama: `down(silu(gate(x)) * up(x))`.

use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::Linear;
use crate::ops::{silu_mul, FusedOps};

#[derive(Module, Debug)]
pub struct SwiGluMlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
    /// Use the fused `silu(gate) * up` kernel; false = composed ops.
    pub fused: bool,
}

impl<B: Backend> SwiGluMlp<B> {
    pub fn new(dim: usize, hidden: usize, std: f64, device: &B::Device) -> Self {
        Self {
            gate_proj: Linear::new(dim, hidden, std, device),
            up_proj: Linear::new(dim, hidden, std, device),
            down_proj: Linear::new(hidden, dim, std, device),
            fused: true,
        }
    }

    /// The fused `silu(gate) * up` and fused projections on or off.
    pub fn set_fused(&mut self, fused: bool) {
        self.fused = fused;
        for p in [&mut self.gate_proj, &mut self.up_proj, &mut self.down_proj] {
            p.fused = fused;
        }
    }
}

impl<B: FusedOps> SwiGluMlp<B> {
    /// `[B, T, dim] -> [B, T, dim]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = self.gate_proj.forward(x.clone()); // [B, T, hidden]
        let up = self.up_proj.forward(x); // [B, T, hidden]
        let h = if self.fused {
            silu_mul(gate, up)
        } else {
            silu(gate) * up
        }; // [B, T, hidden]
        self.down_proj.forward(h)
    }
}
