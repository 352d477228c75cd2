//! The training loop: one readable function, explicit branches for logging,
//! evaluation and checkpoints (no callback registry).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_data::{Batch, Tokenizer};
use kiln_models::{
    load_named_tensors, named_tensors, Decoder, FusedOps, LanguageModel, TrainBackend,
};

use crate::checkpoint;
use crate::config::RunConfig;
use crate::data_setup;
use crate::error::{Result, TrainerError};
use crate::generate::{generate, SampleOptions};
use crate::grads::{GradStore, ParamTable};
use crate::loss::cross_entropy;
use crate::metrics::MetricsLogger;
use crate::optim::hessian::{label_rng, sampled_label_grads};
use crate::optim::{Optimizer, ParamGroups};
use crate::precision::{cast_params, cast_trainable, LossScaler};
use crate::schedule::lr_at;
use crate::session::{self, CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, TOKENIZER_FILE};
use crate::state::TrainerState;
use crate::weights;
use kiln_models::ops::precision::autocast;

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    pub step: u64,
    pub interrupted: bool,
    pub final_val_loss: Option<f64>,
}

pub struct TrainRequest {
    pub config: RunConfig,
    pub run_dir: PathBuf,
    pub resume: bool,
    /// Set by SIGINT/SIGTERM: save a checkpoint and stop after this step.
    pub stop: Arc<AtomicBool>,
}

/// `[B, T]` ids of a batch as tensors.
pub fn batch_tensors<B: Backend>(
    batch: &Batch,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let shape = [batch.batch_size, batch.seq_len];
    let to = |v: &[u32]| {
        let ids: Vec<i64> = v.iter().map(|&x| x as i64).collect();
        Tensor::<B, 2, Int>::from_data(TensorData::new(ids, shape), device)
    };
    (to(&batch.inputs), to(&batch.targets))
}

/// Mean loss over fixed batches with the inference model.
pub fn evaluate<B: FusedOps>(
    model: &Decoder<B>,
    batches: &[Batch],
    device: &B::Device,
    fused: bool,
) -> f64 {
    let mut total = 0.0;
    let mut count = 0usize;
    for b in batches {
        let (x, y) = batch_tensors::<B>(b, device);
        let loss: f32 = cross_entropy(model.forward(x), y, fused)
            .into_scalar()
            .elem();
        total += loss as f64 * b.batch_size as f64;
        count += b.batch_size;
    }
    if count == 0 {
        f64::NAN
    } else {
        total / count as f64
    }
}

struct RunLog {
    file: Option<std::fs::File>,
    bar: ProgressBar,
}

impl RunLog {
    fn line(&mut self, msg: &str) {
        if self.bar.is_hidden() {
            eprintln!("{msg}");
        } else {
            self.bar.println(msg);
        }
        if let Some(f) = self.file.as_mut() {
            if writeln!(f, "{msg}").is_err() {
                eprintln!("warning: cannot write train.log; training continues");
                self.file = None;
            }
        }
    }
}

/// The optimizer of a run: its rule, with the model's no-decay rule and the
/// config's parameter groups.
pub fn build_optimizer<B: Backend>(cfg: &RunConfig, table: &ParamTable) -> Result<Optimizer<B>> {
    let groups = ParamGroups::build(&cfg.optimizer, table, |name, rank| {
        Decoder::<burn::backend::Flex>::weight_decay(name, rank)
    })?;
    Ok(Optimizer::new(
        &cfg.optimizer,
        groups,
        cfg.tokens_per_step(),
    ))
}

/// What became of one step's gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Applied,
    /// fp16 loss scaling: a non-finite gradient; skipped, scale halved.
    Overflow,
    /// A non-finite loss or gradient without loss scaling: skipped.
    NonFinite,
}

/// Unscales (fp16), clips and applies one step's gradients. On overflow or
/// non-finite values the model, optimizer state and update count are left
/// untouched. Returns the model, the outcome and the pre-clip gradient norm.
#[allow(clippy::too_many_arguments)]
pub fn apply_update<AB, M>(
    model: M,
    opt: &mut Optimizer<AB::InnerBackend>,
    table: &ParamTable,
    mut grads: GradStore<AB::InnerBackend>,
    loss: f64,
    lr: f64,
    clip: f64,
    scaler: Option<&mut LossScaler>,
) -> (M, StepOutcome, f64)
where
    AB: burn::tensor::backend::AutodiffBackend,
    M: AutodiffModule<AB>,
{
    if let Some(s) = &scaler {
        grads.scale(1.0 / s.scale);
    }
    // Clipping sees the unscaled gradients (specs.md section 6).
    let grad_norm = grads.clip_global_norm(clip);
    let finite = grad_norm.is_finite();
    if let Some(s) = scaler {
        if loss.is_finite() {
            return if s.update(finite) {
                (
                    opt.step::<AB, _>(model, table, grads, lr),
                    StepOutcome::Applied,
                    grad_norm,
                )
            } else {
                (model, StepOutcome::Overflow, grad_norm)
            };
        }
    }
    if !finite || !loss.is_finite() {
        return (model, StepOutcome::NonFinite, grad_norm);
    }
    (
        opt.step::<AB, _>(model, table, grads, lr),
        StepOutcome::Applied,
        grad_norm,
    )
}

/// Everything a checkpoint needs besides the model, optimizer and state.
struct CheckpointWriter<'a> {
    run_dir: &'a Path,
    cfg_toml: &'a str,
    tokenizer_json: &'a str,
    keep_last: usize,
    keep_best: bool,
}

impl CheckpointWriter<'_> {
    fn save<B: TrainBackend>(
        &self,
        model: &Decoder<B>,
        opt: &Optimizer<B::InnerBackend>,
        state: &TrainerState,
    ) -> Result<PathBuf> {
        let model_bytes =
            weights::to_bytes(&named_tensors::<B::InnerBackend, _>(&model.valid()), None)?;
        let opt_bytes = weights::to_bytes(&opt.export_state(), None)?;
        let state_bytes =
            serde_json::to_vec_pretty(state).map_err(|e| TrainerError::Run(e.to_string()))?;
        let dir = checkpoint::save(
            self.run_dir,
            state.step,
            &[
                (MODEL_FILE, model_bytes),
                (OPTIMIZER_FILE, opt_bytes),
                (STATE_FILE, state_bytes),
                (CONFIG_FILE, self.cfg_toml.as_bytes().to_vec()),
                (TOKENIZER_FILE, self.tokenizer_json.as_bytes().to_vec()),
            ],
        )?;
        checkpoint::prune(
            self.run_dir,
            self.keep_last,
            if self.keep_best {
                state.best_step
            } else {
                None
            },
        );
        Ok(dir)
    }
}

pub fn train<B: TrainBackend>(req: TrainRequest, device: B::Device) -> Result<TrainOutcome> {
    let run_dir = req.run_dir.clone();
    std::fs::create_dir_all(&run_dir).map_err(|e| TrainerError::io(&run_dir, e))?;

    // Resume: the checkpoint's config, tokenizer and state win over the request.
    let resumed = if req.resume {
        Some(session::load_checkpoint(&run_dir)?)
    } else {
        None
    };
    if !req.resume && !checkpoint::list(&run_dir).is_empty() {
        return Err(TrainerError::Run(format!(
            "{} already holds checkpoints: continue it with `kiln train --resume {}` or choose another --run-dir",
            run_dir.display(),
            run_dir.display()
        )));
    }
    let mut cfg = match &resumed {
        Some(c) => c.config.clone(),
        None => req.config.clone(),
    };

    let data =
        data_setup::load_run_data(&mut cfg, &run_dir, resumed.as_ref().map(|c| &c.tokenizer))?;
    let tokenizer: Tokenizer = data.tokenizer;
    let mut sampler = data.train;
    let val_sets = data.val;
    let cfg_toml = cfg.to_toml()?;
    let tokenizer_json = tokenizer.to_json()?;
    crate::fsutil::write_atomic(&run_dir.join(CONFIG_FILE), cfg_toml.as_bytes())?;
    tokenizer.save(&run_dir.join(TOKENIZER_FILE))?;

    let t = &cfg.training;
    let seq_len = cfg.seq_len();
    B::seed(&device, t.seed);
    let mut model: Decoder<B> = Decoder::new(&cfg.model, &device)?.with_fused(t.fused_ops);
    let table = ParamTable::new::<B, _>(&model);
    let mut opt = build_optimizer::<B::InnerBackend>(&cfg, &table)?;
    let mut state = TrainerState {
        step: 0,
        optimizer_updates: 0,
        loss_scaler: None,
        tokens_seen: 0,
        sampler: None,
        mixture: None,
        skipped_steps: 0,
        consecutive_nonfinite: 0,
        best_val_loss: None,
        best_step: None,
        elapsed_s: 0.0,
    };
    sampler.save_into(&mut state);
    if let Some(ckpt) = &resumed {
        let source = ckpt.dir.join(MODEL_FILE).display().to_string();
        model = load_named_tensors(model, &ckpt.model, &source)?;
        if let Some(o) = &ckpt.optimizer {
            opt.import_state(o, &device);
        }
        state = ckpt.state.clone();
        opt.set_updates(state.optimizer_updates);
        sampler.restore(&state)?;
    } else if let Some(init) = &cfg.init {
        // Full fine-tuning: weights only; optimizer, schedule and data start fresh.
        let src = session::load_checkpoint(&init.from)?;
        if src.config.model != cfg.model {
            return Err(TrainerError::invalid(
                "init.from",
                format!("{}: its [model] section differs from this config's; fine-tuning needs the same architecture", src.dir.display()),
            ));
        }
        let source = src.dir.join(MODEL_FILE).display().to_string();
        model = load_named_tensors(model, &src.model, &source)?;
    }

    let precision = t.precision;
    if let Some(dtype) = precision.param_dtype() {
        model = cast_trainable(model, dtype);
    }
    opt.rounding_seed = t.seed;
    // fp16: the dynamic loss scale lives in the trainer state (resumed exactly).
    if precision.uses_loss_scaling() && state.loss_scaler.is_none() {
        state.loss_scaler = Some(LossScaler::default());
    }

    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("train.log"))
        .ok();
    let bar = ProgressBar::new(t.max_steps).with_position(state.step);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut log = RunLog {
        file: log_file,
        bar,
    };
    let mut metrics =
        MetricsLogger::open(&run_dir, cfg.logging.tensorboard, cfg.logging.metrics_jsonl);
    log.line(&format!(
        "kiln: {} parameters, {} tokens/step ({} x {} x accum {}), {} steps, run dir {}{}",
        cfg.model.num_params(),
        cfg.tokens_per_step(),
        t.batch_size,
        seq_len,
        t.grad_accum,
        t.max_steps,
        run_dir.display(),
        if req.resume {
            format!(", resumed at step {}", state.step)
        } else {
            String::new()
        }
    ));

    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    let mut window_start = Instant::now();
    let mut window_tokens = 0u64;
    let mut interrupted = false;
    let mut final_val = None;
    let writer = CheckpointWriter {
        run_dir: &run_dir,
        cfg_toml: &cfg_toml,
        tokenizer_json: &tokenizer_json,
        keep_last: cfg.checkpoint.keep_last,
        keep_best: cfg.checkpoint.keep_best,
    };

    while state.step < t.max_steps {
        let step = state.step;
        let lr = lr_at(&cfg.schedule, cfg.optimizer.lr, step, t.max_steps);
        let mut grads = GradStore::<B::InnerBackend>::default();
        let mut loss_sum = 0.0f64;
        let mut last_x = None;
        // Mixed precision: the projections' matmuls in half for this step.
        let autocast_guard = autocast(precision.autocast());
        let loss_scale = state.loss_scaler.as_ref().map_or(1.0, |s| s.scale);
        for _ in 0..t.grad_accum {
            let batch = sampler.next_batch();
            let (x, y) = batch_tensors::<B>(&batch, &device);
            last_x = Some(x.clone());
            // Dividing here makes the summed gradients those of the mean loss.
            let loss =
                cross_entropy(model.forward(x), y, t.fused_ops).div_scalar(t.grad_accum as f64);
            let value: f32 = loss.clone().into_scalar().elem();
            loss_sum += value as f64;
            let loss = if loss_scale == 1.0 {
                loss
            } else {
                loss.mul_scalar(loss_scale)
            };
            grads.accumulate::<B, _>(&model, &table, loss.backward());
        }
        // One place between backward and the optimizer: a data-parallel reduce goes here.
        let step_tokens = cfg.tokens_per_step() as u64;
        let (updated, outcome, grad_norm) = apply_update::<B, _>(
            model,
            &mut opt,
            &table,
            grads,
            loss_sum,
            lr,
            cfg.optimizer.grad_clip,
            state.loss_scaler.as_mut(),
        );
        model = updated;
        match outcome {
            StepOutcome::Applied => {
                state.consecutive_nonfinite = 0;
                // Sophia: refresh the Hessian estimate on this step's last
                // micro-batch, with labels sampled from the updated model.
                if let (true, Some(x)) = (opt.wants_hessian(opt.updates()), last_x) {
                    let mut rng = label_rng(t.seed, opt.updates());
                    let g_hat = sampled_label_grads::<B, _>(
                        &model,
                        &table,
                        x,
                        t.fused_ops,
                        cfg.optimizer.grad_clip,
                        &mut rng,
                    );
                    opt.update_hessian(g_hat);
                }
            }
            StepOutcome::Overflow => {
                state.skipped_steps += 1;
                let scale = state.loss_scaler.as_ref().map_or(1.0, |s| s.scale);
                log.line(&format!(
                    "step {step}: fp16 gradient overflow: update skipped, loss scale lowered to {scale}"
                ));
                metrics.scalar(step + 1, "train/skipped_steps", state.skipped_steps as f64);
            }
            StepOutcome::NonFinite => {
                state.skipped_steps += 1;
                state.consecutive_nonfinite += 1;
                log.line(&format!(
                    "step {step}: non-finite loss {loss_sum} or gradient norm {grad_norm}: update skipped ({} in a row)",
                    state.consecutive_nonfinite
                ));
                metrics.scalar(step + 1, "train/skipped_steps", state.skipped_steps as f64);
                if state.consecutive_nonfinite >= t.max_nonfinite_steps {
                    state.step += 1;
                    sampler.save_into(&mut state);
                    state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
                    let dir = writer.save(&model, &opt, &state)?;
                    log.bar.abandon();
                    return Err(TrainerError::Run(format!(
                        "{} non-finite steps in a row (training.max_nonfinite_steps): stopped, state saved in {}; lower optimizer.lr or check the data",
                        state.consecutive_nonfinite,
                        dir.display()
                    )));
                }
            }
        }
        drop(autocast_guard);
        state.step += 1;
        state.optimizer_updates = opt.updates();
        state.tokens_seen += step_tokens;
        window_tokens += step_tokens;
        let done = state.step;

        if done.is_multiple_of(t.log_every) || done == t.max_steps || done == 1 {
            let tps = window_tokens as f64 / window_start.elapsed().as_secs_f64().max(1e-9);
            metrics.scalar(done, "train/loss", loss_sum);
            metrics.scalar(done, "train/lr", lr);
            metrics.scalar(done, "train/grad_norm", grad_norm);
            metrics.scalar(done, "train/tokens_per_s", tps);
            metrics.scalar(done, "train/skipped_steps", state.skipped_steps as f64);
            for (tag, value) in opt.metrics() {
                metrics.scalar(done, tag, value);
            }
            if let Some(s) = &state.loss_scaler {
                metrics.scalar(done, "train/loss_scale", s.scale);
            }
            for (domain, share) in sampler.domain_shares() {
                metrics.scalar(done, &format!("data/share/{domain}"), share);
            }
            metrics.flush();
            log.bar
                .set_message(format!("loss {loss_sum:.4} | lr {lr:.2e} | {tps:.0} tok/s"));
            if let Some(f) = log.file.as_mut() {
                let _ = writeln!(f, "step {done} loss {loss_sum:.6} lr {lr:.3e} grad_norm {grad_norm:.4} tok/s {tps:.0}");
            }
            window_start = Instant::now();
            window_tokens = 0;
        }
        log.bar.set_position(done);

        let last = done == t.max_steps;
        if (t.eval_every > 0 && done.is_multiple_of(t.eval_every)) || last {
            let _autocast = autocast(precision.autocast());
            let inner = model.valid();
            // Pooled over all domains' rows, and per domain when there are several.
            let (mut total, mut rows) = (0.0f64, 0usize);
            for set in &val_sets {
                let n: usize = set.batches.iter().map(|b| b.batch_size).sum();
                let loss = evaluate(&inner, &set.batches, &device, t.fused_ops);
                if let (Some(domain), true) = (&set.domain, loss.is_finite()) {
                    metrics.scalar(done, &format!("val/loss/{domain}"), loss);
                }
                if n > 0 {
                    total += loss * n as f64;
                    rows += n;
                }
            }
            let val = if rows == 0 {
                f64::NAN
            } else {
                total / rows as f64
            };
            if val.is_finite() {
                metrics.scalar(done, "val/loss", val);
                metrics.scalar(done, "val/ppl", val.exp());
                metrics.flush();
                log.line(&format!(
                    "step {done}: val loss {val:.4} (ppl {:.2})",
                    val.exp()
                ));
                if state.best_val_loss.is_none_or(|b| val < b) {
                    state.best_val_loss = Some(val);
                    state.best_step = Some(done);
                }
                final_val = Some(val);
            }
        }

        interrupted = req.stop.load(Ordering::SeqCst);
        let every = cfg.checkpoint.every;
        if (every > 0 && done.is_multiple_of(every)) || last || interrupted {
            sampler.save_into(&mut state);
            state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
            let dir = writer.save(&model, &opt, &state)?;
            if interrupted {
                log.line(&format!(
                    "interrupted: checkpoint saved in {}; continue with `kiln train --resume {}`",
                    dir.display(),
                    run_dir.display()
                ));
                break;
            }
        }
    }
    log.bar.finish_and_clear();
    metrics.flush();

    if !interrupted && cfg.logging.sample_tokens > 0 {
        let opts = SampleOptions {
            max_new_tokens: cfg.logging.sample_tokens,
            temperature: 0.8,
            top_k: Some(40),
            seed: t.seed,
        };
        // Sample with f32 weights whatever the training precision.
        let inner = cast_params(model.valid(), burn::tensor::FloatDType::F32);
        match generate(
            &inner,
            &tokenizer,
            &cfg.logging.sample_prompt,
            &opts,
            &device,
        ) {
            Ok(text) => log.line(&format!("sample:\n{text}")),
            Err(e) => log.line(&format!("warning: sampling failed: {e}")),
        }
    }
    log.line(&format!(
        "done: step {} in {:.1} s of training{}",
        state.step,
        elapsed_before + started.elapsed().as_secs_f64(),
        final_val
            .map(|v| format!(", final val loss {v:.4}"))
            .unwrap_or_default()
    ));
    Ok(TrainOutcome {
        run_dir,
        step: state.step,
        interrupted,
        final_val_loss: final_val,
    })
}
