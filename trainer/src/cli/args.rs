//! The command line: every subcommand and flag (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    Train(TrainArgs),
    /// Validate configs and print resolved plans.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Generate text from a run's latest checkpoint or a checkpoint directory.
    Generate(GenerateArgs),
    /// Loss and perplexity of a checkpoint on its validation split or --data.
    Eval(EvalArgs),
    /// Export a checkpoint: `hf` (a Hugging Face folder: llama, mamba),
    /// `rwkv` (the official RWKV-7 `model.pth` the `rwkv` package loads) or
    /// `peft` (a LoRA run's adapters, for `PeftModel.from_pretrained`).
    Export(ExportArgs),
    /// Write a GGUF file llama.cpp runs: q8_0 / q4_0 (post-training
    /// quantisation, or the format a QAT run trained for), f16 or f32.
    Quantize(QuantizeArgs),
    /// Fold a LoRA checkpoint's adapters into its base (f32) and write a full
    /// checkpoint into the run directory --out.
    Merge(MergeArgs),
    /// Prune a checkpoint's projections (magnitude or Wanda; unstructured or
    /// N:M) and write a full checkpoint, with its masks, into --out; or, with
    /// --structured, remove heads, channels and blocks (Minitron) into a
    /// smaller dense checkpoint.
    Prune(PruneArgs),
    /// Knowledge distillation helpers.
    Distill {
        #[command(subcommand)]
        action: DistillAction,
    },
    /// Raw corpora to packed token shards.
    Data {
        #[command(subcommand)]
        action: DataAction,
    },
    /// Curate corpora: run a recipe of filter and dedup stages over the
    /// sources `data prepare` reads; attributes per document, the kept
    /// documents as JSONL and REPORT.md in the output directory (resumable).
    Curate(CurateArgs),
    /// Train a tokenizer on a data spec's sources.
    Tokenizer {
        #[command(subcommand)]
        action: TokenizerAction,
    },
    /// Train-step throughput of a config as one JSON line.
    Bench(BenchArgs),
    /// Run a kiln command on N MPI ranks: execs `mpirun` (as root, and
    /// oversubscribed when N exceeds the cores), e.g. `kiln launch -n 2 --
    /// train run.toml`.
    Launch(LaunchArgs),
    /// fastText-compatible quality classifiers: train on `__label__X text`
    /// lines, predict labels and probabilities (reads fastText `.bin`s).
    Classifier {
        #[command(subcommand)]
        action: super::classifier::ClassifierAction,
    },
}

#[derive(Args)]
pub struct LaunchArgs {
    /// Number of ranks.
    #[arg(short = 'n', long = "ranks")]
    pub ranks: usize,
    /// Threads each rank's pool uses (RAYON_NUM_THREADS); default: all cores.
    #[arg(long)]
    pub threads_per_rank: Option<usize>,
    /// An Open MPI hostfile, for several machines.
    #[arg(long)]
    pub hostfile: Option<PathBuf>,
    /// The launcher to exec.
    #[arg(long, default_value = "mpirun")]
    pub mpirun: String,
    /// The kiln command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Subcommand)]
pub enum DataAction {
    /// Tokenize a data spec's sources into shards (skipped when up to date).
    Prepare(PrepareArgs),
    /// Write N built-in generated stories as JSONL (a corpus of any size).
    Stories(StoriesArgs),
    /// Question/answer pairs about generated stories (who, what, colour,
    /// where, which came first) as instruction JSONL: OUT/train.jsonl and a
    /// disjoint OUT/eval.jsonl.
    StoriesQa(StoriesQaArgs),
    /// Encode a run config's instruction files ([data.instruct], its
    /// tokenizer from [init] from or tokenizer.path) once into DIR, for
    /// `data.datasets = [DIR]`.
    PrepareInstruct(PrepareInstructArgs),
}

#[derive(Subcommand)]
pub enum DistillAction {
    /// Run TEACHER once over every train window of the prepared dataset DATA
    /// and store its sparse distributions (top-k and sampled tokens) in DIR,
    /// for `[distill] cache = DIR`.
    Cache(DistillCacheArgs),
}

#[derive(Args)]
pub struct DistillCacheArgs {
    /// The teacher: a run directory (its latest checkpoint) or checkpoint.
    pub teacher: PathBuf,
    /// A prepared dataset directory (as in `data.datasets`).
    pub data: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Most likely ids kept per position.
    #[arg(long, default_value_t = 16)]
    pub top_k: usize,
    /// Ids drawn from the teacher per position (arXiv 2503.16870).
    #[arg(long, default_value_t = 16)]
    pub samples: usize,
    /// The teacher's softmax temperature (the student must train at it).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Seed of the sampled ids.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Window length; default the teacher's (must equal the student's).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Windows per teacher forward.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Device of the teacher; default the teacher's training.device.
    #[arg(long)]
    pub device: Option<String>,
    /// Cache only the windows runs of these configs draw in their
    /// max_steps (the union; the teacher then costs the runs' tokens, not
    /// the whole corpus's).
    #[arg(long, num_args = 1..)]
    pub windows_of: Vec<PathBuf>,
}

#[derive(Subcommand)]
pub enum TokenizerAction {
    /// Train on a data spec's sources (streamed) and write tokenizer.json.
    Train(TokenizerTrainArgs),
}

#[derive(Subcommand)]
pub enum ConfigAction {
    /// Validate a config and print its plan (parameters, tokens/step, memory).
    Check(CheckArgs),
}

/// Train from a config, or continue a run exactly with --resume RUN_DIR.
#[derive(Args)]
pub struct TrainArgs {
    /// The run config (TOML).
    pub config: Option<PathBuf>,
    /// Override a key: --set section.key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Where the run writes checkpoints, logs and TensorBoard events.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in this directory from its latest checkpoint
    /// (with --resume, --set may change max_steps, evaluation, checkpoint
    /// and logging cadence, and the schedule of steps not yet trained).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "run_dir"])]
    pub resume: Option<PathBuf>,
}

/// Generate text from a run's latest checkpoint or a checkpoint directory.
#[derive(Args)]
pub struct GenerateArgs {
    pub checkpoint: PathBuf,
    #[arg(long, default_value = "")]
    pub prompt: String,
    #[arg(long, default_value_t = 200)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Override the device the checkpoint was trained on.
    #[arg(long)]
    pub device: Option<String>,
    #[command(flatten)]
    pub quant: QuantFlags,
}

/// Post-training quantisation of a checkpoint's projections for `eval` and
/// `generate` (overrides the checkpoint's [quantize]).
#[derive(Args)]
pub struct QuantFlags {
    /// Fake-quantised projections: int8, int4, q8_0 or q4_0; `none`
    /// evaluates a QAT run in float.
    #[arg(long)]
    pub quantize: Option<String>,
    /// With --quantize: int8/int4 group size (absent: per channel).
    #[arg(long, requires = "quantize")]
    pub group: Option<usize>,
    /// With --quantize: activations as none, int8_token or q8_0 (llama.cpp's CPU path).
    #[arg(long, requires = "quantize")]
    pub activations: Option<String>,
}

/// Loss and perplexity of a checkpoint on its validation split or --data.
#[derive(Args)]
pub struct EvalArgs {
    pub checkpoint: PathBuf,
    /// A text or JSONL file to evaluate on instead of the run's validation split.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Instead of a dataset: write the logits of this text to --logits-out
    /// (JSON {"tokens", "logits"}), e.g. to compare with an HF export.
    #[arg(long, requires = "logits_out")]
    pub text: Option<String>,
    #[arg(long, requires = "text")]
    pub logits_out: Option<PathBuf>,
    /// Instead of loss: exact-match accuracy of greedy answers on this
    /// instruction file (e.g. `kiln data stories-qa` output), rendered with
    /// the checkpoint's [data.instruct] template (default "plain").
    #[arg(long, conflicts_with_all = ["data", "text"])]
    pub qa: Option<PathBuf>,
    /// --qa: most tokens generated per answer.
    #[arg(long, default_value_t = 24)]
    pub max_new_tokens: usize,
    /// --qa: also write every answer as JSONL (index, expected, got, correct).
    #[arg(long, requires = "qa")]
    pub predictions_out: Option<PathBuf>,
    #[command(flatten)]
    pub quant: QuantFlags,
    #[arg(long)]
    pub device: Option<String>,
}

/// Export a checkpoint: `hf` (a Hugging Face folder: llama, mamba),
/// `rwkv` (the official RWKV-7 `model.pth`) or `peft` (LoRA adapters).
#[derive(Args)]
pub struct ExportArgs {
    pub checkpoint: PathBuf,
    #[arg(long, default_value = "hf")]
    pub format: String,
    #[arg(long)]
    pub out: PathBuf,
}

/// A checkpoint as a GGUF file for llama.cpp.
#[derive(Args)]
pub struct QuantizeArgs {
    pub checkpoint: PathBuf,
    /// q8_0, q4_0, f16 or f32.
    #[arg(long)]
    pub format: String,
    #[arg(long)]
    pub out: PathBuf,
}

/// Fold a LoRA checkpoint's adapters into its base and save a full checkpoint.
#[derive(Args)]
pub struct MergeArgs {
    /// A LoRA run directory (its latest checkpoint) or checkpoint directory.
    pub checkpoint: PathBuf,
    /// A new run directory; the merged checkpoint goes to OUT/checkpoints/step-N.
    #[arg(long)]
    pub out: PathBuf,
}

/// Prune a checkpoint and save it (with its masks) as a new run's checkpoint.
#[derive(Args)]
pub struct PruneArgs {
    /// A run directory (its latest checkpoint) or checkpoint directory.
    pub checkpoint: PathBuf,
    /// A new run directory; the pruned checkpoint goes to OUT/checkpoints/step-N.
    #[arg(long)]
    pub out: PathBuf,
    /// magnitude (|W|, one threshold per projection) or wanda (|W| times
    /// the input's norm on calibration data, per output).
    #[arg(long)]
    pub method: Option<String>,
    /// Share of weights to prune, in (0, 1) (unstructured).
    // Negative numbers parse, so `-0.5` gets the range message, not clap's.
    #[arg(long, allow_negative_numbers = true)]
    pub sparsity: Option<f64>,
    /// N:M: keep the N largest of every M consecutive inputs, e.g. 2:4.
    #[arg(long)]
    pub nm: Option<String>,
    /// Validation batches Wanda (or --structured) calibrates on.
    #[arg(long, default_value_t = 16)]
    pub calib_batches: usize,
    /// Structured (Minitron) pruning: remove whole heads, SwiGLU channels,
    /// embedding channels and blocks by activation importance; writes a
    /// smaller dense checkpoint with its new [model].
    #[arg(long)]
    pub structured: bool,
    /// --structured: query heads to keep per block.
    #[arg(long)]
    pub heads: Option<usize>,
    /// --structured: key/value heads to keep per block (whole query groups go).
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// --structured: SwiGLU channels to keep per block.
    #[arg(long)]
    pub ffn_dim: Option<usize>,
    /// --structured: embedding (hidden) channels to keep.
    #[arg(long)]
    pub dim: Option<usize>,
    /// --structured: blocks to keep.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Projections to prune: short names (q k v o gate up down ...) or
    /// globs over checkpoint names; default every projection but the head.
    #[arg(long, num_args = 1..)]
    pub targets: Vec<String>,
}

/// Train-step throughput of a config as one JSON line.
#[derive(Args)]
pub struct BenchArgs {
    pub config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// "random" tokens (as the PyTorch baseline) or the run's own data ("run").
    #[arg(long, default_value = "random")]
    pub data: String,
}

/// Tokenize a data spec's sources into shards (skipped when up to date).
#[derive(Args)]
pub struct PrepareArgs {
    /// The data spec (TOML with [[source]] sections).
    pub spec: PathBuf,
    /// Output directory (overrides the spec's `out`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// tokenizer.json to use (overrides the spec's `tokenizer`).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Skip files that fail to decode (reported at the end) instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Rebuild even when the output is up to date.
    #[arg(long)]
    pub force: bool,
}

/// Run a curation recipe.
#[derive(Args)]
pub struct CurateArgs {
    /// The recipe (TOML: [[source]] as in a data spec, [[stage]], keep).
    pub recipe: PathBuf,
    /// Output directory (overrides the recipe's `out`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Write N built-in generated stories as JSONL (a corpus of any size).
#[derive(Args)]
pub struct StoriesArgs {
    #[arg(long)]
    pub docs: u64,
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
}

/// Instruction data encoded once.
#[derive(Args)]
pub struct PrepareInstructArgs {
    pub config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[arg(long)]
    pub out: PathBuf,
}

/// Story question/answer pairs, train and disjoint eval.
#[derive(Args)]
pub struct StoriesQaArgs {
    /// Stories whose questions form the training set.
    #[arg(long)]
    pub train_stories: usize,
    /// Further stories (none equal to a training story) for evaluation.
    #[arg(long)]
    pub eval_stories: usize,
    /// Questions per story (of different kinds).
    #[arg(long, default_value_t = 2)]
    pub per_story: usize,
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// A directory: train.jsonl and eval.jsonl are written there.
    #[arg(long)]
    pub out: PathBuf,
}

/// Train on a data spec's sources (streamed) and write tokenizer.json.
#[derive(Args)]
pub struct TokenizerTrainArgs {
    pub spec: PathBuf,
    #[arg(long)]
    pub vocab_size: usize,
    #[arg(long)]
    pub out: PathBuf,
    /// "bpe" (byte-level BPE) or "char".
    #[arg(long, default_value = "bpe")]
    pub kind: String,
    /// Train on the first N bytes of text only.
    #[arg(long)]
    pub max_bytes: Option<u64>,
}

/// Validate a config and print its plan (parameters, tokens/step, memory).
#[derive(Args)]
pub struct CheckArgs {
    pub config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}
