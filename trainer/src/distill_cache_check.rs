//! `[distill] cache`: a cache is used only by a run it was made for (the
//! same tokenizer, data, window length and temperature); anything else is
//! one line naming what differs.

use std::path::Path;
use std::sync::Arc;

use kiln_data::{tokenizer_hash, Manifest};

use crate::config::{DistillConfig, RunConfig};
use crate::data_setup::{RunData, TrainStream};
use crate::distill::CachedTeacher;
use crate::distill_cache::{CacheManifest, CacheReader, CacheTargets};
use crate::error::{Result, TrainerError};

fn bad(dir: &Path, what: String) -> TrainerError {
    TrainerError::invalid("distill.cache", format!("{} {what}", dir.display()))
}

/// Checks the cache at `dir` against the run and maps it.
pub fn open_for_run(
    cfg: &RunConfig,
    d: &DistillConfig,
    dir: &Path,
    data: &RunData,
) -> Result<CachedTeacher> {
    let m = CacheManifest::read(dir)?;
    let ours = tokenizer_hash(&data.tokenizer)?;
    if m.tokenizer_sha256 != ours {
        return Err(bad(dir, format!(
            "was made with another tokenizer (SHA-256 {}) than this run's ({ours}): cache this run's data with a teacher of its tokenizer",
            m.tokenizer_sha256
        )));
    }
    if m.seq_len != cfg.seq_len() {
        return Err(bad(
            dir,
            format!(
                "holds windows of {} tokens, this run trains on {}: rebuild it with --seq-len {}",
                m.seq_len,
                cfg.seq_len(),
                cfg.seq_len()
            ),
        ));
    }
    if m.vocab_size != cfg.model.vocab_size {
        return Err(bad(dir, format!(
            "has a vocabulary of {}, the student {}: the teacher and student vocabularies must match",
            m.vocab_size, cfg.model.vocab_size
        )));
    }
    if (m.temperature - d.temperature).abs() > 1e-12 {
        return Err(bad(dir, format!(
            "was made at temperature {}, not distill.temperature {}: set distill.temperature = {} or rebuild with --temperature",
            m.temperature, d.temperature, m.temperature
        )));
    }
    let targets = d.cache_targets()?;
    let k = match targets {
        CacheTargets::Sampled => m.layout.samples,
        CacheTargets::TopK => m.layout.top_k,
    };
    if k == 0 {
        return Err(bad(
            dir,
            format!(
            "holds no {} targets: set distill.cache_targets to the other kind or rebuild with it",
            d.cache_targets
        ),
        ));
    }
    let TrainStream::Mixture(sampler) = &data.train else {
        return Err(TrainerError::invalid(
            "distill.cache",
            "reads prepared shards by window: train on data.datasets (`kiln data prepare`), not in-memory text or instruction data",
        ));
    };
    let fingerprints: Vec<String> = cfg
        .data
        .datasets
        .iter()
        .filter_map(|p| Manifest::read(p).ok().map(|m| m.fingerprint))
        .collect();
    if !fingerprints.contains(&m.data_fingerprint) {
        return Err(bad(dir, format!(
            "was made from the data {} (fingerprint {}), not this run's data.datasets (fingerprints {}): cache this run's data",
            m.data.display(),
            m.data_fingerprint,
            fingerprints.join(", ")
        )));
    }
    let state = sampler.state();
    for (name, &tokens) in state.domains.iter().zip(&state.domain_tokens) {
        let cached = m.domains.iter().find(|c| &c.name == name);
        if cached.map(|c| c.train_tokens) != Some(tokens) {
            return Err(bad(dir, format!(
                "does not hold domain \"{name}\" of {tokens} train tokens as this run reads it: cache this run's data"
            )));
        }
    }
    let reader = CacheReader::open(dir, m, &state.domains)?;
    // Replays the rest of the run's windows: a partial cache (`--windows-of`)
    // must hold every one.
    let total = cfg.training.max_steps as usize * cfg.training.grad_accum;
    let mut probe = sampler.clone();
    for _ in (state.batches_drawn as usize).min(total)..total {
        for o in probe.next_batch().origins {
            if !reader.has(o.domain, o.start) {
                return Err(bad(dir, format!(
                    "lacks window {} of domain \"{}\" that this run draws (it holds the windows of another run's steps): rebuild it with --windows-of this config, or without --windows-of",
                    o.start / cfg.seq_len() as u64,
                    state.domains[o.domain]
                )));
            }
        }
    }
    Ok(CachedTeacher {
        reader: Arc::new(reader),
        targets,
    })
}
