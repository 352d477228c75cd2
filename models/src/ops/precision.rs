//! Precision helpers. Mixed precision (`bf16-mixed`, `fp16-mixed`) runs the
//! projections' matmuls in a half type chosen by the trainer through a scoped
//! autocast (as `torch.autocast` does), leaving weights and activations in
//! f32. The fused ops always compute in f32 whatever their inputs' dtype
//! (softmax, norms and the loss stay f32 in every mode, `bf16-pure` included).

use std::cell::Cell;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};

thread_local! {
    static AUTOCAST: Cell<Option<FloatDType>> = const { Cell::new(None) };
}

/// Restores the previous autocast setting when dropped.
#[must_use = "autocast ends when the guard is dropped"]
pub struct AutocastGuard {
    prev: Option<FloatDType>,
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        AUTOCAST.with(|a| a.set(self.prev));
    }
}

/// Runs the projections' matmuls of this thread in `dtype` (None = as stored)
/// until the guard drops.
pub fn autocast(dtype: Option<FloatDType>) -> AutocastGuard {
    let prev = AUTOCAST.with(|a| a.replace(dtype));
    AutocastGuard { prev }
}

/// The matmul dtype of the current autocast scope.
pub fn autocast_dtype() -> Option<FloatDType> {
    AUTOCAST.with(Cell::get)
}

/// `t` in f32 (a tracked cast under autodiff), and its original dtype.
pub(crate) fn to_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Tensor<B, D>, DType) {
    let dtype = t.dtype();
    if dtype == DType::F32 {
        (t, dtype)
    } else {
        (t.cast(FloatDType::F32), dtype)
    }
}

/// `t` cast back to `dtype`.
pub(crate) fn cast_to<B: Backend, const D: usize>(t: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if t.dtype() == dtype {
        t
    } else {
        t.cast(FloatDType::from(dtype))
    }
}

/// `x [m, k] @ w [k, n]` in the autocast dtype when one is set, the result
/// in `x`'s dtype; `mm` is the multiply itself (fused or burn's).
pub(crate) fn autocast_matmul<B: Backend>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    mm: impl Fn(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, 2> {
    match autocast_dtype() {
        Some(half) => {
            let dtype = x.dtype();
            cast_to(mm(x.cast(half), w.cast(half)), dtype)
        }
        None => mm(x, w),
    }
}
