//! A bias-free projection. Every projection in the models goes through this
//! type so that adapters (LoRA) and fake quantisation (QAT) have one place to
//! hook in later.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use crate::ops::precision::autocast_matmul;
use crate::ops::{matmul, FusedOps};

#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// Stored `[d_in, d_out]` (burn's matmul-friendly layout), the transpose of
    /// PyTorch/Hugging Face `[out, in]`: export and import transpose.
    pub weight: Param<Tensor<B, 2>>,
    /// Multiply through `FusedOps::matmul` (on Flex: the same GEMM without
    /// burn's zero-fill and copy of the output); false = burn's matmul.
    pub fused: bool,
}

impl<B: Backend> Linear<B> {
    /// Normal(0, std) init, as Llama/MobileLLM do.
    pub fn new(d_in: usize, d_out: usize, std: f64, device: &B::Device) -> Self {
        let w = Tensor::random([d_in, d_out], Distribution::Normal(0.0, std), device);
        Self {
            weight: Param::from_tensor(w),
            fused: true,
        }
    }

    pub fn d_in(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn d_out(&self) -> usize {
        self.weight.dims()[1]
    }
}

impl<B: FusedOps> Linear<B> {
    /// `[.., d_in] -> [.., d_out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        // One 2-D GEMM over all leading dims: a broadcast batched matmul
        // would run many small GEMMs and reduce the weight gradient over them.
        let mut dims = x.dims();
        let d_in = dims[D - 1];
        let rows = x.shape().num_elements() / d_in.max(1);
        let x = x.reshape([rows, d_in]); // [rows, d_in]
        let fused = self.fused;
        let y = autocast_matmul(x, self.weight.val(), |a, b| {
            if fused {
                matmul(a, b)
            } else {
                a.matmul(b)
            }
        }); // [rows, d_out]
        dims[D - 1] = self.d_out();
        y.reshape(dims)
    }
}
