//! The training loop, read top to bottom as the run's story: prepare, then
//! step, log, evaluate and checkpoint with explicit branches (no callback
//! registry), then sample. The pieces live in `run/` and `step.rs`.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use kiln_data::Batch;
use kiln_models::{Decoder, TrainBackend};

use crate::checkpoint::Content;
use crate::config::RunConfig;
use crate::data_setup::RunData;
use crate::error::{Result, TrainerError};
use crate::generate::{generate, SampleOptions};
use crate::run::checkpointing::CheckpointWriter;
use crate::run::output::RunOutput;
use crate::run::setup::{prepare, PreparedRun};
use crate::run::validation::validate;
use crate::schedule::lr_at;
use crate::session::{CONFIG_FILE, TOKENIZER_FILE};
use crate::state::TrainerState;
use crate::step::{StepOutcome, StepReport, Stepper};

pub use crate::run::{Start, TrainOutcome, TrainRequest};
pub use crate::step::apply_update;

pub fn train<B: TrainBackend>(req: TrainRequest, device: B::Device) -> Result<TrainOutcome> {
    let (run_dir, stop) = (req.run_dir.clone(), req.stop.clone());
    let world = req.collective.world();
    let PreparedRun {
        cfg,
        tokenizer,
        mut data,
        mut model,
        mut stepper,
        mut state,
        content,
        notes,
    } = prepare::<B>(req, &device)?;
    let t = cfg.training.clone();
    let log = &cfg.logging;
    let mut out = RunOutput::open(
        world,
        &run_dir,
        log.tensorboard,
        log.metrics_jsonl,
        t.max_steps,
        state.step,
    )?;
    let writer = CheckpointWriter {
        run_dir: run_dir.clone(),
        world,
        saved_names: matches!(content, Content::Adapters { .. })
            .then(|| stepper.table.infos.iter().map(|p| p.name.clone()).collect()),
        content,
        cfg_toml: cfg.to_toml()?,
        tokenizer_json: tokenizer.to_json()?,
        keep_last: cfg.checkpoint.keep_last,
        keep_best: cfg.checkpoint.keep_best,
    };
    out.shared_file(&run_dir.join(CONFIG_FILE), writer.cfg_toml.as_bytes())?;
    out.shared_file(
        &run_dir.join(TOKENIZER_FILE),
        writer.tokenizer_json.as_bytes(),
    )?;
    out.line(&headline(&cfg, &run_dir, state.step));
    // The resolved plan and where the run starts from: shown, and saved with the run.
    let plan = format!(
        "{}\n{}",
        crate::plan::plan_with_trainable(&cfg, Some(stepper.table.trainable_elements())).render(),
        notes.join("\n")
    );
    out.shared_file(&run_dir.join("plan.txt"), plan.trim_end().as_bytes())?;
    plan.trim_end().lines().for_each(|l| out.line(l));

    let clock = (Instant::now(), state.elapsed_s);
    let mut window = (Instant::now(), 0u64);
    let (mut interrupted, mut final_val) = (false, None);
    let step0 = state.step;
    while state.step < t.max_steps {
        let step = state.step;
        let lr = lr_at(&cfg.schedule, cfg.optimizer.lr, step, t.max_steps);
        model = start_qat(model, &cfg, step, step0, &mut out)?;
        let micro: Vec<Batch> = (0..t.grad_accum).map(|_| data.train.next_batch()).collect();
        let (updated, report) = stepper.step(model, &micro, lr, state.loss_scaler.as_mut())?;
        model = updated;
        let stop_now = record_outcome(&mut state, &report, &mut out, t.max_nonfinite_steps);
        state.advance(stepper.opt.updates(), cfg.tokens_per_step() as u64);
        window.1 += cfg.tokens_per_step() as u64;
        let done = state.step;
        if done == step0 + 1 {
            log_memory(&stepper, &mut out)?;
        }
        if stop_now {
            let saved = save(&writer, &model, &mut stepper, &data, &mut state, clock)?;
            out.finish(false);
            let saved = saved.map(|d| format!(" (state saved in {})", d.display()));
            return Err(TrainerError::Diverged {
                steps: state.consecutive_nonfinite,
                saved: saved.unwrap_or_default(),
            });
        }
        if done.is_multiple_of(t.log_every) || done == t.max_steps || done == 1 {
            let tps = window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
            log_step(&mut out, done, lr, tps, &report, &stepper, &state, &data);
            window = (Instant::now(), 0);
        }
        out.progress(done, None);

        let last = done == t.max_steps;
        if (t.eval_every > 0 && done.is_multiple_of(t.eval_every)) || last {
            // ZeRO-3: the whole model, gathered for the evaluation only.
            let full = stepper.full_model(&model)?;
            let val = validate(
                full.as_ref().unwrap_or(&model),
                &data.val,
                &stepper.precision,
                t.fused_ops,
                &device,
                &mut out,
                done,
            );
            if let Some(v) = val {
                state.record_val(v);
                final_val = Some(v);
            }
        }

        interrupted = stop.load(Ordering::SeqCst);
        let every = cfg.checkpoint.every;
        if (every > 0 && done.is_multiple_of(every)) || last || interrupted {
            let saved = save(&writer, &model, &mut stepper, &data, &mut state, clock)?;
            if interrupted {
                if let Some(dir) = saved {
                    let (d, r) = (dir.display(), run_dir.display());
                    out.line(&format!("interrupted: checkpoint saved in {d}; continue with `kiln train --resume {r}`"));
                }
                break;
            }
        }
    }
    out.finish(true);

    if !interrupted && log.sample_tokens > 0 {
        // Every rank takes part in ZeRO-3's gather; rank 0 samples.
        let full = stepper.full_model(&model)?;
        if out.is_leader() {
            let m = full.as_ref().unwrap_or(&model);
            sample(m, &stepper, &tokenizer, &cfg, &device, &mut out);
        }
    }
    let elapsed = clock.1 + clock.0.elapsed().as_secs_f64();
    let val_note = final_val
        .map(|v| format!(", final val loss {v:.4}"))
        .unwrap_or_default();
    out.line(&format!(
        "done: step {} in {elapsed:.1} s of training{val_note}",
        state.step
    ));
    Ok(TrainOutcome {
        run_dir,
        step: state.step,
        interrupted,
        final_val_loss: final_val,
    })
}

/// QAT from its start step (or from the resume step past it): the model
/// with fake quantisation attached at that step, unchanged at any other.
fn start_qat<B: TrainBackend>(
    model: Decoder<B>,
    cfg: &RunConfig,
    step: u64,
    step0: u64,
    out: &mut RunOutput,
) -> Result<Decoder<B>> {
    let Some(q) = cfg
        .quantize
        .as_ref()
        .filter(|q| step == q.start_step.max(step0))
    else {
        return Ok(model);
    };
    let model = crate::quantize::apply(model, q)?;
    out.line(&format!(
        "quantize: fake {:?} weights, {:?} activations, from step {}",
        q.weights,
        q.activations,
        step + 1
    ));
    Ok(model)
}

/// Saves a checkpoint of the run as it stands after `state.step` steps.
fn save<B: TrainBackend>(
    writer: &CheckpointWriter,
    model: &Decoder<B>,
    stepper: &mut Stepper<B>,
    data: &RunData,
    state: &mut TrainerState,
    (started, before): (Instant, f64),
) -> Result<Option<PathBuf>> {
    data.train.save_into(state);
    state.elapsed_s = before + started.elapsed().as_secs_f64();
    state.objective = stepper.objective.state();
    if writer.world.rank == 0 {
        // Written before the checkpoint: a crash in between leaves a file
        // one step ahead of the last checkpoint, never one behind it.
        let run = writer.run_dir.display().to_string();
        for (name, text) in stepper.objective.run_files(&run, state.step) {
            crate::fsutil::write_atomic(&writer.run_dir.join(name), text.as_bytes())?;
        }
    }
    match stepper
        .sharding
        .as_mut()
        .filter(|s| s.strategy.shards_optimizer())
    {
        Some(sharding) => writer
            .save_sharded(
                model,
                &stepper.opt,
                state,
                sharding,
                stepper.collective.as_ref(),
            )
            .map(Some),
        None => writer.save(model, &stepper.opt, state),
    }
}

/// Rank 0 logs every rank's training-state bytes (gathered) once.
fn log_memory<B: TrainBackend>(stepper: &Stepper<B>, out: &mut RunOutput) -> Result<()> {
    let m = stepper.memory();
    let mib = |b: usize| (b as f64 / (1024.0 * 1024.0)) as f32;
    // Peak RSS after the first step: activations, the backward's own
    // gradients and allocator slack on top of the counted state.
    let rss = crate::bench::peak_rss_mb() as f32;
    let all =
        stepper
            .collective
            .all_gather(&[mib(m.params), mib(m.grads), mib(m.optimizer), rss])?;
    let per_rank: Vec<String> = all
        .chunks(4)
        .enumerate()
        .map(|(r, v)| {
            format!(
                "rank {r}: params {:.3} grads {:.3} optimizer {:.3} peak RSS {:.0}",
                v[0], v[1], v[2], v[3]
            )
        })
        .collect();
    out.line(&format!("memory per rank (MiB): {}", per_rank.join("; ")));
    if let Some(s) = &stepper.sharding {
        // The step's buffers through collectives (each at full size).
        let psi = stepper.table.trainable_elements() as f64 * 4.0;
        let bytes = s.comm.bytes() as f64;
        out.line(&format!(
            "communication in the first step (MiB, each collective's full buffer): {:.3} = {:.4} x the f32 parameters (reduce dtype {})",
            bytes / (1024.0 * 1024.0),
            bytes / psi.max(1.0),
            s.reduce_dtype.name()
        ));
    }
    Ok(())
}

/// The run's first log line.
fn headline(cfg: &RunConfig, run_dir: &Path, step: u64) -> String {
    let t = &cfg.training;
    format!(
        "kiln: {} parameters, {} tokens/step ({} x {} x accum {}), {} steps, run dir {}{}",
        cfg.model.num_params(),
        cfg.tokens_per_step(),
        t.batch_size,
        cfg.seq_len(),
        t.grad_accum,
        t.max_steps,
        run_dir.display(),
        if step > 0 {
            format!(", resumed at step {step}")
        } else {
            String::new()
        }
    )
}

/// Counts skipped steps and logs why; true when too many non-finite steps
/// in a row must stop the run.
fn record_outcome(
    state: &mut TrainerState,
    report: &StepReport,
    out: &mut RunOutput,
    max_nonfinite: u64,
) -> bool {
    let step = state.step;
    match report.outcome {
        StepOutcome::Applied => {
            state.consecutive_nonfinite = 0;
            false
        }
        StepOutcome::Overflow => {
            state.skipped_steps += 1;
            let scale = state.loss_scaler.as_ref().map_or(1.0, |s| s.scale);
            out.line(&format!(
                "step {step}: fp16 gradient overflow: update skipped, loss scale lowered to {scale}"
            ));
            out.scalar(step + 1, "train/skipped_steps", state.skipped_steps as f64);
            false
        }
        StepOutcome::NonFinite => {
            state.skipped_steps += 1;
            state.consecutive_nonfinite += 1;
            out.line(&format!(
                "step {step}: non-finite loss {} or gradient norm {}: update skipped ({} in a row)",
                report.loss, report.grad_norm, state.consecutive_nonfinite
            ));
            out.scalar(step + 1, "train/skipped_steps", state.skipped_steps as f64);
            state.consecutive_nonfinite >= max_nonfinite
        }
    }
}

/// Scalars of a logged step, the bar's message and the train.log line.
#[allow(clippy::too_many_arguments)]
fn log_step<B: TrainBackend>(
    out: &mut RunOutput,
    done: u64,
    lr: f64,
    tps: f64,
    report: &StepReport,
    stepper: &Stepper<B>,
    state: &TrainerState,
    data: &RunData,
) {
    let loss = report.loss;
    out.scalar(done, "train/loss", loss);
    out.scalar(done, "train/lr", lr);
    out.scalar(done, "train/grad_norm", report.grad_norm);
    out.scalar(done, "train/tokens_per_s", tps);
    out.scalar(done, "train/skipped_steps", state.skipped_steps as f64);
    for (tag, value) in stepper.objective.metrics() {
        out.scalar(done, &tag, value);
    }
    for (tag, value) in stepper.opt.metrics() {
        out.scalar(done, tag, value);
    }
    if let Some(s) = &state.loss_scaler {
        out.scalar(done, "train/loss_scale", s.scale);
    }
    for (domain, share) in data.train.domain_shares() {
        out.scalar(done, &format!("data/share/{domain}"), share);
    }
    out.flush();
    out.progress(
        done,
        Some(format!("loss {loss:.4} | lr {lr:.2e} | {tps:.0} tok/s")),
    );
    let comm = if stepper.sharding.is_some() {
        let t = &report.times;
        out.scalar(done, "dist/comm_s", t.reduce);
        format!(
            " comm {:.1} ms ({:.0}% of the step)",
            t.reduce * 1e3,
            100.0 * t.reduce / t.total().max(1e-12)
        )
    } else {
        String::new()
    };
    out.file_line(&format!(
        "step {done} loss {loss:.6} lr {lr:.3e} grad_norm {:.4} tok/s {tps:.0}{comm}",
        report.grad_norm
    ));
}

/// The end-of-run sample, with f32 weights whatever the training precision.
fn sample<B: TrainBackend>(
    model: &Decoder<B>,
    stepper: &Stepper<B>,
    tokenizer: &kiln_data::Tokenizer,
    cfg: &RunConfig,
    device: &B::Device,
    out: &mut RunOutput,
) {
    use burn::module::AutodiffModule;
    let opts = SampleOptions {
        max_new_tokens: cfg.logging.sample_tokens,
        temperature: 0.8,
        top_k: Some(40),
        seed: cfg.training.seed,
    };
    let inner = stepper.precision.inference_f32(model.valid());
    match generate(&inner, tokenizer, &cfg.logging.sample_prompt, &opts, device) {
        Ok(text) => out.line(&format!("sample:\n{text}")),
        Err(e) => out.line(&format!("warning: sampling failed: {e}")),
    }
}
