//! Errors of model construction and weight loading.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    /// A configuration value is out of range; `field` is the TOML path.
    #[error("{field} = {value} {problem}")]
    InvalidConfig {
        field: String,
        value: String,
        problem: String,
    },
    /// A tensor the model needs is missing from the weights being loaded.
    #[error("tensor `{name}` is missing from {source_desc}: {hint}")]
    MissingTensor {
        name: String,
        source_desc: String,
        hint: String,
    },
    /// A tensor has the wrong shape for this model's config.
    #[error("tensor `{name}` in {source_desc} has shape {found:?}, the model expects {expected:?}: the checkpoint was made for another [model] config")]
    ShapeMismatch {
        name: String,
        source_desc: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// Copies of one shared weight disagree (importing an expanded export).
    #[error("tensor `{name}` should equal `{other}` (shared weight) but differs by {max_diff}: the weights do not match this sharing layout")]
    SharedMismatch {
        name: String,
        other: String,
        max_diff: f32,
    },
    /// Weights contain tensors the model does not have.
    #[error(
        "{source_desc} has tensors this model does not use: {names}; check the [model] config"
    )]
    UnexpectedTensors { source_desc: String, names: String },
}
