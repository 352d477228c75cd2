//! One training step, shared by `kiln train` and `kiln bench`:
//! objective -> backward -> gradients of the trainable parameters ->
//! data-parallel reduce -> unscale / finite check -> clip -> update
//! (-> Sophia's Hessian refresh). Each phase is timed apart.

use std::sync::Arc;
use std::time::Instant;

use burn::tensor::ElementConversion;
use kiln_data::Batch;
use kiln_models::{Decoder, TrainBackend};

use crate::error::Result;
use crate::grads::{GradStore, ParamTable};
use crate::objective::{batch_tensors, Objective};
use crate::optim::hessian::{label_rng, sampled_label_grads};
use crate::optim::Optimizer;
use crate::precision::{LossScaler, PrecisionPolicy};
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
        let mut loss_sum = 0.0f64;
        for batch in micro {
            let t0 = Instant::now();
            // Dividing here makes the summed gradients those of the mean loss.
            let loss = self
                .objective
                .loss(&model, batch, &self.device)
                .div_scalar(micro.len() as f64); // [1]
            let value: f32 = loss.clone().into_scalar().elem();
            loss_sum += value as f64;
            let t1 = Instant::now();
            let loss = if loss_scale == 1.0 {
                loss
            } else {
                loss.mul_scalar(loss_scale)
            };
            grads.accumulate::<B, _>(&model, &self.table, loss.backward());
            times.forward += (t1 - t0).as_secs_f64();
            times.backward += t1.elapsed().as_secs_f64();
        }
        let t2 = Instant::now();
        grads.all_reduce_mean(self.collective.as_ref())?;
        let loss = self.mean_over_ranks(loss_sum)?;
        times.reduce = t2.elapsed().as_secs_f64();

        let t3 = Instant::now();
        let (model, outcome, grad_norm) = self.update(model, grads, loss, lr, scaler);
        let model = match (outcome, micro.last()) {
            (StepOutcome::Applied, Some(last)) if self.opt.wants_hessian(self.opt.updates()) => {
                self.refresh_hessian(model, last)?
            }
            _ => model,
        };
        drop(autocast);
        times.update = t3.elapsed().as_secs_f64();
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
        let mut rng = label_rng(self.seed, self.opt.updates());
        let mut g_hat = sampled_label_grads::<B, _>(
            &model,
            &self.table,
            x,
            self.fused,
            self.grad_clip,
            &mut rng,
        );
        g_hat.all_reduce_mean(self.collective.as_ref())?;
        self.opt.update_hessian(g_hat);
        Ok(model)
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
    let finite = grad_norm.is_finite() && loss.is_finite();
    if let (Some(s), true) = (scaler, loss.is_finite()) {
        // fp16: a non-finite gradient is an overflow of the scale.
        if !s.update(grad_norm.is_finite()) {
            return (model, StepOutcome::Overflow, grad_norm);
        }
    } else if !finite {
        return (model, StepOutcome::NonFinite, grad_norm);
    }
    (
        opt.step::<AB, _>(model, table, grads, lr),
        StepOutcome::Applied,
        grad_norm,
    )
}
