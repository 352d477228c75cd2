//! Training precision (`[training] precision`, specs.md section 9):
//!
//! - `fp32`: everything f32.
//! - `bf16-mixed` / `fp16-mixed`: f32 master weights, gradients and optimizer
//!   state; the projections' matmuls run in bf16/fp16 (a scoped autocast, see
//!   `kiln_models::ops::precision`); softmax, norms and the loss stay f32.
//!   fp16 adds dynamic loss scaling ([`LossScaler`]).
//! - `bf16-pure`: weights stored in bf16 (activations too); gradients are
//!   taken to f32, the optimizer keeps f32 state and writes the updated
//!   weight back to bf16 with stochastic rounding ([`stochastic`]).
//!
//! Checkpoints always hold f32 weights, so a run can change precision when
//! fine-tuning and exports are unaffected.
//!
//! [`PrecisionPolicy`] is the one owner of these decisions: the step asks it
//! for the autocast scope, the loss scale and the gradients' unscaling, the
//! run setup for the weights' storage dtype, the optimizer for how an f32
//! update is written back. Nothing else reads `training.precision`.

pub mod loss_scale;
pub mod policy;
pub mod stochastic;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{FloatDType, Tensor};

pub use loss_scale::LossScaler;
pub use policy::{PrecisionPolicy, WriteBack};

use crate::config::Precision;

impl Precision {
    /// The matmul dtype of the mixed modes.
    pub fn autocast(self) -> Option<FloatDType> {
        match self {
            Precision::Bf16Mixed => Some(FloatDType::BF16),
            Precision::Fp16Mixed => Some(FloatDType::F16),
            Precision::Fp32 | Precision::Bf16Pure => None,
        }
    }

    /// The dtype weights are stored in during training (None = f32).
    pub fn param_dtype(self) -> Option<FloatDType> {
        match self {
            Precision::Bf16Pure => Some(FloatDType::BF16),
            _ => None,
        }
    }

    pub fn uses_loss_scaling(self) -> bool {
        self == Precision::Fp16Mixed
    }

    /// Bytes per parameter of weights + gradients + optimizer state (two f32
    /// moments), as held by this implementation.
    pub fn bytes_per_param(self) -> f64 {
        match self {
            // f32 weights, f32 grads, 2 x f32 moments.
            Precision::Fp32 => 16.0,
            // The same, plus the half copy each matmul makes of its weight.
            Precision::Bf16Mixed | Precision::Fp16Mixed => 18.0,
            // bf16 weights, f32 grads, 2 x f32 moments.
            Precision::Bf16Pure => 14.0,
        }
    }
}

struct CastParams {
    dtype: FloatDType,
}

impl<B: Backend> ModuleMapper<B> for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.cast(self.dtype), mapper)
    }
}

/// Every float parameter of an inference module stored as `dtype`.
pub fn cast_params<B: Backend, M: Module<B>>(module: M, dtype: FloatDType) -> M {
    module.map(&mut CastParams { dtype })
}

struct CastLeaves {
    dtype: FloatDType,
    /// Leave trainable leaves as they are (f32 adapters over a bf16 base).
    frozen_only: bool,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for CastLeaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        // A new leaf in `dtype`, not a tracked cast of the old one; a frozen
        // parameter stays frozen (no `require_grad`).
        let trainable = tensor.is_require_grad();
        if trainable && self.frozen_only {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let cast = Tensor::from_inner(tensor.inner().cast(self.dtype));
        let cast = if trainable { cast.require_grad() } else { cast };
        Param::from_mapped_value(id, cast, mapper)
    }
}

/// Every parameter of a trainable module stored as `dtype` (new leaves);
/// frozen parameters are cast too and stay frozen.
/// Every parameter as a fresh leaf in `dtype` (`frozen_only`: the frozen ones).
pub fn cast_trainable<AB: AutodiffBackend, M: Module<AB>>(
    module: M,
    dtype: FloatDType,
    frozen_only: bool,
) -> M {
    module.map(&mut CastLeaves { dtype, frozen_only })
}
