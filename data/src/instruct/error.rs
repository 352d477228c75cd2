//! Errors of instruction-data reading, templating, encoding and sampling.
//!
//! Like [`crate::DataError`], every message names the file and line (1-based;
//! the row for Parquet) where one exists and says how to fix the problem: the
//! message is the single line a user sees when `kiln train` refuses to start.

use std::path::PathBuf;

/// Errors from instruction-tuning data.
#[derive(Debug, thiserror::Error)]
pub enum InstructError {
    #[error("{} not found: check the instruction data path in the config", path.display())]
    NotFound { path: PathBuf },

    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{}: corrupt or truncated at line {line}: {reason}: re-download or re-compress the file",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error(
        "cannot tell the format of {} from its extension: use .jsonl (optionally .gz or .zst) \
         or .parquet",
        path.display()
    )]
    UnknownFormat { path: PathBuf },

    #[error(
        "{}:{line}: not valid JSON ({reason}): instruction data needs one JSON object per line",
        path.display()
    )]
    BadJson {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error(
        "{}:{line}: not an instruction example (fields: {fields}): use {{\"prompt\", \"response\"}}, \
         Alpaca {{\"instruction\", \"input\", \"output\"}} or chat \
         {{\"messages\": [{{\"role\", \"content\"}}, ...]}}",
        path.display()
    )]
    UnknownLayout {
        path: PathBuf,
        line: usize,
        fields: String,
    },

    #[error(
        "{}:{line}: the example has no response: add a \"response\" field or an assistant message",
        path.display()
    )]
    NoResponse { path: PathBuf, line: usize },

    #[error(
        "{}:{line}: the {layout} example has no \"{field}\" field: add it",
        path.display()
    )]
    MissingField {
        path: PathBuf,
        line: usize,
        layout: &'static str,
        field: String,
    },

    #[error(
        "{}:{line}: {what} is empty: give it text or remove the example",
        path.display()
    )]
    EmptyContent {
        path: PathBuf,
        line: usize,
        what: String,
    },

    #[error(
        "{}:{line}: {what} is {found}, not a string: instruction fields hold text",
        path.display()
    )]
    NotString {
        path: PathBuf,
        line: usize,
        what: String,
        found: &'static str,
    },

    #[error("{}:{line}: {reason}", path.display())]
    BadMessages {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error(
        "{}: column \"{column}\": {reason}: Parquet instruction data needs string columns \
         prompt/response or instruction/input/output",
        path.display()
    )]
    BadColumn {
        path: PathBuf,
        column: String,
        reason: String,
    },

    #[error("{} holds no instruction examples: add at least one", path.display())]
    NoExamples { path: PathBuf },

    #[error("{}: {reason}", path.display())]
    Prepared { path: PathBuf, reason: String },

    #[error(
        "data.instruct.template = \"{name}\" is not a preset: use \"plain\" or \"chatml\", or \
         describe each role with [data.instruct.roles.<role>] prefix = ..., suffix = ..."
    )]
    UnknownPreset { name: String },

    #[error(
        "chat role \"{role}\" is not in the template (it has {known}): add \
         [data.instruct.roles.{role}]"
    )]
    UnknownRole { role: String, known: String },

    #[error("{field}: {message}")]
    BadConfig {
        field: &'static str,
        message: String,
    },

    #[error(
        "data.instruct.layout = \"pack\" is not supported: packing several examples in one row \
         lets them attend to each other, which needs per-example attention masks in the model; \
         use layout = \"pad\" (one example per row, right-padded)"
    )]
    PackUnsupported,

    #[error("{at}: {source}")]
    InExample {
        /// `file:line` of the example, or `example N` without an origin.
        at: String,
        #[source]
        source: Box<InstructError>,
    },

    #[error("{at}: {source}")]
    Encode {
        /// `file:line` of the example, or `example N` without an origin.
        at: String,
        #[source]
        source: Box<crate::DataError>,
    },

    #[error("there are no instruction examples to encode: check the instruction data path")]
    NothingToEncode,

    #[error(
        "all {dropped} examples are longer than seq_len {seq_len}: raise data.seq_len or set \
         data.instruct.overflow = \"truncate\""
    )]
    AllTooLong { dropped: usize, seq_len: usize },

    #[error(
        "no example has a trained token within seq_len {seq_len} ({too_long} too long, \
         {untrained} with nothing to learn after truncation): raise data.seq_len or shorten \
         the prompts"
    )]
    NothingToTrain {
        seq_len: usize,
        too_long: usize,
        untrained: usize,
    },

    #[error("{what} must be at least 1: fix it in the config")]
    ZeroSize { what: &'static str },

    #[error(
        "rank {rank} is out of range for world_size {world_size}: need world_size >= 1 and \
         rank < world_size"
    )]
    BadRank { rank: usize, world_size: usize },

    #[error(
        "example {index} has {len} tokens but a row holds seq_len + 1 = {max}: encode with the \
         same seq_len as the sampler"
    )]
    ExampleTooLong {
        index: usize,
        len: usize,
        max: usize,
    },

    #[error(
        "cannot restore the instruction sampler: the checkpoint was made with {field} = {saved} \
         but this run has {current}; resume with the same data and settings or start a fresh run"
    )]
    StateMismatch {
        field: &'static str,
        saved: String,
        current: String,
    },

    #[error("cannot restore the instruction sampler: {reason}")]
    BadState { reason: String },
}
