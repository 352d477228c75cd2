//! Rotary position embeddings in the rotate-half layout of Llama / Hugging
//! Face (burn's own `RotaryEncoding` rotates adjacent pairs, which would not
//! match exported weights).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::ops::{rope, FusedOps};

/// cos/sin tables for positions `[offset, offset + len)`: full width
/// `[1, 1, len, head_dim]` for the composed path, half width `[len, head_dim/2]`
/// for the fused kernel.
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
    cos_half: Tensor<B, 2>,
    sin_half: Tensor<B, 2>,
}

impl<B: Backend> Rope<B> {
    pub fn new(head_dim: usize, theta: f64, offset: usize, len: usize, device: &B::Device) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(len * head_dim);
        let mut sin = Vec::with_capacity(len * head_dim);
        let (mut cos_half, mut sin_half) = (
            Vec::with_capacity(len * half),
            Vec::with_capacity(len * half),
        );
        for pos in offset..offset + len {
            // Same float path as transformers: inv_freq in f32, then pos * inv_freq.
            let row: Vec<f32> = (0..half)
                .map(|i| {
                    let inv = 1.0f32 / (theta.powf((2 * i) as f64 / head_dim as f64) as f32);
                    pos as f32 * inv
                })
                .collect();
            cos_half.extend(row.iter().map(|a| a.cos()));
            sin_half.extend(row.iter().map(|a| a.sin()));
            for _ in 0..2 {
                cos.extend(row.iter().map(|a| a.cos()));
                sin.extend(row.iter().map(|a| a.sin()));
            }
        }
        let shape = [1, 1, len, head_dim];
        Self {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
            cos_half: Tensor::from_data(TensorData::new(cos_half, [len, half]), device),
            sin_half: Tensor::from_data(TensorData::new(sin_half, [len, half]), device),
        }
    }

    /// The fused rotation of `[B, T, H, head_dim]` (the projections' own layout).
    pub fn apply_bthd(&self, x: Tensor<B, 4>) -> Tensor<B, 4>
    where
        B: FusedOps,
    {
        rope(x, self.cos_half.clone(), self.sin_half.clone())
    }

    /// `x * cos + rotate_half(x) * sin` on `[B, H, T, head_dim]`.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, h, t, d] = x.dims();
        let half = d / 2;
        let x1 = x.clone().narrow(3, 0, half); // [B, H, T, d/2]
        let x2 = x.clone().narrow(3, half, half); // [B, H, T, d/2]
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3); // [B, H, T, d]
        debug_assert_eq!(self.cos.dims()[2], t);
        let _ = (b, h);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}
