//! The command line: every subcommand and flag (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Train small language models from TOML run configs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train from a config, or continue a run exactly with --resume RUN_DIR.
    Train {
        /// The run config (TOML).
        config: Option<PathBuf>,
        /// Override a key: --set section.key=value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Where the run writes checkpoints, logs and TensorBoard events.
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Continue the run in this directory from its latest checkpoint
        /// (with --resume, --set may change max_steps, evaluation, checkpoint
        /// and logging cadence, and the schedule of steps not yet trained).
        #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "run_dir"])]
        resume: Option<PathBuf>,
    },
    /// Validate configs and print resolved plans.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Generate text from a run's latest checkpoint or a checkpoint directory.
    Generate {
        checkpoint: PathBuf,
        #[arg(long, default_value = "")]
        prompt: String,
        #[arg(long, default_value_t = 200)]
        max_new_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.8)]
        temperature: f64,
        #[arg(long)]
        top_k: Option<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Override the device the checkpoint was trained on.
        #[arg(long)]
        device: Option<String>,
    },
    /// Loss and perplexity of a checkpoint on its validation split or --data.
    Eval {
        checkpoint: PathBuf,
        /// A text or JSONL file to evaluate on instead of the run's validation split.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Instead of a dataset: write the logits of this text to --logits-out
        /// (JSON {"tokens", "logits"}), e.g. to compare with an HF export.
        #[arg(long, requires = "logits_out")]
        text: Option<String>,
        #[arg(long, requires = "text")]
        logits_out: Option<PathBuf>,
        #[arg(long)]
        device: Option<String>,
    },
    /// Export a checkpoint: `hf` (a Hugging Face folder: llama, mamba) or
    /// `rwkv` (the official RWKV-7 `model.pth` the `rwkv` package loads).
    Export {
        checkpoint: PathBuf,
        #[arg(long, default_value = "hf")]
        format: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Raw corpora to packed token shards.
    Data {
        #[command(subcommand)]
        action: DataAction,
    },
    /// Train a tokenizer on a data spec's sources.
    Tokenizer {
        #[command(subcommand)]
        action: TokenizerAction,
    },
    /// Train-step throughput of a config as one JSON line.
    Bench {
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long, default_value_t = 10)]
        steps: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// "random" tokens (as the PyTorch baseline) or the run's own data ("run").
        #[arg(long, default_value = "random")]
        data: String,
    },
}

#[derive(Subcommand)]
pub enum DataAction {
    /// Tokenize a data spec's sources into shards (skipped when up to date).
    Prepare {
        /// The data spec (TOML with [[source]] sections).
        spec: PathBuf,
        /// Output directory (overrides the spec's `out`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// tokenizer.json to use (overrides the spec's `tokenizer`).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Skip files that fail to decode (reported at the end) instead of stopping.
        #[arg(long)]
        skip_bad: bool,
        /// Rebuild even when the output is up to date.
        #[arg(long)]
        force: bool,
    },
    /// Write N built-in generated stories as JSONL (a corpus of any size).
    Stories {
        #[arg(long)]
        docs: u64,
        #[arg(long, default_value_t = 1234)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum TokenizerAction {
    /// Train on a data spec's sources (streamed) and write tokenizer.json.
    Train {
        spec: PathBuf,
        #[arg(long)]
        vocab_size: usize,
        #[arg(long)]
        out: PathBuf,
        /// "bpe" (byte-level BPE) or "char".
        #[arg(long, default_value = "bpe")]
        kind: String,
        /// Train on the first N bytes of text only.
        #[arg(long)]
        max_bytes: Option<u64>,
    },
}

#[derive(Subcommand)]
pub enum ConfigAction {
    /// Validate a config and print its plan (parameters, tokens/step, memory).
    Check {
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}
