//! One training step, shared by `kiln train` and `kiln bench`:
//! objective -> backward -> gradients of the trainable parameters ->
//! data-parallel reduce -> unscale / finite check -> clip -> update
//! (-> Sophia's Hessian refresh). Each phase is timed apart.

use std::sync::Arc;
use std::time::Instant;

use burn::tensor::ElementConversion;
use kiln_data::Batch;
use kiln_models::{Decoder, TrainBackend};

use crate::config::Strategy;
use crate::error::Result;
use crate::grads::{GradStore, ParamTable};
use crate::objective::{batch_tensors, scored_targets, Objective};
use crate::optim::hessian::{row_rng, sampled_label_grads};
use crate::optim::Optimizer;
use crate::precision::{LossScaler, PrecisionPolicy};
use crate::world::zero::Sharding;
use crate::world::Collective;

/// What became of one step's gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Applied,
    /// fp16 loss scaling: a non-finite gradient; skipped, scale halved.
    Overflow,
    /// A non-finite loss or gradient without loss scaling: skipped.
    NonFinite,
}

/// Seconds spent in each phase of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseTimes {
    /// Objective on every micro-batch (ends with the loss read back).
    pub forward: f64,
    /// Backward and accumulation of the trainable gradients.
    pub backward: f64,
    /// The data-parallel all-reduce.
    pub reduce: f64,
    /// Unscale, finite check, clip, optimizer, Hessian refresh.
    pub update: f64,
}

impl PhaseTimes {
    pub fn total(&self) -> f64 {
        self.forward + self.backward + self.reduce + self.update
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    pub outcome: StepOutcome,
    /// Mean loss over the step's micro-batches (and ranks).
    pub loss: f64,
    /// Global gradient norm before clipping (unscaled).
    pub grad_norm: f64,
    pub times: PhaseTimes,
}

/// Everything a step needs besides the model and its data.
pub struct Stepper<B: TrainBackend> {
    pub table: ParamTable,
    pub opt: Optimizer<B::InnerBackend>,
    pub precision: PrecisionPolicy,
    pub objective: Box<dyn Objective<B>>,
    pub collective: Arc<dyn Collective>,
    /// Global-norm clip (0 = off).
    pub grad_clip: f64,
    /// Fused kernels for Sophia's sampled-label pass.
    pub fused: bool,
    /// Seed of Sophia's label sampling (and of per-step reseeding).
    pub seed: u64,
    /// Reseed the backend's RNG from (seed, step) before each step, so that
    /// random ops in the forward (LoRA dropout) replay exactly on resume.
    pub reseed_each_step: bool,
    /// Steps taken so far (the run's step counter; restored on resume).
    pub steps_taken: u64,
    pub device: B::Device,
    /// The data-parallel strategy of a world of more than one rank (None:
    /// one process, or the plain all-reduce of a [`Collective`] test world).
    pub sharding: Option<Sharding>,
}

impl<B: TrainBackend> Stepper<B> {
    /// One optimizer step over `micro` (the gradient-accumulation batches)
    /// at learning rate `lr`. On overflow or non-finite values the model,
    /// optimizer state and update count are left untouched.
    pub fn step(
        &mut self,
        model: Decoder<B>,
        micro: &[Batch],
        lr: f64,
        scaler: Option<&mut LossScaler>,
    ) -> Result<(Decoder<B>, StepReport)> {
        let mut times = PhaseTimes::default();
        self.steps_taken += 1;
        if self.reseed_each_step {
            let mix = self.steps_taken.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            B::seed(&self.device, self.seed ^ mix);
        }
        let autocast = self.precision.autocast_scope();
        let loss_scale = self.precision.loss_scale(scaler.as_deref());
        let mut grads = GradStore::<B::InnerBackend>::default();
        let strategy = self.sharding.as_ref().map(|s| s.strategy);
        if let Some(s) = &self.sharding {
            s.comm.take(); // this step's traffic counted from zero
        }
        // ZeRO-2/3: the owned shard of the gradients summed so far.
        let mut shard_sum: Option<(Vec<f32>, Vec<bool>)> = None;
        let mut loss_sum = 0.0f64;
        self.objective.start_step(micro.len());
        for batch in micro {
            let t0 = Instant::now();
            let scored = self.scored_share(batch)?;
            // ZeRO-3: this micro-batch's model, gathered from the shards
            // (whole, or per block by the model's stack runner).
            let gathered = match self
                .sharding
                .as_ref()
                .filter(|s| s.strategy.shards_params())
            {
                Some(s) => Some(s.gather_model(&model, &self.table, &self.collective)?),
                None => None,
            };
            let m = gathered.as_ref().map_or(&model, |g| &g.model);
            // Dividing here makes the summed gradients those of the mean loss.
            let loss = self
                .objective
                .loss_over(m, batch, &self.device, scored)
                .div_scalar(micro.len() as f64); // [1]
            if let Some(e) = self.objective.failure() {
                return Err(e);
            }
            let value: f32 = loss.clone().into_scalar().elem();
            loss_sum += value as f64;
            let t1 = Instant::now();
            let loss = if loss_scale == 1.0 {
                loss
            } else {
                loss.mul_scalar(loss_scale)
            };
            let backward = loss.backward();
            times.forward += (t1 - t0).as_secs_f64();
            if let Some(g) = gathered {
                // Per block this also runs the blocks' backward passes.
                let part = g.shard_grad(&backward)?;
                times.backward += t1.elapsed().as_secs_f64();
                let part = self.unscale_shard(part, scaler.as_deref());
                add_shard(&mut shard_sum, part, vec![true; self.table.infos.len()]);
                continue;
            }
            grads.accumulate::<B, _>(&model, &self.table, backward);
            times.backward += t1.elapsed().as_secs_f64();
            if strategy == Some(Strategy::Zero2) {
                let t = Instant::now();
                let g = std::mem::take(&mut grads);
                let (part, present) = self.reduce_to_shard(g, scaler.as_deref())?;
                add_shard(&mut shard_sum, part, present);
                times.reduce += t.elapsed().as_secs_f64();
            }
        }
        let t2 = Instant::now();
        let shard = match strategy {
            None => {
                grads.all_reduce_mean(self.collective.as_ref())?;
                None
            }
            Some(Strategy::Ddp) => {
                if let Some(s) = &self.sharding {
                    s.all_reduce_mean(&mut grads, self.collective.as_ref())?;
                }
                None
            }
            Some(Strategy::Zero2 | Strategy::Zero3) => shard_sum,
            Some(_) => Some(self.reduce_to_shard(std::mem::take(&mut grads), scaler.as_deref())?),
        };
        let loss = self.mean_over_ranks(loss_sum)?;
        times.reduce += t2.elapsed().as_secs_f64();
        if let Some(s) = self
            .sharding
            .as_ref()
            .filter(|s| s.strategy.shards_params())
        {
            // ZeRO-3's reduce-scatter ran inside the backward.
            let hook_s = s.comm.take_hook_time();
            times.backward -= hook_s;
            times.reduce += hook_s;
        }

        let t3 = Instant::now();
        let shard_update = shard.is_some();
        let (model, outcome, grad_norm) = match shard {
            Some((shard, present)) => {
                self.sharded_update(model, shard, &present, loss, lr, scaler)?
            }
            None => self.update(model, grads, loss, lr, scaler),
        };
        let model = match (outcome, micro.last()) {
            (StepOutcome::Applied, Some(last)) if self.opt.wants_hessian(self.opt.updates()) => {
                self.refresh_hessian(model, last)?
            }
            _ => model,
        };
        if let Some(s) = self
            .sharding
            .as_ref()
            .filter(|s| s.check_replicas && !s.strategy.shards_params())
        {
            // (ZeRO-3 has no replicas: each value lives on its owner only.)
            s.check_replicas(&model, self.collective.as_ref())?;
        }
        drop(autocast);
        times.update = t3.elapsed().as_secs_f64();
        if let Some(s) = self.sharding.as_mut().filter(|_| shard_update) {
            // The parameter all-gather is communication, not update work.
            times.update -= s.gather_s;
            times.reduce += s.gather_s;
        }
        Ok((
            model,
            StepReport {
                outcome,
                loss,
                grad_norm,
                times,
            },
        ))
    }

    /// ZeRO: masks and fp16 unscale applied, then this rank's shard of the
    /// sum over ranks (divided by the world size in `sharded_update`).
    fn reduce_to_shard(
        &self,
        mut grads: GradStore<B::InnerBackend>,
        scaler: Option<&LossScaler>,
    ) -> Result<(Vec<f32>, Vec<bool>)> {
        let Some(s) = &self.sharding else {
            return Err(crate::error::TrainerError::Internal(
                "a sharded reduce without a sharding".into(),
            ));
        };
        self.opt.masks.apply_grads(&mut grads);
        self.precision.unscale(&mut grads, scaler);
        s.reduce_scatter_grads(&grads, self.collective.as_ref())
    }

    /// ZeRO-1/2: mean, global norm over all shards, clip, finite check,
    /// update of the owned shard and all-gather of the parameters.
    fn sharded_update(
        &mut self,
        model: Decoder<B>,
        mut shard: Vec<f32>,
        present: &[bool],
        loss: f64,
        lr: f64,
        scaler: Option<&mut LossScaler>,
    ) -> Result<(Decoder<B>, StepOutcome, f64)> {
        let Some(s) = self.sharding.as_mut() else {
            return Err(crate::error::TrainerError::Internal(
                "a sharded update without a sharding".into(),
            ));
        };
        s.gather_s = 0.0;
        let inv = 1.0 / s.layout.world.size as f32;
        shard.iter_mut().for_each(|v| *v *= inv);
        let grad_norm = s
            .global_sum_squares(&shard, self.collective.as_ref())?
            .sqrt();
        let outcome = gate(grad_norm, loss, scaler);
        if outcome != StepOutcome::Applied {
            return Ok((model, outcome, grad_norm));
        }
        if let Some(coef) = clip_coef(self.grad_clip, grad_norm) {
            shard.iter_mut().for_each(|v| *v *= coef);
        }
        if s.strategy.shards_params() {
            s.update_master(&model, &mut self.opt, (&shard, present), lr)?;
            return Ok((model, StepOutcome::Applied, grad_norm));
        }
        let model = s.update(
            model,
            &mut self.opt,
            &self.table,
            (&shard, present),
            lr,
            self.collective.as_ref(),
        )?;
        Ok((model, StepOutcome::Applied, grad_norm))
    }

    /// Unscale (fp16), finite check, clip and apply.
    fn update(
        &mut self,
        model: Decoder<B>,
        grads: GradStore<B::InnerBackend>,
        loss: f64,
        lr: f64,
        scaler: Option<&mut LossScaler>,
    ) -> (Decoder<B>, StepOutcome, f64) {
        apply_update::<B>(
            model,
            &mut self.opt,
            &self.table,
            grads,
            loss,
            lr,
            self.grad_clip,
            &self.precision,
            scaler,
        )
    }

    /// Sophia: refresh the Hessian estimate on the step's last micro-batch,
    /// with labels sampled from the updated model (reduced across ranks).
    fn refresh_hessian(&mut self, model: Decoder<B>, last: &Batch) -> Result<Decoder<B>> {
        let (x, _) = batch_tensors::<B>(last, &self.device);
        let world = self.collective.world();
        let updates = self.opt.updates();
        // Local row j is global row rank + j * N (every sampler's split).
        let mut rngs: Vec<_> = (0..last.batch_size)
            .map(|j| row_rng(self.seed, updates, (world.rank + j * world.size) as u64))
            .collect();
        // Clipped after the reduce, as one process clips the whole batch's.
        // ZeRO-3 samples from the full model, gathered for this pass only.
        let full = self.full_model(&model)?;
        let m = full.as_ref().unwrap_or(&model);
        let mut g_hat = sampled_label_grads::<B, _>(m, &self.table, x, self.fused, 0.0, &mut rngs);
        drop(full);
        match self.sharding.as_ref() {
            Some(s) => {
                s.all_reduce_mean(&mut g_hat, self.collective.as_ref())?;
                g_hat.clip_global_norm(self.grad_clip);
                if s.strategy.shards_optimizer() {
                    s.update_hessian(&mut self.opt, &g_hat)?;
                } else {
                    self.opt.update_hessian(g_hat);
                }
            }
            None => {
                g_hat.all_reduce_mean(self.collective.as_ref())?;
                g_hat.clip_global_norm(self.grad_clip);
                self.opt.update_hessian(g_hat);
            }
        }
        Ok(model)
    }

    /// Bytes of training state this rank holds (a run of several ranks):
    /// the model's parameters (and ZeRO's f32 master shard), the gradients
    /// accumulated across micro-batches (ZeRO-2: the owned shard only; the
    /// backward's own per-micro-batch gradients come on top in every
    /// strategy) and the optimizer state.
    pub fn memory(&self) -> crate::world::zero::MemoryReport {
        let trainable = self.table.trainable_elements();
        let frozen: usize = self
            .table
            .frozen
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum();
        let weight_bytes = if self.precision.name() == "bf16-pure" {
            2
        } else {
            4
        };
        let params = (trainable + frozen) * weight_bytes;
        let optimizer = self.opt.state_elements() * 4;
        match &self.sharding {
            Some(s) => {
                let grads = match s.strategy {
                    Strategy::Zero2 | Strategy::Zero3 => s.layout.shard_len(),
                    _ => trainable,
                };
                // ZeRO-3 holds placeholders for the trainable parameters
                // (one value each) besides its f32 master shard.
                let params = match s.strategy {
                    Strategy::Zero3 => (self.table.infos.len() + frozen) * weight_bytes,
                    _ => params,
                };
                s.memory(self.opt.state_elements(), params, grads)
            }
            None => crate::world::zero::MemoryReport {
                params,
                grads: trainable * 4,
                optimizer,
            },
        }
    }

    /// What this rank divides a micro-batch's summed token losses by: its
    /// share (1/N) of the scored targets of the global micro-batch, so that
    /// the mean over ranks of the gradients is the gradient of the global
    /// batch's mean even when ranks hold different counts (instruction
    /// data). One process: the batch's own count.
    fn scored_share(&self, batch: &Batch) -> Result<f64> {
        let local = scored_targets(batch);
        let size = self.collective.world().size;
        if size == 1 {
            return Ok(local as f64);
        }
        // Counts are exact in f32 up to 2^24 per rank and micro-batch.
        let all = self.collective.all_gather(&[local as f32])?;
        let global: f64 = all.iter().map(|&v| v as f64).sum();
        Ok(global / size as f64)
    }

    /// fp16: ZeRO-3's reduced shard divided by the loss scale (the other
    /// strategies unscale before their reduce).
    fn unscale_shard(&self, mut shard: Vec<f32>, scaler: Option<&LossScaler>) -> Vec<f32> {
        let s = self.precision.loss_scale(scaler);
        if s != 1.0 {
            let inv = (1.0 / s) as f32;
            shard.iter_mut().for_each(|v| *v *= inv);
        }
        shard
    }

    /// ZeRO-3: the full model, all-gathered from the shards, for code that
    /// needs every parameter (evaluation, sampling, Sophia's refresh).
    /// Every rank must call it at the same point. None for the other
    /// strategies, whose model is whole already.
    pub fn full_model(&self, model: &Decoder<B>) -> Result<Option<Decoder<B>>> {
        crate::world::zero3::full_model(
            self.sharding.as_ref(),
            model,
            &self.table,
            &self.opt,
            self.collective.as_ref(),
        )
    }

    fn mean_over_ranks(&self, value: f64) -> Result<f64> {
        let size = self.collective.world().size;
        if size == 1 {
            return Ok(value);
        }
        let mut buf = [value as f32];
        self.collective.all_reduce_sum(&mut buf)?;
        Ok(buf[0] as f64 / size as f64)
    }
}

/// ZeRO-2/3: adds one micro-batch's reduced gradient shard to the sum of
/// the step's (`present`: the slots with a gradient, from the first).
fn add_shard(sum: &mut Option<(Vec<f32>, Vec<bool>)>, part: Vec<f32>, present: Vec<bool>) {
    match sum {
        Some((acc, _)) => acc.iter_mut().zip(&part).for_each(|(a, b)| *a += b),
        None => *sum = Some((part, present)),
    }
}

/// Unscales (fp16), clips and applies one step's gradients. On overflow or
/// non-finite values the model, optimizer state and update count are left
/// untouched. Returns the model, the outcome and the pre-clip gradient norm.
#[allow(clippy::too_many_arguments)]
pub fn apply_update<AB: TrainBackend>(
    model: Decoder<AB>,
    opt: &mut Optimizer<AB::InnerBackend>,
    table: &ParamTable,
    mut grads: GradStore<AB::InnerBackend>,
    loss: f64,
    lr: f64,
    clip: f64,
    precision: &PrecisionPolicy,
    scaler: Option<&mut LossScaler>,
) -> (Decoder<AB>, StepOutcome, f64) {
    // Pruned weights have no gradient (before clipping sees the norm).
    opt.masks.apply_grads(&mut grads);
    precision.unscale(&mut grads, scaler.as_deref());
    // Clipping sees the unscaled gradients (specs.md section 6).
    let grad_norm = grads.clip_global_norm(clip);
    let outcome = gate(grad_norm, loss, scaler);
    if outcome != StepOutcome::Applied {
        return (model, outcome, grad_norm);
    }
    (
        opt.step::<AB, _>(model, table, grads, lr),
        StepOutcome::Applied,
        grad_norm,
    )
}

/// Whether a step's gradients apply. With fp16 loss scaling a non-finite
/// gradient is an overflow of the scale (skipped, scale halved); otherwise a
/// non-finite loss or gradient skips the step.
fn gate(grad_norm: f64, loss: f64, scaler: Option<&mut LossScaler>) -> StepOutcome {
    let finite = grad_norm.is_finite() && loss.is_finite();
    if let (Some(s), true) = (scaler, loss.is_finite()) {
        if !s.update(grad_norm.is_finite()) {
            return StepOutcome::Overflow;
        }
    } else if !finite {
        return StepOutcome::NonFinite;
    }
    StepOutcome::Applied
}

/// `torch.nn.utils.clip_grad_norm_`'s factor `max / (norm + 1e-6)` when it
/// is below 1 (as `GradStore::clip_global_norm` computes it).
fn clip_coef(max_norm: f64, norm: f64) -> Option<f32> {
    if max_norm > 0.0 && norm.is_finite() {
        let coef = (max_norm as f32) / (norm as f32 + 1e-6);
        (coef < 1.0).then_some(coef)
    } else {
        None
    }
}
