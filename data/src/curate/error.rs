//! Why `kiln curate` refused to start or stopped. A recipe error names the
//! file and the field and says how to fix it; nothing is written before the
//! recipe, its keep expression and its sources have all been checked.

use std::path::PathBuf;

use super::filters::FilterError;
use super::minhash::MinhashError;
use crate::error::DataError;

/// Errors from loading a curation recipe or running it.
#[derive(Debug, thiserror::Error)]
pub enum CurateError {
    /// Malformed TOML, an unknown stage or field, a value out of range.
    #[error("{}: {field}: {message}", path.display())]
    Recipe {
        path: PathBuf,
        field: String,
        message: String,
    },

    /// The keep expression does not parse or does not type-check.
    #[error(
        "{}: keep: {message} (at character {at} of `{expr}`): write e.g. \
         `gopher_quality.keep && !minhash.duplicate && language.score >= 0.65`",
        path.display()
    )]
    Keep {
        path: PathBuf,
        expr: String,
        at: usize,
        message: String,
    },

    #[error(transparent)]
    Data(#[from] DataError),

    #[error(transparent)]
    Filter(#[from] FilterError),

    #[error(transparent)]
    Minhash(#[from] MinhashError),

    #[error("cannot write {}: {source}: check the directory exists, is writable and has room", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A ranked stage's scorer failed on a part (a model error).
    #[error("stage `{stage}`: {message}")]
    Stage { stage: String, message: String },

    #[error(
        "{}: line {line}: {reason}: the attribute file is damaged; delete it (its part is \
         scored again on the next run)",
        path.display()
    )]
    Attributes {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}
