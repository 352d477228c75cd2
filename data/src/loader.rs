//! Batches from a token stream, nanoGPT style.
//!
//! Training batches are random windows (nanoGPT's `get_batch`): every row is
//! `seq_len + 1` consecutive tokens starting at a uniform offset, inputs are
//! the first `seq_len`, targets the last `seq_len`. The sampler's RNG state
//! is small and exact, so a resumed run draws bitwise the same batches as an
//! uninterrupted one. Training-time evaluation batches are a fixed set of
//! evenly spaced, non-overlapping windows, so validation losses are
//! comparable across steps and runs; [`WholeSplit`] scores every token of a
//! split exactly once (`kiln eval`).

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::DataError;

/// Bumped when `SamplerState` changes meaning, so old checkpoints fail loudly.
const SAMPLER_STATE_VERSION: u32 = 1;

/// A token stream cut into a training part and a validation part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSplit {
    pub train: Vec<u32>,
    pub val: Vec<u32>,
}

impl TokenSplit {
    /// The first `1 - val_fraction` of the stream is train, the rest val
    /// (nanoGPT's `n = int(0.9 * len(data))`). `val_fraction = 0` gives an
    /// empty val split.
    pub fn from_tokens(mut tokens: Vec<u32>, val_fraction: f64) -> Result<TokenSplit, DataError> {
        if !(0.0..1.0).contains(&val_fraction) {
            return Err(DataError::BadValFraction {
                value: val_fraction,
            });
        }
        let n_train = (tokens.len() as f64 * (1.0 - val_fraction)) as usize;
        let val = tokens.split_off(n_train.min(tokens.len()));
        Ok(TokenSplit { train: tokens, val })
    }

    /// Checks both parts hold at least one window of `seq_len + 1` tokens (an
    /// empty val split is allowed: it means "no evaluation").
    pub fn check_seq_len(&self, seq_len: usize) -> Result<(), DataError> {
        check_enough("train", self.train.len(), seq_len)?;
        if !self.val.is_empty() {
            check_enough("val", self.val.len(), seq_len)?;
        }
        Ok(())
    }
}

fn check_enough(split: &str, have: usize, seq_len: usize) -> Result<(), DataError> {
    let need = seq_len.saturating_add(1);
    if have < need {
        return Err(DataError::NotEnoughTokens {
            split: split.to_string(),
            have,
            need,
        });
    }
    Ok(())
}

/// Where a training row came from: the window of a prepared domain's train
/// stream that starts at token `start` (the offline teacher cache is
/// indexed by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowOrigin {
    /// Index of the domain in the sampler's domain list.
    pub domain: usize,
    pub start: u64,
}

/// `batch_size` rows of `seq_len` tokens, row-major `[batch, seq]`;
/// `targets` are `inputs` shifted left by one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub batch_size: usize,
    pub seq_len: usize,
    /// One per row for batches of prepared shards ([`MixtureSampler`]);
    /// empty where rows have no fixed window (in-memory text, instructions).
    ///
    /// [`MixtureSampler`]: crate::MixtureSampler
    pub origins: Vec<RowOrigin>,
}

impl Batch {
    fn from_starts(tokens: &[u32], starts: &[usize], seq_len: usize) -> Batch {
        let mut inputs = Vec::with_capacity(starts.len() * seq_len);
        let mut targets = Vec::with_capacity(starts.len() * seq_len);
        for &s in starts {
            inputs.extend_from_slice(&tokens[s..s + seq_len]);
            targets.extend_from_slice(&tokens[s + 1..s + seq_len + 1]);
        }
        Batch {
            inputs,
            targets,
            batch_size: starts.len(),
            seq_len,
            origins: Vec::new(),
        }
    }
}

/// Everything needed to continue a `BatchSampler` exactly where it stopped;
/// saved in checkpoints as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerState {
    pub version: u32,
    /// Seed of the ChaCha8 RNG; its stream is the rank.
    pub seed: u64,
    pub rank: usize,
    pub world_size: usize,
    pub seq_len: usize,
    pub batch_size: usize,
    /// Length of the token stream, to catch a resume on different data.
    pub n_tokens: usize,
    pub batches_drawn: u64,
    /// ChaCha8's position in its key stream. A string because JSON numbers
    /// beyond 2^53 (let alone 2^128) do not survive every JSON reader.
    #[serde(with = "u128_as_string")]
    pub rng_word_pos: u128,
}

/// Random training windows for one data-parallel rank.
#[derive(Clone)]
pub struct BatchSampler {
    tokens: Arc<Vec<u32>>,
    seq_len: usize,
    batch_size: usize,
    seed: u64,
    rank: usize,
    world_size: usize,
    rng: ChaCha8Rng,
    batches_drawn: u64,
}

impl std::fmt::Debug for BatchSampler {
    // The derived form would print every token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSampler")
            .field("n_tokens", &self.tokens.len())
            .field("seq_len", &self.seq_len)
            .field("batch_size", &self.batch_size)
            .field("seed", &self.seed)
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("batches_drawn", &self.batches_drawn)
            .finish()
    }
}

/// Every rank draws the same global batches from ChaCha stream 0 of the
/// run's seed (what a run of one rank draws) and keeps its rows `r, r + N,
/// ...`: N ranks train on exactly the batches one rank would, and the
/// state is the same on every rank (so a run can resume on another N).
fn global_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

impl BatchSampler {
    pub fn new(
        tokens: Arc<Vec<u32>>,
        seq_len: usize,
        batch_size: usize,
        seed: u64,
        rank: usize,
        world_size: usize,
    ) -> Result<Self, DataError> {
        if world_size == 0 || rank >= world_size {
            return Err(DataError::BadRank { rank, world_size });
        }
        if seq_len == 0 {
            return Err(DataError::ZeroSize { what: "seq_len" });
        }
        if batch_size == 0 {
            return Err(DataError::ZeroSize { what: "batch_size" });
        }
        if !batch_size.is_multiple_of(world_size) {
            return Err(DataError::BatchNotDivisible {
                batch_size,
                world_size,
            });
        }
        check_enough("train", tokens.len(), seq_len)?;
        Ok(BatchSampler {
            tokens,
            seq_len,
            batch_size,
            seed,
            rank,
            world_size,
            rng: global_rng(seed),
            batches_drawn: 0,
        })
    }

    /// This rank's rows of the next random global batch; start offsets are
    /// uniform in `[0, len - seq_len - 1]`, as in nanoGPT.
    pub fn next_batch(&mut self) -> Batch {
        // Sampled as u64 so the stream is the same on 32- and 64-bit hosts.
        let max_start = (self.tokens.len() - self.seq_len - 1) as u64;
        let (rank, n) = (self.rank, self.world_size);
        let starts: Vec<usize> = (0..self.batch_size)
            .map(|_| self.rng.random_range(0..=max_start) as usize)
            .enumerate()
            .filter(|(i, _)| i % n == rank)
            .map(|(_, s)| s)
            .collect();
        self.batches_drawn += 1;
        Batch::from_starts(&self.tokens, &starts, self.seq_len)
    }

    pub fn batches_drawn(&self) -> u64 {
        self.batches_drawn
    }

    pub fn state(&self) -> SamplerState {
        SamplerState {
            version: SAMPLER_STATE_VERSION,
            seed: self.seed,
            rank: self.rank,
            world_size: self.world_size,
            seq_len: self.seq_len,
            batch_size: self.batch_size,
            n_tokens: self.tokens.len(),
            batches_drawn: self.batches_drawn,
            rng_word_pos: self.rng.get_word_pos(),
        }
    }

    /// Continues from `state`: the following batches are bitwise those the
    /// saved sampler would have drawn. The RNG (seed included) comes from the
    /// state; the shape and the data must match this sampler.
    pub fn restore(&mut self, state: &SamplerState) -> Result<(), DataError> {
        if state.version != SAMPLER_STATE_VERSION {
            return Err(DataError::BadState {
                reason: format!(
                    "state version {} is not the supported version {SAMPLER_STATE_VERSION}; \
                     start a fresh run",
                    state.version
                ),
            });
        }
        // Rank and world size may differ: the stream is global (a sharded
        // checkpoint resumes on any number of ranks).
        let checks: [(&'static str, usize, usize); 3] = [
            ("seq_len", state.seq_len, self.seq_len),
            ("batch_size", state.batch_size, self.batch_size),
            (
                "the number of training tokens",
                state.n_tokens,
                self.tokens.len(),
            ),
        ];
        for (field, saved, current) in checks {
            if saved != current {
                return Err(DataError::StateMismatch {
                    field,
                    saved: saved.to_string(),
                    current: current.to_string(),
                });
            }
        }
        let mut rng = global_rng(state.seed);
        rng.set_word_pos(state.rng_word_pos);
        self.rng = rng;
        self.seed = state.seed;
        self.batches_drawn = state.batches_drawn;
        Ok(())
    }
}

/// Up to `max_batches` fixed evaluation batches (training-time evaluation):
/// windows evenly spaced from the start to the end of `tokens`, never
/// overlapping. When fewer disjoint windows fit than asked for, there are
/// only as many as fit (each target is scored at most once; whole-split
/// evaluation that scores every target is [`WholeSplit`]). Batches are full
/// except when fewer than `batch_size` disjoint windows fit (then one smaller
/// batch). Empty when `tokens` is shorter than `seq_len + 1` or a size is zero.
pub fn eval_batches(
    tokens: &[u32],
    seq_len: usize,
    batch_size: usize,
    max_batches: usize,
) -> Vec<Batch> {
    eval_starts(tokens.len(), seq_len, batch_size, max_batches)
        .iter()
        .map(|chunk| Batch::from_starts(tokens, chunk, seq_len))
        .collect()
}

/// Start offsets of [`eval_batches`]' windows over `n_tokens`, one `Vec` per batch.
pub(crate) fn eval_starts(
    n_tokens: usize,
    seq_len: usize,
    batch_size: usize,
    max_batches: usize,
) -> Vec<Vec<usize>> {
    if seq_len == 0 || batch_size == 0 || max_batches == 0 || n_tokens <= seq_len {
        return Vec::new();
    }
    let max_start = n_tokens - seq_len - 1;
    // Windows of seq_len + 1 tokens that share at most their boundary token:
    // each scores seq_len targets no other window scores. Capping here (not
    // at the max_start + 1 distinct offsets) is what keeps an unlimited
    // request from becoming a stride-1 sweep, seq_len times the work.
    let disjoint = (n_tokens - 1) / seq_len;
    let mut n_windows = max_batches.saturating_mul(batch_size).min(disjoint);
    if n_windows >= batch_size {
        n_windows -= n_windows % batch_size;
    }
    // floor(i * max_start / (n - 1)): consecutive starts differ by at least
    // floor(max_start / (n - 1)), which is >= seq_len because n <= disjoint
    // means max_start >= (n - 1) * seq_len.
    let starts: Vec<usize> = if n_windows == 1 {
        vec![0]
    } else {
        (0..n_windows)
            .map(|i| (i as u128 * max_start as u128 / (n_windows as u128 - 1)) as usize)
            .collect()
    };
    starts.chunks(batch_size).map(|c| c.to_vec()).collect()
}

/// One batch of whole-split evaluation: every row scores only its last
/// `scored` targets (`seq_len` for all but the final, end-aligned window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalBatch {
    pub batch: Batch,
    pub scored: usize,
}

impl EvalBatch {
    /// Targets this batch scores.
    pub fn scored_tokens(&self) -> usize {
        self.batch.batch_size * self.scored
    }
}

/// Whole-split evaluation: windows that score every target of `tokens`
/// (every token but the first) exactly once, the rolling-window scheme of
/// lm-evaluation-harness's `loglikelihood_rolling`.
///
/// Windows of `seq_len + 1` tokens tile the split from offset 0 with stride
/// `seq_len` and score all their targets (so the first targets of each
/// window see a short context, as in any non-overlapping evaluation). The
/// fewer than `seq_len` targets left after the last full window are scored
/// by one final window aligned to the end of the split, which scores only
/// those targets and reads the tokens before them as context. A split
/// shorter than `seq_len + 1` tokens has no window.
#[derive(Debug, Clone, Copy)]
pub struct WholeSplit<'a> {
    tokens: &'a [u32],
    seq_len: usize,
    batch_size: usize,
}

impl<'a> WholeSplit<'a> {
    pub fn new(tokens: &'a [u32], seq_len: usize, batch_size: usize) -> WholeSplit<'a> {
        WholeSplit {
            tokens,
            seq_len,
            batch_size,
        }
    }

    /// Windows of the stride-`seq_len` tiling, each scoring `seq_len` targets.
    pub fn full_windows(&self) -> usize {
        if self.seq_len == 0 || self.batch_size == 0 || self.tokens.len() <= self.seq_len {
            return 0;
        }
        (self.tokens.len() - 1) / self.seq_len
    }

    /// Targets scored by the final end-aligned window (0: none needed).
    pub fn tail_tokens(&self) -> usize {
        match self.full_windows() {
            0 => 0,
            full => self.tokens.len() - 1 - full * self.seq_len,
        }
    }

    /// Every window, the end-aligned one included.
    pub fn windows(&self) -> usize {
        self.full_windows() + usize::from(self.tail_tokens() > 0)
    }

    /// Targets scored in all: `tokens.len() - 1`, or 0 without a window.
    pub fn scored_tokens(&self) -> usize {
        self.full_windows() * self.seq_len + self.tail_tokens()
    }

    pub fn n_batches(&self) -> usize {
        self.full_windows().div_ceil(self.batch_size.max(1)) + usize::from(self.tail_tokens() > 0)
    }

    /// The batches, built as they are consumed (a large split is never
    /// materialised twice): full batches of tiled windows, the last one
    /// possibly smaller, then the end-aligned window as a batch of one.
    pub fn batches(&self) -> impl Iterator<Item = EvalBatch> + 'a {
        let (tokens, seq_len) = (self.tokens, self.seq_len);
        let full = self.full_windows();
        let step = self.batch_size.max(1);
        let tiled = (0..full).step_by(step).map(move |first| {
            let starts: Vec<usize> = (first..(first + step).min(full))
                .map(|i| i * seq_len)
                .collect();
            EvalBatch {
                batch: Batch::from_starts(tokens, &starts, seq_len),
                scored: seq_len,
            }
        });
        let tail = self.tail_tokens();
        let end_aligned = (tail > 0).then(|| EvalBatch {
            batch: Batch::from_starts(tokens, &[tokens.len() - seq_len - 1], seq_len),
            scored: tail,
        });
        tiled.chain(end_aligned)
    }
}

mod u128_as_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[path = "loader_tests.rs"]
mod tests;
