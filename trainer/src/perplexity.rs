//! Per-document perplexity under a Kiln checkpoint: the `perplexity` stage
//! of `kiln curate` (CCNet's head / middle / tail buckets, scored in the
//! checkpoint's own tokens rather than CCNet's words).
//!
//! A document is `<|endoftext|>` followed by its tokens, as the training
//! stream separates documents; every token after the first is scored once.
//! Longer documents are cut into windows of `seq_len` targets, each read
//! from its own start (no context carried across windows). Perplexity is
//! `exp(mean nll)` over the document's tokens.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::backend::Flex;
use kiln_data::curate::{DocScorer, ScorerFactory};
use kiln_data::instruct::IGNORE;
use kiln_data::{Batch, Tokenizer};
use kiln_models::{Decoder, LanguageModel};
use serde_json::{json, Value};

use crate::loss::token_nll;
use crate::objective::batch_tensors;
use crate::session;

/// What a document scores when it has no token to score: the worst.
const NO_TOKENS: f64 = f64::MAX;

pub struct PerplexityScorer {
    model: Mutex<Decoder<Flex>>,
    tokenizer: Tokenizer,
    seq_len: usize,
    batch_rows: usize,
    identity: Value,
}

/// One window of one document: inputs, targets (IGNORE-padded) and owner.
struct Row {
    doc: usize,
    inputs: Vec<u32>,
    targets: Vec<u32>,
}

fn rows_of(doc: usize, ids: &[u32], seq_len: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut start = 0;
    while start + 1 < ids.len() {
        let end = (start + seq_len).min(ids.len() - 1);
        let mut inputs = ids[start..end].to_vec();
        let mut targets = ids[start + 1..end + 1].to_vec();
        inputs.resize(seq_len, 0);
        targets.resize(seq_len, IGNORE);
        rows.push(Row {
            doc,
            inputs,
            targets,
        });
        start = end;
    }
    rows
}

impl PerplexityScorer {
    /// Loads `checkpoint`; `data_tokenizer` (a tokenizer.json, or a prepared
    /// data directory holding one) must then be the checkpoint's.
    pub fn load(
        checkpoint: &Path,
        data_tokenizer: Option<&Path>,
        batch_rows: usize,
    ) -> Result<PerplexityScorer, String> {
        let ckpt = session::load_checkpoint(checkpoint).map_err(|e| e.to_string())?;
        let ours = kiln_data::tokenizer_hash(&ckpt.tokenizer).map_err(|e| e.to_string())?;
        if let Some(p) = data_tokenizer {
            let file = if p.is_dir() {
                p.join("tokenizer.json")
            } else {
                p.to_path_buf()
            };
            let theirs = Tokenizer::from_file(&file).map_err(|e| e.to_string())?;
            let theirs = kiln_data::tokenizer_hash(&theirs).map_err(|e| e.to_string())?;
            if theirs != ours {
                return Err(format!(
                    "{} has another tokenizer (SHA-256 {ours}) than the data's {} ({theirs}): \
                     score with a checkpoint trained on the data's tokenizer",
                    ckpt.dir.display(),
                    file.display()
                ));
            }
        }
        let manifest = std::fs::read(ckpt.dir.join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|m| m["files"].clone())
            .unwrap_or(Value::Null);
        let model =
            session::build_model::<Flex>(&ckpt, &Default::default()).map_err(|e| e.to_string())?;
        let seq_len = ckpt.config.model.max_seq_len;
        Ok(PerplexityScorer {
            model: Mutex::new(model),
            tokenizer: ckpt.tokenizer,
            seq_len,
            batch_rows: batch_rows.max(1),
            identity: json!({
                "checkpoint": ckpt.dir.display().to_string(),
                "files": manifest,
                "tokenizer": ours,
                "seq_len": seq_len,
            }),
        })
    }

    /// Sums of nll and counts of scored tokens per document.
    fn nll_sums(&self, rows: &[Row], docs: usize) -> Vec<(f64, u64)> {
        let mut sums = vec![(0.0f64, 0u64); docs];
        let model = self.model.lock().unwrap_or_else(|e| e.into_inner());
        let dev = Default::default();
        for chunk in rows.chunks(self.batch_rows) {
            let batch = Batch {
                inputs: chunk.iter().flat_map(|r| r.inputs.clone()).collect(),
                targets: chunk.iter().flat_map(|r| r.targets.clone()).collect(),
                batch_size: chunk.len(),
                seq_len: self.seq_len,
                origins: Vec::new(),
            };
            let (x, y) = batch_tensors::<Flex>(&batch, &dev); // [R, S], [R, S]
            let nll = token_nll(model.forward(x), y, true); // [R, S], 0 where ignored
            let nll: Vec<f32> = nll.into_data().to_vec().unwrap_or_default();
            for (r, row) in chunk.iter().enumerate() {
                let scored = row.targets.iter().filter(|&&t| t != IGNORE).count();
                let s: f64 = nll[r * self.seq_len..(r + 1) * self.seq_len]
                    .iter()
                    .map(|&v| v as f64)
                    .sum();
                sums[row.doc].0 += s;
                sums[row.doc].1 += scored as u64;
            }
        }
        sums
    }
}

impl DocScorer for PerplexityScorer {
    fn score(&self, texts: &[&str]) -> Result<Vec<f64>, String> {
        let eot = self.tokenizer.eot_id();
        let encoded = self
            .tokenizer
            .encode_each(texts)
            .map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        for (d, ids) in encoded.iter().enumerate() {
            let mut full = Vec::with_capacity(ids.len() + 1);
            full.push(eot);
            full.extend_from_slice(ids);
            rows.extend(rows_of(d, &full, self.seq_len));
        }
        Ok(self
            .nll_sums(&rows, texts.len())
            .into_iter()
            .map(|(s, n)| {
                if n == 0 {
                    NO_TOKENS
                } else {
                    (s / n as f64).exp()
                }
            })
            .collect())
    }

    fn identity(&self) -> Value {
        self.identity.clone()
    }
}

/// The stage kinds only the trainer can build: `perplexity`.
pub struct ModelScorers;

impl ScorerFactory for ModelScorers {
    fn kinds(&self) -> Vec<&'static str> {
        vec!["perplexity"]
    }

    fn build(
        &self,
        _kind: &str,
        params: &toml::Table,
        base: &Path,
    ) -> Result<Arc<dyn DocScorer>, String> {
        let path = |key: &str| -> Result<Option<PathBuf>, String> {
            match params.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(base.join(s))),
                Some(other) => Err(format!("`{key}` = {other} must be a path string")),
            }
        };
        for k in params.keys() {
            if !["checkpoint", "tokenizer", "batch_rows"].contains(&k.as_str()) {
                return Err(format!(
                    "unknown field `{k}`: a perplexity stage takes checkpoint, tokenizer, \
                     batch_rows, cuts, keep, threshold or top_percent"
                ));
            }
        }
        let checkpoint = path("checkpoint")?.ok_or(
            "no `checkpoint`: set checkpoint = \"runs/proxy\" (a Kiln run or step directory)",
        )?;
        let batch_rows = match params.get("batch_rows") {
            None => 16,
            Some(toml::Value::Integer(n)) if *n > 0 => *n as usize,
            Some(other) => {
                return Err(format!("`batch_rows` = {other} must be a positive integer"))
            }
        };
        let scorer =
            PerplexityScorer::load(&checkpoint, path("tokenizer")?.as_deref(), batch_rows)?;
        Ok(Arc::new(scorer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_score_every_token_once() {
        let ids: Vec<u32> = (0..10).collect();
        let rows = rows_of(0, &ids, 4);
        let targets: Vec<u32> = rows
            .iter()
            .flat_map(|r| r.targets.iter().copied().filter(|&t| t != IGNORE))
            .collect();
        assert_eq!(targets, (1..10).collect::<Vec<_>>());
        assert_eq!(rows.len(), 3);
        assert!(rows_of(0, &[5], 4).is_empty());
    }
}
