//! `kiln bench`: train-step throughput on random tokens, with the phases
//! timed apart, achieved FLOP/s and MFU against a matmul peak measured on the
//! same device in the same process.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Int, Tensor};
use kiln_models::{Decoder, LanguageModel, TrainBackend};
use serde::Serialize;

use crate::config::RunConfig;
use crate::error::{Result, TrainerError};
use crate::grads::{GradStore, ParamTable};
use crate::loss::cross_entropy;

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub device: String,
    pub params: usize,
    pub batch_size: usize,
    pub seq_len: usize,
    pub steps: usize,
    pub step_time_s: f64,
    pub tokens_per_s: f64,
    pub forward_s: f64,
    pub backward_s: f64,
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

pub fn bench<B: TrainBackend>(
    cfg: &RunConfig,
    device: B::Device,
    device_name: &str,
    steps: usize,
    warmup: usize,
) -> Result<BenchReport> {
    if cfg.model.vocab_size == 0 {
        return Err(TrainerError::invalid(
            "model.vocab_size",
            "0: bench needs an explicit vocabulary size in the config",
        ));
    }
    cfg.model.validate()?;
    let (b, t) = (cfg.training.batch_size, cfg.seq_len());
    B::seed(&device, cfg.training.seed);
    let mut model: Decoder<B> =
        Decoder::new(&cfg.model, &device)?.with_fused(cfg.training.fused_ops);
    let table = ParamTable::new::<B, _>(&model);
    let mut opt = crate::train::build_optimizer::<B::InnerBackend>(cfg, &table)?;
    let precision = cfg.training.precision;
    if let Some(dtype) = precision.param_dtype() {
        model = crate::precision::cast_trainable(model, dtype);
    }
    // Mixed precision: the projections' matmuls in half, as in training
    // (fp16 loss scaling is left out: it does not change the work).
    let _autocast = kiln_models::ops::precision::autocast(precision.autocast());
    let vocab = cfg.model.vocab_size as f64;
    let tokens =
        Tensor::<B, 2>::random([b, t + 1], Distribution::Uniform(0.0, vocab), &device).int(); // [B, T+1]
    let x: Tensor<B, 2, Int> = tokens.clone().slice([0..b, 0..t]);
    let y: Tensor<B, 2, Int> = tokens.slice([0..b, 1..t + 1]);

    // Per timed step: (forward, backward + clip, optimizer) seconds.
    let mut times: Vec<(f64, f64, f64)> = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let loss = cross_entropy(model.forward(x.clone()), y.clone(), cfg.training.fused_ops);
        let _: f32 = loss.clone().into_scalar().elem();
        let t1 = Instant::now();
        let mut grads = GradStore::<B::InnerBackend>::default();
        grads.accumulate::<B, _>(&model, &table, loss.backward());
        // Reading the norm syncs: backward is done when it returns.
        grads.clip_global_norm(cfg.optimizer.grad_clip);
        let t2 = Instant::now();
        model = opt.step::<B, _>(model, &table, grads, cfg.optimizer.lr);
        // Force the update to finish before timing stops.
        let _: f32 = model
            .valid()
            .norm
            .weight()
            .slice([0..1])
            .into_scalar()
            .elem();
        let t3 = Instant::now();
        if i >= warmup {
            times.push((
                (t1 - t0).as_secs_f64(),
                (t2 - t1).as_secs_f64(),
                (t3 - t2).as_secs_f64(),
            ));
        }
    }
    // Median step, as torch_llama_bench.py reports it.
    let mut totals: Vec<f64> = times.iter().map(|(a, b, c)| a + b + c).collect();
    totals.sort_by(f64::total_cmp);
    let step_time = totals[totals.len() / 2];
    let mean = |f: fn(&(f64, f64, f64)) -> f64| times.iter().map(f).sum::<f64>() / steps as f64;
    let (fwd, bwd, opt_s) = (mean(|t| t.0), mean(|t| t.1), mean(|t| t.2));
    let tokens_per_s = (b * t) as f64 / step_time;
    let flops_per_token = cfg.model.train_flops_per_token(t);
    let achieved = flops_per_token * tokens_per_s / 1e9;
    let peak = matmul_peak_gflops::<B::InnerBackend>(&device, 2048);
    Ok(BenchReport {
        device: device_name.to_string(),
        params: cfg.model.num_params(),
        batch_size: b,
        seq_len: t,
        steps,
        step_time_s: step_time,
        tokens_per_s,
        forward_s: fwd,
        backward_s: bwd,
        optimizer_s: opt_s,
        flops_per_token,
        achieved_gflops: achieved,
        peak_matmul_gflops: peak,
        mfu: achieved / peak,
        precision: serde_json::to_value(precision)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        state_bytes_per_param: precision.bytes_per_param(),
        peak_rss_mb: peak_rss_mb(),
        peak_rss_bytes_per_param: peak_rss_mb() * 1024.0 * 1024.0
            / cfg.model.num_params().max(1) as f64,
        model_batches_per_s: 1.0 / step_time,
        loader_batches_per_s: loader_batches_per_s(cfg)?,
    })
}
