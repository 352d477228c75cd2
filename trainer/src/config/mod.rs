//! Run configs: one TOML file with a section per component. Parsing goes
//! TOML -> `toml::Value` (where `--set` overrides land) -> typed structs with
//! `deny_unknown_fields`, so every error names the field path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_models::ModelConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

mod adapter;
mod distill;
mod distributed;
mod doremi;
mod quantize;
mod validate;

pub use adapter::{short_target, AdapterConfig};
pub use distill::DistillConfig;
pub use distributed::{DistributedConfig, ReduceDtype, Strategy};
pub use doremi::DoremiConfig;
pub use quantize::QuantizeConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelConfig,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub tokenizer: TokenizerConfig,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    pub training: TrainingConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Full fine-tuning: start from a checkpoint's weights (fresh optimizer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitConfig>,
    /// LoRA fine-tuning over the `[init]` checkpoint, which stays frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterConfig>,
    /// Quantisation-aware training / quantised evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize: Option<QuantizeConfig>,
    /// Knowledge distillation from a teacher checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillConfig>,
    /// DoReMi: this run trains a proxy whose domain weights it writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doremi: Option<DoremiConfig>,
    /// Data-parallel strategy across MPI ranks (ignored in a world of one).
    #[serde(default, skip_serializing_if = "is_default_distributed")]
    pub distributed: DistributedConfig,
}

fn is_default_distributed(d: &DistributedConfig) -> bool {
    *d == DistributedConfig::default()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// A text/JSONL file or directory. Absent: the built-in generated stories.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train: Option<PathBuf>,
    /// Held-out file; absent: the last `val_fraction` of the train tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val: Option<PathBuf>,
    pub val_fraction: f64,
    /// "text" or "jsonl"; absent: from the file extension.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    pub text_field: String,
    /// Training context length; absent: `model.max_seq_len`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq_len: Option<usize>,
    /// Size and seed of the built-in story corpus.
    pub stories_docs: usize,
    pub stories_seed: u64,
    /// Prepared dataset directories (`kiln data prepare` output).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<PathBuf>,
    /// A data spec (DATA.toml) whose raw sources are prepared into
    /// `RUN_DIR/data` when the run starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<PathBuf>,
    /// Instruction tuning: `data.train` (and `data.val`) are instruction
    /// files rendered with this template, loss on the trained roles only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instruct: Option<kiln_data::instruct::InstructConfig>,
    /// A resume may change `data.mixture` (e.g. to DoReMi's weights): the
    /// sampler keeps each domain's position and follows the new shares
    /// from the resumed step on. Off: changed weights are refused.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reweight_on_resume: bool,
    /// Sampling weight per domain; empty: proportional to train tokens.
    /// (Last: TOML writes tables after plain keys.)
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub mixture: BTreeMap<String, f64>,
}

impl DataConfig {
    /// Training reads prepared shards (not in-memory text).
    pub fn uses_shards(&self) -> bool {
        !self.datasets.is_empty() || self.spec.is_some()
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            train: None,
            val: None,
            val_fraction: 0.1,
            format: None,
            text_field: "text".into(),
            seq_len: None,
            stories_docs: 20_000,
            stories_seed: 1234,
            datasets: Vec::new(),
            spec: None,
            instruct: None,
            reweight_on_resume: false,
            mixture: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKindConfig {
    Char,
    Bpe,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerConfig {
    pub kind: TokenizerKindConfig,
    /// BPE vocabulary size to train.
    pub vocab_size: usize,
    /// An existing Hugging Face tokenizer.json (overrides `kind`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            kind: TokenizerKindConfig::Char,
            vocab_size: 0,
            path: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adamw,
    Sophia,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    /// Absent: 0.9 (AdamW) or 0.965 (Sophia).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta1: Option<f64>,
    /// Absent: 0.95 (AdamW) or 0.99 (Sophia).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta2: Option<f64>,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global-norm clipping threshold; 0 turns clipping off.
    pub grad_clip: f64,
    /// Sophia: the `rho` of its update clip.
    pub rho: f64,
    /// Sophia: refresh the Hessian estimate every this many updates.
    pub hessian_every: u64,
    /// Per-parameter overrides, first match wins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<ParamGroupConfig>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adamw,
            lr: 3e-4,
            beta1: None,
            beta2: None,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: 1.0,
            rho: 0.04,
            hessian_every: 10,
            groups: Vec::new(),
        }
    }
}

impl OptimizerConfig {
    /// `(beta1, beta2)` with the kind's defaults filled in.
    pub fn betas(&self) -> (f64, f64) {
        let (d1, d2) = match self.kind {
            OptimizerKind::Adamw => (0.9, 0.95),
            OptimizerKind::Sophia => (0.965, 0.99),
        };
        (self.beta1.unwrap_or(d1), self.beta2.unwrap_or(d2))
    }
}

/// `[[optimizer.groups]]`: settings for the parameters whose checkpoint name
/// matches `params` (`*` = any characters), e.g. `params = "*norm*"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamGroupConfig {
    pub params: String,
    /// Multiplies the scheduled learning rate.
    #[serde(default = "unit_scale")]
    pub lr_scale: f64,
    /// Absent: `optimizer.weight_decay`, or 0 where the model excludes the parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
}

fn unit_scale() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Cosine,
    Wsd,
    Constant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecayShape {
    Linear,
    OneMinusSqrt,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    pub warmup_steps: u64,
    pub min_lr: f64,
    /// WSD: fraction of the steps spent decaying at the end.
    pub decay_fraction: f64,
    pub decay_shape: DecayShape,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Cosine,
            warmup_steps: 0,
            min_lr: 0.0,
            decay_fraction: 0.2,
            decay_shape: DecayShape::Linear,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    Fp32,
    Bf16Mixed,
    Fp16Mixed,
    Bf16Pure,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    pub max_steps: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    #[serde(default = "one")]
    pub grad_accum: usize,
    /// Evaluate every N steps (0: only at the end).
    #[serde(default)]
    pub eval_every: u64,
    #[serde(default = "default_eval_batches")]
    pub eval_batches: usize,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// "cpu", "cuda", "cuda:N" or "wgpu".
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default = "default_precision")]
    pub precision: Precision,
    /// Non-finite steps in a row that stop the run.
    #[serde(default = "default_max_nonfinite")]
    pub max_nonfinite_steps: u64,
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// Fused kernels (attention, cross-entropy, SwiGLU, RMSNorm) with
    /// hand-written backward; false runs the composed burn ops.
    #[serde(default = "default_true")]
    pub fused_ops: bool,
    /// Checkpoint-name globs of parameters that do not train (no gradient,
    /// no optimizer state), e.g. `["model.embed_tokens.weight"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
}

fn default_true() -> bool {
    true
}

fn one() -> usize {
    1
}
fn default_eval_batches() -> usize {
    20
}
fn default_seed() -> u64 {
    1337
}
fn default_device() -> String {
    "cpu".into()
}
fn default_precision() -> Precision {
    Precision::Fp32
}
fn default_max_nonfinite() -> u64 {
    5
}
fn default_log_every() -> u64 {
    10
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Save every N steps (0: only at the end); the last step is always saved.
    pub every: u64,
    pub keep_last: usize,
    /// Also keep the checkpoint with the best validation loss.
    pub keep_best: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every: 0,
            keep_last: 3,
            keep_best: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub tensorboard: bool,
    pub metrics_jsonl: bool,
    /// Prompt of the sample printed at the end of training.
    pub sample_prompt: String,
    pub sample_tokens: usize,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            tensorboard: true,
            metrics_jsonl: true,
            sample_prompt: "Once upon a time".into(),
            sample_tokens: 200,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// A checkpoint directory (`RUN_DIR/checkpoints/step-N`).
    pub from: PathBuf,
}

/// Where training runs, parsed from `training.device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
    Wgpu,
}

impl DeviceSpec {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            "wgpu" => Ok(Self::Wgpu),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(Self::Cuda(i)),
                _ => Err(TrainerError::invalid(
                    "training.device",
                    format!("\"{s}\" is not a device: use \"cpu\", \"cuda:0\" (or \"cuda:N\") or \"wgpu\""),
                )),
            },
        }
    }
}

/// Parses `key=value` of `--set` into a TOML value: a TOML literal where it
/// parses as one (numbers, booleans, quoted strings, arrays), else a bare string.
fn parse_set_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Applies `section.key=value` overrides to a parsed TOML document.
pub fn apply_overrides(doc: &mut toml::Table, overrides: &[String]) -> Result<()> {
    for item in overrides {
        let Some((path, raw)) = item.split_once('=') else {
            return Err(TrainerError::invalid(
                "--set",
                format!("`{item}` is not of the form section.key=value (e.g. --set training.max_steps=100)"),
            ));
        };
        let keys: Vec<&str> = path.trim().split('.').collect();
        if keys.len() < 2 || keys.iter().any(|k| k.is_empty()) {
            return Err(TrainerError::invalid(
                "--set",
                format!("`{path}` must name a section and a key, e.g. training.max_steps"),
            ));
        }
        let mut table = &mut *doc;
        for key in &keys[..keys.len() - 1] {
            let entry = table
                .entry(key.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(TrainerError::invalid(
                        "--set",
                        format!("`{path}`: `{key}` is a value, not a section"),
                    ))
                }
            };
        }
        table.insert(
            keys[keys.len() - 1].to_string(),
            parse_set_value(raw.trim()),
        );
    }
    Ok(())
}

/// Typed config from a TOML table; errors carry the field path.
pub fn from_table(doc: toml::Table, origin: &Path) -> Result<RunConfig> {
    let value = toml::Value::Table(doc);
    let cfg: RunConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let inner = inner.trim().trim_end_matches('\n').replace('\n', " ");
        let message = if path == "." || path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        };
        TrainerError::Config {
            path: origin.to_path_buf(),
            message,
        }
    })?;
    Ok(cfg)
}

/// Reads a run config file, applies `--set` overrides and validates.
pub fn load(path: &Path, overrides: &[String]) -> Result<RunConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainerError::Config {
        path: path.to_path_buf(),
        message: format!("cannot read the config: {e}"),
    })?;
    let mut doc: toml::Table = toml::from_str(&text).map_err(|e| TrainerError::Config {
        path: path.to_path_buf(),
        message: format!(
            "not valid TOML: {}",
            e.to_string().trim().replace('\n', " ")
        ),
    })?;
    apply_overrides(&mut doc, overrides)?;
    let mut cfg = from_table(doc, path)?;
    cfg.validate()?;
    cfg.absolutize_paths();
    Ok(cfg)
}

impl RunConfig {
    pub fn seq_len(&self) -> usize {
        self.data.seq_len.unwrap_or(self.model.max_seq_len)
    }

    pub fn tokens_per_step(&self) -> usize {
        self.training.batch_size * self.training.grad_accum * self.seq_len()
    }

    /// Relative paths are taken from the working directory; the saved config
    /// holds absolute ones so that `--resume` works from anywhere.
    pub fn absolutize_paths(&mut self) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p.as_mut() {
                if let Ok(abs) = std::fs::canonicalize(&*path) {
                    *path = abs;
                }
            }
        };
        fix(&mut self.data.train);
        fix(&mut self.data.val);
        fix(&mut self.data.spec);
        for p in &mut self.data.datasets {
            if let Ok(abs) = std::fs::canonicalize(&*p) {
                *p = abs;
            }
        }
        fix(&mut self.tokenizer.path);
        if let Some(d) = self.distill.as_mut() {
            fix(&mut d.teacher);
            fix(&mut d.cache);
        }
        if let Some(init) = self.init.as_mut() {
            if let Ok(abs) = std::fs::canonicalize(&init.from) {
                init.from = abs;
            }
        }
    }

    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self)
            .map_err(|e| TrainerError::Internal(format!("cannot serialise the config: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "[model]\ndim = 32\nn_layers = 2\nn_heads = 4\nffn_dim = 64\nmax_seq_len = 32\nvocab_size = 64\n[training]\nmax_steps = 10\nbatch_size = 2\n";

    fn parse(extra: &str, sets: &[&str]) -> Result<RunConfig> {
        let mut doc: toml::Table = toml::from_str(&format!("{MIN}{extra}"))
            .map_err(|e| TrainerError::Internal(e.to_string()))?;
        apply_overrides(
            &mut doc,
            &sets.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )?;
        let cfg = from_table(doc, Path::new("x.toml"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    #[test]
    fn set_overrides_are_typed_and_validated() {
        let cfg = parse(
            "",
            &[
                "training.max_steps=7",
                "optimizer.lr=1e-3",
                "training.device=cpu",
            ],
        )
        .expect("valid overrides");
        assert_eq!(cfg.training.max_steps, 7);
        assert_eq!(cfg.optimizer.lr, 1e-3);
        let err = parse("", &["model.n_kv_heads=3"])
            .expect_err("must be refused")
            .to_string();
        assert!(
            err.contains("model.n_heads = 4 is not divisible by model.n_kv_heads = 3"),
            "{err}"
        );
        let err = parse("", &["training.max_steps=abc"])
            .expect_err("must be refused")
            .to_string();
        assert!(err.contains("training.max_steps"), "{err}");
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let err = parse("[logging]\ncolour = true\n", &[])
            .expect_err("must be refused")
            .to_string();
        assert!(err.contains("logging") && err.contains("colour"), "{err}");
    }

    #[test]
    fn resolved_config_round_trips() {
        let cfg = parse("", &[]).expect("minimal config");
        let text = cfg.to_toml().expect("to toml");
        let doc: toml::Table = toml::from_str(&text).expect("toml");
        assert_eq!(
            from_table(doc, Path::new("r.toml")).expect("resolved config"),
            cfg
        );
    }
}
