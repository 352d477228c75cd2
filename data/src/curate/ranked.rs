//! Ranked stages: a number per document (a classifier's probability, a
//! model's perplexity) and a decision that needs the whole corpus's
//! distribution (top-k%, CCNet's head / middle / tail percentile buckets).
//!
//! Scoring writes `part-N.scores` (one `id \t score` line per document,
//! gzipped); once every part is scored, the ranking phase sorts the scores
//! once and writes each part's attributes: `score`, `percentile` (share of
//! the corpus scoring strictly lower, 0-100), `bucket`, `keep`, `reason`.
//!
//! A model-backed scorer (perplexity under a Kiln checkpoint) lives in the
//! trainer and reaches a recipe through [`ScorerFactory`]; this crate has
//! no neural model.

use std::path::Path;
use std::sync::Arc;

use super::error::CurateError;
use super::files::{self, Layout};
use super::recipe::Recipe;
use super::stage::Stage;
use crate::sources::Document;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::fasttext::FastText;

/// Scores documents, a batch (one part) at a time.
pub trait DocScorer: Send + Sync {
    /// One score per text, in order.
    fn score(&self, texts: &[&str]) -> Result<Vec<f64>, String>;
    /// What the scores depend on (model hash, tokenizer, ...): saved scores
    /// are reused only while it is unchanged.
    fn identity(&self) -> Value;
}

/// Builds the scorers of stage kinds this crate cannot (they need a model).
pub trait ScorerFactory {
    /// The stage kinds it builds, e.g. `["perplexity"]`.
    fn kinds(&self) -> Vec<&'static str>;
    /// The scorer of `kind` from the stage's own parameters (the decision
    /// fields already removed); `base` is the recipe's directory.
    fn build(
        &self,
        kind: &str,
        params: &toml::Table,
        base: &Path,
    ) -> Result<Arc<dyn DocScorer>, String>;
}

/// How a ranked stage turns scores into a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankRule {
    /// Higher scores are better (a quality probability) or lower ones are
    /// (perplexity).
    pub higher_is_better: bool,
    /// Keep documents scoring at least this (higher-better) or at most this
    /// (lower-better).
    pub threshold: Option<f64>,
    /// Keep the best `top_percent` % of the corpus.
    pub top_percent: Option<f64>,
    /// Percentile cut points of the buckets, best first (CCNet: head below
    /// the 30th percentile of perplexity, middle below the 60th, tail the
    /// rest); percentiles count from the best end.
    pub cuts: Vec<f64>,
    /// Bucket names, one more than `cuts`.
    pub buckets: Vec<String>,
    /// Buckets kept when neither `threshold` nor `top_percent` is set.
    pub keep_buckets: Vec<String>,
}

impl RankRule {
    /// (keep, bucket, reason) for a document at `percentile` from the best
    /// end (0 = best) with `score`.
    pub fn decide(&self, score: f64, best_percentile: f64) -> (bool, &str, String) {
        let i = self
            .cuts
            .iter()
            .position(|&c| best_percentile < c)
            .unwrap_or(self.cuts.len());
        let bucket = self.buckets.get(i).map(String::as_str).unwrap_or("");
        let keep = if let Some(t) = self.threshold {
            if self.higher_is_better {
                score >= t
            } else {
                score <= t
            }
        } else if let Some(p) = self.top_percent {
            best_percentile < p
        } else {
            self.keep_buckets.iter().any(|b| b == bucket)
        };
        let reason = if keep {
            String::new()
        } else if self.threshold.is_some() {
            "below_threshold".into()
        } else if self.top_percent.is_some() {
            "outside_top_percent".into()
        } else {
            format!("bucket_{bucket}")
        };
        (keep, bucket, reason)
    }

    /// Checks ranges: (field, message) of the first bad one.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if let Some(p) = self.top_percent {
            if !(p > 0.0 && p <= 100.0) {
                return Err((
                    "top_percent".into(),
                    format!("{p} is out of range: must be in (0, 100], e.g. 10"),
                ));
            }
        }
        if self.threshold.is_some() && self.top_percent.is_some() {
            return Err((
                "threshold".into(),
                "set either threshold or top_percent, not both".into(),
            ));
        }
        if let Some(t) = self.threshold {
            if !t.is_finite() {
                return Err(("threshold".into(), format!("{t} must be a finite number")));
            }
        }
        let mut last = 0.0;
        for &c in &self.cuts {
            if !(c > last && c < 100.0) {
                return Err((
                    "cuts".into(),
                    format!(
                        "{:?} must rise strictly within (0, 100), e.g. [30, 60]",
                        self.cuts
                    ),
                ));
            }
            last = c;
        }
        for b in &self.keep_buckets {
            if !self.buckets.contains(b) {
                return Err((
                    "keep".into(),
                    format!("\"{b}\" is not a bucket: use {:?}", self.buckets),
                ));
            }
        }
        Ok(())
    }
}

/// A stage that ranks documents by a score.
#[derive(Clone)]
pub struct RankedStage {
    /// The stage kind as a recipe names it (`classifier`, `perplexity`).
    pub kind: &'static str,
    /// The stage's parameters as written (for `stage.json`).
    pub params: Value,
    pub rule: RankRule,
    pub scorer: Arc<dyn DocScorer>,
}

impl std::fmt::Debug for RankedStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RankedStage")
            .field("kind", &self.kind)
            .field("rule", &self.rule)
            .finish()
    }
}

impl RankedStage {
    pub fn config_json(&self) -> Value {
        json!({"params": self.params, "rule": self.rule, "scorer": self.scorer.identity()})
    }
}

/// The percentile of every score counted from the best end: the share
/// (0-100) of the corpus scoring strictly better. Ties share a percentile,
/// so equal documents are decided alike.
pub fn best_percentiles(scores: &[f64], higher_is_better: bool) -> Vec<f64> {
    let key = |s: f64| if higher_is_better { -s } else { s };
    let mut sorted: Vec<f64> = scores.iter().map(|&s| key(s)).collect();
    sorted.sort_by(f64::total_cmp);
    let n = scores.len().max(1) as f64;
    scores
        .iter()
        .map(|&s| {
            let k = key(s);
            let better = sorted.partition_point(|x| x.total_cmp(&k).is_lt());
            100.0 * better as f64 / n
        })
        .collect()
}

/// A fastText classifier's probability of one label as a scorer.
pub struct ClassifierScorer {
    pub model: FastText,
    pub label: String,
    /// SHA-256 of the `.bin`, so a retrained model rescores.
    pub sha256: String,
    pub path: String,
}

impl DocScorer for ClassifierScorer {
    fn score(&self, texts: &[&str]) -> Result<Vec<f64>, String> {
        use rayon::prelude::*;
        Ok(texts
            .par_iter()
            .map(|t| {
                // A newline ends a fastText line: score the document as one.
                let line = t.replace('\n', " ");
                self.model.score(&line, &self.label).unwrap_or(0.0) as f64
            })
            .collect())
    }

    fn identity(&self) -> Value {
        json!({"model": self.path, "sha256": self.sha256, "label": self.label})
    }
}

// The scoring and ranking phases of `run.rs` for ranked stages.

/// A ranked stage's scores of one part: `id \t score` lines, gzipped.
pub(super) fn ranked_part(stage: &Stage, docs: &[Document]) -> Result<Vec<u8>, CurateError> {
    let Some(r) = stage.kind.ranked() else {
        return Ok(Vec::new());
    };
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let scores = r
        .scorer
        .score(&texts)
        .map_err(|message| CurateError::Stage {
            stage: stage.name.clone(),
            message,
        })?;
    let mut text = String::new();
    for (doc, s) in docs.iter().zip(&scores) {
        // `{:?}` round-trips an f64 exactly; ids hold no tab or newline
        // once escaped as JSON strings.
        text.push_str(&format!(
            "{}\t{s:?}\n",
            Value::String(super::run::doc_id(doc))
        ));
    }
    Ok(files::gzip(text.as_bytes()))
}

/// (id as a JSON string, score) of every document of a ranked part.
fn read_scores(path: &Path) -> Result<Vec<(String, f64)>, CurateError> {
    let lines = files::read_gz_lines(path)?;
    lines
        .iter()
        .enumerate()
        .map(|(j, l)| {
            let bad = |reason: &str| CurateError::Attributes {
                path: path.to_path_buf(),
                line: j + 1,
                reason: reason.to_string(),
            };
            let (id, score) = l.rsplit_once('\t').ok_or_else(|| bad("no tab"))?;
            let id: String = serde_json::from_str(id).map_err(|_| bad("bad id"))?;
            let score: f64 = score.parse().map_err(|_| bad("bad score"))?;
            Ok((id, score))
        })
        .collect()
}

/// Phase 2b: every ranked stage's percentiles over the whole corpus,
/// written as its attributes. Holds one f64 per document while it ranks.
pub(super) fn rank(
    recipe: &Recipe,
    layout: &Layout,
    parts: &[usize],
) -> Result<Quantiles, CurateError> {
    let mut quantiles = Vec::new();
    for s in &recipe.stages {
        let Some(r) = s.kind.ranked() else { continue };
        let mut scores = Vec::new();
        for (spec, &n) in recipe.sources.iter().zip(parts) {
            for k in 0..n {
                let part = read_scores(&layout.scores(&s.name, &spec.domain, k))?;
                scores.extend(part.into_iter().map(|(_, v)| v));
            }
        }
        let pct = best_percentiles(&scores, r.rule.higher_is_better);
        quantiles.push((
            s.name.clone(),
            score_quantiles(&scores, r.rule.higher_is_better),
        ));
        let mut g = 0usize;
        for (spec, &n) in recipe.sources.iter().zip(parts) {
            for k in 0..n {
                let mut text = String::new();
                // Ids are read again rather than held for the whole corpus.
                for (id, score) in read_scores(&layout.scores(&s.name, &spec.domain, k))? {
                    let (keep, bucket, reason) = r.rule.decide(score, pct[g]);
                    let a = json!({"keep": keep, "reason": reason, "score": score, "percentile": pct[g], "bucket": bucket});
                    text.push_str(&json!({"id": id, "attributes": a}).to_string());
                    text.push('\n');
                    g += 1;
                }
                files::write_atomic(
                    &layout.attributes(&s.name, &spec.domain, k),
                    &files::gzip(text.as_bytes()),
                )?;
            }
        }
    }
    Ok(quantiles)
}

type Quantiles = Vec<(String, Vec<(f64, f64)>)>;

/// The score at fixed percentiles from the best end, for the report.
fn score_quantiles(scores: &[f64], higher_is_better: bool) -> Vec<(f64, f64)> {
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    if higher_is_better {
        sorted.reverse();
    }
    let n = sorted.len();
    [0.0, 10.0, 30.0, 50.0, 60.0, 90.0, 100.0]
        .iter()
        .filter(|_| n > 0)
        .map(|&p| {
            let i = ((p / 100.0 * n as f64) as usize).min(n - 1);
            (p, sorted[i])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_count_strictly_better_documents() {
        let s = [3.0, 1.0, 2.0, 2.0, 5.0];
        assert_eq!(
            best_percentiles(&s, false),
            vec![60.0, 0.0, 20.0, 20.0, 80.0]
        );
        assert_eq!(
            best_percentiles(&s, true),
            vec![20.0, 80.0, 40.0, 40.0, 0.0]
        );
    }

    #[test]
    fn ccnet_buckets_and_top_percent() {
        let mut rule = RankRule {
            higher_is_better: false,
            threshold: None,
            top_percent: None,
            cuts: vec![30.0, 60.0],
            buckets: vec!["head".into(), "middle".into(), "tail".into()],
            keep_buckets: vec!["head".into()],
        };
        assert_eq!(rule.decide(10.0, 29.9).1, "head");
        assert_eq!(rule.decide(10.0, 30.0).1, "middle");
        let (keep, bucket, reason) = rule.decide(10.0, 75.0);
        assert_eq!(
            (keep, bucket, reason.as_str()),
            (false, "tail", "bucket_tail")
        );
        rule.top_percent = Some(10.0);
        assert!(rule.decide(0.0, 9.0).0 && !rule.decide(0.0, 10.0).0);
        assert!(rule.validate().is_ok());
        rule.cuts = vec![60.0, 30.0];
        assert!(rule.validate().is_err());
    }
}
