//! ZeRO-3 (FSDP): parameters sharded at rest. Between steps a rank keeps
//! only its shard of the flat f32 parameters (the ZeRO master shard) and
//! the optimizer state for it; the model it carries is hollow (every
//! trainable parameter a one-element placeholder that keeps its id).
//!
//! Two ways to gather for a micro-batch. Stacks whose blocks each run once
//! on their own (attention blocks that own their FFN, Mamba blocks) gather
//! per block (`zero3_block.rs`: each block's parameters gathered for its
//! forward and dropped after, re-gathered and recomputed in the backward,
//! 3 x the block parameters of traffic). The other stacks (RWKV-7, shared
//! blocks or FFN) gather the whole model,
//! here: each bucket's block of the shard becomes a leaf tensor and is
//! all-gathered into the bucket's parameters; a full model is built from
//! slices of the gathered buckets. Each gather is one graph node
//! ([`kiln_models::ops::BackwardHook`]) whose backward reduce-scatters the
//! bucket's gradient, so the gradient that reaches a leaf is already this
//! rank's block of the sum over ranks. The full model is dropped with the
//! graph after the backward. Every rank builds the same graph, and burn
//! walks it in an order fixed by its structure, so the ranks' backward
//! collectives line up.
//!
//! In the whole-model gather burn's autodiff keeps each matmul's weight
//! until the backward uses it, so the gathered parameters live from the
//! forward to the end of the backward (2 Psi of traffic per micro-batch,
//! the full parameters held once during it, like activations).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, FloatDType, Tensor, TensorPrimitive};
use kiln_models::ops::BackwardHook;
use kiln_models::{Decoder, FusedOps, TrainBackend};

use super::layout::Bucket;
use super::zero::{device_vec, host, internal, scatter_bucket, table_device, CommMeter, Sharding};
use super::zero3_block::BlockPass;
use super::Collective;
use crate::config::ReduceDtype;
use crate::error::{Result, TrainerError};
use crate::grads::ParamTable;
use crate::optim::Optimizer;

/// The backward of one bucket's parameter all-gather: the bucket's
/// gradient reduce-scattered (in the configured dtype) into this rank's
/// block of it.
struct ScatterHook {
    bucket: Bucket,
    size: usize,
    collective: Arc<dyn Collective>,
    dtype: ReduceDtype,
    meter: Arc<CommMeter>,
    /// A failed collective: the backward cannot return an error, so the
    /// step reads it from here after the backward.
    error: Arc<Mutex<Option<TrainerError>>>,
}

impl std::fmt::Debug for ScatterHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScatterHook")
            .field("bucket", &self.bucket)
            .finish()
    }
}

impl BackwardHook for ScatterHook {
    fn backward(&self, grad_output: Vec<f32>) -> Vec<f32> {
        let t = Instant::now();
        let b = &self.bucket;
        let mut padded = vec![0.0f32; b.block * self.size];
        let n = grad_output.len().min(b.end - b.start);
        padded[..n].copy_from_slice(&grad_output[..n]);
        let mine = scatter_bucket(self.collective.as_ref(), &padded, self.dtype, &self.meter);
        self.meter.add_hook_time(t.elapsed().as_secs_f64());
        match mine {
            Ok(s) => s,
            Err(e) => {
                if let Ok(mut slot) = self.error.lock() {
                    *slot = Some(e);
                }
                vec![0.0; b.block]
            }
        }
    }
}

/// One micro-batch's model, built from the gathered shard: whole, or
/// (per block) its embedding, final norm and head, the blocks gathered one
/// at a time by its stack runner.
pub struct Gathered<B: TrainBackend> {
    pub model: Decoder<B>,
    /// Each bucket's block of this rank's shard, a leaf of the graph.
    leaves: Vec<(Bucket, Tensor<B, 1>)>,
    shard_len: usize,
    error: Arc<Mutex<Option<TrainerError>>>,
    /// Per block: the backward passes left after the loss's.
    blocks: Option<BlockPass<B>>,
}

impl<B: TrainBackend> Gathered<B> {
    pub(crate) fn per_block(
        model: Decoder<B>,
        shard_len: usize,
        error: Arc<Mutex<Option<TrainerError>>>,
        blocks: BlockPass<B>,
    ) -> Self {
        Gathered {
            model,
            leaves: Vec::new(),
            shard_len,
            error,
            blocks: Some(blocks),
        }
    }

    /// This rank's shard of the sum over ranks of the micro-batch's
    /// gradient (zeros where no parameter took part). Per block, this runs
    /// the blocks' and the embedding's backward passes first.
    pub fn shard_grad(self, grads: &B::Gradients) -> Result<Vec<f32>> {
        let failed = self.error.lock().ok().and_then(|mut e| e.take());
        if let Some(e) = failed {
            return Err(e);
        }
        let mut shard = vec![0.0f32; self.shard_len];
        if let Some(pass) = &self.blocks {
            pass.finish(grads, &mut shard)?;
        }
        for (b, leaf) in &self.leaves {
            if let Some(g) = leaf.grad(grads) {
                let values = host(g, "reading the ZeRO-3 gradient shard")?; // [block]
                shard[b.shard_offset..b.shard_offset + b.block].copy_from_slice(&values);
            }
        }
        Ok(shard)
    }
}

impl Sharding {
    /// ZeRO-3 at start: the f32 master shard read from the (full) model,
    /// then every trainable parameter replaced by a placeholder.
    pub fn hollow<B: TrainBackend>(&mut self, model: Decoder<B>, table: &ParamTable) -> Decoder<B> {
        self.master(&model);
        model.map(&mut Hollow { table })
    }

    /// The full model of one micro-batch: each bucket of the parameter
    /// shard all-gathered through a graph node whose backward
    /// reduce-scatters that bucket's gradient.
    pub fn gather_model<B: TrainBackend>(
        &self,
        hollow: &Decoder<B>,
        table: &ParamTable,
        c: &Arc<dyn Collective>,
    ) -> Result<Gathered<B>> {
        if self.layout.buckets.iter().any(|b| b.group.is_some()) {
            return self.gather_blocks(hollow, table, c);
        }
        let master = self
            .master
            .as_ref()
            .ok_or_else(|| internal("ZeRO-3 gather", "no master shard"))?;
        let device = table_device(hollow);
        let error = Arc::new(Mutex::new(None));
        let (mut leaves, mut joined) = (Vec::new(), Vec::new());
        for b in &self.layout.buckets {
            let mine = &master[b.shard_offset..b.shard_offset + b.block];
            self.comm.add(b.block * self.size() * 4);
            let all = c.all_gather(mine)?; // [block * N]
            let values = all[..b.end - b.start].to_vec();
            let leaf =
                Tensor::<B, 1>::from_inner(device_vec(mine.to_vec(), &device)).require_grad(); // [block]
            let full = Tensor::<B, 1>::from_inner(device_vec(values, &device)); // [end - start]
            let hook = Arc::new(ScatterHook {
                bucket: *b,
                size: self.size(),
                collective: c.clone(),
                dtype: self.reduce_dtype,
                meter: self.comm.clone(),
                error: error.clone(),
            });
            let t = <B as FusedOps>::with_backward(
                leaf.clone().into_primitive().tensor(),
                full.into_primitive().tensor(),
                hook,
            );
            joined.push(Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(t))); // [end - start]
            leaves.push((*b, leaf));
        }
        let slots = self
            .layout
            .slots
            .iter()
            .map(|s| (s.name.as_str(), (s.offset, s.len)))
            .collect();
        let model = hollow.clone().map(&mut FromBuckets {
            table,
            slots,
            buckets: &self.layout.buckets,
            joined,
        });
        Ok(Gathered {
            model,
            leaves,
            shard_len: self.layout.shard_len(),
            error,
            blocks: None,
        })
    }

    /// The full model with leaf parameters (evaluation, sampling, Sophia's
    /// Hessian refresh): one all-gather of the shards. Every rank calls it.
    pub fn materialise<AB: TrainBackend>(
        &self,
        hollow: &Decoder<AB>,
        table: &ParamTable,
        opt: &Optimizer<AB::InnerBackend>,
        c: &dyn Collective,
    ) -> Result<Decoder<AB>> {
        let master = self
            .master
            .as_ref()
            .ok_or_else(|| internal("ZeRO-3 materialise", "no master shard"))?;
        let flat = self.all_gather(master, c)?;
        let all: HashSet<String> = self.layout.slots.iter().map(|s| s.name.clone()).collect();
        Ok(self.write_params(hollow.clone(), table, &flat, opt, &all))
    }
}

/// Replaces each trainable parameter with a one-element placeholder.
struct Hollow<'a> {
    table: &'a ParamTable,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for Hollow<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        if !self.table.by_id.contains_key(&id) {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let placeholder = Tensor::<AB, D>::zeros([1; D], &tensor.device()); // [1, .., 1]
        Param::from_mapped_value(id, placeholder, mapper)
    }
}

/// Each trainable parameter in `slots` as its slices of the gathered
/// buckets (tracked: its gradient flows back into the buckets' nodes).
/// Every slot must lie within `buckets`.
pub(super) struct FromBuckets<'a, AB: AutodiffBackend> {
    pub(super) table: &'a ParamTable,
    pub(super) slots: BTreeMap<&'a str, (usize, usize)>,
    pub(super) buckets: &'a [Bucket],
    pub(super) joined: Vec<Tensor<AB, 1>>,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for FromBuckets<'_, AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let info = self.table.by_id.get(&id).map(|&i| &self.table.infos[i]);
        let Some((info, (offset, len))) =
            info.and_then(|i| self.slots.get(i.name.as_str()).map(|s| (i, *s)))
        else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let mut pieces = Vec::new();
        for (b, t) in self.buckets.iter().zip(&self.joined) {
            let (lo, hi) = (offset.max(b.start), (offset + len).min(b.end));
            if lo < hi {
                pieces.push(t.clone().narrow(0, lo - b.start, hi - lo)); // [hi - lo]
            }
        }
        let flat = if pieces.len() == 1 {
            pieces.remove(0)
        } else {
            Tensor::cat(pieces, 0) // [len]
        };
        let shape: [usize; D] = info.shape.clone().try_into().unwrap_or([len; D]);
        let t = flat.reshape(shape); // [shape]
        let t = match tensor.dtype() {
            DType::F32 => t,
            other => t.cast(FloatDType::from(other)),
        };
        Param::from_mapped_value(id, t, mapper)
    }
}

/// ZeRO-3's model for code that needs every parameter (a clone of the
/// model for the other strategies).
pub fn full_model<AB: TrainBackend>(
    sharding: Option<&Sharding>,
    model: &Decoder<AB>,
    table: &ParamTable,
    opt: &Optimizer<AB::InnerBackend>,
    c: &dyn Collective,
) -> Result<Option<Decoder<AB>>> {
    match sharding.filter(|s| s.strategy.shards_params()) {
        Some(s) => s.materialise(model, table, opt, c).map(Some),
        None => Ok(None),
    }
}
