//! The run's precision policy: one object built from `training.precision`,
//! consulted where precision acts (see the module docs).

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use kiln_models::ops::precision::{autocast, AutocastGuard};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::stochastic::round_to_bf16;
use super::{cast_params, cast_trainable, LossScaler};
use crate::config::Precision;
use crate::grads::GradStore;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecisionPolicy {
    pub mode: Precision,
    /// How the optimizer stores updated weights (bf16-pure: stochastic rounding).
    pub write_back: WriteBack,
    /// bf16-pure with adapters: only the frozen base is stored in bf16; the
    /// (small) trainable adapters stay f32, as QLoRA-style recipes keep them.
    pub trainable_in_f32: bool,
}

impl PrecisionPolicy {
    /// `seed`: the run's seed, from which stochastic rounding is derived.
    pub fn new(mode: Precision, seed: u64) -> Self {
        Self {
            mode,
            write_back: WriteBack { seed },
            trainable_in_f32: false,
        }
    }

    /// The scope of a step's (or an evaluation's) forward and backward:
    /// the projections' matmuls in half in the mixed modes.
    pub fn autocast_scope(&self) -> AutocastGuard {
        autocast(self.mode.autocast())
    }

    /// A freshly built (or loaded) trainable model in its training storage
    /// dtype (bf16-pure: bf16 leaves; frozen parameters stay frozen).
    pub fn prepare_trainable<AB: AutodiffBackend, M: AutodiffModule<AB>>(&self, model: M) -> M {
        match self.mode.param_dtype() {
            Some(dtype) => cast_trainable(model, dtype, self.trainable_in_f32),
            None => model,
        }
    }

    /// An inference copy for sampling and export: f32 whatever the training dtype.
    pub fn inference_f32<B: Backend, M: burn::module::Module<B>>(&self, model: M) -> M {
        match self.mode.param_dtype() {
            Some(_) => cast_params(model, FloatDType::F32),
            None => model,
        }
    }

    /// The loss scaler a run starts with (fp16 only); resumed runs keep theirs.
    pub fn initial_loss_scaler(&self) -> Option<LossScaler> {
        self.mode.uses_loss_scaling().then(LossScaler::default)
    }

    /// The factor backward runs on (`loss * S`): the scaler's, which exists
    /// only where [`Self::initial_loss_scaler`] made one; else 1.
    pub fn loss_scale(&self, scaler: Option<&LossScaler>) -> f64 {
        scaler.map_or(1.0, |s| s.scale)
    }

    /// Removes the loss scale from the summed gradients.
    pub fn unscale<B: Backend>(&self, grads: &mut GradStore<B>, scaler: Option<&LossScaler>) {
        let s = self.loss_scale(scaler);
        if s != 1.0 {
            grads.scale(1.0 / s);
        }
    }

    pub fn bytes_per_param(&self) -> f64 {
        self.mode.bytes_per_param()
    }

    /// The config's name of the mode (`"bf16-mixed"`, ...).
    pub fn name(&self) -> String {
        serde_json::to_value(self.mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// Gradients are accumulated, reduced, clipped and applied in f32 in every
/// mode (bf16-pure weights have bf16 gradients).
pub fn master_grad<B: Backend>(g: Tensor<B, 1>) -> Tensor<B, 1> {
    if g.dtype() == DType::F32 {
        g
    } else {
        g.cast(FloatDType::F32)
    }
}

/// How an f32 optimizer result is stored back into a weight of `dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteBack {
    /// Seed of the stochastic rounding of bf16 weights.
    pub seed: u64,
}

impl WriteBack {
    /// `updated` (f32, flat) in `dtype`. bf16 rounds stochastically with a
    /// stream fixed by (seed, parameter name, update count), so resume is exact.
    pub fn store<B: Backend>(
        &self,
        updated: Tensor<B, 1>,
        dtype: DType,
        name: &str,
        updates: u64,
    ) -> Tensor<B, 1> {
        match dtype {
            DType::F32 => updated,
            DType::BF16 => {
                let seed =
                    self.seed ^ name_hash(name) ^ updates.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                stochastic_bf16(updated, &mut ChaCha8Rng::seed_from_u64(seed))
            }
            other => updated.cast(FloatDType::from(other)),
        }
    }
}

/// FNV-1a of a parameter name: a stable per-parameter seed component.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// `t` (f32) rounded stochastically to bf16, on the host.
fn stochastic_bf16<B: Backend>(t: Tensor<B, 1>, rng: &mut ChaCha8Rng) -> Tensor<B, 1> {
    let device = t.device();
    let values: Vec<f32> = t
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap_or_default();
    let n = values.len();
    // `from_data` lands in the default float dtype: go through f32 (exact
    // for bf16 values) and cast.
    let rounded: Vec<f32> = round_to_bf16(&values, rng)
        .iter()
        .map(|b| b.to_f32())
        .collect();
    Tensor::<B, 1>::from_data(TensorData::new(rounded, [n]), &device).cast(FloatDType::BF16)
}
