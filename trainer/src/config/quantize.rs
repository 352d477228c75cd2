//! `[quantize]`: quantisation-aware training (fake-quantised projections
//! with a straight-through estimator) and how a run's model is evaluated
//! and exported.

use kiln_models::quant::{ActFormat, QuantSpec, WeightFormat};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizeConfig {
    /// `"int8"`, `"int4"` (symmetric), `"q8_0"`, `"q4_0"` (llama.cpp blocks of 32).
    pub weights: WeightFormat,
    /// int8/int4: elements per scale along the input (32, 64, 128, ...);
    /// absent = one scale per output channel. GGUF formats use 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<usize>,
    /// `"none"`, `"int8_token"` (torchao 8da4w-style) or `"q8_0"` (llama.cpp's CPU path).
    #[serde(default)]
    pub activations: ActFormat,
    /// Fake quantisation switches on at this step (torchtune's delay).
    #[serde(default)]
    pub start_step: u64,
    /// Projections to quantise: globs over checkpoint names; empty = every
    /// projection but the output head (the embedding is never a projection).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

impl QuantizeConfig {
    pub fn spec(&self) -> QuantSpec {
        QuantSpec {
            weights: self.weights,
            group: self.group,
            activations: self.activations,
        }
    }

    pub fn validate(&self) -> Result<()> {
        match (self.weights.is_gguf_block(), self.group) {
            (true, Some(g)) if g != 32 => Err(TrainerError::invalid(
                "quantize.group",
                format!(
                    "{g} does not apply to {:?}: GGUF blocks are 32 (leave group out)",
                    self.weights
                ),
            )),
            (_, Some(0)) => Err(TrainerError::invalid(
                "quantize.group",
                "0 must be at least 1 (32, 64 or 128 are common; leave it out for per-channel)",
            )),
            _ => Ok(()),
        }
    }

    /// True for the checkpoint name (without `.weight`) of a projection to quantise.
    pub fn selects(&self, name: &str) -> bool {
        if self.targets.is_empty() {
            return !(name == "lm_head" || name == "head");
        }
        self.targets.iter().any(|g| {
            crate::optim::groups::glob_match(g, name)
                || crate::optim::groups::glob_match(g, &format!("{name}.weight"))
        })
    }
}
