//! `[distributed]`: how data-parallel ranks share the work (DDP, ZeRO-1/2/3).
//! The ranks themselves come from MPI (`mpirun -n N kiln train ...`); this
//! section only says what is sharded. The global batch (`training.batch_size`)
//! does not depend on the number of ranks: each rank takes `batch_size / N`
//! of its rows.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Every rank holds everything; gradients are all-reduced.
    #[default]
    Ddp,
    /// Optimizer state sharded: reduce-scatter gradients, update the own
    /// shard, all-gather parameters.
    Zero1,
    /// ZeRO-1, and gradients reduced micro-batch by micro-batch so that a
    /// rank only accumulates the shard it owns.
    Zero2,
    /// Parameters sharded too (`fsdp` is an alias): each rank keeps only
    /// its shard of the f32 parameters; they are all-gathered for each
    /// micro-batch's forward, and the backward reduce-scatters their
    /// gradient straight into the owner's shard (`world/zero3.rs`).
    #[serde(alias = "fsdp")]
    Zero3,
}

impl Strategy {
    /// Optimizer state (and master parameters) live in shards.
    pub fn shards_optimizer(self) -> bool {
        matches!(self, Strategy::Zero1 | Strategy::Zero2 | Strategy::Zero3)
    }

    /// Parameters live in shards between steps (ZeRO-3).
    pub fn shards_params(self) -> bool {
        self == Strategy::Zero3
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Ddp => "ddp",
            Strategy::Zero1 => "zero1",
            Strategy::Zero2 => "zero2",
            Strategy::Zero3 => "zero3",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReduceDtype {
    /// f32, the default (bf16 reductions are unstable at scale,
    /// pytorch#106395).
    #[default]
    F32,
    /// Gradients travel as bf16 (half the bytes): each rank's values are
    /// rounded to bf16 once, summed in f32 in rank order, averaged, and
    /// (DDP) the mean travels back as bf16; ZeRO's parameter all-gather
    /// stays f32. Relative error ~2^-9 per gradient value.
    Bf16,
}

impl ReduceDtype {
    pub fn name(self) -> &'static str {
        match self {
            ReduceDtype::F32 => "f32",
            ReduceDtype::Bf16 => "bf16",
        }
    }

    /// Bytes of one gradient value on the wire.
    pub fn bytes(self) -> usize {
        match self {
            ReduceDtype::F32 => 4,
            ReduceDtype::Bf16 => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedConfig {
    pub strategy: Strategy,
    /// Gradients travel in buckets of about this many MiB (each its own
    /// collective; a bucket is also the unit a ZeRO shard is cut from).
    pub bucket_mb: f64,
    pub reduce_dtype: ReduceDtype,
    /// After every step, all-gather a hash of each rank's parameters and stop
    /// with an error if any rank differs (a test and debugging aid).
    pub check_replicas: bool,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::Ddp,
            bucket_mb: 25.0,
            reduce_dtype: ReduceDtype::F32,
            check_replicas: false,
        }
    }
}

impl DistributedConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.bucket_mb.is_finite() && self.bucket_mb > 0.0) {
            return Err(TrainerError::invalid(
                "distributed.bucket_mb",
                format!(
                    "{} must be a positive number of MiB (25 is PyTorch DDP's default)",
                    self.bucket_mb
                ),
            ));
        }
        Ok(())
    }

    /// Elements of f32 per bucket.
    pub fn bucket_elements(&self) -> usize {
        ((self.bucket_mb * 1024.0 * 1024.0 / 4.0) as usize).max(1)
    }
}
