//! One function per subcommand: turn parsed arguments into library calls
//! and print the result on stdout (through [`emit`], which treats a closed
//! pipe as the end of the output, not an error).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use kiln_models::TrainBackend;
use kiln_trainer::backend::{dispatch, BackendTask};
use kiln_trainer::bench::{self, BenchData};
use kiln_trainer::config::{self, RunConfig};
use kiln_trainer::generate::SampleOptions;
use kiln_trainer::train::{train as run_training, Start, TrainOutcome, TrainRequest};
use kiln_trainer::{adapter, data_setup, export, plan, session};

use super::args::{
    BenchArgs, CheckArgs, CurateArgs, EvalArgs, ExportArgs, GenerateArgs, MergeArgs, PrepareArgs,
    PrepareInstructArgs, PruneArgs, QuantFlags, QuantizeArgs, StoriesArgs, StoriesQaArgs,
    TokenizerTrainArgs, TrainArgs,
};

/// Stdout went away (e.g. `kiln ... | head`): stop printing, exit quietly.
#[derive(Debug, thiserror::Error)]
#[error("stdout closed")]
pub struct ClosedPipe;

/// Prints `text` and a newline on stdout.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(ClosedPipe.into()),
        other => Ok(other.context("writing to stdout")?),
    }
}

fn default_run_dir(config: &Path) -> PathBuf {
    let stem = config.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from("runs").join(format!("{stem}-{secs}"))
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

struct TrainTask(TrainRequest);
impl BackendTask for TrainTask {
    type Output = TrainOutcome;
    fn run<B: TrainBackend>(
        self,
        device: B::Device,
        _: &str,
    ) -> kiln_trainer::Result<TrainOutcome> {
        run_training::<B>(self.0, device)
    }
}

/// `kiln train CONFIG [--set k=v] [--run-dir DIR]` or `kiln train --resume RUN [--set k=v]`.
pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    let TrainArgs {
        config,
        set,
        run_dir,
        resume,
    } = args;
    let (start, run_dir, device) = match (resume, config) {
        (Some(dir), _) => {
            // Loaded and verified once; the run continues from it.
            let checkpoint = session::load_checkpoint(&dir)?;
            let device = checkpoint.config.training.device.clone();
            let start = Start::Resume {
                checkpoint: Box::new(checkpoint),
                overrides: set,
            };
            (start, dir, device)
        }
        (None, Some(path)) => {
            let cfg = config::load(&path, &set)?;
            let run_dir = run_dir.unwrap_or_else(|| default_run_dir(&path));
            let device = cfg.training.device.clone();
            (Start::Fresh(cfg), run_dir, device)
        }
        (None, None) => bail!("kiln train needs a CONFIG.toml, or --resume RUN_DIR"),
    };
    let req = TrainRequest {
        start,
        run_dir,
        stop: stop_flag()?,
        collective: super::distributed::collective()?,
    };
    let outcome = dispatch(&device, TrainTask(req))?;
    if outcome.interrupted {
        eprintln!(
            "stopped at step {}; resume with `kiln train --resume {}`",
            outcome.step,
            outcome.run_dir.display()
        );
    }
    Ok(())
}

/// `kiln config check`: validate and print the plan.
pub fn config_check(args: CheckArgs) -> anyhow::Result<()> {
    let path = &args.config;
    let mut cfg = config::load(path, &args.set)?;
    let mut notes = Vec::new();
    if let Some(init) = &cfg.init {
        // Fine-tuning trains with the checkpoint's tokenizer (and architecture).
        let ckpt = session::load_checkpoint(&init.from)?;
        data_setup::resolve_vocab(&mut cfg, &ckpt.tokenizer)?;
        notes.push(format!(
            "init:               weights and tokenizer from {}",
            ckpt.dir.display()
        ));
    } else if cfg.model.vocab_size == 0 {
        // The vocabulary comes from the tokenizer: build it to know the size.
        let tok = data_setup::plan_tokenizer(&cfg)?;
        data_setup::resolve_vocab(&mut cfg, &tok)?;
    }
    config::DeviceSpec::parse(&cfg.training.device)?;
    emit(&format!("{}: ok", path.display()))?;
    emit(&plan::plan(&cfg).render())?;
    notes.iter().try_for_each(|n| emit(n))
}

/// `kiln export CHECKPOINT --format hf|rwkv --out DIR`.
pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let (checkpoint, format, out) = (&args.checkpoint, args.format.as_str(), &args.out);
    if !["hf", "rwkv", "peft"].contains(&format) {
        bail!(
            "--format {format}: use \"hf\" (Hugging Face transformers), \"rwkv\" (RWKV-7 .pth) or \"peft\" (LoRA adapters)"
        );
    }
    let ckpt = session::load_checkpoint(checkpoint)?;
    if format == "peft" {
        kiln_trainer::export_peft::export_peft(&ckpt, out)?;
        return emit(&format!(
            "exported the adapters of {} to {}",
            ckpt.dir.display(),
            out.display()
        ));
    }
    // A LoRA checkpoint exports as its merged model.
    let ckpt = match ckpt.config.adapter {
        Some(_) => adapter::merged(&ckpt)?,
        None => ckpt,
    };
    if format == "rwkv" {
        export::export_rwkv(&ckpt, out)?;
    } else {
        export::export_hf(&ckpt, out)?;
    }
    emit(&format!(
        "exported {} to {}",
        ckpt.dir.display(),
        out.display()
    ))
}

/// `kiln quantize CHECKPOINT --format q8_0|q4_0|f16|f32 --out FILE.gguf`.
pub fn quantize(a: QuantizeArgs) -> anyhow::Result<()> {
    use kiln_trainer::gguf::{write_gguf, GgufFormat};
    let Some(format) = GgufFormat::parse(&a.format) else {
        bail!("--format {}: use q8_0, q4_0, f16 or f32", a.format);
    };
    let ckpt = session::load_checkpoint(&a.checkpoint)?;
    let ckpt = match ckpt.config.adapter {
        Some(_) => adapter::merged(&ckpt)?,
        None => ckpt,
    };
    if let Some(q) = &ckpt.config.quantize {
        let trained = format!("{:?}", q.weights).to_lowercase();
        if trained != a.format {
            eprintln!(
                "warning: {} trained with fake {trained} weights; --format {} quantises differently",
                ckpt.dir.display(),
                a.format
            );
        }
    }
    let bytes = write_gguf(&ckpt, format, &a.out)?;
    emit(&format!(
        "wrote {} ({bytes} bytes, {})",
        a.out.display(),
        a.format
    ))
}

/// `kiln merge CHECKPOINT --out RUN_DIR`.
pub fn merge(args: MergeArgs) -> anyhow::Result<()> {
    let ckpt = session::load_checkpoint(&args.checkpoint)?;
    let merged = adapter::merged(&ckpt)?;
    let dir = adapter::save_full(&merged, &args.out)?;
    emit(&format!(
        "merged the adapters of {} into {}",
        ckpt.dir.display(),
        dir.display()
    ))
}

/// `kiln prune CHECKPOINT --out RUN_DIR --method M (--sparsity S | --nm N:M)`,
/// or `--structured` with `--heads/--kv-heads/--ffn-dim/--dim/--layers`.
pub fn prune(a: PruneArgs) -> anyhow::Result<()> {
    use kiln_trainer::prune::{self, PruneOptions};
    use kiln_trainer::TrainerError;
    if a.structured {
        return prune_structured(a);
    }
    let structured_flags = [
        ("--heads", a.heads),
        ("--kv-heads", a.kv_heads),
        ("--ffn-dim", a.ffn_dim),
        ("--dim", a.dim),
        ("--layers", a.layers),
    ];
    if let Some((flag, _)) = structured_flags.iter().find(|(_, v)| v.is_some()) {
        return Err(TrainerError::invalid(
            *flag,
            "removes whole heads, channels or blocks: add --structured (or leave it out for --method magnitude|wanda)",
        )
        .into());
    }
    let Some(method) = a.method else {
        return Err(TrainerError::invalid(
            "--method",
            "missing: give --method magnitude|wanda (with --sparsity or --nm), or --structured",
        )
        .into());
    };
    // The flags are checked before the checkpoint is read: a typo fails fast.
    let opts = PruneOptions::parse(
        &method,
        a.sparsity,
        a.nm.as_deref(),
        a.calib_batches,
        a.targets,
    )?;
    let ckpt = session::load_checkpoint(&a.checkpoint)?;
    let (pruned, report) = prune::prune(&ckpt, &opts)?;
    let dir = prune::save(&pruned, &a.out)?;
    emit(&report.render())?;
    emit(&format!(
        "pruned {} ({method}) into {}",
        ckpt.dir.display(),
        dir.display()
    ))
}

/// `kiln prune CHECKPOINT --out RUN_DIR --structured [--heads N ...]`.
fn prune_structured(a: PruneArgs) -> anyhow::Result<()> {
    use kiln_trainer::prune::{self};
    use kiln_trainer::prune_structured::{self as ps, StructuredOptions};
    use kiln_trainer::TrainerError;
    let unstructured = [
        ("--method", a.method.is_some()),
        ("--sparsity", a.sparsity.is_some()),
        ("--nm", a.nm.is_some()),
        ("--targets", !a.targets.is_empty()),
    ];
    if let Some((flag, _)) = unstructured.iter().find(|(_, given)| *given) {
        return Err(TrainerError::invalid(
            *flag,
            "belongs to unstructured pruning: --structured ranks heads, channels and blocks by activations; leave it out",
        )
        .into());
    }
    let opts = StructuredOptions {
        heads: a.heads,
        kv_heads: a.kv_heads,
        ffn_dim: a.ffn_dim,
        dim: a.dim,
        layers: a.layers,
        calib_batches: a.calib_batches,
    };
    opts.check_flags()?;
    let ckpt = session::load_checkpoint(&a.checkpoint)?;
    let (pruned, report) = ps::prune_structured(&ckpt, &opts)?;
    let dir = prune::save(&pruned, &a.out)?;
    emit(&report.render())?;
    emit(&format!(
        "pruned {} (structured) into {}",
        ckpt.dir.display(),
        dir.display()
    ))
}

struct BenchTask(RunConfig, usize, usize, BenchData);
impl BackendTask for BenchTask {
    type Output = bench::BenchReport;
    fn run<B: TrainBackend>(
        self,
        device: B::Device,
        name: &str,
    ) -> kiln_trainer::Result<Self::Output> {
        bench::bench::<B>(&self.0, device, name, self.1, self.2, self.3)
    }
}

/// `kiln bench CONFIG`: one JSON line.
pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs {
        config,
        set,
        steps,
        warmup,
        data,
    } = args;
    if steps == 0 {
        bail!("--steps 0: bench needs at least one timed step");
    }
    let data = match data.as_str() {
        "random" => BenchData::Random,
        "run" => BenchData::Run,
        other => {
            bail!("--data {other}: use \"random\" (random tokens) or \"run\" (the run's own data)")
        }
    };
    let cfg = config::load(&config, &set)?;
    let device = cfg.training.device.clone();
    let report = dispatch(&device, BenchTask(cfg, steps, warmup, data))?;
    emit(&serde_json::to_string(&report)?)
}

/// `kiln generate CHECKPOINT --prompt ...`.
pub fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    let opts = SampleOptions {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_k: a.top_k,
        seed: a.seed,
    };
    let quant = eval_quant(&a.quant)?;
    emit(&super::generate(
        &a.checkpoint,
        &a.prompt,
        &opts,
        a.device,
        quant.as_ref(),
    )?)
}

/// `kiln eval CHECKPOINT [--data FILE | --text T --logits-out F]`.
pub fn eval(a: EvalArgs) -> anyhow::Result<()> {
    let quant = eval_quant(&a.quant)?;
    let q = quant.as_ref();
    match (a.text, a.logits_out) {
        (Some(text), Some(out)) => {
            super::dump_logits(&a.checkpoint, &text, &out, a.device, q)?;
            emit(&format!("wrote {}", out.display()))
        }
        _ => match &a.qa {
            Some(qa) => {
                let (v, predictions) =
                    super::eval_qa(&a.checkpoint, qa, a.max_new_tokens, a.device, q)?;
                if let Some(out) = &a.predictions_out {
                    kiln_trainer::fsutil::write_atomic(out, predictions.as_bytes())?;
                }
                emit(&v.to_string())
            }
            None => emit(&super::eval(&a.checkpoint, a.data.as_deref(), a.device, q)?.to_string()),
        },
    }
}

/// `--quantize` / `--group` / `--activations` as a `[quantize]` section.
/// `None`: as the checkpoint says; `Some(None)`: `--quantize none` (a QAT
/// run evaluated in float).
fn eval_quant(a: &QuantFlags) -> anyhow::Result<Option<Option<config::QuantizeConfig>>> {
    let Some(w) = &a.quantize else {
        return Ok(None);
    };
    if w == "none" {
        return Ok(Some(None));
    }
    let mut text = format!("weights = {w:?}\n");
    if let Some(g) = a.group {
        text.push_str(&format!("group = {g}\n"));
    }
    if let Some(act) = &a.activations {
        text.push_str(&format!("activations = {act:?}\n"));
    }
    let q: config::QuantizeConfig = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "--quantize {w} / --activations: {}: use int8, int4, q8_0, q4_0 (or none: float) and none, int8_token or q8_0",
            e.message()
        )
    })?;
    q.validate()?;
    Ok(Some(Some(q)))
}

/// `kiln data prepare DATA.toml`.
pub fn data_prepare(a: PrepareArgs) -> anyhow::Result<()> {
    let opts = kiln_data::PrepareOptions {
        skip_bad: a.skip_bad,
        force: a.force,
    };
    let report = super::data::data_prepare(&a.spec, a.out, a.tokenizer, &opts)?;
    emit(report.render().trim_end())?;
    emit(&format!("wrote {}", report.out.display()))
}

/// `kiln curate RECIPE [--out DIR]`.
pub fn curate(a: CurateArgs) -> anyhow::Result<()> {
    let summary = super::curate::run(&a.recipe, a.out)?;
    emit(super::curate::render(&summary).trim_end())
}

/// `kiln data stories --docs N --out FILE`.
pub fn stories(a: StoriesArgs) -> anyhow::Result<()> {
    let bytes = super::data::write_stories(&a.out, a.seed, a.docs)?;
    emit(&format!(
        "wrote {} ({} stories, {bytes} bytes)",
        a.out.display(),
        a.docs
    ))
}

/// `kiln data prepare-instruct CONFIG --out DIR`.
pub fn prepare_instruct(a: PrepareInstructArgs) -> anyhow::Result<()> {
    let cfg = config::load(&a.config, &a.set)?;
    let manifest = kiln_trainer::data_instruct::prepare_instruct(&cfg, &a.out)?;
    emit(&format!("wrote {}", manifest.display()))
}

/// `kiln data stories-qa --train-stories N --eval-stories M --out DIR`.
pub fn stories_qa(a: StoriesQaArgs) -> anyhow::Result<()> {
    use kiln_data::stories::{qa_split, qa_to_jsonl};
    let (train, eval) = qa_split(a.seed, a.train_stories, a.eval_stories, a.per_story);
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    for (name, set) in [("train.jsonl", &train), ("eval.jsonl", &eval)] {
        kiln_trainer::fsutil::write_atomic(&a.out.join(name), qa_to_jsonl(set).as_bytes())?;
    }
    emit(&format!(
        "wrote {} ({} train and {} eval questions)",
        a.out.display(),
        train.len(),
        eval.len()
    ))
}

/// `kiln tokenizer train DATA.toml --vocab-size N --out FILE`.
pub fn tokenizer_train(a: TokenizerTrainArgs) -> anyhow::Result<()> {
    let tok = super::data::tokenizer_train(&a.spec, &a.kind, a.vocab_size, a.max_bytes, &a.out)?;
    let (n, kind) = (tok.vocab_size(), tok.kind());
    emit(&format!("wrote {} ({n} tokens, {kind:?})", a.out.display()))
}
