//! The data-parallel seam: who this process is (`World { rank, size }`) and
//! the collective operations a sharded trainer needs. Today's one engine is
//! [`SingleProcess`]; MPI (the `mpi` crate) and NCCL (through `cudarc`) plug
//! in behind [`Collective`] without the step changing. [`local::LocalGroup`]
//! runs N ranks as threads of one process, for tests.
//!
//! Buffers are host `f32` slices: gradients and optimizer shards are flat
//! per-parameter vectors already (see `grads.rs`), which is what MPI takes.

pub mod layout;
pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod setup;
pub mod zero;
pub mod zero3;
pub mod zero3_block;
mod zero_gather;

use crate::error::Result;

/// This process's place among the data-parallel ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub size: usize,
}

impl World {
    pub const SINGLE: World = World { rank: 0, size: 1 };

    /// Rank 0 writes the run's shared files: logs, TensorBoard, samples,
    /// the config, the tokenizer and full checkpoints.
    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }

    /// The element range of a flat buffer of `n` values owned by `rank`:
    /// contiguous, sizes differing by at most one, earlier ranks larger
    /// (the one place shard offsets are computed, as llm.c's zero.cuh does).
    pub fn shard_range(&self, n: usize, rank: usize) -> std::ops::Range<usize> {
        let (base, extra) = (n / self.size, n % self.size);
        let start = rank * base + rank.min(extra);
        start..start + base + usize::from(rank < extra)
    }
}

/// Collective operations over the ranks of one [`World`]. Every rank must
/// call the same operations in the same order with buffers of equal length.
pub trait Collective: Send + Sync {
    fn world(&self) -> World;
    /// Element-wise sum over all ranks, left in every rank's `buf`.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// Element-wise sum over all ranks; returns this rank's
    /// [`World::shard_range`] of the result.
    fn reduce_scatter_sum(&self, buf: &[f32]) -> Result<Vec<f32>>;
    /// Concatenates every rank's shard in rank order (inverse of the scatter).
    fn all_gather(&self, shard: &[f32]) -> Result<Vec<f32>>;
    /// Overwrites `buf` on every rank with `root`'s.
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()>;
    fn barrier(&self) -> Result<()>;

    /// [`Collective::reduce_scatter_sum`] with bf16 on the wire: each
    /// rank's values rounded to bf16 once, then summed in f32 in rank order
    /// (`buf.len()` a multiple of the world size). This provided version
    /// gives the numbers (a test engine); MPI overrides it to move half
    /// the bytes.
    fn reduce_scatter_sum_bf16(&self, buf: &[f32]) -> Result<Vec<f32>> {
        let rounded: Vec<f32> = buf.iter().map(|&v| round_bf16(v)).collect();
        self.reduce_scatter_sum(&rounded)
    }

    /// [`Collective::all_gather`] of equal-length shards rounded to bf16.
    fn all_gather_bf16(&self, shard: &[f32]) -> Result<Vec<f32>> {
        let rounded: Vec<f32> = shard.iter().map(|&v| round_bf16(v)).collect();
        self.all_gather(&rounded)
    }
}

/// The bf16 bits of `v`, rounded to nearest, ties to even (NaN stays NaN).
pub fn to_bf16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) as u16) | 0x40;
    }
    let round = 0x7FFF + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

pub fn from_bf16_bits(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `v` rounded to the nearest bf16 value.
pub fn round_bf16(v: f32) -> f32 {
    from_bf16_bits(to_bf16_bits(v))
}

/// The element-wise sum over ranks of f64 values, on every rank. Each value
/// travels as two f32s (its f32 rounding and the rest), so 48 bits survive
/// the f32 collective; the ranks' values are added in rank order, so every
/// rank gets the same bits. The identity in one process.
pub fn all_sum_f64(c: &dyn Collective, values: &[f64]) -> Result<Vec<f64>> {
    let size = c.world().size;
    if size == 1 {
        return Ok(values.to_vec());
    }
    let mine: Vec<f32> = values
        .iter()
        .flat_map(|&v| {
            let hi = v as f32;
            [hi, (v - hi as f64) as f32]
        })
        .collect();
    let all = c.all_gather(&mine)?; // [size * 2 * len]
    let n = mine.len();
    Ok((0..values.len())
        .map(|i| {
            (0..size)
                .map(|r| all[r * n + 2 * i] as f64 + all[r * n + 2 * i + 1] as f64)
                .sum()
        })
        .collect())
}

/// One process, world size 1: every collective is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn world(&self) -> World {
        World::SINGLE
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn reduce_scatter_sum(&self, buf: &[f32]) -> Result<Vec<f32>> {
        Ok(buf.to_vec())
    }
    fn all_gather(&self, shard: &[f32]) -> Result<Vec<f32>> {
        Ok(shard.to_vec())
    }
    fn broadcast(&self, _buf: &mut [f32], _root: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ranges_tile_the_buffer() {
        for (n, size) in [(10, 3), (3, 4), (0, 2), (7, 1), (64, 8)] {
            let w = World { rank: 0, size };
            let mut next = 0;
            for r in 0..size {
                let range = w.shard_range(n, r);
                assert_eq!(range.start, next, "n {n} size {size} rank {r}");
                assert!(range.len() == n / size || range.len() == n / size + 1);
                next = range.end;
            }
            assert_eq!(next, n);
        }
    }

    #[test]
    fn f64_sums_keep_48_bits_over_f32_collectives() {
        let groups = local::LocalGroup::new(3, std::time::Duration::from_secs(30));
        let handles: Vec<_> = groups
            .into_iter()
            .map(|g| {
                std::thread::spawn(move || {
                    let r = g.world().rank as f64;
                    all_sum_f64(&g, &[1.0 / 3.0 + r, 1e12 + r * 1e-3, 0.0]).expect("sum")
                })
            })
            .collect();
        let want = [1.0 + 3.0, 3e12 + 3e-3, 0.0];
        for h in handles {
            let got = h.join().expect("rank");
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() <= w.abs() * 1e-14, "{g} vs {w}");
            }
        }
    }

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        assert_eq!(round_bf16(1.0), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to even (1).
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(round_bf16(-2.5e-3), -0.002_502_441_4);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        for v in [3.1e-5f32, -7.7, 123_456.7] {
            assert!(((round_bf16(v) - v) / v).abs() <= 1.0 / 256.0, "{v}");
        }
    }
}
