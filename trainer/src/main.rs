//! `kiln`: train, resume, check, generate, evaluate, export and benchmark
//! small language models from TOML run configs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use kiln_trainer::backend::{dispatch, BackendTask};
use kiln_trainer::config::{self, RunConfig};
use kiln_trainer::train::{train, TrainRequest};
use kiln_trainer::{bench, data_setup, export, generate, plan, session, train as train_mod};

mod cli;

// Large activation tensors are freed and re-allocated every step; glibc
// returns them to the OS and page-faults them back in, mimalloc (tuned in
// `kiln_trainer::allocator`) keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Train small language models from TOML run configs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        /// Continue the run in this directory from its latest checkpoint.
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
    },
}

#[derive(Subcommand)]
enum DataAction {
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
enum TokenizerAction {
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
enum ConfigAction {
    /// Validate a config and print its plan (parameters, tokens/step, memory).
    Check {
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

fn default_run_dir(config: &Path) -> PathBuf {
    let stem = config.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from("runs").join(format!("{stem}-{secs}"))
}

struct TrainTask(TrainRequest);
impl BackendTask for TrainTask {
    type Output = train_mod::TrainOutcome;
    fn run<B: kiln_models::TrainBackend>(
        self,
        device: B::Device,
        _: &str,
    ) -> kiln_trainer::Result<Self::Output> {
        train::<B>(self.0, device)
    }
}

struct BenchTask(RunConfig, usize, usize);
impl BackendTask for BenchTask {
    type Output = bench::BenchReport;
    fn run<B: kiln_models::TrainBackend>(
        self,
        device: B::Device,
        name: &str,
    ) -> kiln_trainer::Result<Self::Output> {
        bench::bench::<B>(&self.0, device, name, self.1, self.2)
    }
}

fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while the first is being handled exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(sig, flag.clone()).context("installing signal handlers")?;
    }
    Ok(flag)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Train {
            config,
            set,
            run_dir,
            resume,
        } => {
            let stop = stop_flag()?;
            let req = match (resume, config) {
                (Some(dir), _) => {
                    let ckpt = session::load_checkpoint(&dir)?;
                    TrainRequest {
                        config: ckpt.config,
                        run_dir: dir,
                        resume: true,
                        stop,
                    }
                }
                (None, Some(path)) => {
                    let cfg = config::load(&path, &set)?;
                    let run_dir = run_dir.unwrap_or_else(|| default_run_dir(&path));
                    TrainRequest {
                        config: cfg,
                        run_dir,
                        resume: false,
                        stop,
                    }
                }
                (None, None) => bail!("kiln train needs a CONFIG.toml, or --resume RUN_DIR"),
            };
            let device = req.config.training.device.clone();
            let outcome = dispatch(&device, TrainTask(req))?;
            if outcome.interrupted {
                eprintln!(
                    "stopped at step {}; resume with `kiln train --resume {}`",
                    outcome.step,
                    outcome.run_dir.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            action: ConfigAction::Check { config, set },
        } => {
            let mut cfg = config::load(&config, &set)?;
            if cfg.model.vocab_size == 0 {
                // The vocabulary comes from the tokenizer: build it to know the size.
                let tok = data_setup::plan_tokenizer(&cfg)?;
                data_setup::resolve_vocab(&mut cfg, &tok)?;
            }
            config::DeviceSpec::parse(&cfg.training.device)?;
            println!("{}: ok", config.display());
            println!("{}", plan::plan(&cfg).render());
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate {
            checkpoint,
            prompt,
            max_new_tokens,
            temperature,
            top_k,
            seed,
            device,
        } => {
            let opts = generate::SampleOptions {
                max_new_tokens,
                temperature,
                top_k,
                seed,
            };
            let text = cli::generate(&checkpoint, &prompt, &opts, device)?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            checkpoint,
            data,
            text,
            logits_out,
            device,
        } => {
            if let (Some(text), Some(out)) = (text, logits_out) {
                cli::dump_logits(&checkpoint, &text, &out, device)?;
                println!("wrote {}", out.display());
                return Ok(ExitCode::SUCCESS);
            }
            let report = cli::eval(&checkpoint, data.as_deref(), device)?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            checkpoint,
            format,
            out,
        } => {
            if format != "hf" && format != "rwkv" {
                bail!("--format {format}: use \"hf\" (Hugging Face transformers) or \"rwkv\" (RWKV-7 .pth)");
            }
            let ckpt = session::load_checkpoint(&checkpoint)?;
            if format == "rwkv" {
                export::export_rwkv(&ckpt, &out)?;
            } else {
                export::export_hf(&ckpt, &out)?;
            }
            println!("exported {} to {}", ckpt.dir.display(), out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Data {
            action:
                DataAction::Prepare {
                    spec,
                    out,
                    tokenizer,
                    skip_bad,
                    force,
                },
        } => {
            let opts = kiln_data::PrepareOptions { skip_bad, force };
            let report = cli::data::data_prepare(&spec, out, tokenizer, &opts)?;
            print!("{}", report.render());
            println!("wrote {}", report.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Data {
            action: DataAction::Stories { docs, seed, out },
        } => {
            let bytes = cli::data::write_stories(&out, seed, docs)?;
            println!("wrote {} ({docs} stories, {bytes} bytes)", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokenizer {
            action:
                TokenizerAction::Train {
                    spec,
                    vocab_size,
                    out,
                    kind,
                    max_bytes,
                },
        } => {
            let tok = cli::data::tokenizer_train(&spec, &kind, vocab_size, max_bytes, &out)?;
            println!(
                "wrote {} ({} tokens, {:?})",
                out.display(),
                tok.vocab_size(),
                tok.kind()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            config,
            set,
            steps,
            warmup,
        } => {
            if steps == 0 {
                bail!("--steps 0: bench needs at least one timed step");
            }
            let cfg = config::load(&config, &set)?;
            let device = cfg.training.device.clone();
            let report = dispatch(&device, BenchTask(cfg, steps, warmup))?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    kiln_trainer::allocator::tune_for_training();
    // Internal errors print one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let loc = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error{loc}: {msg} (please report this with the command you ran)"
        );
    }));
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}
