//! Training batches from prepared shards, mixed across domains by weight.
//!
//! Each domain's train stream is cut into packed sequences of `seq_len + 1`
//! tokens (consecutive, documents separated by `<|endoftext|>`, the last token
//! of one window being the first of the next). The global sample sequence is
//! a pure function of the seed:
//! - sample `g` goes to the domain whose share is furthest behind its weight
//!   (Megatron's `BlendableDataset`): after `n` samples every domain has
//!   `weight * n` samples, give or take one, so token proportions match the
//!   weights exactly rather than in expectation;
//! - the `k`-th sample of a domain is window `perm_e(k mod W)` of epoch
//!   `e = k / W`, where `perm_e` is a keyed Feistel permutation of the `W`
//!   windows: every window once per epoch, a new order each epoch, and O(1)
//!   memory however large the corpus.
//!
//! Rank `r` of `world_size` takes global samples `r, r + world_size, ...`, so
//! data-parallel ranks see disjoint samples of one shared sequence. The state
//! (samples drawn, per-domain cursors) is a handful of integers saved in
//! checkpoints; a resumed run continues bitwise.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::loader::{eval_starts, Batch, RowOrigin};
use crate::shard::ShardStream;

const MIXTURE_STATE_VERSION: u32 = 1;

/// One domain to sample from.
#[derive(Debug, Clone)]
pub struct MixtureDomain {
    pub name: String,
    pub tokens: Arc<ShardStream>,
    pub weight: f64,
}

/// Everything needed to continue a [`MixtureSampler`] exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixtureState {
    pub version: u32,
    pub seed: u64,
    pub rank: usize,
    pub world_size: usize,
    pub seq_len: usize,
    pub batch_size: usize,
    pub domains: Vec<String>,
    pub weights: Vec<f64>,
    /// Train tokens per domain, to catch a resume on different data.
    pub domain_tokens: Vec<u64>,
    /// Global samples assigned so far (all ranks).
    pub samples: u64,
    /// Per-domain cursors: samples taken from each domain so far.
    pub cursors: Vec<u64>,
    pub batches_drawn: u64,
    /// Samples and cursors when the weights last changed (a resume with new
    /// weights): the shares are kept from there on. Absent: from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reweighted_at: Option<(u64, Vec<u64>)>,
}

/// Weighted, epoch-shuffled packed sequences for one data-parallel rank.
#[derive(Debug, Clone)]
pub struct MixtureSampler {
    domains: Vec<MixtureDomain>,
    /// Normalised weights.
    weights: Vec<f64>,
    windows: Vec<u64>,
    seq_len: usize,
    batch_size: usize,
    seed: u64,
    rank: usize,
    world_size: usize,
    samples: u64,
    cursors: Vec<u64>,
    batches_drawn: u64,
    /// See [`MixtureState::reweighted_at`].
    reweighted_at: Option<(u64, Vec<u64>)>,
}

/// splitmix64's finaliser: a cheap, well-mixed 64-bit hash.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A keyed permutation of `0..n` (a 4-round Feistel network on the next
/// even power of two, cycle-walked back into range).
pub fn permute(i: u64, n: u64, key: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    let bits = 64 - (n - 1).leading_zeros();
    let half = bits.div_ceil(2).max(1);
    let mask = (1u64 << half) - 1;
    let mut x = i;
    loop {
        let (mut l, mut r) = (x >> half, x & mask);
        for round in 0..4u64 {
            let f = mix(r ^ mix(key.wrapping_add(round))) & mask;
            (l, r) = (r, l ^ f);
        }
        x = (l << half) | r;
        if x < n {
            return x;
        }
    }
}

impl MixtureSampler {
    pub fn new(
        domains: Vec<MixtureDomain>,
        seq_len: usize,
        batch_size: usize,
        seed: u64,
        rank: usize,
        world_size: usize,
    ) -> Result<MixtureSampler, DataError> {
        if world_size == 0 || rank >= world_size {
            return Err(DataError::BadRank { rank, world_size });
        }
        if seq_len == 0 {
            return Err(DataError::ZeroSize { what: "seq_len" });
        }
        if batch_size == 0 {
            return Err(DataError::ZeroSize { what: "batch_size" });
        }
        let total: f64 = domains.iter().map(|d| d.weight).sum();
        if domains
            .iter()
            .any(|d| !(d.weight.is_finite() && d.weight >= 0.0))
            || !(total.is_finite() && total > 0.0)
        {
            return Err(DataError::BadWeights {
                reason: format!(
                    "weights {:?} must be finite, non-negative and sum to a positive number",
                    domains.iter().map(|d| d.weight).collect::<Vec<_>>()
                ),
            });
        }
        let mut windows = Vec::new();
        for d in &domains {
            let w = d.tokens.len().saturating_sub(1) / seq_len as u64;
            if w == 0 && d.weight > 0.0 {
                return Err(DataError::NotEnoughTokens {
                    split: format!("train split of domain \"{}\"", d.name),
                    have: d.tokens.len() as usize,
                    need: seq_len + 1,
                });
            }
            windows.push(w);
        }
        let weights = domains.iter().map(|d| d.weight / total).collect();
        let n = domains.len();
        Ok(MixtureSampler {
            domains,
            weights,
            windows,
            seq_len,
            batch_size,
            seed,
            rank,
            world_size,
            samples: 0,
            cursors: vec![0; n],
            batches_drawn: 0,
            reweighted_at: None,
        })
    }

    /// The domain of the next global sample: the one furthest behind its
    /// share (counted since the weights last changed).
    fn pick(&self) -> usize {
        let (base, base_cursors) = match &self.reweighted_at {
            Some((s, c)) => (*s, c.as_slice()),
            None => (0, &[][..]),
        };
        let target = (self.samples - base + 1) as f64;
        let mut best = 0;
        let mut best_err = f64::NEG_INFINITY;
        for (d, &w) in self.weights.iter().enumerate() {
            let taken = self.cursors[d] - base_cursors.get(d).copied().unwrap_or(0);
            let err = w * target - taken as f64;
            if w > 0.0 && err > best_err {
                best = d;
                best_err = err;
            }
        }
        best
    }

    /// Start token of the `k`-th window of domain `d`.
    fn window_start(&self, d: usize, k: u64) -> u64 {
        let w = self.windows[d];
        let epoch = k / w;
        let key = mix(self.seed ^ mix(d as u64 ^ mix(epoch)));
        permute(k % w, w, key) * self.seq_len as u64
    }

    /// The next batch for this rank; also returns each row's domain index.
    pub fn next_batch_with_domains(&mut self) -> (Batch, Vec<usize>) {
        let s = self.seq_len;
        let mut inputs = Vec::with_capacity(self.batch_size * s);
        let mut targets = Vec::with_capacity(self.batch_size * s);
        let mut row_domains = Vec::with_capacity(self.batch_size);
        let mut origins = Vec::with_capacity(self.batch_size);
        let mut window = Vec::with_capacity(s + 1);
        while row_domains.len() < self.batch_size {
            let d = self.pick();
            let k = self.cursors[d];
            self.cursors[d] += 1;
            let g = self.samples;
            self.samples += 1;
            if g % self.world_size as u64 != self.rank as u64 {
                continue;
            }
            window.clear();
            let start = self.window_start(d, k);
            self.domains[d]
                .tokens
                .extend_into(start, s as u64 + 1, &mut window);
            origins.push(RowOrigin { domain: d, start });
            inputs.extend_from_slice(&window[..s]);
            targets.extend_from_slice(&window[1..]);
            row_domains.push(d);
        }
        self.batches_drawn += 1;
        (
            Batch {
                inputs,
                targets,
                batch_size: self.batch_size,
                seq_len: s,
                origins,
            },
            row_domains,
        )
    }

    pub fn next_batch(&mut self) -> Batch {
        self.next_batch_with_domains().0
    }

    pub fn domain_names(&self) -> Vec<String> {
        self.domains.iter().map(|d| d.name.clone()).collect()
    }

    pub fn state(&self) -> MixtureState {
        MixtureState {
            version: MIXTURE_STATE_VERSION,
            seed: self.seed,
            rank: self.rank,
            world_size: self.world_size,
            seq_len: self.seq_len,
            batch_size: self.batch_size,
            domains: self.domain_names(),
            weights: self.weights.clone(),
            domain_tokens: self.domains.iter().map(|d| d.tokens.len()).collect(),
            samples: self.samples,
            cursors: self.cursors.clone(),
            batches_drawn: self.batches_drawn,
            reweighted_at: self.reweighted_at.clone(),
        }
    }

    /// Continues from `state`; the data, weights and shapes must match,
    /// except the weights when `reweight` is set (`data.reweight_on_resume`:
    /// e.g. continuing with DoReMi's weights). The shares then follow the
    /// new weights from the resumed sample on; the windows of each domain
    /// continue where they stopped.
    pub fn restore(&mut self, state: &MixtureState, reweight: bool) -> Result<(), DataError> {
        if state.version != MIXTURE_STATE_VERSION {
            return Err(DataError::BadState {
                reason: format!(
                    "mixture state version {} is not the supported version \
                     {MIXTURE_STATE_VERSION}; start a fresh run",
                    state.version
                ),
            });
        }
        let cur = self.state();
        // Rank and world size may differ (a sharded checkpoint resumes on
        // any number of ranks): the samples are global; only the global
        // batch must stay.
        let global = |s: &MixtureState| (s.batch_size * s.world_size).to_string();
        let reweighted = reweight && state.weights != cur.weights;
        let weights = |s: &MixtureState| {
            if reweighted {
                String::new()
            } else {
                format!("{:?}", s.weights)
            }
        };
        let checks: [(&'static str, String, String); 6] = [
            ("seed", state.seed.to_string(), cur.seed.to_string()),
            ("the global batch size", global(state), global(&cur)),
            (
                "seq_len",
                state.seq_len.to_string(),
                cur.seq_len.to_string(),
            ),
            (
                "the domains",
                format!("{:?}", state.domains),
                format!("{:?}", cur.domains),
            ),
            ("the mixture weights", weights(state), weights(&cur)),
            (
                "the train tokens per domain",
                format!("{:?}", state.domain_tokens),
                format!("{:?}", cur.domain_tokens),
            ),
        ];
        for (field, saved, current) in checks {
            if saved != current && field == "the mixture weights" {
                return Err(DataError::BadState {
                    reason: format!(
                        "the checkpoint was made with mixture weights {saved} but this run has \
                         {current}: set data.reweight_on_resume = true to continue with the new \
                         weights, or resume with the saved ones"
                    ),
                });
            }
            if saved != current {
                return Err(DataError::StateMismatch {
                    field,
                    saved,
                    current,
                });
            }
        }
        self.samples = state.samples;
        self.cursors = state.cursors.clone();
        self.batches_drawn = state.batches_drawn;
        self.reweighted_at = if reweighted {
            Some((state.samples, state.cursors.clone()))
        } else {
            state.reweighted_at.clone()
        };
        Ok(())
    }
}

/// Fixed evaluation batches over a shard stream (see [`crate::eval_batches`]).
pub fn eval_batches_from_stream(
    tokens: &ShardStream,
    seq_len: usize,
    batch_size: usize,
    max_batches: usize,
) -> Vec<Batch> {
    let mut window = Vec::with_capacity(seq_len + 1);
    eval_starts(tokens.len() as usize, seq_len, batch_size, max_batches)
        .into_iter()
        .map(|starts| {
            let mut inputs = Vec::with_capacity(starts.len() * seq_len);
            let mut targets = Vec::with_capacity(starts.len() * seq_len);
            for &s in &starts {
                window.clear();
                tokens.extend_into(s as u64, seq_len as u64 + 1, &mut window);
                inputs.extend_from_slice(&window[..seq_len]);
                targets.extend_from_slice(&window[1..]);
            }
            Batch {
                inputs,
                targets,
                batch_size: starts.len(),
                seq_len,
                origins: Vec::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::{Shard, ShardWriter};

    #[test]
    fn permute_is_a_bijection() {
        for n in [1u64, 2, 3, 7, 64, 1000, 4097] {
            let mut seen: Vec<u64> = (0..n).map(|i| permute(i, n, 42 + n)).collect();
            if n >= 7 {
                assert_ne!(seen, (0..n).collect::<Vec<_>>(), "identity for n={n}");
            }
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n={n}");
        }
    }

    fn stream(dir: &std::path::Path, name: &str, token: u32, n_docs: usize) -> Arc<ShardStream> {
        let p = dir.join(name);
        let mut w = ShardWriter::create(&p, 100).unwrap();
        for _ in 0..n_docs {
            w.push_doc(&[token; 9], 0).unwrap();
        }
        w.finish().unwrap();
        Arc::new(ShardStream::new(vec![Shard::open(&p).unwrap()]))
    }

    #[test]
    fn every_window_once_per_epoch_and_ranks_disjoint() {
        let dir = tempfile::tempdir().unwrap();
        // 100 docs of 10 tokens = 1000 tokens; seq 8 -> 124 windows.
        let a = stream(dir.path(), "a.bin", 5, 100);
        let dom = vec![MixtureDomain {
            name: "a".into(),
            tokens: a,
            weight: 1.0,
        }];
        let mut s = MixtureSampler::new(dom.clone(), 8, 4, 3, 0, 1).unwrap();
        let mut starts = Vec::new();
        for _ in 0..31 {
            let k = s.cursors[0];
            s.next_batch();
            starts.extend((k..k + 4).map(|k| s.window_start(0, k)));
        }
        starts.sort_unstable();
        assert_eq!(starts, (0..124).map(|i| i * 8).collect::<Vec<u64>>());
        let mut r0 = MixtureSampler::new(dom.clone(), 8, 2, 3, 0, 2).unwrap();
        let mut r1 = MixtureSampler::new(dom, 8, 2, 3, 1, 2).unwrap();
        let _ = (r0.next_batch(), r1.next_batch());
        assert_eq!((r0.samples, r1.samples), (3, 4));
    }
}
