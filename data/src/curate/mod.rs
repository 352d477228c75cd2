//! Data curation (issue 16): per-document quality filters and near-duplicate
//! detection over the documents the corpus readers stream, and a fastText-
//! compatible quality classifier (a linear model). No neural model here:
//! what needs one (perplexity scoring, DoReMi) lives in the trainer.

pub mod fasttext;
pub mod filters;
pub mod minhash;
