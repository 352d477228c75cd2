//! What a run of more than one rank checks and builds at start: the global
//! batch split, what a strategy supports, and this rank's [`Sharding`] with
//! its share of the optimizer state.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use kiln_models::NamedTensor;

use super::layout::{parse_segment_key, Segment};
use super::zero::Sharding;
use super::World;
use crate::config::Precision;
use crate::config::RunConfig;
use crate::error::{Result, TrainerError};
use crate::grads::ParamTable;
use crate::optim::Optimizer;

/// Prefixes of optimizer-state keys (`PREFIX.NAME`), longest first.
pub const STATE_PREFIXES: [&str; 3] = ["exp_avg_sq.", "exp_avg.", "hessian."];

/// Refuses what a world of `world.size` ranks cannot run, with the fix.
pub fn check_world(cfg: &RunConfig, world: World) -> Result<()> {
    if world.size == 1 {
        return Ok(());
    }
    let b = cfg.training.batch_size;
    if !b.is_multiple_of(world.size) {
        return Err(TrainerError::invalid(
            "training.batch_size",
            format!(
                "{b} does not divide by {} ranks: it is the global batch and each rank takes an equal share; use a multiple of {}",
                world.size, world.size
            ),
        ));
    }
    let s = cfg.distributed.strategy;
    if s.shards_optimizer() && cfg.adapter.is_some() {
        return Err(TrainerError::invalid(
            "distributed.strategy",
            format!("\"{}\" with [adapter]: adapter runs are small and save adapters only; use strategy \"ddp\"", s.name()),
        ));
    }
    if s.shards_optimizer() && cfg.training.precision == Precision::Bf16Pure {
        return Err(TrainerError::invalid(
            "distributed.strategy",
            format!(
                "\"{}\" keeps f32 master shards, which bf16-pure does not have: use precision \"bf16-mixed\" or strategy \"ddp\"",
                s.name()
            ),
        ));
    }
    if s.shards_params() && cfg.quantize.is_some() {
        return Err(TrainerError::invalid(
            "distributed.strategy",
            "\"zero3\" with [quantize]: QAT rewrites the whole model, which ZeRO-3 holds in shards; use strategy \"zero2\"",
        ));
    }
    Ok(())
}

/// ZeRO-3 refuses pruning masks (a pruned checkpoint's), which the gathered
/// parameters would not see.
pub fn check_masks(strategy: crate::config::Strategy, masked: bool) -> Result<()> {
    if strategy.shards_params() && masked {
        return Err(TrainerError::invalid(
            "distributed.strategy",
            "\"zero3\" on a pruned model (its masks): use strategy \"zero2\"",
        ));
    }
    Ok(())
}

/// This rank's sharding; a ZeRO rank keeps only its segments' optimizer
/// state (sliced from the full state a checkpoint loads as, so a checkpoint
/// of any bucket layout loads). `groups`: see [`Sharding::new`].
pub fn sharding<B: Backend>(
    cfg: &RunConfig,
    world: World,
    table: &ParamTable,
    opt: &mut Optimizer<B>,
    device: &B::Device,
    groups: &[Option<usize>],
) -> Sharding {
    let sharding = Sharding::new(table, world, &cfg.distributed, groups);
    if cfg.distributed.strategy.shards_optimizer() {
        let full = opt.export_state();
        if !full.is_empty() {
            opt.import_state(&slice_state(&full, &sharding.segments), device);
        }
    }
    sharding
}

/// The log line of a distributed run.
pub fn describe(cfg: &RunConfig, world: World) -> String {
    let d = &cfg.distributed;
    format!(
        "distributed: {} ranks, strategy {}, buckets of {} MiB, {} reduce, {} sequences per rank per micro-batch",
        world.size,
        d.strategy.name(),
        d.bucket_mb,
        d.reduce_dtype.name(),
        cfg.training.batch_size / world.size
    )
}

fn split_state_key(key: &str) -> Option<(&'static str, &str)> {
    STATE_PREFIXES
        .iter()
        .find_map(|p| key.strip_prefix(p).map(|rest| (*p, rest)))
}

/// Full per-parameter state (`PREFIX.NAME`) cut into `segments`
/// (`PREFIX.NAME@OFFSET`).
pub fn slice_state(
    full: &BTreeMap<String, NamedTensor>,
    segments: &[Segment],
) -> BTreeMap<String, NamedTensor> {
    let mut out = BTreeMap::new();
    for (key, t) in full {
        let Some((prefix, name)) = split_state_key(key) else {
            continue;
        };
        for seg in segments.iter().filter(|s| s.name == name) {
            if seg.param_offset + seg.len <= t.data.len() {
                out.insert(
                    format!("{prefix}{}", seg.key()),
                    NamedTensor {
                        shape: vec![seg.len],
                        data: t.data[seg.param_offset..seg.param_offset + seg.len].to_vec(),
                    },
                );
            }
        }
    }
    out
}

/// Segments (`KEY@OFFSET`) joined back into whole flat tensors (`KEY`),
/// checked to tile `0..len` without gaps or overlaps. `shape_of` gives a
/// key's full shape (its length must match).
pub fn join_segments(
    parts: BTreeMap<String, NamedTensor>,
    shape_of: impl Fn(&str) -> Option<Vec<usize>>,
    source: &std::path::Path,
) -> Result<BTreeMap<String, NamedTensor>> {
    let mut grouped: BTreeMap<String, Vec<(usize, Vec<f32>)>> = BTreeMap::new();
    for (key, t) in parts {
        let (name, off) = parse_segment_key(&key).ok_or_else(|| {
            TrainerError::checkpoint(source, format!("tensor {key} is not NAME@OFFSET"))
        })?;
        grouped
            .entry(name.to_string())
            .or_default()
            .push((off, t.data));
    }
    let mut out = BTreeMap::new();
    for (name, mut segs) in grouped {
        segs.sort_by_key(|(off, _)| *off);
        let mut data = Vec::new();
        for (off, v) in segs {
            if off != data.len() {
                return Err(TrainerError::checkpoint(
                    source,
                    format!("segments of {name} leave a gap or overlap at element {off}: a shard is missing; resume from an earlier checkpoint"),
                ));
            }
            data.extend(v);
        }
        let shape = shape_of(&name).unwrap_or_else(|| vec![data.len()]);
        if shape.iter().product::<usize>() != data.len() {
            return Err(TrainerError::checkpoint(
                source,
                format!("{name} has {} elements in its shards but shape {shape:?}: a shard is missing; resume from an earlier checkpoint", data.len()),
            ));
        }
        out.insert(name, NamedTensor { shape, data });
    }
    Ok(out)
}
