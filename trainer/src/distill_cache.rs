//! The offline teacher cache (`kiln distill cache`, `[distill] cache`):
//! sparse teacher distributions for every position of a prepared dataset's
//! train windows, so a student run reads them instead of running the teacher.
//!
//! Layout of a cache directory:
//! - `cache.json`: the [`CacheManifest`] (teacher, tokenizer and data it was
//!   made from, the record layout, one entry per domain and shard), written
//!   last, so a directory without it is an unfinished cache;
//! - `DOMAIN/cache-NNNNN.bin`: shards of up to [`WINDOWS_PER_SHARD`]
//!   windows, each a 48-byte header (magic, version, layout, window count),
//!   the window indices (u64, ascending), then `seq_len` fixed-size records
//!   per window. A cache holds every window of the data, or only those a
//!   given run draws (`--windows-of CONFIG`): the teacher's cost is then
//!   the run's tokens, not the corpus's.
//!
//! Windows are those the prepared-shard sampler draws (`MixtureSampler`):
//! window `w` of a domain is the `seq_len + 1` train tokens from `w *
//! seq_len`, so a training row maps to its cached positions by its start
//! alone, and the teacher saw exactly the student's context.
//!
//! A record holds, for one position, the teacher's `top_k` most likely ids
//! with their log-probabilities (at the cache's temperature), then `samples`
//! slots of ids drawn from the teacher's distribution (arXiv 2503.16870,
//! "random sampling KD": an unbiased estimate of the forward KL and its
//! gradient, where renormalised top-k is biased) with their log-probability
//! and draw count; repeated draws share a slot, unused slots have count 0.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

pub const MAGIC: &[u8; 8] = b"KILNKDC\0";
pub const VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "cache.json";
pub const FORMAT: &str = "kiln-distill-cache";
pub const HEADER_BYTES: usize = 48;
/// 256 windows of 256 tokens with k = 16, 16 samples: about 14 MB a shard.
pub const WINDOWS_PER_SHARD: u64 = 256;

/// The fixed size of one position's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// 2 when the vocabulary fits u16, else 4.
    pub id_bytes: usize,
    pub top_k: usize,
    pub samples: usize,
}

impl Layout {
    pub fn for_vocab(vocab: usize, top_k: usize, samples: usize) -> Layout {
        Layout {
            id_bytes: if vocab <= 1 << 16 { 2 } else { 4 },
            top_k: top_k.min(vocab),
            samples,
        }
    }

    /// Bytes of one record: `top_k` x (id, f32 log p), `samples` x (id,
    /// f32 log p, u16 count).
    pub fn record_bytes(&self) -> usize {
        self.top_k * (self.id_bytes + 4) + self.samples * (self.id_bytes + 6)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheShard {
    pub file: String,
    pub windows: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheDomain {
    pub name: String,
    pub train_tokens: u64,
    /// Windows of `seq_len + 1` tokens in the domain's train stream.
    pub data_windows: u64,
    /// Windows cached (all of them, or those `--windows-of` named).
    pub windows: u64,
    pub shards: Vec<CacheShard>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheManifest {
    pub format: String,
    pub version: u32,
    pub teacher: PathBuf,
    /// SHA-256 of the teacher's `model.safetensors` (its checkpoint manifest).
    pub teacher_sha256: String,
    pub tokenizer_sha256: String,
    pub data: PathBuf,
    /// The prepared dataset's own fingerprint (its `manifest.json`).
    pub data_fingerprint: String,
    pub vocab_size: usize,
    pub seq_len: usize,
    pub temperature: f64,
    pub seed: u64,
    pub layout: Layout,
    /// Cache bytes per cached token (headers included).
    pub bytes_per_token: f64,
    pub domains: Vec<CacheDomain>,
}

impl CacheManifest {
    pub fn read(dir: &Path) -> Result<CacheManifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                TrainerError::invalid(
                    "distill.cache",
                    format!(
                        "{} has no {MANIFEST_FILE}: not a finished teacher cache; run `kiln distill cache TEACHER DATA --out {}`",
                        dir.display(),
                        dir.display()
                    ),
                )
            } else {
                TrainerError::io(&path, e)
            }
        })?;
        let m: CacheManifest = serde_json::from_str(&text).map_err(|e| {
            TrainerError::checkpoint(
                &path,
                format!("not a teacher cache manifest ({e}); rebuild it with `kiln distill cache`"),
            )
        })?;
        if m.format != FORMAT || m.version != VERSION {
            return Err(TrainerError::checkpoint(
                &path,
                format!(
                    "format {} version {} is not {FORMAT} version {VERSION}; rebuild it with `kiln distill cache`",
                    m.format, m.version
                ),
            ));
        }
        Ok(m)
    }
}

/// A shard's header: magic, version, layout, `seq_len`, window count; then
/// the window indices.
pub fn header(layout: &Layout, seq_len: usize, windows: &[u64]) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_BYTES);
    h.extend_from_slice(MAGIC);
    for v in [
        VERSION,
        layout.id_bytes as u32,
        layout.top_k as u32,
        layout.samples as u32,
        seq_len as u32,
        0,
    ] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&(windows.len() as u64).to_le_bytes());
    h.extend_from_slice(&0u64.to_le_bytes());
    for w in windows {
        h.extend_from_slice(&w.to_le_bytes());
    }
    h
}

/// One position's sparse teacher distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseRow {
    /// `(id, log p)`, most likely first.
    pub top: Vec<(u32, f32)>,
    /// `(id, log p, draws)`, ids ascending; `samples` slots, unused ones 0.
    pub sampled: Vec<(u32, f32, u16)>,
}

/// The sparse distribution of one row of teacher logits at `temperature`:
/// log-softmax in f64, the top `layout.top_k`, and `layout.samples` ids
/// drawn from the distribution with `rng`.
pub fn sparse_row<R: Rng>(
    logits: &[f32],
    temperature: f64,
    layout: &Layout,
    rng: &mut R,
) -> SparseRow {
    let inv_t = 1.0 / temperature;
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &z| m.max(z as f64 * inv_t));
    let lse = max
        + logits
            .iter()
            .map(|&z| (z as f64 * inv_t - max).exp())
            .sum::<f64>()
            .ln();
    let logp: Vec<f64> = logits.iter().map(|&z| z as f64 * inv_t - lse).collect();
    let k = layout.top_k.min(logp.len());
    let mut order: Vec<u32> = (0..logp.len() as u32).collect();
    let by_p = |a: &u32, b: &u32| {
        logp[*b as usize]
            .total_cmp(&logp[*a as usize])
            .then(a.cmp(b))
    };
    if k > 0 && k < order.len() {
        order.select_nth_unstable_by(k - 1, by_p);
    }
    order.truncate(k);
    order.sort_by(by_p);
    let top = order
        .iter()
        .map(|&i| (i, logp[i as usize] as f32))
        .collect();
    // Inverse-CDF draws, sorted so that repeats are neighbours.
    let mut cdf = Vec::with_capacity(logp.len());
    let mut acc = 0.0f64;
    for &l in &logp {
        acc += l.exp();
        cdf.push(acc);
    }
    let mut draws: Vec<u32> = (0..layout.samples)
        .map(|_| {
            let u = rng.random::<f64>() * acc;
            cdf.partition_point(|&c| c <= u).min(logp.len() - 1) as u32
        })
        .collect();
    draws.sort_unstable();
    let mut sampled: Vec<(u32, f32, u16)> = Vec::with_capacity(layout.samples);
    for id in draws {
        match sampled.last_mut() {
            Some(last) if last.0 == id => last.2 += 1,
            _ => sampled.push((id, logp[id as usize] as f32, 1)),
        }
    }
    sampled.resize(layout.samples, (0, 0.0, 0));
    SparseRow { top, sampled }
}

fn put_id(out: &mut Vec<u8>, id: u32, bytes: usize) {
    out.extend_from_slice(&id.to_le_bytes()[..bytes]);
}

/// Appends `row` as one record of `layout`.
pub fn encode(row: &SparseRow, layout: &Layout, out: &mut Vec<u8>) {
    for &(id, lp) in &row.top {
        put_id(out, id, layout.id_bytes);
        out.extend_from_slice(&lp.to_le_bytes());
    }
    for &(id, lp, n) in &row.sampled {
        put_id(out, id, layout.id_bytes);
        out.extend_from_slice(&lp.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
    }
}

fn id_at(b: &[u8], bytes: usize) -> u32 {
    let mut w = [0u8; 4];
    w[..bytes].copy_from_slice(&b[..bytes]);
    u32::from_le_bytes(w)
}

fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads one record back.
pub fn decode(rec: &[u8], layout: &Layout) -> SparseRow {
    let ib = layout.id_bytes;
    let top = rec[..layout.top_k * (ib + 4)]
        .chunks_exact(ib + 4)
        .map(|c| (id_at(c, ib), f32_at(&c[ib..])))
        .collect();
    let sampled = rec[layout.top_k * (ib + 4)..]
        .chunks_exact(ib + 6)
        .map(|c| {
            (
                id_at(c, ib),
                f32_at(&c[ib..]),
                u16::from_le_bytes([c[ib + 4], c[ib + 5]]),
            )
        })
        .collect();
    SparseRow { top, sampled }
}

/// Which of a record's targets the student learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheTargets {
    /// The drawn ids, weighted by their draw counts: unbiased.
    Sampled,
    /// The top-k ids, renormalised over the k.
    TopK,
}

/// Per position: `k` ids, their target weights (summing to 1 over a
/// position) and the teacher's log-probability of each (the constant part
/// of the KL; 0 where the weight is 0).
#[derive(Debug, Clone, PartialEq)]
pub struct SparseTargets {
    pub k: usize,
    pub ids: Vec<i64>,
    pub weights: Vec<f32>,
    pub teacher_logp: Vec<f32>,
}

impl SparseTargets {
    pub fn with_capacity(k: usize, rows: usize) -> SparseTargets {
        SparseTargets {
            k,
            ids: Vec::with_capacity(k * rows),
            weights: Vec::with_capacity(k * rows),
            teacher_logp: Vec::with_capacity(k * rows),
        }
    }

    /// Appends one position's targets.
    pub fn push(&mut self, row: &SparseRow, which: CacheTargets) {
        match which {
            CacheTargets::TopK => {
                let max = row
                    .top
                    .iter()
                    .fold(f64::NEG_INFINITY, |m, t| m.max(t.1 as f64));
                let lse = max
                    + row
                        .top
                        .iter()
                        .map(|t| (t.1 as f64 - max).exp())
                        .sum::<f64>()
                        .ln();
                for &(id, lp) in &row.top {
                    let l = lp as f64 - lse;
                    self.ids.push(id as i64);
                    self.weights.push(l.exp() as f32);
                    self.teacher_logp.push(l as f32);
                }
            }
            CacheTargets::Sampled => {
                let n: u32 = row.sampled.iter().map(|s| s.2 as u32).sum();
                for &(id, lp, c) in &row.sampled {
                    self.ids.push(id as i64);
                    self.weights.push(c as f32 / n.max(1) as f32);
                    self.teacher_logp.push(if c == 0 { 0.0 } else { lp });
                }
            }
        }
    }
}

/// Per sampler domain: the mapped shards, and where each cached window is
/// (shard, byte offset of its first record).
struct MappedDomain {
    maps: Vec<Mmap>,
    at: std::collections::HashMap<u64, (usize, usize)>,
}

/// A verified cache, mapped, for a run whose sampler has the domains
/// `domains` (in its order).
pub struct CacheReader {
    pub manifest: CacheManifest,
    domains: Vec<MappedDomain>,
}

impl CacheReader {
    /// Maps every shard of the domains the sampler draws from, checking
    /// each header and size against the manifest.
    pub fn open(dir: &Path, manifest: CacheManifest, domains: &[String]) -> Result<CacheReader> {
        let by_name: BTreeMap<&str, &CacheDomain> = manifest
            .domains
            .iter()
            .map(|d| (d.name.as_str(), d))
            .collect();
        let rec = manifest.layout.record_bytes() * manifest.seq_len;
        let mut shards = Vec::new();
        for name in domains {
            let Some(d) = by_name.get(name.as_str()) else {
                return Err(TrainerError::invalid(
                    "distill.cache",
                    format!(
                        "{} has no domain \"{name}\" (it was made from {}): cache the run's data",
                        dir.display(),
                        manifest.data.display()
                    ),
                ));
            };
            let mut mapped = MappedDomain {
                maps: Vec::new(),
                at: std::collections::HashMap::new(),
            };
            for s in &d.shards {
                let path = dir.join(&d.name).join(&s.file);
                let torn = || {
                    TrainerError::checkpoint(
                        &path,
                        "header or size does not match cache.json (a torn or foreign shard): rebuild the cache with `kiln distill cache`",
                    )
                };
                let file = File::open(&path).map_err(|e| TrainerError::io(&path, e))?;
                // SAFETY: read-only; shards are written once by rename and
                // never modified in place (as the token shards).
                let map = unsafe { Mmap::map(&file) }.map_err(|e| TrainerError::io(&path, e))?;
                let n = s.windows as usize;
                let table = HEADER_BYTES + 8 * n;
                if map.len() < table {
                    return Err(torn());
                }
                let ids: Vec<u64> = map[HEADER_BYTES..table]
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect();
                let want = header(&manifest.layout, manifest.seq_len, &ids);
                if map[..table] != want[..] || map.len() != table + n * rec {
                    return Err(torn());
                }
                let shard = mapped.maps.len();
                for (slot, w) in ids.into_iter().enumerate() {
                    mapped.at.insert(w, (shard, table + slot * rec));
                }
                mapped.maps.push(map);
            }
            shards.push(mapped);
        }
        Ok(CacheReader {
            manifest,
            domains: shards,
        })
    }

    /// Whether the window starting at `start` of sampler domain `domain`
    /// is cached.
    pub fn has(&self, domain: usize, start: u64) -> bool {
        self.locate(domain, start).is_some()
    }

    fn locate(&self, domain: usize, start: u64) -> Option<(&Mmap, usize)> {
        let s = self.manifest.seq_len as u64;
        if !start.is_multiple_of(s) {
            return None;
        }
        let d = self.domains.get(domain)?;
        let &(shard, at) = d.at.get(&(start / s))?;
        Some((&d.maps[shard], at))
    }

    /// The sparse targets of `seq_len` positions of the window starting at
    /// `start` of sampler domain `domain`; `None` if it is not cached.
    pub fn window(
        &self,
        domain: usize,
        start: u64,
        which: CacheTargets,
        out: &mut SparseTargets,
    ) -> Option<()> {
        let (map, base) = self.locate(domain, start)?;
        let layout = &self.manifest.layout;
        let rec = layout.record_bytes();
        for p in 0..self.manifest.seq_len {
            let at = base + p * rec;
            out.push(&decode(&map[at..at + rec], layout), which);
        }
        Some(())
    }
}
