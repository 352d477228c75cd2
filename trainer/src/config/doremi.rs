//! `[doremi]`: train a proxy model with DoReMi's Group DRO objective; the
//! run's averaged domain weights are the mixture a later run uses.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoremiConfig {
    /// The reference model: a Kiln checkpoint trained on this run's
    /// mixture with this run's tokenizer (any architecture).
    pub reference: PathBuf,
    /// Step size of the exponentiated-gradient update of the log weights.
    #[serde(default = "one")]
    pub eta: f64,
    /// Share of the uniform distribution mixed into the weights after each
    /// update (`c` of the paper: 1e-3; the reference scripts use 1e-4).
    #[serde(default = "milli")]
    pub smoothing: f64,
}

fn one() -> f64 {
    1.0
}
fn milli() -> f64 {
    1e-3
}

impl DoremiConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.eta.is_finite() && self.eta > 0.0) {
            return Err(TrainerError::invalid(
                "doremi.eta",
                format!("{} must be a positive number, e.g. 1.0", self.eta),
            ));
        }
        if !(self.smoothing.is_finite() && (0.0..1.0).contains(&self.smoothing)) {
            return Err(TrainerError::invalid(
                "doremi.smoothing",
                format!("{} must be in [0, 1), e.g. 1e-3", self.smoothing),
            ));
        }
        Ok(())
    }
}
