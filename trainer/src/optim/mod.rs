//! Optimizers over named, flattened parameters: AdamW and SophiaG, with
//! parameter groups (weight decay, learning-rate multiplier). State lives per
//! parameter name, so it is saved by name and can later be sharded.

pub mod adamw;
pub mod groups;
pub mod hessian;
pub mod masks;
pub mod sophia;
mod state_io;

use std::collections::BTreeMap;

use burn::module::{AutodiffModule, ModuleMapper, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, FloatDType, Tensor};
use kiln_models::NamedTensor;

pub use adamw::AdamW;
pub use groups::{default_decay, GroupSettings, ParamGroups};
pub use masks::Masks;
pub use sophia::Sophia;

use crate::config::{OptimizerConfig, OptimizerKind};
use crate::grads::{GradStore, ParamTable};
use crate::precision::WriteBack;

pub enum Rule<B: Backend> {
    AdamW(AdamW<B>),
    Sophia(Sophia<B>),
}

/// An update rule plus the parameter groups it applies.
pub struct Optimizer<B: Backend> {
    pub rule: Rule<B>,
    pub groups: ParamGroups,
    /// Refresh Sophia's Hessian estimate after every this many updates.
    pub hessian_every: u64,
    /// How updated weights are stored (the precision policy's; bf16-pure
    /// rounds stochastically).
    pub write_back: WriteBack,
    /// Pruned weights kept at zero (empty unless the run starts from a
    /// pruned checkpoint).
    pub masks: Masks<B>,
}

impl<B: Backend> Optimizer<B> {
    /// `batch_tokens`: tokens per optimizer step (Sophia's `B`).
    pub fn new(cfg: &OptimizerConfig, groups: ParamGroups, batch_tokens: usize) -> Self {
        let (b1, b2) = cfg.betas();
        let rule = match cfg.kind {
            OptimizerKind::Adamw => Rule::AdamW(AdamW::new(b1, b2, cfg.eps)),
            OptimizerKind::Sophia => {
                Rule::Sophia(Sophia::new(b1, b2, cfg.rho, batch_tokens as f64))
            }
        };
        Self {
            rule,
            groups,
            hessian_every: cfg.hessian_every,
            write_back: WriteBack::default(),
            masks: Masks::default(),
        }
    }

    /// Updates applied so far.
    pub fn updates(&self) -> u64 {
        match &self.rule {
            Rule::AdamW(o) => o.t,
            Rule::Sophia(o) => o.t,
        }
    }

    /// Restores the update count (from trainer state on resume).
    pub fn set_updates(&mut self, t: u64) {
        match &mut self.rule {
            Rule::AdamW(o) => o.t = t,
            Rule::Sophia(o) => o.t = t,
        }
    }

    pub fn begin_step(&mut self) {
        match &mut self.rule {
            Rule::AdamW(o) => o.begin_step(),
            Rule::Sophia(o) => o.begin_step(),
        }
    }

    /// One parameter's update at the step's base learning rate `lr`.
    pub fn update(
        &mut self,
        name: &str,
        p: Tensor<B, 1>,
        g: Tensor<B, 1>,
        lr: f64,
    ) -> Tensor<B, 1> {
        self.update_keyed(name, name, p, g, lr)
    }

    /// As [`Self::update`] for part of parameter `name` whose state is kept
    /// under `key` (a ZeRO shard's segment, `NAME@OFFSET`): the update rules
    /// are element-wise, so a segment updates exactly as the whole would.
    pub fn update_keyed(
        &mut self,
        name: &str,
        key: &str,
        p: Tensor<B, 1>,
        g: Tensor<B, 1>,
        lr: f64,
    ) -> Tensor<B, 1> {
        let s = self.groups.get(name);
        let lr = lr * s.lr_scale;
        match &mut self.rule {
            Rule::AdamW(o) => o.update(key, p, g, lr, s.weight_decay),
            Rule::Sophia(o) => o.update(key, p, g, lr, s.weight_decay),
        }
    }

    /// Sophia's Hessian refresh for one state key (a parameter or a segment).
    pub fn update_hessian_keyed(&mut self, key: &str, g_hat: Tensor<B, 1>) {
        if let Rule::Sophia(o) = &mut self.rule {
            o.update_hessian(key, g_hat);
        }
    }

    /// f32 elements of optimizer state held (for the memory report).
    pub fn state_elements(&self) -> usize {
        match &self.rule {
            Rule::AdamW(o) => o.state.values().map(|s| 2 * s.m.dims()[0]).sum(),
            Rule::Sophia(o) => o
                .state
                .values()
                .map(|s| s.m.dims()[0] + s.h.as_ref().map_or(0, |h| h.dims()[0]))
                .sum(),
        }
    }

    /// Applies one update with base learning rate `lr`, consuming the gradients.
    pub fn step<AB, M>(&mut self, model: M, table: &ParamTable, grads: GradStore<B>, lr: f64) -> M
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        self.begin_step();
        let mut mapper = Mapper::<AB> {
            opt: self,
            table,
            grads: grads.grads,
            lr,
        };
        model.map(&mut mapper)
    }

    /// Whether the trainer should refresh the Hessian after `updates` updates.
    pub fn wants_hessian(&self, updates: u64) -> bool {
        matches!(self.rule, Rule::Sophia(_))
            && self.hessian_every > 0
            && updates > 0
            && updates.is_multiple_of(self.hessian_every)
    }

    /// Feeds the (clipped) gradients of the sampled-label loss to Sophia.
    pub fn update_hessian(&mut self, grads: GradStore<B>) {
        if let Rule::Sophia(o) = &mut self.rule {
            for (name, g) in grads.grads {
                o.update_hessian(&name, g);
            }
        }
    }

    /// Extra scalars for TensorBoard: Sophia's win rate and Hessian refreshes.
    pub fn metrics(&self) -> Vec<(&'static str, f64)> {
        match &self.rule {
            Rule::AdamW(_) => Vec::new(),
            Rule::Sophia(o) => {
                let mut out = vec![("train/hessian_steps", self.hessian_updates() as f64)];
                if let Some(w) = o.win_rate() {
                    out.push(("train/sophia_win_rate", w));
                }
                out
            }
        }
    }

    pub fn export_state(&self) -> BTreeMap<String, NamedTensor> {
        match &self.rule {
            Rule::AdamW(o) => o.export_state(),
            Rule::Sophia(o) => o.export_state(),
        }
    }

    pub fn import_state(&mut self, tensors: &BTreeMap<String, NamedTensor>, device: &B::Device) {
        match &mut self.rule {
            Rule::AdamW(o) => o.import_state(tensors, device),
            Rule::Sophia(o) => o.import_state(tensors, device),
        }
    }

    /// Sophia's Hessian refreshes so far: one after every `hessian_every`
    /// applied updates (see `wants_hessian`), so derived from the update count.
    pub fn hessian_updates(&self) -> u64 {
        match &self.rule {
            Rule::Sophia(o) if self.hessian_every > 0 => o.t / self.hessian_every,
            _ => 0,
        }
    }
}

struct Mapper<'a, AB: AutodiffBackend> {
    opt: &'a mut Optimizer<AB::InnerBackend>,
    table: &'a ParamTable,
    grads: BTreeMap<String, Tensor<AB::InnerBackend, 1>>,
    lr: f64,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for Mapper<'_, AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(info) = self.table.by_id.get(&id).map(|&i| &self.table.infos[i]) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let Some(g) = self.grads.remove(&info.name) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let shape = tensor.dims();
        let n: usize = shape.iter().product();
        let p = tensor.inner().reshape([n]); // [n]
                                             // Low-precision weights (bf16-pure) are updated in f32.
        let dtype = p.dtype();
        let p = if dtype == DType::F32 {
            p
        } else {
            p.cast(FloatDType::F32)
        };
        let updated = self.opt.update(&info.name, p, g, self.lr);
        let updated = self
            .opt
            .write_back
            .store(updated, dtype, &info.name, self.opt.updates());
        let updated = self.opt.masks.apply(&info.name, updated);
        let updated = updated.reshape(shape);
        Param::from_mapped_value(id, Tensor::from_inner(updated).require_grad(), mapper)
    }
}
