//! Typed errors of the trainer library. Each message names the file or the
//! config field and says what to do; the binary prints it on one line.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrainerError {
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    InvalidValue { field: String, message: String },
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Model(#[from] kiln_models::ModelError),
    #[error(transparent)]
    Data(#[from] kiln_data::DataError),
    /// Too many non-finite steps in a row: the run stopped (state saved).
    #[error("training.max_nonfinite_steps: {steps} non-finite steps in a row, the run stopped{saved}; lower optimizer.lr, raise training.max_nonfinite_steps or check the data")]
    Diverged { steps: u64, saved: String },
    /// A collective operation between data-parallel ranks failed.
    #[error("{world}: {message}")]
    Collective { world: String, message: String },
    /// A broken invariant of kiln itself, not of the input.
    #[error("internal error: {0} (please report this with the command you ran)")]
    Internal(String),
}

impl TrainerError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidValue {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = TrainerError> = std::result::Result<T, E>;

impl From<kiln_data::instruct::InstructError> for TrainerError {
    fn from(e: kiln_data::instruct::InstructError) -> Self {
        TrainerError::Data(kiln_data::DataError::Instruct(e))
    }
}
