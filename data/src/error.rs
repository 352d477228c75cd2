//! The one error type of `kiln-data`.
//!
//! Every message names the file (and the line or byte offset where one exists)
//! and says what to do, because these errors end up as the single line a user
//! sees when `kiln train` refuses to start.

use std::path::PathBuf;

/// Errors from reading corpora, building tokenizers and sampling batches.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{} not found: check data.train / data.val in the config", path.display())]
    NotFound { path: PathBuf },

    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {}: {source}: check the directory exists and is writable", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{} is not valid UTF-8 at byte offset {offset}: re-encode the file as UTF-8",
        path.display()
    )]
    InvalidUtf8 { path: PathBuf, offset: usize },

    #[error(
        "cannot tell the format of {} from its extension: use .txt/.text/.md for plain text or \
         .jsonl/.json for JSON lines, or set data.format = \"text\" | \"jsonl\"",
        path.display()
    )]
    UnknownFormat { path: PathBuf },

    #[error(
        "{} has no corpus files (.txt, .text, .md, .jsonl, .json): point data.train at a file \
         or a directory of such files",
        path.display()
    )]
    NoFiles { path: PathBuf },

    #[error("{}:{line}: not a JSON object ({reason}): JSONL needs one JSON object per line", path.display())]
    BadJsonLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error(
        "{}:{line}: the object has no field \"{field}\": set data.text_field to the field that \
         holds the text",
        path.display()
    )]
    MissingField {
        path: PathBuf,
        line: usize,
        field: String,
    },

    #[error(
        "{}:{line}: field \"{field}\" is {found}, not a string: set data.text_field to the field \
         that holds the text",
        path.display()
    )]
    FieldNotString {
        path: PathBuf,
        line: usize,
        field: String,
        found: &'static str,
    },

    #[error("{} holds no non-empty documents: add text to the corpus", path.display())]
    EmptyCorpus { path: PathBuf },

    #[error(
        "cannot train a tokenizer on an empty corpus: give it at least one non-empty document"
    )]
    EmptyTrainingText,

    #[error(
        "BPE vocab_size {vocab_size} is too small: byte-level BPE needs at least {min} \
         (256 bytes + <|endoftext|>); raise tokenizer.vocab_size"
    )]
    VocabTooSmall { vocab_size: usize, min: usize },

    #[error(
        "character {ch:?} (U+{code:04X}) is not in the char tokenizer's vocabulary: retrain the \
         tokenizer on a corpus that contains it, or use tokenizer.kind = \"bpe\"",
        code = *ch as u32
    )]
    UnknownChar { ch: char },

    #[error("token id {id} is not in the tokenizer's vocabulary of {vocab_size}: was the model trained with this tokenizer?")]
    UnknownId { id: u32, vocab_size: usize },

    #[error("tokenizer: {context}: {reason}")]
    Tokenizer { context: String, reason: String },

    #[error(
        "tokenizer file {}: {reason}",
        path.display()
    )]
    TokenizerFile { path: PathBuf, reason: String },

    #[error("data.val_fraction = {value} must be in [0, 1): use e.g. 0.1")]
    BadValFraction { value: f64 },

    #[error(
        "the {split} split has {have} tokens but one window needs seq_len + 1 = {need}: use a \
         smaller model.max_seq_len / data.seq_len, a smaller data.val_fraction, or more data"
    )]
    NotEnoughTokens {
        split: String,
        have: usize,
        need: usize,
    },

    #[error("{what} must be at least 1: fix it in the config")]
    ZeroSize { what: &'static str },

    #[error("rank {rank} is out of range for world_size {world_size}: need world_size >= 1 and rank < world_size")]
    BadRank { rank: usize, world_size: usize },

    #[error(
        "training.batch_size {batch_size} does not divide by {world_size} ranks: each rank takes \
         an equal share of the global batch; set batch_size to a multiple of {world_size}"
    )]
    BatchNotDivisible {
        batch_size: usize,
        world_size: usize,
    },

    #[error(
        "cannot restore the data sampler: the checkpoint was made with {field} = {saved} but this \
         run has {current}; resume with the same settings or start a fresh run"
    )]
    StateMismatch {
        field: &'static str,
        saved: String,
        current: String,
    },

    #[error("cannot restore the data sampler: {reason}")]
    BadState { reason: String },

    #[error("{field}: {message}")]
    BadSpec { field: String, message: String },

    #[error(
        "{}: corrupt or truncated at {at}: {reason}: re-download or re-compress the file, or \
         pass --skip-bad to skip it and continue",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        at: String,
        reason: String,
    },

    #[error(
        "{}: no column \"{column}\" (columns: {available}): set text_field to the column \
         that holds the text",
        path.display()
    )]
    MissingColumn {
        path: PathBuf,
        column: String,
        available: String,
    },

    #[error(
        "{}: column \"{column}\" is {found}, not strings: set text_field to the column that \
         holds the text",
        path.display()
    )]
    ColumnNotString {
        path: PathBuf,
        column: String,
        found: String,
    },

    #[error("shard {}: {reason}: re-run `kiln data prepare` to rebuild it", path.display())]
    BadShard { path: PathBuf, reason: String },

    #[error(
        "{}: token id {id} at token {offset} does not fit {limit}: the tokenizer's vocabulary is \
         larger than the shard's token type allows; re-run `kiln data prepare` with this tokenizer",
        path.display()
    )]
    TokenOutOfRange {
        path: PathBuf,
        id: u64,
        offset: u64,
        limit: String,
    },

    #[error("dataset manifest {}: {reason}", path.display())]
    BadManifest { path: PathBuf, reason: String },

    #[error(
        "dataset {} was prepared with tokenizer {expected} but the run's tokenizer is {found}: \
         use the dataset's tokenizer.json (tokenizer.path) or re-run `kiln data prepare` with \
         this tokenizer",
        dataset.display()
    )]
    TokenizerMismatch {
        dataset: PathBuf,
        expected: String,
        found: String,
    },

    #[error("data.mixture: unknown domain \"{domain}\": the datasets hold {available}")]
    UnknownDomain { domain: String, available: String },

    #[error("data.mixture: {reason}")]
    BadWeights { reason: String },

    /// Near-duplicate detection (`curate::minhash`) failed.
    #[error(transparent)]
    Minhash(#[from] crate::curate::minhash::MinhashError),

    /// Instruction data (`instruct`): reading, templates, encoding, sampling.
    #[error(transparent)]
    Instruct(#[from] crate::instruct::InstructError),
}
