//! Subcommands that load a checkpoint and run the inference model.

pub mod data;

use std::path::Path;

use burn::module::AutodiffModule;
use kiln_data::{eval_batches, read_documents};
use kiln_models::TrainBackend;
use kiln_trainer::backend::{dispatch, BackendTask};
use kiln_trainer::generate::{generate as gen, SampleOptions};
use kiln_trainer::session::{build_model, load_checkpoint, LoadedCheckpoint};
use kiln_trainer::train::evaluate;
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
) -> anyhow::Result<String> {
    let ckpt = load_checkpoint(path)?;
    let device = device.unwrap_or_else(|| ckpt.config.training.device.clone());
    Ok(dispatch(&device, GenerateTask(ckpt, prompt, opts))?)
}

struct EvalTask<'a>(LoadedCheckpoint, Option<&'a Path>);
impl BackendTask for EvalTask<'_> {
    type Output = serde_json::Value;
    fn run<B: TrainBackend>(self, device: B::Device, _: &str) -> Result<serde_json::Value> {
        let ckpt = self.0;
        let cfg = &ckpt.config;
        let tokens = match self.1 {
            Some(path) => {
                ckpt.tokenizer
                    .encode_docs(&read_documents(path, None, &cfg.data.text_field)?)?
            }
            None if cfg.data.uses_shards() => Vec::new(),
            None => {
                let docs = data_setup::train_documents(cfg)?;
                data_setup::token_split(cfg, &ckpt.tokenizer, &docs)?.val
            }
        };
        let seq = cfg.seq_len();
        let batches = if self.1.is_none() && cfg.data.uses_shards() {
            // A run on prepared shards: every domain's validation split.
            let mut cfg = cfg.clone();
            let run_dir = std::env::temp_dir();
            data_setup::load_run_data(&mut cfg, &run_dir, Some(&ckpt.tokenizer))?
                .val
                .into_iter()
                .flat_map(|v| v.batches)
                .collect()
        } else {
            eval_batches(&tokens, seq, cfg.training.batch_size, usize::MAX)
        };
        if batches.is_empty() {
            return Err(kiln_trainer::TrainerError::Run(format!(
                "the evaluation data has {} tokens, fewer than one window of {} + 1",
                tokens.len(),
                seq
            )));
        }
        let model = build_model::<B>(&ckpt, &device)?.valid();
        let loss = evaluate(&model, &batches, &device, cfg.training.fused_ops);
        let n: usize = batches.iter().map(|b| b.batch_size * b.seq_len).sum();
        Ok(
            serde_json::json!({"checkpoint": ckpt.dir, "loss": loss, "ppl": loss.exp(), "tokens": n}),
        )
    }
}

pub fn eval(
    path: &Path,
    data: Option<&Path>,
    device: Option<String>,
) -> anyhow::Result<serde_json::Value> {
    let ckpt = load_checkpoint(path)?;
    let device = device.unwrap_or_else(|| ckpt.config.training.device.clone());
    Ok(dispatch(&device, EvalTask(ckpt, data))?)
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
        let x = Tensor::<B::InnerBackend, 2, Int>::from_data(
            TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, n]),
            &device,
        );
        let logits: Vec<f32> = model
            .forward(x)
            .into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|e| kiln_trainer::TrainerError::Run(format!("reading logits: {e:?}")))?;
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
) -> anyhow::Result<()> {
    let ckpt = load_checkpoint(path)?;
    let device = device.unwrap_or_else(|| ckpt.config.training.device.clone());
    let json = dispatch(&device, LogitsTask(ckpt, text))?;
    kiln_trainer::fsutil::write_atomic(out, json.to_string().as_bytes())?;
    Ok(())
}
