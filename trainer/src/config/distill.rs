//! `[distill]`: knowledge distillation from a teacher checkpoint.

use std::path::PathBuf;

use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

use crate::distill_loss::DistillLoss;
use crate::error::{Result, TrainerError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// A Kiln checkpoint (any architecture) with the student's tokenizer.
    /// With `cache` it may be left out; given, it must be the cache's teacher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<PathBuf>,
    /// An offline teacher cache (`kiln distill cache`): sparse teacher
    /// distributions read instead of running the teacher (forward KL only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<PathBuf>,
    /// Which of the cache's targets to learn from: `"sampled"` (tokens drawn
    /// from the teacher, unbiased) or `"top-k"` (renormalised over the k).
    #[serde(default = "sampled")]
    pub cache_targets: String,
    /// On-policy share (GKD's lambda): the probability that a batch is
    /// replaced by continuations the student samples, scored by the teacher.
    #[serde(default)]
    pub lmbda: f64,
    /// On-policy batches: the tokens the student generates after each
    /// row's prompt (the rest of the window); 0 = half the window.
    #[serde(default)]
    pub gkd_new_tokens: usize,
    /// `"forward-kl"`, `"reverse-kl"`, `"jsd"` or `"skew-kl"`.
    #[serde(default = "default_loss")]
    pub loss: String,
    #[serde(default = "one")]
    pub temperature: f64,
    /// Weight of the distillation term; the next-token loss gets `1 - alpha`.
    #[serde(default = "half")]
    pub alpha: f64,
    /// `"jsd"`: the teacher's weight in the mixture (GKD).
    #[serde(default = "half")]
    pub beta: f64,
    /// `"skew-kl"`: the teacher's share of the skewed mixture (DistiLLM).
    #[serde(default = "tenth")]
    pub skew: f64,
    /// The teacher's weights and activations: `"fp32"` or `"bf16"` / `"fp16"`
    /// (half the teacher's memory and, on GPUs, its time; logits are
    /// compared in f32 either way).
    #[serde(default = "fp32")]
    pub teacher_precision: String,
}

fn sampled() -> String {
    "sampled".into()
}

fn fp32() -> String {
    "fp32".into()
}

fn default_loss() -> String {
    "forward-kl".into()
}
fn one() -> f64 {
    1.0
}
fn half() -> f64 {
    0.5
}
fn tenth() -> f64 {
    0.1
}

impl DistillConfig {
    pub fn divergence(&self) -> Result<DistillLoss> {
        let loss = match self.loss.as_str() {
            "forward-kl" => DistillLoss::ForwardKl,
            "reverse-kl" => DistillLoss::ReverseKl,
            "jsd" => DistillLoss::Jsd { beta: self.beta },
            "skew-kl" => DistillLoss::SkewKl { alpha: self.skew },
            other => {
                return Err(TrainerError::invalid(
                    "distill.loss",
                    format!("{other:?} is not known: use \"forward-kl\", \"reverse-kl\", \"jsd\" or \"skew-kl\""),
                ))
            }
        };
        loss.validate("distill")?;
        Ok(loss)
    }

    /// The dtype the teacher runs in (`None`: f32).
    pub fn teacher_dtype(&self) -> Result<Option<FloatDType>> {
        match self.teacher_precision.as_str() {
            "fp32" => Ok(None),
            "bf16" => Ok(Some(FloatDType::BF16)),
            "fp16" => Ok(Some(FloatDType::F16)),
            other => Err(TrainerError::invalid(
                "distill.teacher_precision",
                format!("{other:?} is not known: use \"fp32\", \"bf16\" or \"fp16\""),
            )),
        }
    }

    /// The cache's targets (`cache_targets`).
    pub fn cache_targets(&self) -> Result<crate::distill_cache::CacheTargets> {
        use crate::distill_cache::CacheTargets;
        match self.cache_targets.as_str() {
            "sampled" => Ok(CacheTargets::Sampled),
            "top-k" => Ok(CacheTargets::TopK),
            other => Err(TrainerError::invalid(
                "distill.cache_targets",
                format!("{other:?} is not known: use \"sampled\" or \"top-k\""),
            )),
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.divergence()?;
        self.cache_targets()?;
        if self.teacher.is_none() && self.cache.is_none() {
            return Err(TrainerError::invalid(
                "distill",
                "names no teacher: set teacher = \"RUN_DIR\" or cache = \"DIR\" (from `kiln distill cache`)",
            ));
        }
        if self.cache.is_some() && self.loss != "forward-kl" {
            return Err(TrainerError::invalid(
                "distill.loss",
                format!("{:?} needs the teacher's whole distribution; a cache holds sparse targets that estimate forward KL only: use loss = \"forward-kl\" or drop distill.cache", self.loss),
            ));
        }
        if !(0.0..=1.0).contains(&self.lmbda) {
            return Err(TrainerError::invalid(
                "distill.lmbda",
                format!(
                    "{} must be in [0, 1] (the share of on-policy batches)",
                    self.lmbda
                ),
            ));
        }
        if self.lmbda > 0.0 && self.teacher.is_none() {
            return Err(TrainerError::invalid(
                "distill.lmbda",
                "on-policy batches are scored by the teacher: set distill.teacher (a cache holds only the data's windows)",
            ));
        }
        self.teacher_dtype()?;
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(TrainerError::invalid(
                "distill.temperature",
                format!("{} must be > 0 (1 = the plain softmax)", self.temperature),
            ));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(TrainerError::invalid(
                "distill.alpha",
                format!(
                    "{} must be in [0, 1] (the distillation share of the loss)",
                    self.alpha
                ),
            ));
        }
        Ok(())
    }
}
