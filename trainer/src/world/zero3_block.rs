//! ZeRO-3 per block (FSDP with activation checkpointing per block): each
//! decoder block's parameters are one bucket, all-gathered just before the
//! block runs and dropped right after; the backward re-gathers them,
//! recomputes the block from its saved input and reduce-scatters the
//! block's gradient. Traffic per micro-batch: 3 x the block parameters
//! (gather, re-gather, reduce-scatter) plus 2 x the rest (embedding, final
//! norm, head: gathered once, reduce-scattered once). Peak parameter memory
//! during a micro-batch: the rest plus one block, instead of the model.
//!
//! The graph is cut at the block stack (see `kiln_models::stack` for why a
//! per-block custom autodiff op cannot work in burn 0.21): the model's
//! [`StackRunner`] runs the embedding on a graph of its own ("E"), the
//! blocks off the graph, and hands the head a fresh leaf `h`. After the
//! loss's backward (graph "H") the trainer walks the blocks last to first,
//! each recomputation and backward a top-level backward pass of its own,
//! then backpropagates the embedding's graph with the gradient of its
//! output. The rest buckets get one leaf per graph (E and H share no node,
//! so neither backward consumes the other's); their two gradients are
//! summed before the one reduce-scatter. Every rank runs the same
//! collectives in the same order (blocks in a fixed order, then the rest).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, FloatDType, Int, Tensor};
use kiln_models::decoder::Block;
use kiln_models::layers::{Embedding, Rope};
use kiln_models::{Decoder, StackRunner, StackSlot, TrainBackend};

use super::layout::Bucket;
use super::zero::{device_vec, host, internal, scatter_bucket, table_device, CommMeter, Sharding};
use super::zero3::{FromBuckets, Gathered};
use super::Collective;
use crate::config::ReduceDtype;
use crate::error::{Result, TrainerError};
use crate::grads::ParamTable;

/// The block of each trainable parameter (table order) when ZeRO-3 can
/// gather block by block, else empty; and the line rank 0 logs about it.
/// `on_policy`: on-policy distillation samples from the student's inner
/// copy (`valid()`), which needs every parameter at once.
pub fn plan<B: Backend>(
    model: &Decoder<B>,
    table: &ParamTable,
    on_policy: bool,
) -> (Vec<Option<usize>>, String) {
    let groups = match on_policy {
        true => Err("on-policy distillation samples from the whole student"),
        false => block_groups(model, table),
    };
    match groups {
        Ok(groups) => (
            groups,
            format!(
                "zero3: per-block gather of {} blocks (each gathered for its forward, re-gathered and recomputed in the backward; embedding, final norm and head gathered whole)",
                model.layers.len()
            ),
        ),
        Err(why) => (
            Vec::new(),
            format!("zero3: whole-model gather per micro-batch ({why})"),
        ),
    }
}

fn block_groups<B: Backend>(
    model: &Decoder<B>,
    table: &ParamTable,
) -> std::result::Result<Vec<Option<usize>>, &'static str> {
    if model.share_repeat > 1 {
        return Err("blocks applied share_repeat times in a row");
    }
    if model.shared_mlp.is_some() {
        return Err("one FFN shared by every block");
    }
    if model.layers.is_empty() || !model.layers.iter().all(Block::runs_alone) {
        return Err("RWKV-7 blocks (their value residual runs through the stack)");
    }
    let mut block_of = HashMap::new();
    for (i, block) in model.layers.iter().enumerate() {
        let mut ids = Ids(Vec::new());
        block.visit(&mut ids);
        block_of.extend(ids.0.into_iter().map(|id| (id, i)));
    }
    let groups: Vec<Option<usize>> = table
        .infos
        .iter()
        .map(|p| block_of.get(&p.id).copied())
        .collect();
    // One bucket per block needs each block's parameters side by side.
    let (mut seen, mut prev) = (HashSet::new(), None);
    for &g in &groups {
        if g != prev {
            if let Some(i) = g {
                if !seen.insert(i) {
                    return Err("a block's parameters are not contiguous in the table");
                }
            }
            prev = g;
        }
    }
    if seen.len() != model.layers.len() {
        return Err("a block without trainable parameters");
    }
    Ok(groups)
}

/// The ids of a module's float parameters.
struct Ids(Vec<ParamId>);

impl<B: Backend> ModuleVisitor<B> for Ids {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.id);
    }
}

/// Where each parameter of one block sits in its bucket: (offset, len, shape).
type Places = HashMap<ParamId, (usize, usize, Vec<usize>)>;

/// One stored block: its hollow module, bucket and this rank's block of
/// the bucket (the master values at gather time).
struct StoredBlock<AB: TrainBackend> {
    block: Block<AB>,
    bucket: Bucket,
    mine: Vec<f32>,
    places: Places,
}

/// What the forward keeps for the backward.
struct Saved<AB: TrainBackend> {
    /// The embedding's output (graph E).
    x0: Tensor<AB, 3>,
    /// Each block's input, off the graph (the activation checkpoints).
    inputs: Vec<Tensor<AB::InnerBackend, 3>>,
    /// The leaf the head's graph starts from.
    h: Tensor<AB, 3>,
    /// None for a stack without attention blocks.
    rope: Option<Rope<AB>>,
}

/// The [`StackRunner`] of one micro-batch's model.
pub(crate) struct BlockStack<AB: TrainBackend> {
    /// The embedding on its own leaves of the rest buckets (graph E).
    embed: Embedding<AB>,
    blocks: Vec<StoredBlock<AB>>,
    collective: Arc<dyn Collective>,
    meter: Arc<CommMeter>,
    dtype: ReduceDtype,
    size: usize,
    device: burn::tensor::Device<AB::InnerBackend>,
    saved: Mutex<Option<Saved<AB>>>,
    /// A failure inside the forward (the runner cannot return an error).
    error: Arc<Mutex<Option<TrainerError>>>,
}

impl<AB: TrainBackend> StackRunner<AB> for BlockStack<AB> {
    fn run(&self, tokens: Tensor<AB, 2, Int>, rope: Option<&Rope<AB>>) -> Tensor<AB, 3> {
        let x0 = self.embed.forward(tokens); // [B, T, dim]
        match self.forward_blocks(x0.clone(), rope) {
            Ok(h) => h,
            Err(e) => {
                if let Ok(mut slot) = self.error.lock() {
                    slot.get_or_insert(e);
                }
                x0
            }
        }
    }
}

impl<AB: TrainBackend> BlockStack<AB> {
    /// The bucket of block `b` all-gathered: `[end - start]` values.
    fn gather(&self, b: &StoredBlock<AB>) -> Result<Tensor<AB::InnerBackend, 1>> {
        let bucket = &b.bucket;
        self.meter.add(bucket.block * self.size * 4);
        let all = self.collective.all_gather(&b.mine)?; // [block * N]
        let values = all[..bucket.end - bucket.start].to_vec();
        Ok(device_vec(values, &self.device)) // [end - start]
    }

    /// Block `b` with its parameters sliced from `values` (tracked when
    /// `values` is a leaf that requires a gradient).
    fn materialise(&self, b: &StoredBlock<AB>, values: Tensor<AB, 1>) -> Block<AB> {
        b.block.clone().map(&mut SliceBucket {
            values,
            places: &b.places,
        })
    }

    /// Each block in turn, off the graph, on parameters gathered for it
    /// alone and dropped after; returns the leaf `h` the head starts from.
    fn forward_blocks(&self, x0: Tensor<AB, 3>, rope: Option<&Rope<AB>>) -> Result<Tensor<AB, 3>> {
        let rope = rope.cloned();
        let mut x = x0.clone().inner(); // [B, T, dim]
        let mut inputs = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let values = Tensor::<AB, 1>::from_inner(self.gather(b)?); // [end - start], untracked
            let block = self.materialise(b, values);
            inputs.push(x.clone());
            let y = block
                .forward_alone(Tensor::from_inner(x), rope.as_ref())
                .ok_or_else(|| {
                    internal("ZeRO-3 per-block forward", "a block that cannot run alone")
                })?; // [B, T, dim]
            x = y.inner();
        }
        let h = Tensor::<AB, 3>::from_inner(x).require_grad(); // [B, T, dim]
        let mut saved = self
            .saved
            .lock()
            .map_err(|e| internal("ZeRO-3 per-block forward", e))?;
        if saved.is_some() {
            return Err(internal(
                "ZeRO-3 per-block forward",
                "a second forward before the backward of the first",
            ));
        }
        *saved = Some(Saved {
            x0,
            inputs,
            h: h.clone(),
            rope,
        });
        Ok(h)
    }

    /// The blocks' backward, last to first, from the head's gradients:
    /// each block re-gathered, recomputed on fresh leaves and
    /// backpropagated, its bucket's gradient reduce-scattered into `shard`.
    /// Returns the embedding graph's gradients.
    fn backward(&self, grads: &AB::Gradients, shard: &mut [f32]) -> Result<AB::Gradients> {
        let saved = self
            .saved
            .lock()
            .map_err(|e| internal("ZeRO-3 per-block backward", e))?
            .take()
            .ok_or_else(|| internal("ZeRO-3 per-block backward", "no forward"))?;
        let zeros = || saved.h.clone().inner().zeros_like(); // [B, T, dim]
                                                             // No gradient (a loss that ignores h) is zeros: every rank must
                                                             // still run the same collectives.
        let mut g = saved.h.grad(grads).unwrap_or_else(zeros); // [B, T, dim]
        for (b, x) in self.blocks.iter().zip(saved.inputs).rev() {
            let t = Instant::now();
            let full = self.gather(b)?; // [end - start]
            self.meter.add_hook_time(t.elapsed().as_secs_f64());
            let params = Tensor::<AB, 1>::from_inner(full).require_grad(); // [end - start]
            let block = self.materialise(b, params.clone());
            let x = Tensor::<AB, 3>::from_inner(x).require_grad(); // [B, T, dim]
            let y = block
                .forward_alone(x.clone(), saved.rope.as_ref())
                .ok_or_else(|| {
                    internal("ZeRO-3 per-block backward", "a block that cannot run alone")
                })?; // [B, T, dim]
            let gy = same_dtype(Tensor::<AB, 3>::from_inner(g), y.dtype()); // [B, T, dim]
                                                                            // d(sum(y * gy))/dy = gy exactly: the block's backward from gy.
            let bg = (y * gy).sum().backward();
            g = x.grad(&bg).unwrap_or_else(zeros); // [B, T, dim]
            let len = b.bucket.end - b.bucket.start;
            let gp = match params.grad(&bg) {
                Some(t) => host(t, "reading a block's gradient")?, // [end - start]
                None => vec![0.0; len],
            };
            drop(block);
            self.scatter_into(&b.bucket, &[&gp], shard)?;
        }
        let gx0 = same_dtype(Tensor::<AB, 3>::from_inner(g), saved.x0.dtype()); // [B, T, dim]
        Ok((saved.x0 * gx0).sum().backward())
    }

    /// The sum of `parts` (each `[end - start]`) over ranks, this rank's
    /// block of it written into `shard`.
    fn scatter_into(&self, b: &Bucket, parts: &[&[f32]], shard: &mut [f32]) -> Result<()> {
        let t = Instant::now();
        let mut padded = vec![0.0f32; b.block * self.size];
        for part in parts {
            let n = part.len().min(b.end - b.start);
            padded[..n]
                .iter_mut()
                .zip(&part[..n])
                .for_each(|(p, v)| *p += v);
        }
        let mine = scatter_bucket(self.collective.as_ref(), &padded, self.dtype, &self.meter)?;
        shard[b.shard_offset..b.shard_offset + b.block].copy_from_slice(&mine);
        self.meter.add_hook_time(t.elapsed().as_secs_f64());
        Ok(())
    }
}

fn same_dtype<AB: Backend>(t: Tensor<AB, 3>, dtype: DType) -> Tensor<AB, 3> {
    if t.dtype() == dtype {
        t
    } else {
        t.cast(FloatDType::from(dtype))
    }
}

/// One rest bucket: its two leaves (graph H, graph E).
struct RestBucket<AB: TrainBackend> {
    bucket: Bucket,
    head: Tensor<AB, 1>,
    embed: Tensor<AB, 1>,
}

/// What a per-block micro-batch needs after the loss's backward.
pub(crate) struct BlockPass<AB: TrainBackend> {
    stack: Arc<BlockStack<AB>>,
    rest: Vec<RestBucket<AB>>,
}

impl<AB: TrainBackend> BlockPass<AB> {
    /// The blocks' and the embedding's backward after the loss's, and
    /// every bucket's reduce-scatter into `shard`.
    pub(crate) fn finish(&self, grads: &AB::Gradients, shard: &mut [f32]) -> Result<()> {
        let embed_grads = self.stack.backward(grads, shard)?;
        for r in &self.rest {
            let mut parts = Vec::new();
            for (leaf, gs) in [(&r.head, grads), (&r.embed, &embed_grads)] {
                if let Some(g) = leaf.grad(gs) {
                    parts.push(host(g, "reading a rest bucket's gradient")?); // [end - start]
                }
            }
            let refs: Vec<&[f32]> = parts.iter().map(|p| p.as_slice()).collect();
            self.stack.scatter_into(&r.bucket, &refs, shard)?;
        }
        Ok(())
    }
}

impl Sharding {
    /// The model of one per-block micro-batch: the rest buckets gathered
    /// now (one leaf each for graphs H and E), the blocks left to the
    /// model's [`BlockStack`] runner.
    pub(crate) fn gather_blocks<AB: TrainBackend>(
        &self,
        hollow: &Decoder<AB>,
        table: &ParamTable,
        c: &Arc<dyn Collective>,
    ) -> Result<Gathered<AB>> {
        let master = self
            .master
            .as_ref()
            .ok_or_else(|| internal("ZeRO-3 gather", "no master shard"))?;
        let device = table_device(hollow);
        let mine = |b: &Bucket| master[b.shard_offset..b.shard_offset + b.block].to_vec();
        let (mut rest, mut buckets, mut heads, mut embeds) = (vec![], vec![], vec![], vec![]);
        for b in self.layout.buckets.iter().filter(|b| b.group.is_none()) {
            self.comm.add(b.block * self.size() * 4);
            let all = c.all_gather(&mine(b))?; // [block * N]
            let full = device_vec::<AB::InnerBackend>(all[..b.end - b.start].to_vec(), &device); // [end - start]
            let head = Tensor::<AB, 1>::from_inner(full.clone()).require_grad(); // [end - start]
            let embed = Tensor::<AB, 1>::from_inner(full).require_grad(); // [end - start]
            buckets.push(*b);
            heads.push(head.clone());
            embeds.push(embed.clone());
            rest.push(RestBucket {
                bucket: *b,
                head,
                embed,
            });
        }
        // Only the parameters of the rest buckets come from them.
        let slots: BTreeMap<&str, (usize, usize)> = self
            .layout
            .slots
            .iter()
            .filter(|s| {
                buckets
                    .iter()
                    .any(|b| b.start <= s.offset && s.offset < b.end)
            })
            .map(|s| (s.name.as_str(), (s.offset, s.len)))
            .collect();
        let mut model = hollow.clone().map(&mut FromBuckets {
            table,
            slots: slots.clone(),
            buckets: &buckets,
            joined: heads,
        });
        let embed = hollow.embed_tokens.clone().map(&mut FromBuckets {
            table,
            slots,
            buckets: &buckets,
            joined: embeds,
        });
        let mut blocks = Vec::with_capacity(hollow.layers.len());
        for (i, block) in hollow.layers.iter().enumerate() {
            let bucket = self
                .layout
                .buckets
                .iter()
                .find(|b| b.group == Some(i))
                .ok_or_else(|| internal("ZeRO-3 gather", format!("no bucket for block {i}")))?;
            blocks.push(StoredBlock {
                block: block.clone(),
                bucket: *bucket,
                mine: mine(bucket),
                places: self.places(table, bucket),
            });
        }
        let error = Arc::new(Mutex::new(None));
        let stack = Arc::new(BlockStack {
            embed,
            blocks,
            collective: c.clone(),
            meter: self.comm.clone(),
            dtype: self.reduce_dtype,
            size: self.size(),
            device,
            saved: Mutex::new(None),
            error: error.clone(),
        });
        model.stack_runner = StackSlot::new::<AB>(stack.clone());
        Ok(Gathered::per_block(
            model,
            self.layout.shard_len(),
            error,
            BlockPass { stack, rest },
        ))
    }

    /// Where each trainable parameter inside `bucket` sits in it.
    fn places(&self, table: &ParamTable, bucket: &Bucket) -> Places {
        table
            .infos
            .iter()
            .zip(&self.layout.slots)
            .filter(|(_, s)| bucket.start <= s.offset && s.offset + s.len <= bucket.end)
            .map(|(p, s)| (p.id, (s.offset - bucket.start, s.len, s.shape.clone())))
            .collect()
    }
}

/// A block's parameters as slices of its gathered bucket.
struct SliceBucket<'a, AB: AutodiffBackend> {
    values: Tensor<AB, 1>,
    places: &'a Places,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for SliceBucket<'_, AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some((offset, len, shape)) = self.places.get(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let shape: [usize; D] = shape.clone().try_into().unwrap_or([*len; D]);
        let t = self.values.clone().narrow(0, *offset, *len).reshape(shape); // [shape]
        let t = match tensor.dtype() {
            DType::F32 => t,
            other => t.cast(FloatDType::from(other)),
        };
        Param::from_mapped_value(id, t, mapper)
    }
}
