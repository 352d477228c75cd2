//! `kiln distill cache TEACHER DATA --out DIR`: runs the teacher forward
//! once over every train window of a prepared dataset and writes its sparse
//! distributions ([`crate::distill_cache`]). Shards are written atomically
//! and a shard already on disk with the right header and size is kept, so
//! an interrupted cache continues where it stopped.

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_data::{tokenizer_hash, Dataset, Manifest, ShardStream};
use kiln_models::{FusedOps, LanguageModel};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::distill_cache::{
    encode, header, sparse_row, CacheDomain, CacheManifest, CacheShard, Layout, FORMAT,
    MANIFEST_FILE, VERSION, WINDOWS_PER_SHARD,
};
use crate::error::{Result, TrainerError};
use crate::fsutil::write_atomic;
use crate::session::{build_model, LoadedCheckpoint};

#[derive(Debug, Clone)]
pub struct CacheOptions {
    pub top_k: usize,
    pub samples: usize,
    pub temperature: f64,
    pub seed: u64,
    /// Window length; `None`: the teacher's own.
    pub seq_len: Option<usize>,
    /// Windows per teacher forward.
    pub batch_size: usize,
    /// Per domain, the only windows to cache (`--windows-of CONFIG`);
    /// `None`: every window.
    pub only: Option<std::collections::BTreeMap<String, Vec<u64>>>,
}

impl CacheOptions {
    pub fn validate(&self) -> Result<()> {
        if self.top_k == 0 && self.samples == 0 {
            return Err(TrainerError::invalid(
                "--top-k",
                "and --samples are both 0: keep at least one (e.g. --top-k 16 --samples 16)",
            ));
        }
        if self.samples > u16::MAX as usize {
            return Err(TrainerError::invalid(
                "--samples",
                format!("{} exceeds {}", self.samples, u16::MAX),
            ));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(TrainerError::invalid(
                "--temperature",
                format!("{} must be > 0", self.temperature),
            ));
        }
        if self.batch_size == 0 {
            return Err(TrainerError::invalid("--batch-size", "must be at least 1"));
        }
        Ok(())
    }
}

/// The SHA-256 of a checkpoint's weights, from its manifest: what a cache
/// records of its teacher.
pub fn weights_sha256(ckpt_dir: &Path) -> Result<String> {
    let path = ckpt_dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainerError::io(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| TrainerError::checkpoint(&path, format!("not JSON ({e})")))?;
    v["files"][crate::session::MODEL_FILE]["sha256"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            TrainerError::checkpoint(&path, "lists no model weights: cache a full checkpoint")
        })
}

/// splitmix64: the per-window seed of the sampled draws.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Checks the teacher and the data belong together; the dataset, opened.
fn open_data(ckpt: &LoadedCheckpoint, data: &Path) -> Result<(Dataset, String)> {
    let ours = tokenizer_hash(&ckpt.tokenizer)?;
    let manifest = Manifest::read(data)?;
    if manifest.tokenizer_sha256 != ours {
        return Err(TrainerError::invalid(
            data.display().to_string(),
            format!(
                "was prepared with another tokenizer (SHA-256 {}) than the teacher {} ({ours}): cache data prepared with the teacher's tokenizer",
                manifest.tokenizer_sha256,
                ckpt.dir.display()
            ),
        ));
    }
    Ok((Dataset::open(data, Some(&ours))?, ours))
}

/// The windows (per domain name, ascending) a run of `cfg` draws in its
/// `training.max_steps` steps: what `--windows-of CONFIG` caches.
pub fn windows_of(
    cfg: &mut crate::config::RunConfig,
    tokenizer: &kiln_data::Tokenizer,
) -> Result<std::collections::BTreeMap<String, Vec<u64>>> {
    let tmp = std::env::temp_dir();
    let data = crate::data_setup::load_run_data(cfg, &tmp, Some(tokenizer))?;
    let crate::data_setup::TrainStream::Mixture(mut sampler) = data.train else {
        return Err(TrainerError::invalid(
            "--windows-of",
            "the config does not train on prepared shards (data.datasets): a cache is read by window",
        ));
    };
    let names = sampler.domain_names();
    let seq = cfg.seq_len() as u64;
    let mut sets: Vec<std::collections::BTreeSet<u64>> = vec![Default::default(); names.len()];
    for _ in 0..cfg.training.max_steps as usize * cfg.training.grad_accum {
        for o in sampler.next_batch().origins {
            sets[o.domain].insert(o.start / seq);
        }
    }
    Ok(names
        .into_iter()
        .zip(sets)
        .map(|(n, s)| (n, s.into_iter().collect()))
        .collect())
}

/// Builds the cache of `teacher` over `data` into `out` on backend `B`.
pub fn build_cache<B: FusedOps>(
    ckpt: &LoadedCheckpoint,
    data: &Path,
    out: &Path,
    opts: &CacheOptions,
    device: &B::Device,
) -> Result<CacheManifest> {
    opts.validate()?;
    let (dataset, tok_sha) = open_data(ckpt, data)?;
    let model_cfg = &ckpt.config.model;
    let seq_len = opts.seq_len.unwrap_or(ckpt.config.seq_len());
    if seq_len == 0 || seq_len > model_cfg.max_seq_len {
        return Err(TrainerError::invalid(
            "--seq-len",
            format!(
                "{seq_len} must be in 1..={} (the teacher's max_seq_len)",
                model_cfg.max_seq_len
            ),
        ));
    }
    let layout = Layout::for_vocab(model_cfg.vocab_size, opts.top_k, opts.samples);
    let model = build_model::<B>(ckpt, device)?;
    std::fs::create_dir_all(out).map_err(|e| TrainerError::io(out, e))?;
    let lists: Vec<Vec<u64>> = dataset
        .domains
        .iter()
        .map(|d| {
            let all = d.train.len().saturating_sub(1) / seq_len as u64;
            match &opts.only {
                Some(only) => only.get(&d.name).cloned().unwrap_or_default(),
                None => (0..all).collect(),
            }
        })
        .collect();
    let total: u64 = lists.iter().map(|l| l.len() as u64).sum();
    let bar = ProgressBar::new(total * seq_len as u64);
    bar.set_style(
        ProgressStyle::with_template("cache {bar:30} {human_pos}/{human_len} tokens, {per_sec} [{elapsed_precise}<{eta_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut domains = Vec::new();
    let mut bytes = 0u64;
    for (di, (d, list)) in dataset.domains.iter().zip(&lists).enumerate() {
        let dir = out.join(&d.name);
        std::fs::create_dir_all(&dir).map_err(|e| TrainerError::io(&dir, e))?;
        let mut shards = Vec::new();
        for (i, chunk) in list.chunks(WINDOWS_PER_SHARD as usize).enumerate() {
            let file = format!("cache-{i:05}.bin");
            let path = dir.join(&file);
            let head = header(&layout, seq_len, chunk);
            let size = (head.len() + chunk.len() * seq_len * layout.record_bytes()) as u64;
            if !shard_done(&path, &head, size) {
                let seed = mix(opts.seed ^ mix(di as u64));
                let body = shard_bytes(
                    &model, &d.train, chunk, seq_len, &layout, opts, seed, device, &bar,
                )?;
                let mut all = head;
                all.extend_from_slice(&body);
                write_atomic(&path, &all)?;
            } else {
                bar.inc((chunk.len() * seq_len) as u64);
            }
            bytes += size;
            shards.push(CacheShard {
                file,
                windows: chunk.len() as u64,
            });
        }
        domains.push(CacheDomain {
            name: d.name.clone(),
            train_tokens: d.train.len(),
            data_windows: d.train.len().saturating_sub(1) / seq_len as u64,
            windows: list.len() as u64,
            shards,
        });
    }
    bar.finish_and_clear();
    let manifest = CacheManifest {
        format: FORMAT.into(),
        version: VERSION,
        teacher: std::fs::canonicalize(&ckpt.dir).unwrap_or_else(|_| ckpt.dir.clone()),
        teacher_sha256: weights_sha256(&ckpt.dir)?,
        tokenizer_sha256: tok_sha,
        data: std::fs::canonicalize(data).unwrap_or_else(|_| PathBuf::from(data)),
        data_fingerprint: dataset.manifest.fingerprint.clone(),
        vocab_size: model_cfg.vocab_size,
        seq_len,
        temperature: opts.temperature,
        seed: opts.seed,
        layout,
        bytes_per_token: bytes as f64 / (total * seq_len as u64).max(1) as f64,
        domains,
    };
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| TrainerError::Internal(format!("cache manifest: {e}")))?;
    write_atomic(&out.join(MANIFEST_FILE), text.as_bytes())?;
    Ok(manifest)
}

/// A shard left by an interrupted cache with the header and size it should
/// have (written by rename, so never torn).
fn shard_done(path: &Path, head: &[u8], size: u64) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let mut got = vec![0u8; head.len()];
    meta.len() == size
        && std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut got))
            .is_ok()
        && got == head
}

/// Records of `windows` of `tokens`: the teacher forward
/// `opts.batch_size` windows at a time, the sparse rows in parallel (each
/// window draws from its own seeded stream, so the bytes do not depend on
/// the thread count or batch size).
#[allow(clippy::too_many_arguments)]
fn shard_bytes<B: FusedOps>(
    model: &kiln_models::Decoder<B>,
    tokens: &ShardStream,
    windows: &[u64],
    seq_len: usize,
    layout: &Layout,
    opts: &CacheOptions,
    seed: u64,
    device: &B::Device,
    bar: &ProgressBar,
) -> Result<Vec<u8>> {
    let rec = layout.record_bytes() * seq_len;
    let mut body = Vec::with_capacity(windows.len() * rec);
    let mut window = Vec::with_capacity(seq_len + 1);
    for batch in windows.chunks(opts.batch_size) {
        let b = batch.len();
        let mut ids = Vec::with_capacity(b * seq_len);
        for &w in batch {
            window.clear();
            tokens.extend_into(w * seq_len as u64, seq_len as u64, &mut window);
            ids.extend(window.iter().map(|&t| t as i64));
        }
        let x = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, seq_len]), device);
        let logits: Vec<f32> = model
            .forward(x)
            .into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|e| TrainerError::Internal(format!("teacher logits: {e:?}")))?;
        let v = logits.len() / (b * seq_len);
        let rows: Vec<Vec<u8>> = (0..b)
            .into_par_iter()
            .map(|i| {
                let mut rng = ChaCha8Rng::seed_from_u64(mix(seed ^ mix(batch[i])));
                let mut out = Vec::with_capacity(rec);
                for p in 0..seq_len {
                    let at = (i * seq_len + p) * v;
                    let row = sparse_row(&logits[at..at + v], opts.temperature, layout, &mut rng);
                    encode(&row, layout, &mut out);
                }
                out
            })
            .collect();
        rows.iter().for_each(|r| body.extend_from_slice(r));
        bar.inc((b * seq_len) as u64);
    }
    Ok(body)
}
