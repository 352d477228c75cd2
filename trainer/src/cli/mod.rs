//! Subcommands that load a checkpoint and run the inference model.

pub mod args;
pub mod classifier;
pub mod commands;
pub mod curate;
pub mod data;
pub mod distributed;

use std::path::Path;

use burn::module::AutodiffModule;
use kiln_data::{read_documents, WholeSplit};
use kiln_models::TrainBackend;
use kiln_trainer::backend::{dispatch, BackendTask};
use kiln_trainer::eval::{evaluate_batches, evaluate_split, EvalResult};
use kiln_trainer::generate::{generate as gen, SampleOptions};
use kiln_trainer::session::{build_model, load_checkpoint, LoadedCheckpoint};
use kiln_trainer::{data_setup, Result};

struct GenerateTask<'a>(LoadedCheckpoint, &'a str, &'a SampleOptions);
impl BackendTask for GenerateTask<'_> {
    type Output = String;
    fn run<B: TrainBackend>(self, device: B::Device, _: &str) -> Result<String> {
        let model = build_model::<B::InnerBackend>(&self.0, &device)?;
        gen(&model, &self.0.tokenizer, self.1, self.2, &device)
    }
}

pub fn generate(
    path: &Path,
    prompt: &str,
    opts: &SampleOptions,
    device: Option<String>,
    quant: Option<&Option<kiln_trainer::config::QuantizeConfig>>,
) -> anyhow::Result<String> {
    let ckpt = load_quantized(path, quant)?;
    let device = device.unwrap_or_else(|| ckpt.config.training.device.clone());
    Ok(dispatch(&device, GenerateTask(ckpt, prompt, opts))?)
}

struct CacheTask<'a>(
    LoadedCheckpoint,
    &'a args::DistillCacheArgs,
    kiln_trainer::distill_cache_build::CacheOptions,
);
impl BackendTask for CacheTask<'_> {
    type Output = kiln_trainer::distill_cache::CacheManifest;
    fn run<B: TrainBackend>(self, device: B::Device, _: &str) -> Result<Self::Output> {
        kiln_trainer::distill_cache_build::build_cache::<B::InnerBackend>(
            &self.0,
            &self.1.data,
            &self.1.out,
            &self.2,
            &device,
        )
    }
}

/// `kiln distill cache TEACHER DATA --out DIR`.
pub fn distill_cache(a: args::DistillCacheArgs) -> anyhow::Result<()> {
    let mut opts = kiln_trainer::distill_cache_build::CacheOptions {
        top_k: a.top_k,
        samples: a.samples,
        temperature: a.temperature,
        seed: a.seed,
        seq_len: a.seq_len,
        batch_size: a.batch_size,
        only: None,
    };
    opts.validate()?;
    let ckpt = load_checkpoint(&a.teacher)?;
    for path in &a.windows_of {
        let mut cfg = kiln_trainer::config::load(path, &[])?;
        if opts.seq_len.is_some_and(|s| s != cfg.seq_len()) {
            return Err(kiln_trainer::TrainerError::invalid(
                "--windows-of",
                format!(
                    "{} trains on windows of {}, not {}: cache runs of one window length (and leave --seq-len out)",
                    path.display(),
                    cfg.seq_len(),
                    opts.seq_len.unwrap_or_default()
                ),
            )
            .into());
        }
        opts.seq_len = Some(cfg.seq_len());
        let windows = kiln_trainer::distill_cache_build::windows_of(&mut cfg, &ckpt.tokenizer)?;
        let only = opts.only.get_or_insert_with(Default::default);
        for (name, list) in windows {
            let all = only.entry(name).or_default();
            all.extend(list);
            all.sort_unstable();
            all.dedup();
        }
    }
    let device = a
        .device
        .clone()
        .unwrap_or_else(|| ckpt.config.training.device.clone());
    let t0 = std::time::Instant::now();
    let m = dispatch(&device, CacheTask(ckpt, &a, opts))?;
    let tokens: u64 = m.domains.iter().map(|d| d.windows).sum::<u64>() * m.seq_len as u64;
    println!(
        "{}",
        serde_json::json!({
            "cache": a.out,
            "tokens": tokens,
            "bytes_per_token": m.bytes_per_token,
            "top_k": m.layout.top_k,
            "samples": m.layout.samples,
            "seconds": (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        })
    );
    Ok(())
}

struct EvalTask<'a>(LoadedCheckpoint, Option<&'a Path>);
impl BackendTask for EvalTask<'_> {
    type Output = serde_json::Value;
    fn run<B: TrainBackend>(self, device: B::Device, _: &str) -> Result<serde_json::Value> {
        let ckpt = self.0;
        let cfg = &ckpt.config;
        let seq = cfg.seq_len();
        let fused = cfg.training.fused_ops;
        if self.1.is_none() && (cfg.data.uses_shards() || cfg.data.instruct.is_some()) {
            return eval_run_val::<B>(&ckpt, &device, fused);
        }
        let tokens = match self.1 {
            Some(path) => {
                ckpt.tokenizer
                    .encode_docs(&read_documents(path, None, &cfg.data.text_field)?)?
            }
            None => {
                let docs = data_setup::train_documents(cfg)?;
                data_setup::token_split(cfg, &ckpt.tokenizer, &docs)?.val
            }
        };
        let split = WholeSplit::new(&tokens, seq, cfg.training.batch_size);
        if split.windows() == 0 {
            return Err(kiln_trainer::TrainerError::invalid(
                if self.1.is_some() { "--data" } else { "data.val_fraction" },
                format!(
                    "the evaluation data has {} tokens, fewer than one window of {} + 1: give more text",
                    tokens.len(),
                    seq
                ),
            ));
        }
        eprintln!(
            "eval: {} tokens in {} windows of {seq}{}",
            split.scored_tokens(),
            split.windows(),
            match split.tail_tokens() {
                0 => String::new(),
                n => format!(" (the last {n} scored by a window aligned to the end)"),
            }
        );
        let model = build_model::<B>(&ckpt, &device)?.valid();
        let r = evaluate_split(&model, &split, &device, fused, true);
        Ok(report(&ckpt, &r, Some(tokens.len())))
    }
}

/// A run on prepared shards: every domain's whole validation split (in
/// disjoint windows; the run itself evaluated `training.eval_batches` per
/// domain), with each domain's loss; an instruction run: its held-out
/// examples, answers scored only.
fn eval_run_val<B: TrainBackend>(
    ckpt: &LoadedCheckpoint,
    device: &B::Device,
    fused: bool,
) -> Result<serde_json::Value> {
    let mut cfg = ckpt.config.clone();
    if cfg.data.uses_shards() {
        cfg.training.eval_batches = usize::MAX;
    }
    let run_dir = std::env::temp_dir();
    let sets = data_setup::load_run_data(&mut cfg, &run_dir, Some(&ckpt.tokenizer))?.val;
    if sets.iter().all(|v| v.batches.is_empty()) {
        return Err(kiln_trainer::TrainerError::invalid(
            "data.datasets",
            format!("the run's validation data holds no window of {} + 1 tokens (or no example): evaluate on a file with --data", cfg.seq_len()),
        ));
    }
    let model = build_model::<B>(ckpt, device)?.valid();
    let parts: Vec<_> = sets
        .iter()
        .map(|set| evaluate_batches(&model, &set.batches, device, fused, true))
        .collect();
    let mut v = report(ckpt, &EvalResult::combined(&parts), None);
    if sets.len() > 1 {
        let mut domains = serde_json::Map::new();
        for (set, d) in sets.iter().zip(&parts) {
            let name = set.domain.clone().unwrap_or_default();
            domains.insert(
                name,
                serde_json::json!({"loss": d.loss, "ppl": d.ppl(), "tokens": d.tokens}),
            );
        }
        v["domains"] = domains.into();
    }
    Ok(v)
}

/// `kiln eval`'s JSON line. `tokens`: targets scored (every token of the
/// split but the first, once); `split_tokens`: the split's length.
fn report(
    ckpt: &LoadedCheckpoint,
    r: &EvalResult,
    split_tokens: Option<usize>,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "checkpoint": ckpt.dir,
        "loss": r.loss,
        "ppl": r.ppl(),
        "tokens": r.tokens,
        "windows": r.windows,
        "seconds": (r.seconds * 1000.0).round() / 1000.0,
        "tokens_per_s": r.tokens_per_s().round() as u64,
    });
    if let Some(n) = split_tokens {
        v["split_tokens"] = n.into();
    }
    v
}

/// A checkpoint to evaluate, with `quant` in place of its own [quantize]
/// (`Some(None)`: float; `Some(Some(q))`: post-training quantisation).
fn load_quantized(
    path: &Path,
    quant: Option<&Option<kiln_trainer::config::QuantizeConfig>>,
) -> anyhow::Result<LoadedCheckpoint> {
    let mut ckpt = load_checkpoint(path)?;
    if let Some(q) = quant {
        ckpt.config.quantize = q.clone();
    }
    Ok(ckpt)
}

pub fn eval(
    path: &Path,
    data: Option<&Path>,
    device: Option<String>,
    quant: Option<&Option<kiln_trainer::config::QuantizeConfig>>,
) -> anyhow::Result<serde_json::Value> {
    let ckpt = load_quantized(path, quant)?;
    let device = device.unwrap_or_else(|| ckpt.config.training.device.clone());
    Ok(dispatch(&device, EvalTask(ckpt, data))?)
}

/// `kiln eval CHECKPOINT --qa FILE`: exact-match accuracy of greedy answers.
pub fn eval_qa(
    path: &Path,
    qa: &Path,
    max_new: usize,
    device: Option<String>,
    quant: Option<&Option<kiln_trainer::config::QuantizeConfig>>,
) -> anyhow::Result<(serde_json::Value, String)> {
    let ckpt = load_quantized(path, quant)?;
    let device = device.unwrap_or_else(|| ckpt.config.training.device.clone());
    let examples = kiln_data::instruct::read_examples(qa)?;
    Ok(dispatch(&device, QaTask(ckpt, examples, max_new))?)
}

struct QaTask(LoadedCheckpoint, Vec<kiln_data::instruct::Example>, usize);
impl BackendTask for QaTask {
    /// The summary, and every prediction as JSONL.
    type Output = (serde_json::Value, String);
    fn run<B: TrainBackend>(self, device: B::Device, _: &str) -> Result<Self::Output> {
        let QaTask(ckpt, examples, max_new) = self;
        let template = ckpt
            .config
            .data
            .instruct
            .clone()
            .unwrap_or_default()
            .template()?;
        let model = build_model::<B::InnerBackend>(&ckpt, &device)?;
        let r = kiln_trainer::qa_eval::exact_match(
            &model,
            &ckpt.tokenizer,
            &template,
            &examples,
            max_new,
            &device,
        )?;
        let internal = |e: serde_json::Error| kiln_trainer::TrainerError::Internal(e.to_string());
        let mut v = serde_json::to_value(&r).map_err(internal)?;
        v["checkpoint"] = serde_json::json!(ckpt.dir);
        let mut lines = String::new();
        for p in &r.predictions {
            lines.push_str(&serde_json::to_string(p).map_err(internal)?);
            lines.push('\n');
        }
        Ok((v, lines))
    }
}

struct LogitsTask<'a>(LoadedCheckpoint, &'a str);
impl BackendTask for LogitsTask<'_> {
    type Output = serde_json::Value;
    fn run<B: TrainBackend>(self, device: B::Device, _: &str) -> Result<serde_json::Value> {
        use burn::tensor::{Int, Tensor, TensorData};
        use kiln_models::LanguageModel;
        let ids = self.0.tokenizer.encode(self.1)?;
        if ids.is_empty() {
            return Err(kiln_trainer::TrainerError::invalid(
                "--text",
                "encodes to no tokens",
            ));
        }
        let model = build_model::<B::InnerBackend>(&self.0, &device)?;
        let n = ids.len();
        if n > model.max_seq_len() {
            eprintln!(
                "warning: --text is {n} tokens, longer than the model's max_seq_len {}: positions past it were never trained",
                model.max_seq_len()
            );
        }
        let x = Tensor::<B::InnerBackend, 2, Int>::from_data(
            TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, n]),
            &device,
        );
        let logits: Vec<f32> = model
            .forward(x)
            .into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|e| kiln_trainer::TrainerError::Internal(format!("reading logits: {e:?}")))?;
        let v = model.vocab_size();
        let rows: Vec<&[f32]> = logits.chunks(v).collect();
        Ok(serde_json::json!({"tokens": [ids], "logits": [rows]}))
    }
}

/// Writes `{"tokens": [[...]], "logits": [[[...]]]}` for `text`.
pub fn dump_logits(
    path: &Path,
    text: &str,
    out: &Path,
    device: Option<String>,
    quant: Option<&Option<kiln_trainer::config::QuantizeConfig>>,
) -> anyhow::Result<()> {
    let ckpt = load_quantized(path, quant)?;
    let device = device.unwrap_or_else(|| ckpt.config.training.device.clone());
    let json = dispatch(&device, LogitsTask(ckpt, text))?;
    kiln_trainer::fsutil::write_atomic(out, json.to_string().as_bytes())?;
    Ok(())
}
