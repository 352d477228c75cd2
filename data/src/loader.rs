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

/// `batch_size` rows of `seq_len` tokens, row-major `[batch, seq]`;
/// `targets` are `inputs` shifted left by one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub batch_size: usize,
    pub seq_len: usize,
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
mod tests {
    use super::*;

    fn ramp(n: u32) -> Arc<Vec<u32>> {
        Arc::new((0..n).collect())
    }

    #[test]
    fn split_is_nanogpt_style() {
        let s = TokenSplit::from_tokens((0..100).collect(), 0.1).unwrap();
        assert_eq!(s.train, (0..90).collect::<Vec<u32>>());
        assert_eq!(s.val, (90..100).collect::<Vec<u32>>());
        let s = TokenSplit::from_tokens((0..10).collect(), 0.0).unwrap();
        assert_eq!((s.train.len(), s.val.len()), (10, 0));
        assert!(s.check_seq_len(9).is_ok());
        assert!(TokenSplit::from_tokens(vec![1], 1.0).is_err());
        assert!(TokenSplit::from_tokens(vec![1], f64::NAN).is_err());
    }

    #[test]
    fn short_split_error_names_sizes_and_fix() {
        let s = TokenSplit::from_tokens((0..100).collect(), 0.1).unwrap();
        let err = s.check_seq_len(16).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("val") && msg.contains("10 tokens") && msg.contains("17"),
            "{msg}"
        );
        assert!(msg.contains("max_seq_len"), "{msg}");
        let err = BatchSampler::new(ramp(8), 8, 2, 0, 0, 1).unwrap_err();
        assert!(matches!(
            err,
            DataError::NotEnoughTokens {
                have: 8,
                need: 9,
                ..
            }
        ));
    }

    #[test]
    fn batches_are_shifted_windows_in_range() {
        let mut s = BatchSampler::new(ramp(50), 8, 4, 1, 0, 1).unwrap();
        let mut seen_last = false;
        for _ in 0..500 {
            let b = s.next_batch();
            assert_eq!((b.batch_size, b.seq_len), (4, 8));
            assert_eq!((b.inputs.len(), b.targets.len()), (32, 32));
            for row in 0..4 {
                let x = &b.inputs[row * 8..row * 8 + 8];
                let y = &b.targets[row * 8..row * 8 + 8];
                assert!(x[0] < 50 - 8);
                seen_last |= x[0] == 50 - 8 - 1;
                for t in 0..8 {
                    assert_eq!(x[t], x[0] + t as u32);
                    assert_eq!(y[t], x[t] + 1);
                }
            }
        }
        assert!(seen_last, "the last start offset is never drawn");
    }

    #[test]
    fn restore_continues_bitwise() {
        let tokens = ramp(10_000);
        let mut a = BatchSampler::new(tokens.clone(), 64, 8, 1234, 1, 4).unwrap();
        for _ in 0..7 {
            a.next_batch();
        }
        let json = serde_json::to_string(&a.state()).unwrap();
        let expected: Vec<Batch> = (0..5).map(|_| a.next_batch()).collect();

        let mut b = BatchSampler::new(tokens, 64, 8, 1234, 1, 4).unwrap();
        let state: SamplerState = serde_json::from_str(&json).unwrap();
        b.restore(&state).unwrap();
        assert_eq!(b.batches_drawn(), 7);
        let got: Vec<Batch> = (0..5).map(|_| b.next_batch()).collect();
        assert_eq!(got, expected);
        assert_eq!(b.state(), a.state());
    }

    #[test]
    fn restore_rejects_other_shapes() {
        let tokens = ramp(1000);
        let state = BatchSampler::new(tokens.clone(), 16, 4, 0, 0, 2)
            .unwrap()
            .state();
        for (seq_len, batch) in [(32, 4), (16, 8)] {
            let mut other = BatchSampler::new(tokens.clone(), seq_len, batch, 0, 0, 2).unwrap();
            let err = other.restore(&state).unwrap_err();
            assert!(matches!(err, DataError::StateMismatch { .. }), "{err}");
        }
        // Another rank (or world size) continues the same global stream.
        let mut other_rank = BatchSampler::new(tokens.clone(), 16, 4, 0, 1, 2).unwrap();
        assert!(other_rank.restore(&state).is_ok());
        let mut other = BatchSampler::new(ramp(999), 16, 4, 0, 0, 2).unwrap();
        assert!(other.restore(&state).is_err());
        let mut wrong = state.clone();
        wrong.version = 99;
        let mut same = BatchSampler::new(tokens, 16, 4, 0, 0, 2).unwrap();
        assert!(matches!(
            same.restore(&wrong),
            Err(DataError::BadState { .. })
        ));
    }

    #[test]
    fn ranks_draw_different_batches_and_seeds_repeat() {
        let tokens = ramp(100_000);
        let mut r0 = BatchSampler::new(tokens.clone(), 32, 4, 7, 0, 2).unwrap();
        let mut r1 = BatchSampler::new(tokens.clone(), 32, 4, 7, 1, 2).unwrap();
        let mut r0_again = BatchSampler::new(tokens, 32, 4, 7, 0, 2).unwrap();
        for _ in 0..20 {
            let (a, b) = (r0.next_batch(), r1.next_batch());
            assert_ne!(a, b);
            assert_eq!(a, r0_again.next_batch());
        }
    }

    #[test]
    fn ranks_split_the_one_rank_batch() {
        let tokens = ramp(10_000);
        let mut one = BatchSampler::new(tokens.clone(), 8, 6, 3, 0, 1).unwrap();
        let mut ranks: Vec<BatchSampler> = (0..3)
            .map(|r| BatchSampler::new(tokens.clone(), 8, 6, 3, r, 3).unwrap())
            .collect();
        for _ in 0..5 {
            let whole = one.next_batch();
            for (r, s) in ranks.iter_mut().enumerate() {
                let part = s.next_batch();
                assert_eq!(part.batch_size, 2);
                for (i, row) in part.inputs.chunks(8).enumerate() {
                    let k = r + 3 * i;
                    assert_eq!(row, &whole.inputs[k * 8..(k + 1) * 8]);
                }
            }
        }
        // The state is global: rank 2 of 3 resumes as rank 0 of 2.
        let mut two = BatchSampler::new(tokens, 8, 6, 3, 0, 2).unwrap();
        two.restore(&ranks[2].state()).unwrap();
        let whole = one.next_batch();
        assert_eq!(&two.next_batch().inputs[..8], &whole.inputs[..8]);
        assert!(matches!(
            BatchSampler::new(ramp(100), 8, 5, 0, 0, 2),
            Err(DataError::BatchNotDivisible { .. })
        ));
    }

    #[test]
    fn bad_rank_is_an_error() {
        assert!(matches!(
            BatchSampler::new(ramp(100), 8, 2, 0, 0, 0),
            Err(DataError::BadRank { .. })
        ));
        assert!(matches!(
            BatchSampler::new(ramp(100), 8, 2, 0, 2, 2),
            Err(DataError::BadRank { .. })
        ));
    }

    #[test]
    fn word_pos_survives_json_as_string() {
        let s = SamplerState {
            version: 1,
            seed: 0,
            rank: 0,
            world_size: 1,
            seq_len: 1,
            batch_size: 1,
            n_tokens: 2,
            batches_drawn: 0,
            rng_word_pos: u128::MAX - 3,
        };
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(&format!("\"{}\"", u128::MAX - 3)), "{json}");
        assert_eq!(serde_json::from_str::<SamplerState>(&json).unwrap(), s);
    }

    #[test]
    fn eval_batches_are_fixed_evenly_spaced_and_disjoint() {
        let tokens: Vec<u32> = (0..1000).collect();
        let a = eval_batches(&tokens, 16, 4, 5);
        assert_eq!(a, eval_batches(&tokens, 16, 4, 5));
        assert_eq!(a.len(), 5);
        let starts: Vec<u32> = a
            .iter()
            .flat_map(|b| b.inputs.chunks(16).map(|row| row[0]))
            .collect();
        assert_eq!(starts.len(), 20);
        assert_eq!(starts[0], 0);
        assert_eq!(*starts.last().unwrap(), 1000 - 16 - 1);
        for w in starts.windows(2) {
            assert!(w[1] - w[0] >= 16, "windows overlap: {starts:?}");
        }
        for b in &a {
            assert_eq!(b.targets[0], b.inputs[0] + 1);
        }
    }

    /// Rows' first input tokens (the ramp makes token == offset).
    fn starts_of(batches: &[Batch]) -> Vec<u32> {
        batches
            .iter()
            .flat_map(|b| b.inputs.chunks(b.seq_len).map(|row| row[0]))
            .collect()
    }

    #[test]
    fn eval_batches_on_little_data_do_not_overlap() {
        // 40 tokens, seq 16: 24 distinct offsets but only 2 disjoint windows;
        // asking for 10 batches of 4 gives one batch of those 2.
        let tokens: Vec<u32> = (0..40).collect();
        let b = eval_batches(&tokens, 16, 4, 10);
        assert_eq!((b.len(), b[0].batch_size), (1, 2));
        assert_eq!(starts_of(&b), vec![0, 40 - 16 - 1]);
        // One disjoint window: one batch of one.
        let tokens: Vec<u32> = (0..19).collect();
        let b = eval_batches(&tokens, 16, 4, 10);
        assert_eq!((b.len(), b[0].batch_size), (1, 1));
        assert_eq!(eval_batches(&tokens[..17], 16, 4, 10).len(), 1);
        assert!(eval_batches(&tokens[..16], 16, 4, 10).is_empty());
    }

    #[test]
    fn unlimited_eval_batches_are_not_a_stride_1_sweep() {
        // The regression: with no batch limit every offset became a window
        // (984 windows here, each target scored ~16 times).
        let tokens: Vec<u32> = (0..1000).collect();
        let b = eval_batches(&tokens, 16, 4, usize::MAX);
        let starts = starts_of(&b);
        assert_eq!(starts.len(), 60, "{starts:?}"); // 62 disjoint, whole batches
        for w in starts.windows(2) {
            assert!(w[1] - w[0] >= 16, "windows overlap: {starts:?}");
        }
    }

    /// How many times each position of a ramp is scored as a target.
    fn coverage(split: &WholeSplit<'_>, n: usize, seq_len: usize, batch_size: usize) -> Vec<usize> {
        let mut seen = vec![0usize; n];
        let mut n_batches = 0;
        for eb in split.batches() {
            n_batches += 1;
            assert!(eb.batch.batch_size <= batch_size && eb.scored <= seq_len);
            for row in eb.batch.targets.chunks(seq_len) {
                for &t in &row[seq_len - eb.scored..] {
                    seen[t as usize] += 1;
                }
            }
        }
        assert_eq!(n_batches, split.n_batches());
        seen
    }

    #[test]
    fn whole_split_scores_every_target_exactly_once() {
        for (n, seq, bs) in [
            (1000, 16, 4),
            (993, 16, 4),
            (17, 16, 4),
            (33, 16, 1),
            (100, 7, 3),
        ] {
            let tokens: Vec<u32> = (0..n as u32).collect();
            let split = WholeSplit::new(&tokens, seq, bs);
            let seen = coverage(&split, n, seq, bs);
            assert_eq!(
                seen[0], 0,
                "n={n} seq={seq}: the first token is never a target"
            );
            assert!(
                seen[1..].iter().all(|&c| c == 1),
                "n={n} seq={seq} bs={bs}: {seen:?}"
            );
            assert_eq!(split.scored_tokens(), n - 1);
        }
        // 1000 tokens, seq 16: 62 tiled windows (992 targets) + one
        // end-aligned window scoring the last 7.
        let tokens: Vec<u32> = (0..1000).collect();
        let split = WholeSplit::new(&tokens, 16, 4);
        assert_eq!((split.full_windows(), split.tail_tokens()), (62, 7));
        assert_eq!((split.windows(), split.n_batches()), (63, 16 + 1));
        // Exact fit: no end-aligned window.
        let split = WholeSplit::new(&tokens[..16 * 8 + 1], 16, 4);
        assert_eq!((split.tail_tokens(), split.n_batches()), (0, 2));
        // Too short for one window.
        let split = WholeSplit::new(&tokens[..16], 16, 4);
        assert!(coverage(&split, 16, 16, 4).iter().all(|&c| c == 0));
        assert_eq!((split.scored_tokens(), split.n_batches()), (0, 0));
    }

    #[test]
    fn whole_split_end_window_reads_full_context() {
        let tokens: Vec<u32> = (0..40).collect();
        let split = WholeSplit::new(&tokens, 16, 4);
        let last = split.batches().last().unwrap();
        // Targets 33..39 are left after windows at 0 and 16; the final
        // window starts at 40 - 17 = 23 and scores its last 7 targets.
        assert_eq!(last.scored, 7);
        assert_eq!(last.batch.inputs[0], 23);
        assert_eq!(*last.batch.targets.last().unwrap(), 39);
        assert_eq!(last.scored_tokens(), 7);
    }
}
