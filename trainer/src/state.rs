//! Trainer state saved in every checkpoint: everything besides weights and
//! optimizer moments that an exact resume needs.

use kiln_data::{MixtureState, SamplerState};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed (the next step to run).
    pub step: u64,
    /// The optimizer's update count (differs from `step` when steps were skipped).
    pub optimizer_updates: u64,
    pub tokens_seen: u64,
    /// Random-window sampler of an in-memory run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<SamplerState>,
    /// Mixture sampler (cursors per domain) of a run on prepared shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixture: Option<MixtureState>,
    /// The instruction-data sampler (`[data.instruct]` runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruct: Option<kiln_data::instruct::InstructSamplerState>,
    pub skipped_steps: u64,
    pub consecutive_nonfinite: u64,
    pub best_val_loss: Option<f64>,
    pub best_step: Option<u64>,
    /// fp16 dynamic loss scale (None in other precisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scaler: Option<crate::precision::LossScaler>,
    /// Seconds of training before this checkpoint (wall time across resumes).
    pub elapsed_s: f64,
    /// The objective's state across steps (DoReMi's domain weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<serde_json::Value>,
}

impl TrainerState {
    /// The state of a run at step 0.
    pub fn fresh() -> Self {
        Self {
            step: 0,
            optimizer_updates: 0,
            tokens_seen: 0,
            sampler: None,
            mixture: None,
            instruct: None,
            skipped_steps: 0,
            consecutive_nonfinite: 0,
            best_val_loss: None,
            best_step: None,
            loss_scaler: None,
            elapsed_s: 0.0,
            objective: None,
        }
    }

    /// One step done (applied or skipped): `updates` is the optimizer's count.
    pub fn advance(&mut self, updates: u64, tokens: u64) {
        self.step += 1;
        self.optimizer_updates = updates;
        self.tokens_seen += tokens;
    }

    /// A validation loss at the current step; tracks the best.
    pub fn record_val(&mut self, loss: f64) {
        if self.best_val_loss.is_none_or(|b| loss < b) {
            (self.best_val_loss, self.best_step) = (Some(loss), Some(self.step));
        }
    }
}
