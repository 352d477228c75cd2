//! LayerNorm (Ba et al. 2016) with weight and bias, and its grouped form
//! (GroupNorm over per-head groups of the channels, as RWKV-7's `ln_x`).
//! Always computed in f32.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::ops::precision::{cast_to, to_f32};

#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// `[dim]`, initialised to ones.
    pub weight: Param<Tensor<B, 1>>,
    /// `[dim]`, initialised to zeros.
    pub bias: Param<Tensor<B, 1>>,
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    pub fn new(dim: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([dim], device)),
            bias: Param::from_tensor(Tensor::zeros([dim], device)),
            eps,
        }
    }

    /// `[.., dim] -> [.., dim]`, normalised over the last dim.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        group_norm(x, 1, self.weight.val(), self.bias.val(), self.eps)
    }
}

/// Normalises each of `groups` equal slices of the last dim of `x [.., C]`
/// to zero mean and unit (biased) variance, then scales and shifts per
/// channel by `weight, bias [C]`. `groups = 1` is LayerNorm.
pub fn group_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    groups: usize,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let dims = x.dims();
    let c = dims[D - 1];
    let rows = x.shape().num_elements() / c.max(1);
    let (x, dtype) = to_f32(x);
    let (weight, _) = to_f32(weight);
    let (bias, _) = to_f32(bias);
    let xg = x.reshape([rows, groups, c / groups]); // [rows, G, C/G]
    let mean = xg.clone().mean_dim(2); // [rows, G, 1]
    let centered = xg - mean; // [rows, G, C/G]
    let var = centered.clone().powi_scalar(2).mean_dim(2); // [rows, G, 1]
    let normed = (centered * var.add_scalar(eps).sqrt().recip()).reshape([rows, c]); // [rows, C]
    let y = normed * weight.reshape([1, c]) + bias.reshape([1, c]); // [rows, C]
    cast_to(y.reshape(dims), dtype)
}
