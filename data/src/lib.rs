//! `kiln-data`: corpora, tokenizers and batches for Kiln.
//!
//! The pipeline the trainer drives: [`read_documents`] (or the built-in
//! [`generate_corpus`] of grammar stories) -> [`Tokenizer`] (char-level or
//! byte-level BPE, saved as a Hugging Face `tokenizer.json`) ->
//! [`Tokenizer::encode_docs`] -> [`TokenSplit`] -> [`BatchSampler`] for
//! training and [`eval_batches`] (training-time) or [`WholeSplit`] (every
//! token once) for validation.
//!
//! At corpus scale: [`sources`] streams documents from text/JSONL/Parquet,
//! [`prepare`] tokenizes them into [`shard`]s described by a
//! [`dataset::Manifest`], and [`MixtureSampler`] draws packed sequences from
//! memory-mapped shards, weighted across domains. Curation steps (quality
//! filters, dedup, per-document scores) slot in between reading a
//! [`Document`] (which keeps its id and metadata) and tokenizing it.

// Tests may unwrap: a panic there is the failure report.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod corpus;
pub mod curate;
pub mod dataset;
pub mod error;
pub mod instruct;
pub mod loader;
pub mod mixture;
pub mod prepare;
pub mod shard;
pub mod sources;
pub mod stories;
pub mod tokenizer;
mod walk;

pub use corpus::{read_documents, read_documents_counted, TextFormat};
pub use dataset::{tokenizer_hash, Dataset, Manifest};
pub use error::DataError;
pub use loader::{
    eval_batches, Batch, BatchSampler, EvalBatch, RowOrigin, SamplerState, TokenSplit, WholeSplit,
};
pub use mixture::{MixtureSampler, MixtureState};
pub use prepare::{prepare, DataSpec, PrepareOptions, PrepareReport, Progress, SpecTexts};
pub use shard::{Shard, ShardStream, ShardWriter, TokenDtype};
pub use sources::{Document, SourceFormat, SourceSpec};
pub use stories::{generate_corpus, generate_story};
pub use tokenizer::{Tokenizer, TokenizerKind, EOT_TOKEN};
