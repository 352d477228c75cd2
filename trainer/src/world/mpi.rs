//! The MPI engine behind [`Collective`]: the `mpi` crate (rsmpi) over the
//! system's Open MPI. Ranks and world size come from `mpirun` / Slurm.
//!
//! Every all-reduce here is a reduce-scatter followed by an all-gather: each
//! element is summed once, by its owner, and the same bits reach every rank,
//! so data-parallel replicas stay bitwise identical whatever algorithm the
//! MPI library picks for a plain all-reduce (recursive doubling may sum in a
//! different order on different ranks).

use std::sync::Mutex;

use mpi::collective::SystemOperation;
use mpi::environment::{Threading, Universe};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::{Collective, World};
use crate::error::{Result, TrainerError};

/// MPI's world communicator, used from one thread at a time.
pub struct MpiCollective {
    world: World,
    comm: Mutex<SimpleCommunicator>,
    // Never dropped: the process keeps its handle in a static, so MPI is
    // finalized explicitly ([`MpiCollective::finalize`]).
    _universe: std::mem::ManuallyDrop<Universe>,
}

// SAFETY: MPI is initialised with `Threading::Serialized` (checked in
// `init`), which allows calls from any thread as long as no two are
// concurrent; the mutex around the communicator serialises them.
unsafe impl Send for MpiCollective {}
// SAFETY: as above; every use of the communicator goes through the mutex.
unsafe impl Sync for MpiCollective {}

impl MpiCollective {
    /// Initialises MPI (once per process).
    pub fn init() -> Result<MpiCollective> {
        let err = |m: &str| TrainerError::Collective {
            world: "mpi".into(),
            message: m.to_string(),
        };
        let (universe, level) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| err("MPI was already initialised in this process"))?;
        if level < Threading::Serialized {
            return Err(err(
                "the MPI library does not offer MPI_THREAD_SERIALIZED; use an Open MPI built with thread support",
            ));
        }
        let comm = universe.world();
        let world = World {
            rank: comm.rank() as usize,
            size: comm.size() as usize,
        };
        Ok(MpiCollective {
            world,
            comm: Mutex::new(comm),
            _universe: std::mem::ManuallyDrop::new(universe),
        })
    }

    fn comm(&self) -> Result<std::sync::MutexGuard<'_, SimpleCommunicator>> {
        self.comm.lock().map_err(|_| TrainerError::Collective {
            world: self.describe(),
            message: "the MPI communicator lock was poisoned by a panic".into(),
        })
    }

    fn describe(&self) -> String {
        format!("rank {} of {}", self.world.rank, self.world.size)
    }

    /// `MPI_Finalize`, once, when the command is done: a rank that exits
    /// without it is reported by mpirun as an abnormal end.
    pub fn finalize(&self) {
        let _guard = self.comm.lock();
        // SAFETY: called once at the end of main, after every collective;
        // the universe is never dropped, so MPI is not finalized twice.
        unsafe {
            mpi::ffi::MPI_Finalize();
        }
    }

    /// Ends every rank of the job at once (`MPI_Abort`): a rank that stops
    /// alone would leave the others waiting in a collective.
    pub fn abort(&self, code: i32) -> ! {
        match self.comm.lock() {
            Ok(c) => c.abort(code),
            Err(p) => p.into_inner().abort(code),
        }
    }
}

impl Collective for MpiCollective {
    fn world(&self) -> World {
        self.world
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let n = self.world.size;
        if n == 1 || buf.is_empty() {
            return Ok(());
        }
        // Padded to equal blocks for MPI_Reduce_scatter_block.
        let chunk = buf.len().div_ceil(n);
        let mut padded = vec![0.0f32; chunk * n];
        padded[..buf.len()].copy_from_slice(buf);
        let mut mine = vec![0.0f32; chunk];
        let mut all = vec![0.0f32; chunk * n];
        {
            let comm = self.comm()?;
            comm.reduce_scatter_block_into(&padded[..], &mut mine[..], SystemOperation::sum());
            comm.all_gather_into(&mine[..], &mut all[..]);
        }
        let len = buf.len();
        buf.copy_from_slice(&all[..len]);
        Ok(())
    }

    fn reduce_scatter_sum(&self, buf: &[f32]) -> Result<Vec<f32>> {
        let n = self.world.size;
        let range = self.world.shard_range(buf.len(), self.world.rank);
        if n == 1 {
            return Ok(buf.to_vec());
        }
        if buf.len().is_multiple_of(n) {
            let mut mine = vec![0.0f32; buf.len() / n];
            self.comm()?
                .reduce_scatter_block_into(buf, &mut mine[..], SystemOperation::sum());
            return Ok(mine);
        }
        // Unequal shards: MPI's block form needs equal counts.
        let mut all = buf.to_vec();
        self.all_reduce_sum(&mut all)?;
        Ok(all[range].to_vec())
    }

    fn all_gather(&self, shard: &[f32]) -> Result<Vec<f32>> {
        let n = self.world.size;
        if n == 1 {
            return Ok(shard.to_vec());
        }
        // Shards may differ by one element (World::shard_range): gather the
        // lengths first, then equal padded blocks.
        let comm = self.comm()?;
        let mut lens = vec![0u64; n];
        comm.all_gather_into(&(shard.len() as u64), &mut lens[..]);
        let block = lens.iter().copied().max().unwrap_or(0) as usize;
        let mut padded = vec![0.0f32; block];
        padded[..shard.len()].copy_from_slice(shard);
        let mut all = vec![0.0f32; block * n];
        comm.all_gather_into(&padded[..], &mut all[..]);
        let mut out = Vec::with_capacity(lens.iter().sum::<u64>() as usize);
        for (r, &len) in lens.iter().enumerate() {
            out.extend_from_slice(&all[r * block..r * block + len as usize]);
        }
        Ok(out)
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        if self.world.size == 1 {
            return Ok(());
        }
        let comm = self.comm()?;
        comm.process_at_rank(root as i32).broadcast_into(buf);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.comm()?.barrier();
        Ok(())
    }

    /// bf16 bits through an all-to-all (MPI has no bf16 sum): rank r
    /// receives every rank's block r and sums them in f32 in rank order,
    /// the same bits as the provided version.
    fn reduce_scatter_sum_bf16(&self, buf: &[f32]) -> Result<Vec<f32>> {
        let n = self.world.size;
        if n == 1 || !buf.len().is_multiple_of(n) {
            let rounded: Vec<f32> = buf.iter().map(|&v| super::round_bf16(v)).collect();
            return self.reduce_scatter_sum(&rounded);
        }
        let bits: Vec<u16> = buf.iter().map(|&v| super::to_bf16_bits(v)).collect();
        let mut recv = vec![0u16; buf.len()];
        self.comm()?.all_to_all_into(&bits[..], &mut recv[..]);
        let block = buf.len() / n;
        let mut mine = vec![0.0f32; block];
        for part in recv.chunks(block) {
            for (m, &h) in mine.iter_mut().zip(part) {
                *m += super::from_bf16_bits(h);
            }
        }
        Ok(mine)
    }

    fn all_gather_bf16(&self, shard: &[f32]) -> Result<Vec<f32>> {
        let n = self.world.size;
        let bits: Vec<u16> = shard.iter().map(|&v| super::to_bf16_bits(v)).collect();
        let mut all = vec![0u16; shard.len() * n];
        self.comm()?.all_gather_into(&bits[..], &mut all[..]);
        Ok(all.into_iter().map(super::from_bf16_bits).collect())
    }
}
