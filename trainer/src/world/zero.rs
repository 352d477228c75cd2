//! Data-parallel strategies over a [`FlatLayout`]: DDP's bucketed
//! all-reduce, and ZeRO-1/2's sharded update (reduce-scatter gradients,
//! update the owned shard of an f32 master copy, all-gather parameters).
//! ZeRO-3's parameter gathering lives in `zero3.rs`.
//! Global-norm clipping and the finite check see every rank's shard through
//! one all-gather of partial sums, summed in rank order, so every rank takes
//! the same decision.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use kiln_models::{for_each_tensor, Decoder, NamedTensor, TrainBackend};
use sha2::{Digest, Sha256};

use super::layout::{FlatLayout, Segment};
use super::{Collective, World};
use crate::config::{DistributedConfig, ReduceDtype, Strategy};
use crate::error::{Result, TrainerError};
use crate::grads::{GradStore, ParamTable};
use crate::optim::Optimizer;

/// One rank's part in a data-parallel run of more than one rank.
pub struct Sharding {
    pub strategy: Strategy,
    pub layout: FlatLayout,
    /// The parameter segments this rank owns (ZeRO) in flat order.
    pub segments: Vec<Segment>,
    /// f32 master values of the owned segments, in shard-buffer order;
    /// read from the model on first use.
    pub(crate) master: Option<Vec<f32>>,
    pub check_replicas: bool,
    /// Seconds the last update spent in its parameter all-gather.
    pub gather_s: f64,
    /// The dtype gradients travel in.
    pub reduce_dtype: ReduceDtype,
    /// Bytes through this rank's collectives (shared with ZeRO-3's
    /// backward hook).
    pub comm: Arc<CommMeter>,
}

/// Counts the bytes of the buffers handed to collectives (each counted at
/// its full, gathered or pre-scatter, size: an all-reduce of Psi values in
/// f32 counts 2 x 4 Psi, its reduce-scatter and its all-gather) and the
/// seconds spent in ZeRO-3's backward reduce-scatter.
#[derive(Debug, Default)]
pub struct CommMeter {
    bytes: AtomicU64,
    hook_nanos: AtomicU64,
}

impl CommMeter {
    pub fn add(&self, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub fn add_hook_time(&self, s: f64) {
        self.hook_nanos
            .fetch_add((s * 1e9) as u64, Ordering::Relaxed);
    }
    /// (bytes, hook seconds) since the last call, then zero.
    pub fn take(&self) -> (u64, f64) {
        let b = self.bytes.swap(0, Ordering::Relaxed);
        let n = self.hook_nanos.swap(0, Ordering::Relaxed);
        (b, n as f64 * 1e-9)
    }
    /// Seconds in ZeRO-3's backward hook since the last call, then zero.
    pub fn take_hook_time(&self) -> f64 {
        self.hook_nanos.swap(0, Ordering::Relaxed) as f64 * 1e-9
    }
    /// Bytes since the last `take`.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// This rank's block of the sum of `padded` (one bucket padded to a multiple
/// of the world size) in `dtype`, counted in `meter`.
pub(crate) fn scatter_bucket(
    c: &dyn Collective,
    padded: &[f32],
    dtype: ReduceDtype,
    meter: &CommMeter,
) -> Result<Vec<f32>> {
    meter.add(padded.len() * dtype.bytes());
    match dtype {
        ReduceDtype::F32 => c.reduce_scatter_sum(padded),
        ReduceDtype::Bf16 => c.reduce_scatter_sum_bf16(padded),
    }
}

pub(crate) fn internal(what: &str, e: impl std::fmt::Debug) -> TrainerError {
    TrainerError::Internal(format!("{what}: {e:?}"))
}

pub(crate) fn host<B: Backend>(t: Tensor<B, 1>, what: &str) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| internal(what, e))
}

pub(crate) fn device_vec<B: Backend>(v: Vec<f32>, device: &B::Device) -> Tensor<B, 1> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

impl Sharding {
    /// `groups`: ZeRO-3's per-block gather, the block of each trainable
    /// parameter (one bucket per block); empty for whole-model buckets.
    pub fn new(
        table: &ParamTable,
        world: World,
        cfg: &DistributedConfig,
        groups: &[Option<usize>],
    ) -> Self {
        let params: Vec<(String, Vec<usize>)> = table
            .infos
            .iter()
            .map(|p| (p.name.clone(), p.shape.clone()))
            .collect();
        let layout = FlatLayout::grouped(&params, world, cfg.bucket_elements(), groups);
        let segments = if cfg.strategy.shards_optimizer() {
            layout.segments(world.rank)
        } else {
            Vec::new()
        };
        Sharding {
            strategy: cfg.strategy,
            layout,
            segments,
            master: None,
            check_replicas: cfg.check_replicas,
            gather_s: 0.0,
            reduce_dtype: cfg.reduce_dtype,
            comm: Arc::new(CommMeter::default()),
        }
    }

    pub(crate) fn size(&self) -> usize {
        self.layout.world.size
    }

    /// The gradients in layout order as one host buffer (zeros for a
    /// parameter without a gradient), and which slots had one.
    pub fn flatten<B: Backend>(&self, grads: &GradStore<B>) -> Result<(Vec<f32>, Vec<bool>)> {
        let mut parts = Vec::with_capacity(self.layout.slots.len());
        let mut present = Vec::with_capacity(self.layout.slots.len());
        let device = grads.grads.values().next().map(|g| g.device());
        let Some(device) = device else {
            return Ok((
                vec![0.0; self.layout.total],
                vec![false; self.layout.slots.len()],
            ));
        };
        for s in &self.layout.slots {
            match grads.grads.get(&s.name) {
                Some(g) => {
                    parts.push(g.clone());
                    present.push(true);
                }
                None => {
                    parts.push(Tensor::zeros([s.len], &device));
                    present.push(false);
                }
            }
        }
        Ok((host(Tensor::cat(parts, 0), "reading gradients")?, present))
    }

    /// DDP: every rank ends with the mean gradient, one all-reduce per bucket.
    pub fn all_reduce_mean<B: Backend>(
        &self,
        grads: &mut GradStore<B>,
        c: &dyn Collective,
    ) -> Result<()> {
        if grads.grads.is_empty() {
            return Ok(());
        }
        let (mut flat, present) = self.flatten(grads)?;
        let mut inv = 1.0 / self.size() as f32;
        match self.reduce_dtype {
            ReduceDtype::F32 => {
                for b in &self.layout.buckets {
                    self.comm.add(2 * b.block * self.size() * 4);
                    c.all_reduce_sum(&mut flat[b.start..b.end])?;
                }
            }
            ReduceDtype::Bf16 => {
                // Reduce-scatter and all-gather both in bf16; the mean is
                // taken in f32 between them.
                for b in &self.layout.buckets {
                    let padded = self.layout.padded_bucket(&flat, b);
                    let mut mine = scatter_bucket(c, &padded, ReduceDtype::Bf16, &self.comm)?;
                    mine.iter_mut().for_each(|v| *v *= inv);
                    self.comm.add(padded.len() * 2);
                    let all = c.all_gather_bf16(&mine)?;
                    flat[b.start..b.end].copy_from_slice(&all[..b.end - b.start]);
                }
                inv = 1.0;
            }
        }
        let device = grads.grads.values().next().map(|g| g.device());
        let Some(device) = device else { return Ok(()) };
        for (s, has) in self.layout.slots.iter().zip(present) {
            if has {
                let mean: Vec<f32> = flat[s.offset..s.offset + s.len]
                    .iter()
                    .map(|v| v * inv)
                    .collect();
                grads
                    .grads
                    .insert(s.name.clone(), device_vec(mean, &device));
            }
        }
        Ok(())
    }

    /// This rank's shard of the sum over ranks of the gradients, staged one
    /// bucket at a time (a host copy of one bucket, never of the whole
    /// model), and which slots had a gradient.
    pub fn reduce_scatter_grads<B: Backend>(
        &self,
        grads: &GradStore<B>,
        c: &dyn Collective,
    ) -> Result<(Vec<f32>, Vec<bool>)> {
        let present: Vec<bool> = self
            .layout
            .slots
            .iter()
            .map(|s| grads.grads.contains_key(&s.name))
            .collect();
        let mut shard = vec![0.0f32; self.layout.shard_len()];
        for b in &self.layout.buckets {
            let mut padded = vec![0.0f32; b.block * self.size()];
            for slot in &self.layout.slots {
                let (lo, hi) = (b.start.max(slot.offset), b.end.min(slot.offset + slot.len));
                let Some(g) = grads.grads.get(&slot.name).filter(|_| lo < hi) else {
                    continue;
                };
                let part = g.clone().narrow(0, lo - slot.offset, hi - lo); // [hi - lo]
                let values = host(part, "reading gradients")?;
                padded[lo - b.start..hi - b.start].copy_from_slice(&values);
            }
            let mine = scatter_bucket(c, &padded, self.reduce_dtype, &self.comm)?;
            shard[b.shard_offset..b.shard_offset + b.block].copy_from_slice(&mine);
        }
        Ok((shard, present))
    }

    /// The full flat buffer from every rank's shard, bucket by bucket.
    pub fn all_gather(&self, shard: &[f32], c: &dyn Collective) -> Result<Vec<f32>> {
        let mut flat = vec![0.0f32; self.layout.total];
        for b in &self.layout.buckets {
            self.comm.add(b.block * self.size() * 4);
            let all = c.all_gather(&shard[b.shard_offset..b.shard_offset + b.block])?;
            flat[b.start..b.end].copy_from_slice(&all[..b.end - b.start]);
        }
        Ok(flat)
    }

    /// The f32 master shard, read from the model the first time, one
    /// parameter at a time (no host copy of the whole model).
    pub(crate) fn master<B: TrainBackend>(&mut self, model: &Decoder<B>) -> &mut Vec<f32> {
        let segments = &self.segments;
        let len = self.layout.shard_len();
        self.master.get_or_insert_with(|| {
            let mut by_name: BTreeMap<&str, Vec<&Segment>> = BTreeMap::new();
            for seg in segments {
                by_name.entry(seg.name.as_str()).or_default().push(seg);
            }
            let mut m = vec![0.0f32; len];
            for_each_tensor::<B::InnerBackend, _>(&model.valid(), &mut |name, t| {
                for seg in by_name.get(name).into_iter().flatten() {
                    m[seg.local..seg.local + seg.len]
                        .copy_from_slice(&t.data[seg.param_offset..seg.param_offset + seg.len]);
                }
            });
            m
        })
    }

    /// Sum of squares over all ranks' shards of `shard`, the same bits on
    /// every rank (partials gathered, summed in rank order).
    pub fn global_sum_squares(&self, shard: &[f32], c: &dyn Collective) -> Result<f64> {
        let local: f64 = shard.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let parts = c.all_gather(&[local as f32])?;
        Ok(parts.iter().map(|&v| v as f64).sum())
    }

    /// ZeRO-1/2's update of the owned segments with the mean gradient
    /// `shard` (already clipped), then the all-gather that gives every rank
    /// the new parameters. `present`: the slots that had gradients.
    pub fn update<AB: TrainBackend>(
        &mut self,
        model: Decoder<AB>,
        opt: &mut Optimizer<AB::InnerBackend>,
        table: &ParamTable,
        (shard, present): (&[f32], &[bool]),
        lr: f64,
        c: &dyn Collective,
    ) -> Result<Decoder<AB>> {
        let with_grad = self.update_master(&model, opt, (shard, present), lr)?;
        let t = std::time::Instant::now();
        let Some(master) = self.master.take() else {
            return Err(internal("ZeRO update", "no master shard"));
        };
        let model = self.gather_params(model, table, &master, opt, &with_grad, c);
        self.master = Some(master);
        self.gather_s = t.elapsed().as_secs_f64();
        model
    }

    /// Flat (offset, len) of each slot named in `with_grad`.
    pub(super) fn slot_offsets(
        &self,
        with_grad: &std::collections::HashSet<String>,
    ) -> BTreeMap<&str, (usize, usize)> {
        self.layout
            .slots
            .iter()
            .filter(|s| with_grad.contains(&s.name))
            .map(|s| (s.name.as_str(), (s.offset, s.len)))
            .collect()
    }

    /// The optimizer step on the owned segments of the f32 master shard
    /// (ZeRO-3 stops here: its parameters stay sharded). Returns the
    /// parameters that had a gradient.
    pub fn update_master<AB: TrainBackend>(
        &mut self,
        model: &Decoder<AB>,
        opt: &mut Optimizer<AB::InnerBackend>,
        (shard, present): (&[f32], &[bool]),
        lr: f64,
    ) -> Result<std::collections::HashSet<String>> {
        let device = table_device(model);
        let with_grad: std::collections::HashSet<String> = self
            .layout
            .slots
            .iter()
            .zip(present)
            .filter(|(_, &p)| p)
            .map(|(s, _)| s.name.clone())
            .collect();
        opt.begin_step();
        let mut master = std::mem::take(self.master(model));
        for seg in self.segments.iter().filter(|s| with_grad.contains(&s.name)) {
            let r = seg.local..seg.local + seg.len;
            let p = device_vec::<AB::InnerBackend>(master[r.clone()].to_vec(), &device); // [len]
            let g = device_vec::<AB::InnerBackend>(shard[r.clone()].to_vec(), &device); // [len]
            let updated = opt.update_keyed(&seg.name, &seg.key(), p, g, lr);
            let values = host(updated, "reading updated parameters");
            match values {
                Ok(v) => master[r].copy_from_slice(&v),
                Err(e) => {
                    self.master = Some(master);
                    return Err(e);
                }
            }
        }
        self.master = Some(master);
        Ok(with_grad)
    }

    /// Sophia: the mean sampled-label gradients (already all-reduced) feed
    /// the Hessian estimate of the owned segments.
    pub fn update_hessian<B: Backend>(
        &self,
        opt: &mut Optimizer<B>,
        g_hat: &GradStore<B>,
    ) -> Result<()> {
        let (flat, present) = self.flatten(g_hat)?;
        let Some(device) = g_hat.grads.values().next().map(|g| g.device()) else {
            return Ok(());
        };
        let had: std::collections::HashSet<&str> = self
            .layout
            .slots
            .iter()
            .zip(&present)
            .filter(|(_, &p)| p)
            .map(|(s, _)| s.name.as_str())
            .collect();
        for seg in self
            .segments
            .iter()
            .filter(|s| had.contains(s.name.as_str()))
        {
            let v = flat[seg.flat..seg.flat + seg.len].to_vec();
            opt.update_hessian_keyed(&seg.key(), device_vec(v, &device));
        }
        Ok(())
    }

    pub(crate) fn write_params<AB: TrainBackend>(
        &self,
        model: Decoder<AB>,
        table: &ParamTable,
        flat: &[f32],
        opt: &Optimizer<AB::InnerBackend>,
        with_grad: &std::collections::HashSet<String>,
    ) -> Decoder<AB> {
        let offsets = self.slot_offsets(with_grad);
        let mut mapper = WriteParams::<AB> {
            table,
            offsets,
            flat,
            opt,
        };
        model.map(&mut mapper)
    }

    /// This rank's master segments as checkpoint tensors (`NAME@OFFSET`).
    pub fn export_params<B: TrainBackend>(
        &mut self,
        model: &Decoder<B>,
    ) -> BTreeMap<String, NamedTensor> {
        let segments = self.segments.clone();
        let master = self.master(model);
        segments
            .iter()
            .map(|s| {
                let data = master[s.local..s.local + s.len].to_vec();
                (
                    s.key(),
                    NamedTensor {
                        shape: vec![s.len],
                        data,
                    },
                )
            })
            .collect()
    }

    /// Stops with an error naming the ranks whose parameters differ from
    /// rank 0's (a hash of every parameter, all-gathered).
    pub fn check_replicas<B: TrainBackend>(
        &self,
        model: &Decoder<B>,
        c: &dyn Collective,
    ) -> Result<()> {
        let mut h = Sha256::new();
        for_each_tensor::<B::InnerBackend, _>(&model.valid(), &mut |_, t| {
            for v in &t.data {
                h.update(v.to_le_bytes());
            }
        });
        let digest = h.finalize();
        // 64 bits as four 16-bit integers: exact in f32.
        let mine: Vec<f32> = digest[..8]
            .chunks(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as f32)
            .collect();
        let all = c.all_gather(&mine)?;
        let differ: Vec<usize> = (1..self.size())
            .filter(|&r| all[r * 4..r * 4 + 4] != all[..4])
            .collect();
        if differ.is_empty() {
            Ok(())
        } else {
            Err(TrainerError::Collective {
                world: format!("rank {} of {}", self.layout.world.rank, self.size()),
                message: format!(
                    "parameters of ranks {differ:?} differ from rank 0's after this step"
                ),
            })
        }
    }

    /// Bytes this rank holds for training state: parameters (the model,
    /// every rank), the f32 master shard (ZeRO), accumulated gradients and
    /// optimizer state.
    pub fn memory(
        &self,
        opt_elements: usize,
        param_bytes: usize,
        grad_elements: usize,
    ) -> MemoryReport {
        MemoryReport {
            params: param_bytes + self.master.as_ref().map_or(0, |m| m.len() * 4),
            grads: grad_elements * 4,
            optimizer: opt_elements * 4,
        }
    }
}

/// Per-rank bytes of training state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReport {
    pub params: usize,
    pub grads: usize,
    pub optimizer: usize,
}

pub(crate) fn table_device<AB: TrainBackend>(
    model: &Decoder<AB>,
) -> burn::tensor::Device<AB::InnerBackend> {
    model.devices().into_iter().next().unwrap_or_default()
}

struct WriteParams<'a, AB: AutodiffBackend> {
    table: &'a ParamTable,
    offsets: BTreeMap<&'a str, (usize, usize)>,
    flat: &'a [f32],
    opt: &'a Optimizer<AB::InnerBackend>,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for WriteParams<'_, AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let found = self
            .table
            .by_id
            .get(&id)
            .map(|&i| self.table.infos[i].name.as_str())
            .and_then(|name| self.offsets.get(name).map(|o| (name, *o)));
        let Some((name, (offset, len))) = found else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        // The table's shape: a ZeRO-3 model holds one-value placeholders.
        let shape: [usize; D] = self
            .table
            .by_id
            .get(&id)
            .and_then(|&i| self.table.infos[i].shape.clone().try_into().ok())
            .unwrap_or_else(|| tensor.dims());
        let values = self.flat[offset..offset + len].to_vec();
        let t = new_param(values, shape, &tensor, self.opt, name);
        Param::from_mapped_value(id, t, mapper)
    }
}

/// A parameter's new tensor from its flat values: the optimizer's masks
/// applied, in the old tensor's dtype and on its device, tracked.
pub(super) fn new_param<AB: AutodiffBackend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    old: &Tensor<AB, D>,
    opt: &Optimizer<AB::InnerBackend>,
    name: &str,
) -> Tensor<AB, D> {
    let (dtype, device, len) = (old.dtype(), old.device(), values.len());
    let t = Tensor::<AB::InnerBackend, 1>::from_data(TensorData::new(values, [len]), &device); // [len]
    let t = opt.masks.apply(name, t);
    let t = if dtype == DType::F32 {
        t
    } else {
        t.cast(FloatDType::from(dtype))
    };
    Tensor::from_inner(t.reshape(shape)).require_grad() // [shape]
}
