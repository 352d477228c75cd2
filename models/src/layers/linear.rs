//! The one projection layer. Every projection of every architecture (attention
//! q/k/v/o, SwiGLU, Mamba in/x/dt/out, RWKV-7 r/k/v/o and its low-rank
//! factors, the output head tied or not) multiplies in [`Linear::project`],
//! so precision (autocast), and later adapters (LoRA) and fake quantisation
//! (QAT), act in one place and reach all of them.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use super::fake_quant::{fake_quant_input, fake_quant_weight};
use super::lora::{LoraAdapter, LoraSpec};
use crate::ops::precision::{autocast_matmul, cast_to};
use crate::ops::{matmul, FusedOps};
use crate::prune::InputStats;
use crate::quant::QuantSpec;

#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// Stored `[d_in, d_out]` (burn's matmul-friendly layout), the transpose of
    /// PyTorch/Hugging Face `[out, in]`: export and import transpose. With
    /// `transposed`, stored `[d_out, d_in]` instead.
    pub weight: Param<Tensor<B, 2>>,
    /// `[d_out]`, added after the multiply (Mamba's `dt_proj`); most
    /// projections have none.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Multiply through `FusedOps::matmul` (on Flex: the same GEMM without
    /// burn's zero-fill and copy of the output); false = burn's matmul.
    pub fused: bool,
    /// The weight is stored `[d_out, d_in]` and multiplied through a strided
    /// transposed view, never copied: the tied output head over the
    /// `[vocab, dim]` embedding table (see `Embedding::head`).
    pub transposed: bool,
    /// A LoRA adapter adding `s (x A) B` to the output (fine-tuning).
    pub lora: Option<LoraAdapter<B>>,
    /// Fake quantisation of the weight (and input) in the forward (QAT,
    /// and evaluating a quantised export). Not a parameter: set per run.
    #[module(skip)]
    pub quant: Option<QuantSpec>,
    /// Collects the squared norms of the inputs (Wanda's calibration for
    /// `kiln prune`). Not a parameter; `None` outside calibration.
    #[module(skip)]
    pub calib: Option<InputStats>,
}

impl<B: Backend> Linear<B> {
    /// Normal(0, std) init, as Llama/MobileLLM do.
    pub fn new(d_in: usize, d_out: usize, std: f64, device: &B::Device) -> Self {
        let w = Tensor::random([d_in, d_out], Distribution::Normal(0.0, std), device);
        Self::from_weight(w)
    }

    /// A bias-free projection with this `[d_in, d_out]` weight.
    pub fn from_weight(weight: Tensor<B, 2>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: None,
            fused: true,
            transposed: false,
            lora: None,
            quant: None,
            calib: None,
        }
    }

    /// The same projection plus a `[d_out]` bias.
    pub fn with_bias(self, bias: Tensor<B, 1>) -> Self {
        Self {
            bias: Some(Param::from_tensor(bias)),
            ..self
        }
    }

    /// This projection with a fresh adapter (replacing any it had).
    pub fn with_lora(self, spec: &LoraSpec) -> Self {
        let device = self.weight.device();
        let lora = LoraAdapter::new(self.d_in(), self.d_out(), spec, &device);
        Self {
            lora: Some(lora),
            ..self
        }
    }

    /// The adapter folded into the weight in f32 (`W + s A B`, stored back
    /// in the weight's dtype) and removed; untouched without one.
    pub fn merged(self) -> Self {
        let Some(lora) = self.lora else {
            return self;
        };
        let w = self.weight.val();
        let dtype = w.dtype();
        let (w, _) = crate::ops::precision::to_f32(w);
        let (a, _) = crate::ops::precision::to_f32(lora.a.val()); // [d_in, r]
        let (b, _) = crate::ops::precision::to_f32(lora.b.val()); // [r, d_out]
        let delta = a.matmul(b).mul_scalar(lora.scale); // [d_in, d_out]
        let delta = if self.transposed {
            delta.transpose() // [d_out, d_in]
        } else {
            delta
        };
        let (id, _, mapper) = self.weight.consume();
        let merged = cast_to(w + delta, dtype);
        Self {
            weight: Param::from_mapped_value(id, merged, mapper),
            lora: None,
            ..self
        }
    }

    pub fn d_in(&self) -> usize {
        let [rows, cols] = self.weight.dims();
        if self.transposed {
            cols
        } else {
            rows
        }
    }

    pub fn d_out(&self) -> usize {
        let [rows, cols] = self.weight.dims();
        if self.transposed {
            rows
        } else {
            cols
        }
    }
}

impl<B: FusedOps> Linear<B> {
    /// `[.., d_in] -> [.., d_out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.forward_cols(x, 0, self.d_out())
    }

    /// Output columns `start .. start + len` of `forward(x)`:
    /// `[.., d_in] -> [.., len]`. Narrowing the weight rather than the output
    /// keeps the activations contiguous (Mamba splits `in_proj` and `x_proj`
    /// this way; a narrowed output would be copied by every consumer).
    pub fn forward_cols<const D: usize>(
        &self,
        x: Tensor<B, D>,
        start: usize,
        len: usize,
    ) -> Tensor<B, D> {
        // One 2-D GEMM over all leading dims: a broadcast batched matmul
        // would run many small GEMMs and reduce the weight gradient over them.
        let mut dims = x.dims();
        let d_in = dims[D - 1];
        let rows = x.shape().num_elements() / d_in.max(1);
        let y = self.project(x.reshape([rows, d_in]), start, len); // [rows, len]
        dims[D - 1] = len;
        y.reshape(dims)
    }

    /// `x [rows, d_in] -> [rows, len]`, output columns `start .. start + len`.
    /// The single place a projection's weight is fetched and multiplied:
    /// fake quantisation transforms `w` just before the multiply, and LoRA
    /// adds `(x A) B[:, start..start + len]` to `y`, both here, so they reach
    /// every projection (the tied head included) and respect column ranges.
    fn project(&self, x: Tensor<B, 2>, start: usize, len: usize) -> Tensor<B, 2> {
        if let (Some(stats), 0) = (&self.calib, start) {
            // Callers that split the output (Mamba's in_proj) pass the same
            // input once per part: count it once, with the first part.
            stats.record(x.clone());
        }
        let w = self.weight_cols(start, len); // [d_in, len], a strided view
                                              // Groups run along d_in within each column: narrowing columns first
                                              // quantises exactly as the whole weight would.
        let (x, w) = match &self.quant {
            Some(q) => (fake_quant_input(x, q), fake_quant_weight(w, q)),
            None => (x, w),
        };
        let fused = self.fused;
        let mm = |a: Tensor<B, 2>, b: Tensor<B, 2>| if fused { matmul(a, b) } else { a.matmul(b) };
        let y = match &self.lora {
            Some(lora) => {
                autocast_matmul(x.clone(), w, mm) + lora_delta(lora, x, start, len, mm)
                // [rows, len]
            }
            None => autocast_matmul(x, w, mm), // [rows, len]
        };
        match &self.bias {
            Some(bias) => y + narrowed(bias.val(), 0, start, len).reshape([1, len]), // [rows, len]
            None => y,
        }
    }

    /// The weight as `[d_in, len]` for output columns `start .. start + len`.
    fn weight_cols(&self, start: usize, len: usize) -> Tensor<B, 2> {
        let w = self.weight.val();
        if self.transposed {
            narrowed(w, 0, start, len).transpose() // [d_in, len]
        } else {
            narrowed(w, 1, start, len) // [d_in, len]
        }
    }
}

/// The adapter's share of output columns `start .. start + len`:
/// `s (x A) B[:, start..start + len]`, `[rows, d_in] -> [rows, len]`. Two thin
/// GEMMs; the adapter is cast to the activations' dtype (a bf16 base may
/// carry f32 adapters) and the matmuls follow autocast like the base's.
fn lora_delta<B: FusedOps>(
    lora: &LoraAdapter<B>,
    x: Tensor<B, 2>,
    start: usize,
    len: usize,
    mm: impl Fn(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2> + Copy,
) -> Tensor<B, 2> {
    let dtype = x.dtype();
    let a = cast_to(lora.a.val(), dtype); // [d_in, r]
    let b = narrowed(cast_to(lora.b.val(), dtype), 1, start, len); // [r, len]
    let xa = autocast_matmul(lora.dropped(x), a, mm); // [rows, r]
    autocast_matmul(xa, b, mm).mul_scalar(lora.scale) // [rows, len]
}

/// `t` narrowed to `start .. start + len` along `dim`, untouched when that is
/// all of it (a full-range slice would still cost a scatter in backward).
fn narrowed<B: Backend, const D: usize>(
    t: Tensor<B, D>,
    dim: usize,
    start: usize,
    len: usize,
) -> Tensor<B, D> {
    if start == 0 && len == t.dims()[dim] {
        t
    } else {
        t.narrow(dim, start, len)
    }
}
