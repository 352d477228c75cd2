//! A LoRA adapter (Hu et al., 2021) on one projection: `y += s * (x A) B`
//! with `A [d_in, r]`, `B [r, d_out]`, `s = alpha / r` (or `alpha / sqrt(r)`,
//! rsLoRA). The product runs as two thin GEMMs, `x -> A -> B`; the dense
//! `A B` is formed only when merging. Stored like `Linear` (`[in, out]`),
//! the transpose of peft's `lora_A.weight [r, in]` / `lora_B.weight [out, r]`.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// How `A` starts (`B` always starts at zero, so the adapted model starts
/// equal to its base).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LoraInit {
    /// peft's default: `kaiming_uniform_(A, a=sqrt(5))` = U(-1/sqrt(d_in), 1/sqrt(d_in)).
    #[default]
    Kaiming,
    /// peft's `"gaussian"`: N(0, 1/r).
    Gaussian,
}

/// Shape and scale of the adapters attached to a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraSpec {
    pub r: usize,
    pub alpha: f64,
    /// Scale `alpha / sqrt(r)` (rsLoRA, Kalajdzievski 2023) instead of `alpha / r`.
    pub rslora: bool,
    /// Dropout on the adapter's input during training (peft's `lora_dropout`).
    pub dropout: f64,
    pub init: LoraInit,
}

impl LoraSpec {
    /// The factor on `x A B`.
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// `r >= 1`, `alpha > 0`, `0 <= dropout < 1`; `field` prefixes the error.
    pub fn check(&self, field: &str) -> Result<(), ModelError> {
        let bad = |key: &str, value: String, problem: &str| {
            Err(ModelError::InvalidConfig {
                field: format!("{field}.{key}"),
                value,
                problem: problem.to_string(),
            })
        };
        if self.r == 0 {
            return bad(
                "r",
                "0".into(),
                "is out of range: the adapter rank must be at least 1",
            );
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return bad(
                "alpha",
                self.alpha.to_string(),
                "is out of range: it must be > 0 (e.g. alpha = 2 * r)",
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(
                "dropout",
                self.dropout.to_string(),
                "is out of range: it must be in [0, 1)",
            );
        }
        Ok(())
    }
}

#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `[d_in, r]`.
    pub a: Param<Tensor<B, 2>>,
    /// `[r, d_out]`.
    pub b: Param<Tensor<B, 2>>,
    pub scale: f64,
    pub dropout: f64,
}

impl<B: Backend> LoraAdapter<B> {
    /// A fresh adapter: `A` from `spec.init` (the backend's seeded RNG), `B = 0`.
    pub fn new(d_in: usize, d_out: usize, spec: &LoraSpec, device: &B::Device) -> Self {
        let dist = match spec.init {
            LoraInit::Kaiming => {
                let bound = 1.0 / (d_in as f64).sqrt();
                Distribution::Uniform(-bound, bound)
            }
            LoraInit::Gaussian => Distribution::Normal(0.0, 1.0 / spec.r as f64),
        };
        Self {
            a: Param::from_tensor(Tensor::random([d_in, spec.r], dist, device)),
            b: Param::from_tensor(Tensor::zeros([spec.r, d_out], device)),
            scale: spec.scale(),
            dropout: spec.dropout,
        }
    }

    pub fn rank(&self) -> usize {
        self.a.dims()[1]
    }

    /// `x [rows, d_in]` with dropout when training (an autodiff backend),
    /// as burn's `Dropout` does: kept entries scaled by `1 / (1 - p)`.
    pub fn dropped(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        if self.dropout == 0.0 || !B::ad_enabled(&x.device()) {
            return x;
        }
        let keep = 1.0 - self.dropout;
        let mask = x.random_like(Distribution::Bernoulli(keep)); // [rows, d_in]
        (x * mask).div_scalar(keep)
    }
}
