//! Padded batches of encoded examples: seeded shuffled epochs split across
//! data-parallel ranks, with exact resume, and in-order evaluation batches.
//!
//! A row is one example: `inputs[t] = ids[t]`, `targets[t] = ids[t + 1]`
//! when token `t + 1` is trained, else [`IGNORE`]. Past the example's end the
//! input is token 0 and the target [`IGNORE`]; under causal attention the
//! padding comes after every real token, so it cannot change their logits.

use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::encode::Encoded;
use super::error::InstructError;
use crate::Batch;

/// A target that takes no loss (prompt tokens, untrained roles, padding).
/// The trainer must mask these out of the loss and its token count.
pub const IGNORE: u32 = u32::MAX;

/// Input token on padding positions (never attended to by real tokens).
const PAD_INPUT: u32 = 0;

/// Bumped when the state changes meaning, so old checkpoints fail loudly.
const STATE_VERSION: u32 = 1;

/// Everything needed to continue an [`InstructSampler`] exactly; saved in
/// checkpoints as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructSamplerState {
    pub version: u32,
    pub seed: u64,
    pub rank: usize,
    pub world_size: usize,
    pub seq_len: usize,
    pub batch_size: usize,
    pub n_examples: usize,
    /// xxh3 of every example's ids and mask (hex), to catch a resume on
    /// different data or a different template/tokenizer.
    pub data_hash: String,
    pub batches_drawn: u64,
    /// Examples consumed by all ranks together: the position in the
    /// endless sequence of shuffled epochs.
    pub position: u64,
}

/// Training batches of one data-parallel rank.
///
/// Epoch `e` is a permutation of the examples from ChaCha8 (the run's seed,
/// stream `e`), the same on every rank. Global batch `g` takes the
/// `batch_size * world_size` next positions of the epochs laid end to end;
/// rank `r` takes positions `r, r + N, r + 2N, ...` of it (PyTorch's
/// `DistributedSampler` split), so ranks see disjoint examples and together
/// see every example once per epoch. A batch may span two epochs; with fewer
/// examples than a global batch an example repeats within it.
///
/// Unlike [`crate::BatchSampler`] (independent random windows per rank),
/// ranks share one order here, so the state is just the position.
pub struct InstructSampler {
    examples: Arc<Vec<Encoded>>,
    seq_len: usize,
    batch_size: usize,
    seed: u64,
    rank: usize,
    world_size: usize,
    data_hash: u64,
    batches_drawn: u64,
    /// The permutation of the epoch last drawn from.
    epoch: Option<(u64, Vec<usize>)>,
}

impl std::fmt::Debug for InstructSampler {
    // The derived form would print every example.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstructSampler")
            .field("n_examples", &self.examples.len())
            .field("seq_len", &self.seq_len)
            .field("batch_size", &self.batch_size)
            .field("seed", &self.seed)
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("batches_drawn", &self.batches_drawn)
            .finish()
    }
}

fn data_hash(examples: &[Encoded]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for e in examples {
        h.update(&(e.ids.len() as u64).to_le_bytes());
        for id in &e.ids {
            h.update(&id.to_le_bytes());
        }
        for &t in &e.train {
            h.update(&[u8::from(t)]);
        }
    }
    h.digest()
}

fn permutation(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// Appends one padded row of `e` (see the module docs).
fn push_row(e: &Encoded, seq_len: usize, inputs: &mut Vec<u32>, targets: &mut Vec<u32>) {
    for t in 0..seq_len {
        inputs.push(e.ids.get(t).copied().unwrap_or(PAD_INPUT));
        let target = match (e.ids.get(t + 1), e.train.get(t + 1)) {
            (Some(&id), Some(true)) => id,
            _ => IGNORE,
        };
        targets.push(target);
    }
}

fn batch_of<'a>(rows: impl Iterator<Item = &'a Encoded>, seq_len: usize) -> Batch {
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    let mut n = 0;
    for e in rows {
        push_row(e, seq_len, &mut inputs, &mut targets);
        n += 1;
    }
    Batch {
        inputs,
        targets,
        batch_size: n,
        seq_len,
        origins: Vec::new(),
    }
}

impl InstructSampler {
    /// Every example must fit a row (`seq_len + 1` tokens): encode with the
    /// same `seq_len`.
    pub fn new(
        examples: Arc<Vec<Encoded>>,
        seq_len: usize,
        batch_size: usize,
        seed: u64,
        rank: usize,
        world_size: usize,
    ) -> Result<InstructSampler, InstructError> {
        if world_size == 0 || rank >= world_size {
            return Err(InstructError::BadRank { rank, world_size });
        }
        if seq_len == 0 {
            return Err(InstructError::ZeroSize { what: "seq_len" });
        }
        if batch_size == 0 {
            return Err(InstructError::ZeroSize { what: "batch_size" });
        }
        if examples.is_empty() {
            return Err(InstructError::NothingToEncode);
        }
        if let Some((index, e)) = examples
            .iter()
            .enumerate()
            .find(|(_, e)| e.ids.len() > seq_len + 1)
        {
            return Err(InstructError::ExampleTooLong {
                index,
                len: e.ids.len(),
                max: seq_len + 1,
            });
        }
        let data_hash = data_hash(&examples);
        Ok(InstructSampler {
            examples,
            seq_len,
            batch_size,
            seed,
            rank,
            world_size,
            data_hash,
            batches_drawn: 0,
            epoch: None,
        })
    }

    fn global_batch(&self) -> u64 {
        (self.batch_size * self.world_size) as u64
    }

    /// Examples consumed by all ranks together.
    pub fn position(&self) -> u64 {
        self.batches_drawn * self.global_batch()
    }

    /// Completed passes over the examples (all ranks together).
    pub fn epochs(&self) -> f64 {
        self.position() as f64 / self.examples.len() as f64
    }

    pub fn batches_drawn(&self) -> u64 {
        self.batches_drawn
    }

    /// The example at global position `pos`.
    fn example_at(&mut self, pos: u64) -> usize {
        let n = self.examples.len() as u64;
        let epoch = pos / n;
        let fresh = !matches!(&self.epoch, Some((e, _)) if *e == epoch);
        if fresh {
            self.epoch = Some((epoch, permutation(self.seed, epoch, n as usize)));
        }
        match &self.epoch {
            Some((_, order)) => order[(pos % n) as usize],
            None => 0, // unreachable: set just above
        }
    }

    /// This rank's next `batch_size` rows.
    pub fn next_batch(&mut self) -> Batch {
        let base = self.position();
        let (n_ranks, rank) = (self.world_size as u64, self.rank as u64);
        let picks: Vec<usize> = (0..self.batch_size as u64)
            .map(|i| self.example_at(base + i * n_ranks + rank))
            .collect();
        self.batches_drawn += 1;
        batch_of(picks.iter().map(|&i| &self.examples[i]), self.seq_len)
    }

    pub fn state(&self) -> InstructSamplerState {
        InstructSamplerState {
            version: STATE_VERSION,
            seed: self.seed,
            rank: self.rank,
            world_size: self.world_size,
            seq_len: self.seq_len,
            batch_size: self.batch_size,
            n_examples: self.examples.len(),
            data_hash: format!("{:016x}", self.data_hash),
            batches_drawn: self.batches_drawn,
            position: self.position(),
        }
    }

    /// Continues from `state`: the following batches are those the saved
    /// sampler would have drawn. The seed comes from the state; the shape
    /// and the data must match this sampler.
    pub fn restore(&mut self, state: &InstructSamplerState) -> Result<(), InstructError> {
        if state.version != STATE_VERSION {
            return Err(InstructError::BadState {
                reason: format!(
                    "state version {} is not the supported version {STATE_VERSION}; start a \
                     fresh run",
                    state.version
                ),
            });
        }
        // Rank and world size may differ (a sharded checkpoint resumes on
        // any number of ranks): the position is global; the global batch
        // must stay.
        let checks: [(&'static str, String, String); 4] = [
            (
                "seq_len",
                state.seq_len.to_string(),
                self.seq_len.to_string(),
            ),
            (
                "the global batch size",
                (state.batch_size * state.world_size).to_string(),
                self.global_batch().to_string(),
            ),
            (
                "the number of instruction examples",
                state.n_examples.to_string(),
                self.examples.len().to_string(),
            ),
            (
                "the instruction data hash",
                state.data_hash.clone(),
                format!("{:016x}", self.data_hash),
            ),
        ];
        for (field, saved, current) in checks {
            if saved != current {
                return Err(InstructError::StateMismatch {
                    field,
                    saved,
                    current,
                });
            }
        }
        let expected = state.batches_drawn.checked_mul(self.global_batch());
        if expected != Some(state.position) {
            return Err(InstructError::BadState {
                reason: format!(
                    "position {} does not match {} batches of {} examples; the state is \
                     corrupt, start a fresh run",
                    state.position,
                    state.batches_drawn,
                    self.global_batch()
                ),
            });
        }
        self.seed = state.seed;
        self.batches_drawn = state.batches_drawn;
        self.epoch = None;
        Ok(())
    }
}

/// Batches covering every example once, in order: full batches of
/// `batch_size` rows and a smaller last batch for the remainder (no
/// fully-ignored filler rows, so every row is real and a mean over
/// non-[`IGNORE`] targets needs no correction). Examples longer than a row
/// are cut to it; encode them with the same `seq_len`.
pub fn eval_batches(examples: &[Encoded], seq_len: usize, batch_size: usize) -> Vec<Batch> {
    examples
        .chunks(batch_size.max(1))
        .map(|chunk| batch_of(chunk.iter(), seq_len))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Example `k`: ids `[1000k, 1000k + 1, ...]` (`len` of them), the second
    /// half trained; the first id identifies it.
    fn ex(k: u32, len: usize) -> Encoded {
        Encoded {
            ids: (0..len as u32).map(|i| 1000 * k + i).collect(),
            train: (0..len).map(|i| i >= len / 2).collect(),
        }
    }

    fn data(n: u32, seq_len: usize) -> Arc<Vec<Encoded>> {
        Arc::new((1..=n).map(|k| ex(k, 2 + k as usize % seq_len)).collect())
    }

    fn ids_of(b: &Batch) -> Vec<u32> {
        b.inputs.chunks(b.seq_len).map(|r| r[0] / 1000).collect()
    }

    #[test]
    fn ignore_exactly_on_untrained_targets_and_padding() {
        let e = Encoded {
            ids: vec![5, 6, 7, 8],
            train: vec![false, false, true, true],
        };
        let b = eval_batches(std::slice::from_ref(&e), 6, 4);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].inputs, vec![5, 6, 7, 8, 0, 0]);
        assert_eq!(b[0].targets, vec![IGNORE, 7, 8, IGNORE, IGNORE, IGNORE]);
        // A full row: seq_len + 1 tokens, no padding.
        let b = eval_batches(&[e], 3, 4);
        assert_eq!(b[0].inputs, vec![5, 6, 7]);
        assert_eq!(b[0].targets, vec![IGNORE, 7, 8]);
    }

    #[test]
    fn epochs_cover_every_example_once_and_seeds_repeat() {
        let d = data(10, 8);
        let mut a = InstructSampler::new(d.clone(), 8, 5, 3, 0, 1).unwrap();
        let mut b = InstructSampler::new(d.clone(), 8, 5, 3, 0, 1).unwrap();
        let mut c = InstructSampler::new(d, 8, 5, 4, 0, 1).unwrap();
        let mut seen = Vec::new();
        let mut other = Vec::new();
        for _ in 0..2 {
            let x = a.next_batch();
            assert_eq!((x.batch_size, x.seq_len, x.inputs.len()), (5, 8, 40));
            assert_eq!(x, b.next_batch());
            seen.extend(ids_of(&x));
            other.extend(ids_of(&c.next_batch()));
        }
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=10).collect::<Vec<_>>());
        assert_ne!(seen, other, "seed does not change the order");
        assert_ne!(
            ids_of(&a.next_batch()),
            seen[..5],
            "epochs repeat the order"
        );
        assert!((a.epochs() - 1.5).abs() < 1e-9);
    }

    #[test]
    fn rank_shares_are_disjoint_and_cover_the_epoch() {
        let d = data(12, 8);
        let mut r0 = InstructSampler::new(d.clone(), 8, 3, 9, 0, 2).unwrap();
        let mut r1 = InstructSampler::new(d.clone(), 8, 3, 9, 1, 2).unwrap();
        let mut single = InstructSampler::new(d, 8, 6, 9, 0, 1).unwrap();
        for _ in 0..2 {
            let (a, b) = (ids_of(&r0.next_batch()), ids_of(&r1.next_batch()));
            assert!(a.iter().all(|x| !b.contains(x)), "{a:?} {b:?}");
            // Interleaved, the ranks' rows are the one-rank global batch.
            let merged: Vec<u32> = a.iter().zip(&b).flat_map(|(x, y)| [*x, *y]).collect();
            assert_eq!(merged, ids_of(&single.next_batch()));
        }
    }

    #[test]
    fn restore_continues_exactly() {
        let d = data(7, 8); // batches straddle epochs
        let mut a = InstructSampler::new(d.clone(), 8, 3, 11, 1, 2).unwrap();
        for _ in 0..5 {
            a.next_batch();
        }
        let json = serde_json::to_string(&a.state()).unwrap();
        let want: Vec<Batch> = (0..6).map(|_| a.next_batch()).collect();
        let mut b = InstructSampler::new(d, 8, 3, 11, 1, 2).unwrap();
        b.restore(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(b.batches_drawn(), 5);
        let got: Vec<Batch> = (0..6).map(|_| b.next_batch()).collect();
        assert_eq!(got, want);
        assert_eq!(b.state(), a.state());
    }

    #[test]
    fn restore_rejects_other_data_and_shapes() {
        let d = data(7, 8);
        let state = InstructSampler::new(d.clone(), 8, 3, 0, 0, 2)
            .unwrap()
            .state();
        for (seq, bs) in [(9, 3), (8, 4)] {
            let mut s = InstructSampler::new(d.clone(), seq, bs, 0, 0, 2).unwrap();
            let e = s.restore(&state).unwrap_err();
            assert!(matches!(e, InstructError::StateMismatch { .. }), "{e}");
        }
        // Another rank, or another world with the same global batch, goes on.
        let mut s = InstructSampler::new(d.clone(), 8, 3, 0, 1, 2).unwrap();
        assert!(s.restore(&state).is_ok());
        let mut s = InstructSampler::new(d.clone(), 8, 6, 0, 0, 1).unwrap();
        assert!(s.restore(&state).is_ok());
        // Same count, different ids: the hash catches it.
        let mut changed: Vec<Encoded> = d.to_vec();
        changed[3].ids[1] += 1;
        let mut s = InstructSampler::new(Arc::new(changed), 8, 3, 0, 0, 2).unwrap();
        let e = s.restore(&state).unwrap_err().to_string();
        assert!(e.contains("instruction data hash"), "{e}");
        let mut s = InstructSampler::new(data(6, 8), 8, 3, 0, 0, 2).unwrap();
        assert!(s.restore(&state).is_err());
        let mut bad = state.clone();
        bad.position += 1;
        let mut s = InstructSampler::new(d.clone(), 8, 3, 0, 0, 2).unwrap();
        assert!(matches!(
            s.restore(&bad),
            Err(InstructError::BadState { .. })
        ));
        bad = state;
        bad.version = 99;
        assert!(matches!(
            s.restore(&bad),
            Err(InstructError::BadState { .. })
        ));
    }

    #[test]
    fn constructor_errors() {
        let d = data(3, 8);
        assert!(matches!(
            InstructSampler::new(d.clone(), 8, 2, 0, 2, 2),
            Err(InstructError::BadRank { .. })
        ));
        assert!(matches!(
            InstructSampler::new(d.clone(), 8, 0, 0, 0, 1),
            Err(InstructError::ZeroSize { .. })
        ));
        assert!(matches!(
            InstructSampler::new(Arc::new(vec![]), 8, 2, 0, 0, 1),
            Err(InstructError::NothingToEncode)
        ));
        let e = InstructSampler::new(Arc::new(vec![ex(1, 10)]), 8, 2, 0, 0, 1).unwrap_err();
        assert!(e.to_string().contains("seq_len + 1 = 9"), "{e}");
    }

    #[test]
    fn eval_batches_cover_each_example_once_in_order() {
        let d = data(7, 8);
        let b = eval_batches(&d, 8, 3);
        let sizes: Vec<usize> = b.iter().map(|b| b.batch_size).collect();
        assert_eq!(sizes, [3, 3, 1]);
        assert_eq!(
            b.iter().flat_map(ids_of).collect::<Vec<_>>(),
            (1..=7).collect::<Vec<_>>()
        );
        assert_eq!(b[2].inputs.len(), 8);
    }
}
