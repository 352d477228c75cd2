//! Why a fastText model or training file was refused. Each message is one
//! line naming the file (and byte offset for `.bin` problems) and the fix.

use std::path::PathBuf;

/// Errors from loading, saving or training a fastText classifier.
#[derive(Debug, thiserror::Error)]
pub enum FastTextError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{}: not a fastText model (magic {got} at byte 0, expected 793712314): pass a .bin \
         written by fastText's save_model or `kiln classifier train`",
        path.display()
    )]
    BadMagic { path: PathBuf, got: i32 },

    #[error(
        "{}: fastText file format version {got} at byte 4 (this reader knows 11 and 12): \
         re-save the model with fastText 0.9.x",
        path.display()
    )]
    BadVersion { path: PathBuf, got: i32 },

    #[error(
        "{}: truncated at byte {offset} while reading {what} (the file has {len} bytes): \
         the model is incomplete; copy or download it again",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        offset: u64,
        what: &'static str,
        len: u64,
    },

    #[error(
        "{}: corrupt {what} at byte {offset}: {detail}; the file is damaged or not a \
         fastText .bin: copy or download it again",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: &'static str,
        detail: String,
    },

    #[error(
        "{}: a quantized fastText model (.ftz, quant flag at byte {offset}): Kiln reads \
         unquantized models; use the .bin saved before `quantize`",
        path.display()
    )]
    Quantized { path: PathBuf, offset: u64 },

    #[error(
        "{}: a {kind} word-vector model, not a classifier: train one with `fasttext \
         supervised` or `kiln classifier train`",
        path.display()
    )]
    NotSupervised { path: PathBuf, kind: &'static str },

    #[error(
        "{}: loss {loss} is not supported for prediction (softmax, ova and ns are): retrain \
         with loss softmax",
        path.display()
    )]
    UnsupportedLoss { path: PathBuf, loss: &'static str },

    #[error(
        "{}: no line has a label (a word starting with \"{prefix}\"): write one example per \
         line as `{prefix}NAME text`",
        path.display()
    )]
    NoLabels { path: PathBuf, prefix: String },

    #[error(
        "{}: no word occurs at least min_count = {min_count} times: lower --min-count or \
         add text",
        path.display()
    )]
    EmptyVocabulary { path: PathBuf, min_count: i32 },

    #[error("classifier {field} = {got}: {fix}")]
    BadArg {
        field: &'static str,
        got: String,
        fix: &'static str,
    },

    #[error(
        "training diverged (a non-finite score): lower --lr (now {lr}) or normalise the input"
    )]
    Diverged { lr: f64 },
}
