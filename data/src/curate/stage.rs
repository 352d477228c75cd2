//! The stages a recipe can run and the attributes each writes per document.
//!
//! | kind                | attributes (type)                                        |
//! |---------------------|----------------------------------------------------------|
//! | `gopher_quality`, `gopher_repetition`, `c4`, `fineweb` | `keep` (bool), `reason` (string: datatrove's drop reason, "" when kept) |
//! | `language`          | `keep`, `reason`, `language` (ISO 639-3, "" when none), `score` (whatlang confidence) |
//! | `bad_words`         | `keep`, `reason`, `word` (the first listed word found, "" when none) |
//! | `exact_dedup`, `minhash` | `keep` (first of its cluster), `duplicate` (= !keep), `cluster` (id of the kept document, a number), `cluster_size` |
//! | `classifier`, `perplexity` | `keep`, `reason`, `score` (the label's probability / the perplexity), `percentile` (share of the corpus scoring better, 0-100), `bucket` |
//!
//! Filters score a document alone (in parallel); dedup stages write a sketch
//! per document first and decide once every sketch is in; ranked stages
//! (`ranked.rs`) write a score per document and decide by percentile once
//! every score is in.

use serde_json::{json, Value};
use xxhash_rust::xxh3::xxh3_64;

use super::filters::{
    BadWords, BadWordsConfig, C4Quality, Decision, FineWebQuality, GopherQuality, GopherRepetition,
    LanguageFilter,
};
use super::keep::Type;
use super::minhash::{simplify_text, DocSketch, MinHasher, MinhashConfig};
use super::ranked::RankedStage;

/// A configured stage.
#[derive(Debug, Clone)]
pub enum StageKind {
    GopherQuality(GopherQuality),
    GopherRepetition(GopherRepetition),
    C4(C4Quality),
    FineWeb(FineWebQuality),
    Language(LanguageFilter),
    BadWords(BadWordsConfig, BadWords),
    ExactDedup,
    Minhash(MinhashConfig, MinHasher),
    /// `classifier` (fastText) or a model-backed kind (`perplexity`).
    Ranked(RankedStage),
}

/// Every stage kind a recipe may name, for error messages.
pub const KINDS: [&str; 10] = [
    "gopher_quality",
    "gopher_repetition",
    "c4",
    "fineweb",
    "language",
    "bad_words",
    "exact_dedup",
    "minhash",
    "classifier",
    "perplexity",
];

/// One stage of a recipe: its attribute namespace and what it runs.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The namespace of its attributes in the keep expression and the
    /// directory of its attribute files (`name = "..."`, default the kind).
    pub name: String,
    pub kind: StageKind,
}

impl StageKind {
    pub fn kind_name(&self) -> &'static str {
        match self {
            StageKind::GopherQuality(_) => "gopher_quality",
            StageKind::GopherRepetition(_) => "gopher_repetition",
            StageKind::C4(_) => "c4",
            StageKind::FineWeb(_) => "fineweb",
            StageKind::Language(_) => "language",
            StageKind::BadWords(..) => "bad_words",
            StageKind::ExactDedup => "exact_dedup",
            StageKind::Minhash(..) => "minhash",
            StageKind::Ranked(r) => r.kind,
        }
    }

    /// Dedup stages decide over the whole corpus, after a sketch pass.
    pub fn is_dedup(&self) -> bool {
        matches!(self, StageKind::ExactDedup | StageKind::Minhash(..))
    }

    /// Ranked stages decide by percentile, after a scoring pass.
    pub fn ranked(&self) -> Option<&RankedStage> {
        match self {
            StageKind::Ranked(r) => Some(r),
            _ => None,
        }
    }

    /// The attributes it writes and their types.
    pub fn fields(&self) -> &'static [(&'static str, Type)] {
        const FILTER: &[(&str, Type)] = &[("keep", Type::Bool), ("reason", Type::Str)];
        const LANG: &[(&str, Type)] = &[
            ("keep", Type::Bool),
            ("reason", Type::Str),
            ("language", Type::Str),
            ("score", Type::Num),
        ];
        const BAD: &[(&str, Type)] = &[
            ("keep", Type::Bool),
            ("reason", Type::Str),
            ("word", Type::Str),
        ];
        const DEDUP: &[(&str, Type)] = &[
            ("keep", Type::Bool),
            ("duplicate", Type::Bool),
            ("cluster", Type::Num),
            ("cluster_size", Type::Num),
        ];
        const RANKED: &[(&str, Type)] = &[
            ("keep", Type::Bool),
            ("reason", Type::Str),
            ("score", Type::Num),
            ("percentile", Type::Num),
            ("bucket", Type::Str),
        ];
        match self {
            StageKind::Ranked(_) => RANKED,
            StageKind::Language(_) => LANG,
            StageKind::BadWords(..) => BAD,
            StageKind::ExactDedup | StageKind::Minhash(..) => DEDUP,
            _ => FILTER,
        }
    }

    /// The configuration as JSON: what decides whether saved attributes
    /// are still valid.
    pub fn config_json(&self) -> Value {
        let v = match self {
            StageKind::GopherQuality(c) => serde_json::to_value(c),
            StageKind::GopherRepetition(c) => serde_json::to_value(c),
            StageKind::C4(c) => serde_json::to_value(c),
            StageKind::FineWeb(c) => serde_json::to_value(c),
            StageKind::Language(c) => serde_json::to_value(c),
            // The list's contents, not just its path, decide the result.
            StageKind::BadWords(c, list) => Ok(json!({
                "path": c.path,
                "entries": list.len(),
                "sha": format!("{:016x}", xxh3_64(format!("{list:?}").as_bytes())),
            })),
            StageKind::ExactDedup => Ok(json!({})),
            StageKind::Minhash(c, _) => serde_json::to_value(c),
            StageKind::Ranked(r) => Ok(r.config_json()),
        };
        v.unwrap_or(Value::Null)
    }

    /// The attributes of a filter stage for one document (`None` for a
    /// dedup stage: see [`StageKind::sketch`]).
    pub fn score(&self, text: &str) -> Option<Value> {
        let filter = |d: Decision| json!({"keep": d.is_keep(), "reason": reason(&d)});
        Some(match self {
            StageKind::GopherQuality(f) => filter(f.filter(text)),
            StageKind::GopherRepetition(f) => filter(f.filter(text)),
            StageKind::C4(f) => filter(f.filter(text)),
            StageKind::FineWeb(f) => filter(f.filter(text)),
            StageKind::Language(f) => {
                let out = f.apply(text);
                json!({
                    "keep": out.decision.is_keep(),
                    "reason": reason(&out.decision),
                    "language": out.language.unwrap_or(""),
                    "score": out.confidence,
                })
            }
            StageKind::BadWords(_, list) => {
                let hit = list.first_match(text);
                json!({
                    "keep": hit.is_none(),
                    "reason": if hit.is_some() { "bad_words" } else { "" },
                    "word": hit.unwrap_or(""),
                })
            }
            StageKind::ExactDedup | StageKind::Minhash(..) | StageKind::Ranked(_) => return None,
        })
    }

    /// The sketch a dedup stage keeps of a document (`None` for a filter).
    pub fn sketch(&self, text: &str) -> Option<DocSketch> {
        match self {
            StageKind::ExactDedup => Some(DocSketch {
                exact: xxh3_64(simplify_text(text).as_bytes()),
                band_keys: Vec::new(),
            }),
            StageKind::Minhash(_, hasher) => Some(hasher.sketch(text)),
            _ => None,
        }
    }

    /// Bands of the dedup index (0 for exact dedup).
    pub fn num_bands(&self) -> usize {
        match self {
            StageKind::Minhash(c, _) => c.num_buckets,
            _ => 0,
        }
    }
}

fn reason(d: &Decision) -> &str {
    match d {
        Decision::Keep => "",
        Decision::Drop(r) => r,
    }
}
