//! `[adapter]`: parameter-efficient fine-tuning (LoRA) over a frozen base.

use kiln_models::{LoraInit, LoraSpec};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterConfig {
    /// Only `"lora"` today.
    #[serde(default = "default_method")]
    pub method: String,
    /// Adapter rank.
    #[serde(default = "default_r")]
    pub r: usize,
    /// Scale numerator: the update is `alpha / r * x A B` (rsLoRA: `/ sqrt(r)`).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    #[serde(default)]
    pub dropout: f64,
    /// Projections to adapt: short names (`q k v o gate up down`, Mamba
    /// `in_proj x_proj dt_proj out_proj`, RWKV-7 `receptance key value
    /// output`) or globs over checkpoint names (`model.layers.*.self_attn.q_proj`).
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
    #[serde(default)]
    pub rslora: bool,
    #[serde(default)]
    pub init: LoraInit,
    /// Checkpoint-name globs of whole tensors that train beside the adapters
    /// (peft's `modules_to_save`), e.g. `["model.embed_tokens.weight"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trainable: Vec<String>,
}

fn default_method() -> String {
    "lora".into()
}
fn default_r() -> usize {
    8
}
fn default_alpha() -> f64 {
    16.0
}
fn default_targets() -> Vec<String> {
    vec!["q".into(), "v".into()]
}

impl AdapterConfig {
    pub fn spec(&self) -> LoraSpec {
        LoraSpec {
            r: self.r,
            alpha: self.alpha,
            rslora: self.rslora,
            dropout: self.dropout,
            init: self.init,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.method != "lora" {
            return Err(TrainerError::invalid(
                "adapter.method",
                format!("{:?} is not known: use \"lora\"", self.method),
            ));
        }
        if self.targets.is_empty() {
            return Err(TrainerError::invalid(
                "adapter.targets",
                "is empty: name the projections to adapt, e.g. [\"q\", \"v\"]",
            ));
        }
        self.spec().check("adapter")?;
        Ok(())
    }
}

/// A short target name -> the tail of the projections' module paths it means.
pub fn short_target(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "q" => &["self_attn.q_proj"],
        "k" => &["self_attn.k_proj"],
        "v" => &["self_attn.v_proj"],
        "o" => &["self_attn.o_proj"],
        "gate" => &["mlp.gate_proj"],
        "up" => &["mlp.up_proj"],
        "down" => &["mlp.down_proj"],
        "in_proj" => &["mixer.in_proj"],
        "x_proj" => &["mixer.x_proj"],
        "dt_proj" => &["mixer.dt_proj"],
        "out_proj" => &["mixer.out_proj"],
        "receptance" => &["att.receptance"],
        "key" => &["att.key"],
        "value" => &["att.value"],
        "output" => &["att.output"],
        _ => return None,
    })
}
