//! `kiln bench`: throughput of the training step itself ([`Stepper::step`],
//! built by the same setup as `kiln train`: trainable set, precision with
//! fp16 loss scaling, optimizer), with the phases timed apart, achieved
//! FLOP/s and MFU against a matmul peak measured on the same device in the
//! same process. Batches are random tokens, or the run's own data.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Tensor};
use kiln_data::Batch;
use kiln_models::{Decoder, TrainBackend};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::config::RunConfig;
use crate::error::{Result, TrainerError};
use crate::run::setup::{build_parts, prepare, single_process};
use crate::run::{Start, TrainRequest};
use crate::schedule::lr_at;
use crate::step::{PhaseTimes, StepOutcome, Stepper};

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub device: String,
    pub params: usize,
    pub batch_size: usize,
    pub seq_len: usize,
    pub steps: usize,
    pub step_time_s: f64,
    pub tokens_per_s: f64,
    /// Mean seconds per step in each phase of the step.
    pub forward_s: f64,
    pub backward_s: f64,
    /// The data-parallel reduce (0 in one process).
    pub reduce_s: f64,
    /// Unscale, finite check, clip and optimizer.
    pub optimizer_s: f64,
    pub flops_per_token: f64,
    pub achieved_gflops: f64,
    pub peak_matmul_gflops: f64,
    pub mfu: f64,
    /// `training.precision` of the config.
    pub precision: String,
    /// Weights + grads + optimizer state as held in this precision.
    pub state_bytes_per_param: f64,
    /// Peak resident memory of the process (VmHWM).
    pub peak_rss_mb: f64,
    /// `peak_rss_mb` per parameter, in bytes (includes activations).
    pub peak_rss_bytes_per_param: f64,
    /// Batches per second the model consumes (1 / step time).
    pub model_batches_per_s: f64,
    /// Batches per second the data loader produces from `data.datasets`
    /// (absent for in-memory data): it must stay well above the model's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loader_batches_per_s: Option<f64>,
    /// `"random"` tokens or the run's own `"run"` data.
    pub data: String,
    /// Loss of every step, warmup included, in order (what `kiln train`
    /// logs as `train/loss` for the same config and data).
    pub losses: Vec<f64>,
    /// Steps skipped (fp16 overflow, non-finite), warmup included.
    pub skipped_steps: usize,
}

/// Where bench's batches come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchData {
    /// Uniform random token ids (the PyTorch baseline does the same).
    Random,
    /// The run's data, prepared as `kiln train` prepares it.
    Run,
}

/// Times the run's mixture loader on its prepared datasets for ~0.5 s.
pub fn loader_batches_per_s(cfg: &RunConfig) -> Result<Option<f64>> {
    if cfg.data.datasets.is_empty() {
        return Ok(None);
    }
    let mut cfg = cfg.clone();
    cfg.model.vocab_size = 0;
    let mut data = crate::data_setup::load_run_data(&mut cfg, &std::env::temp_dir(), None)?;
    let t = Instant::now();
    let mut n = 0u64;
    while n < 10 || t.elapsed().as_secs_f64() < 0.5 {
        std::hint::black_box(data.train.next_batch());
        n += 1;
    }
    Ok(Some(n as f64 / t.elapsed().as_secs_f64()))
}

/// Peak resident memory of this process (Linux `VmHWM`), MiB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Best f32 matmul rate over a few square products, GFLOP/s (the
/// reference script uses n = 2048 on CPU too).
pub fn matmul_peak_gflops<B: Backend>(device: &B::Device, n: usize) -> f64 {
    let a = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let b = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let c = a.clone().matmul(b.clone());
        let _: f32 = c.slice([0..1, 0..1]).into_scalar().elem();
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// A model, its step and a batch source, built as `kiln train` builds them.
struct BenchRun<B: TrainBackend> {
    cfg: RunConfig,
    model: Decoder<B>,
    stepper: Stepper<B>,
    next: Box<dyn FnMut() -> Batch>,
}

fn setup<B: TrainBackend>(
    cfg: &RunConfig,
    device: &B::Device,
    data: BenchData,
) -> Result<BenchRun<B>> {
    if data == BenchData::Run {
        let dir = std::env::temp_dir().join(format!("kiln-bench-{}", std::process::id()));
        let req = TrainRequest {
            start: Start::Fresh(cfg.clone()),
            run_dir: dir.clone(),
            stop: Default::default(),
            collective: single_process(),
        };
        let run = prepare::<B>(req, device);
        let _ = std::fs::remove_dir_all(&dir);
        let run = run?;
        let mut train = run.data.train;
        return Ok(BenchRun {
            cfg: run.cfg,
            model: run.model,
            stepper: run.stepper,
            next: Box::new(move || train.next_batch()),
        });
    }
    if cfg.model.vocab_size == 0 {
        return Err(TrainerError::invalid(
            "model.vocab_size",
            "0: bench on random tokens needs an explicit vocabulary size in the config (or use --data run)",
        ));
    }
    cfg.model.validate()?;
    let (model, stepper) = build_parts::<B>(cfg, device, None, single_process())?;
    let (b, t, vocab) = (cfg.training.batch_size, cfg.seq_len(), cfg.model.vocab_size);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.training.seed);
    // One fixed batch, as the PyTorch baseline times one batch.
    let ids: Vec<u32> = (0..b * (t + 1))
        .map(|_| rng.random_range(0..vocab as u32))
        .collect();
    let batch = Batch {
        inputs: ids.chunks(t + 1).flat_map(|r| r[..t].to_vec()).collect(),
        targets: ids.chunks(t + 1).flat_map(|r| r[1..].to_vec()).collect(),
        batch_size: b,
        seq_len: t,
        origins: Vec::new(),
    };
    Ok(BenchRun {
        cfg: cfg.clone(),
        model,
        stepper,
        next: Box::new(move || batch.clone()),
    })
}

pub fn bench<B: TrainBackend>(
    cfg: &RunConfig,
    device: B::Device,
    device_name: &str,
    steps: usize,
    warmup: usize,
    data: BenchData,
) -> Result<BenchReport> {
    let BenchRun {
        cfg,
        mut model,
        mut stepper,
        mut next,
    } = setup::<B>(cfg, &device, data)?;
    let tr = &cfg.training;
    let mut scaler = stepper.precision.initial_loss_scaler();
    let total_steps = (warmup + steps) as u64;
    let (mut times, mut losses, mut skipped) = (Vec::with_capacity(steps), Vec::new(), 0);
    for i in 0..warmup + steps {
        let lr = lr_at(
            &cfg.schedule,
            cfg.optimizer.lr,
            i as u64,
            tr.max_steps.max(total_steps),
        );
        let micro: Vec<Batch> = (0..tr.grad_accum).map(|_| next()).collect();
        let (m, report) = stepper.step(model, &micro, lr, scaler.as_mut())?;
        model = m;
        // Force the update to finish before timing stops (a no-op on eager CPU).
        let t = Instant::now();
        let _: f32 = model
            .valid()
            .norm
            .weight()
            .narrow(0, 0, 1)
            .into_scalar()
            .elem();
        let mut phases = report.times;
        phases.update += t.elapsed().as_secs_f64();
        losses.push(report.loss);
        skipped += usize::from(report.outcome != StepOutcome::Applied);
        if i >= warmup {
            times.push(phases);
        }
    }
    // Median step, as the PyTorch baseline reports it.
    let mut totals: Vec<f64> = times.iter().map(PhaseTimes::total).collect();
    totals.sort_by(f64::total_cmp);
    let step_time = totals[totals.len() / 2];
    let mean = |f: fn(&PhaseTimes) -> f64| times.iter().map(f).sum::<f64>() / steps as f64;
    let tokens_per_s = cfg.tokens_per_step() as f64 / step_time;
    let flops_per_token = cfg.model.train_flops_per_token(cfg.seq_len());
    let achieved = flops_per_token * tokens_per_s / 1e9;
    let peak = matmul_peak_gflops::<B::InnerBackend>(&device, 2048);
    let params = cfg.model.num_params();
    Ok(BenchReport {
        device: device_name.to_string(),
        params,
        batch_size: tr.batch_size,
        seq_len: cfg.seq_len(),
        steps,
        step_time_s: step_time,
        tokens_per_s,
        forward_s: mean(|p| p.forward),
        backward_s: mean(|p| p.backward),
        reduce_s: mean(|p| p.reduce),
        optimizer_s: mean(|p| p.update),
        flops_per_token,
        achieved_gflops: achieved,
        peak_matmul_gflops: peak,
        mfu: achieved / peak,
        precision: stepper.precision.name(),
        state_bytes_per_param: stepper.precision.bytes_per_param(),
        peak_rss_mb: peak_rss_mb(),
        peak_rss_bytes_per_param: peak_rss_mb() * 1024.0 * 1024.0 / params.max(1) as f64,
        model_batches_per_s: 1.0 / step_time,
        loader_batches_per_s: loader_batches_per_s(&cfg)?,
        data: match data {
            BenchData::Random => "random",
            BenchData::Run => "run",
        }
        .into(),
        losses,
        skipped_steps: skipped,
    })
}
