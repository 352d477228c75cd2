//! Data curation (issue 16): per-document quality filters and near-duplicate
//! detection over the documents the corpus readers stream, a fastText-
//! compatible quality classifier (a linear model), and `kiln curate` (a
//! recipe of stages writing dolma-style attribute files, a keep expression
//! over them, the kept documents as JSONL, a Markdown report). No neural
//! model here: what needs one (perplexity scoring, DoReMi) lives in the
//! trainer, and reaches a recipe through [`ranked::ScorerFactory`].
//!
//! ```text
//! RECIPE.toml --Recipe::load--> sources + [Stage] + keep Expr (all checked, nothing written)
//!   score:  parts of part_docs docs --par_iter--> attributes/STAGE/DOMAIN/part-N.jsonl.gz | .sketch
//!   dedup:  sketches in order --DedupIndex--> clusters --> attributes/DEDUP/DOMAIN/part-N.jsonl.gz
//!   rank:   scores of every part --percentiles--> attributes/RANKED/DOMAIN/part-N.jsonl.gz
//!   select: docs + attributes --keep--> kept/DOMAIN/part-N.jsonl, REPORT.md
//! ```

mod error;
pub mod fasttext;
pub mod files;
pub mod filters;
pub mod keep;
pub mod minhash;
pub mod ranked;
mod recipe;
mod report;
mod run;
mod stage;

pub use error::CurateError;
pub use ranked::{DocScorer, ScorerFactory};
pub use recipe::Recipe;
pub use report::{Count, DomainStats, ReasonStats, Report, StageStats};
pub use run::{curate, doc_id, CurateOptions, CurateProgress, CurateSummary, Phase, StageTiming};
pub use stage::{Stage, StageKind, KINDS};
