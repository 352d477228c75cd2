//! Preparing a run, once, for every command that trains or measures
//! training: the start (fresh, resume, or init from a checkpoint), the
//! config resolved into its final form, data, model, trainable set,
//! precision and optimizer. Nothing mutates the config afterwards.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use kiln_data::Tokenizer;
use kiln_models::{
    is_adapter_name, load_named_tensors, load_named_tensors_where, named_tensors, Decoder,
    NamedTensor, TrainBackend,
};

use super::overrides::apply_on_resume;
use super::{Start, TrainRequest};
use crate::adapter;
use crate::backend::CpuBackend;
use crate::checkpoint::{self, Content};
use crate::config::RunConfig;
use crate::data_setup::{load_rank_data, RunData};
use crate::error::{Result, TrainerError};
use crate::objective::NextToken;
use crate::optim::{default_decay, Optimizer, ParamGroups};
use crate::precision::PrecisionPolicy;
use crate::session::{self, LoadedCheckpoint, MODEL_FILE};
use crate::state::TrainerState;
use crate::step::Stepper;
use crate::trainable::TrainableSet;
use crate::world::Collective;

/// A prepared run: everything the loop needs, built once.
pub struct PreparedRun<B: TrainBackend> {
    /// The resolved config (vocabulary filled in, overrides applied).
    pub cfg: RunConfig,
    pub tokenizer: Tokenizer,
    pub data: RunData,
    pub model: Decoder<B>,
    pub stepper: Stepper<B>,
    pub state: TrainerState,
    /// What the run's checkpoints hold (the whole model, or adapters over a base).
    pub content: Content,
    /// Lines for the log: where the run starts from, its tokenizer, overrides.
    pub notes: Vec<String>,
}

/// Weights (and optimizer state) a run starts from.
pub struct StartWeights<'a> {
    pub model: &'a BTreeMap<String, NamedTensor>,
    pub optimizer: Option<&'a BTreeMap<String, NamedTensor>>,
    /// Pruning masks to keep (a pruned checkpoint, or a run started from one).
    pub masks: Option<&'a BTreeMap<String, NamedTensor>>,
    /// Where they come from, for error messages.
    pub source: String,
}

pub fn prepare<B: TrainBackend>(req: TrainRequest, device: &B::Device) -> Result<PreparedRun<B>> {
    let run_dir = &req.run_dir;
    let world = req.collective.world();
    let (mut cfg, resumed, init, mut notes) = resolve_start(req.start, run_dir)?;
    crate::world::setup::check_world(&cfg, world)?;
    let from = resumed.as_ref().or(init.as_ref());
    if let Some(ckpt) = init.as_ref() {
        notes.push(format!(
            "init: weights and tokenizer from {} ({} tokens)",
            ckpt.dir.display(),
            ckpt.tokenizer.vocab_size()
        ));
    }
    let mut data = rank_ordered(req.collective.as_ref(), || {
        load_rank_data(&mut cfg, run_dir, from.map(|c| &c.tokenizer), world)
    })?;
    if let Some(ckpt) = init.as_ref() {
        same_architecture(&ckpt.config, &cfg, &ckpt.dir)?;
    }
    // An adapter checkpoint holds only what trained; the rest is its base's.
    let (full, base_sha) = match from {
        Some(c) => {
            let (w, sha) = adapter::full_weights(c)?;
            (Some(w), sha)
        }
        None => (None, None),
    };
    let content = match (&base_sha, init.as_ref()) {
        (Some(sha), _) => Content::Adapters {
            base_sha256: sha.clone(),
        },
        (None, Some(base)) => adapter::run_content(&cfg, Some(&base.model)),
        (None, None) => Content::Full,
    };
    if let (Some(sha), Some(base)) = (content.base_sha256(), init.as_ref()) {
        notes.push(format!(
            "adapter: over base {} (weights SHA-256 {sha})",
            base.dir.display()
        ));
    }
    let weights = from.zip(full.as_ref()).map(|(c, model)| StartWeights {
        model,
        optimizer: resumed.as_ref().and_then(|r| r.optimizer.as_ref()),
        masks: c.masks.as_ref(),
        source: c.dir.join(MODEL_FILE).display().to_string(),
    });
    let (mut model, mut stepper) = build_parts::<B>(&cfg, device, weights, req.collective.clone())?;
    let mut state = match &resumed {
        Some(ckpt) => ckpt.state.clone(),
        None => TrainerState::fresh(),
    };
    match &resumed {
        Some(_) => data.train.restore(&state, cfg.data.reweight_on_resume)?,
        None => data.train.save_into(&mut state),
    }
    install_objective(
        &cfg,
        &data,
        &req.collective,
        device,
        &mut stepper,
        &mut notes,
    )?;
    if resumed.is_some() {
        stepper.objective.restore(state.objective.as_ref())?;
    }
    if world.size > 1 {
        model = shard_world(
            &cfg,
            model,
            &mut stepper,
            &req.collective,
            device,
            &mut notes,
        )?;
    }
    stepper.opt.set_updates(state.optimizer_updates);
    stepper.steps_taken = state.step;
    // fp16 starts its loss scale here; a resumed run keeps its own.
    if state.loss_scaler.is_none() {
        state.loss_scaler = stepper.precision.initial_loss_scaler();
    }
    if !stepper.opt.masks.is_empty() {
        let (pruned, total) = stepper
            .opt
            .masks
            .saved()
            .values()
            .flat_map(|m| &m.data)
            .fold((0usize, 0usize), |(p, t), &v| {
                (p + (v == 0.0) as usize, t + 1)
            });
        notes.push(format!(
            "prune: {} masked tensors keep {pruned} of {total} weights at zero",
            stepper.opt.masks.saved().len()
        ));
    }
    if !stepper.table.frozen.is_empty() {
        notes.push(format!(
            "frozen: {} tensors ({} trainable parameters)",
            stepper.table.frozen.len(),
            stepper.table.trainable_elements()
        ));
    }
    Ok(PreparedRun {
        cfg,
        tokenizer: data.tokenizer.clone(),
        data,
        model,
        stepper,
        state,
        content,
        notes,
    })
}

/// The loss the run trains on when it is not plain next-token prediction:
/// distillation from a teacher (or its cache), or DoReMi's proxy.
fn install_objective<B: TrainBackend>(
    cfg: &RunConfig,
    data: &RunData,
    collective: &Arc<dyn Collective>,
    device: &B::Device,
    stepper: &mut Stepper<B>,
    notes: &mut Vec<String>,
) -> Result<()> {
    if let Some(d) = &cfg.distill {
        stepper.objective = Box::new(teacher_objective::<B>(cfg, d, data, device)?);
        let from = match (&d.cache, &d.teacher) {
            (Some(c), _) => format!("the cache {} ({} targets)", c.display(), d.cache_targets),
            (None, Some(t)) => t.display().to_string(),
            (None, None) => String::new(),
        };
        notes.push(format!(
            "distill: {} from {from} (T = {}, alpha = {}, on-policy share {})",
            d.loss, d.temperature, d.alpha, d.lmbda
        ));
    }
    if let Some(d) = &cfg.doremi {
        let c = collective.clone();
        stepper.objective = Box::new(doremi_objective::<B>(cfg, d, data, c, device)?);
        notes.push(format!(
            "doremi: proxy against {} (eta = {}, smoothing = {})",
            d.reference.display(),
            d.eta,
            d.smoothing
        ));
    }
    Ok(())
}

/// More than one rank: the `Sharding` of the configured strategy, the
/// initial weights checked identical across ranks, and (ZeRO-3) the model
/// made hollow. Returns the model this rank keeps.
fn shard_world<B: TrainBackend>(
    cfg: &RunConfig,
    mut model: Decoder<B>,
    stepper: &mut Stepper<B>,
    collective: &Arc<dyn Collective>,
    device: &B::Device,
    notes: &mut Vec<String>,
) -> Result<Decoder<B>> {
    let world = collective.world();
    // ZeRO-3 gathers block by block where the stack allows it.
    let groups = match cfg.distributed.strategy.shards_params() {
        true => {
            let on_policy = cfg.distill.as_ref().is_some_and(|d| d.lmbda > 0.0);
            let (groups, note) = crate::world::zero3_block::plan(&model, &stepper.table, on_policy);
            notes.push(note);
            groups
        }
        false => Vec::new(),
    };
    stepper.sharding = Some(crate::world::setup::sharding(
        cfg,
        world,
        &stepper.table,
        &mut stepper.opt,
        device,
        &groups,
    ));
    notes.push(crate::world::setup::describe(cfg, world));
    // Every rank drew (or loaded) the same weights: checked by hash
    // rather than broadcast, which would hold the model twice more.
    if let Some(s) = &stepper.sharding {
        s.check_replicas(&model, collective.as_ref())?;
    }
    crate::world::setup::check_masks(cfg.distributed.strategy, !stepper.opt.masks.is_empty())?;
    if let Some(s) = stepper
        .sharding
        .as_mut()
        .filter(|s| s.strategy.shards_params())
    {
        // ZeRO-3: from here on this rank holds only its parameter shard.
        model = s.hollow(model, &stepper.table);
    }
    Ok(model)
}

type Resolved = (
    RunConfig,
    Option<LoadedCheckpoint>,
    Option<LoadedCheckpoint>,
    Vec<String>,
);

/// The config a run trains with and the checkpoints it starts from.
fn resolve_start(start: Start, run_dir: &Path) -> Result<Resolved> {
    match start {
        Start::Resume {
            checkpoint,
            overrides,
        } => {
            let (cfg, mut notes) =
                apply_on_resume(&checkpoint.config, &overrides, checkpoint.state.step)?;
            notes.insert(
                0,
                format!(
                    "resume: from {} at step {}",
                    checkpoint.dir.display(),
                    checkpoint.state.step
                ),
            );
            Ok((cfg, Some(*checkpoint), None, notes))
        }
        Start::Fresh(cfg) => {
            if !checkpoint::list(run_dir).is_empty() {
                return Err(TrainerError::checkpoint(
                    run_dir,
                    format!(
                        "already holds checkpoints: continue it with `kiln train --resume {}` or choose another --run-dir",
                        run_dir.display()
                    ),
                ));
            }
            let init = match &cfg.init {
                Some(i) => Some(session::load_checkpoint(&i.from)?),
                None => None,
            };
            Ok((cfg, None, init, Vec::new()))
        }
    }
}

/// Runs `f` on rank 0 first, then on the others: preparing shards into the
/// run directory happens once, and the other ranks find them up to date.
fn rank_ordered<T>(c: &dyn Collective, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if c.world().size == 1 {
        return f();
    }
    if c.world().is_leader() {
        let out = f();
        c.barrier()?;
        out
    } else {
        c.barrier()?;
        f()
    }
}

/// Fine-tuning needs the checkpoint's architecture: the first `[model]` key
/// that differs is named with both values.
fn same_architecture(src: &RunConfig, cfg: &RunConfig, dir: &Path) -> Result<()> {
    if src.model == cfg.model {
        return Ok(());
    }
    let table = |c: &RunConfig| -> BTreeMap<String, String> {
        toml::Value::try_from(&c.model)
            .ok()
            .and_then(|v| v.as_table().cloned())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect()
    };
    let (a, b) = (table(src), table(cfg));
    let key = a
        .keys()
        .chain(b.keys())
        .find(|k| a.get(*k) != b.get(*k))
        .cloned()
        .unwrap_or_else(|| "model".into());
    let show =
        |m: &BTreeMap<String, String>| m.get(&key).cloned().unwrap_or_else(|| "(unset)".into());
    Err(TrainerError::invalid(
        format!("model.{key}"),
        format!(
            "is {} here but {} in the init.from checkpoint {}: fine-tuning needs the checkpoint's [model] (set it to {} or leave it out)",
            show(&b),
            show(&a),
            dir.display(),
            show(&a)
        ),
    ))
}

/// The config's model with its seeded initial weights (adapters attached).
/// Each burn backend has its own RNG, so the same seed draws different
/// numbers on wgpu or CUDA than on Flex: off the CPU the weights are drawn on
/// Flex and copied to the device, so that a run starts from the same model
/// on every device (and its losses track the CPU run's). `drawn = false`
/// skips that copy when start weights replace every tensor anyway.
fn seeded_model<B: TrainBackend>(
    cfg: &RunConfig,
    device: &B::Device,
    drawn: bool,
) -> Result<Decoder<B>> {
    // The backend RNG is process-wide: runs in threads of one process (the
    // ranks of an in-process test world) must not interleave their draws.
    static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    fn build<B: TrainBackend>(cfg: &RunConfig, device: &B::Device) -> Result<Decoder<B>> {
        let _one_at_a_time = SEEDED.lock().unwrap_or_else(|p| p.into_inner());
        B::seed(device, cfg.training.seed);
        let mut model = Decoder::new(&cfg.model, device)?.with_fused(cfg.training.fused_ops);
        if let Some(a) = &cfg.adapter {
            model = adapter::attach(model, a)?;
        }
        Ok(model)
    }
    let model = build::<B>(cfg, device)?;
    if !drawn || TypeId::of::<B>() == TypeId::of::<CpuBackend>() {
        return Ok(model);
    }
    let cpu = build::<CpuBackend>(cfg, &burn::backend::flex::FlexDevice)?;
    Ok(load_named_tensors(
        model,
        &named_tensors(&cpu),
        "the seeded init",
    )?)
}

/// Model and step of a config on `device`: seeded init, optional start
/// weights, trainable set, precision, optimizer (and its state). `kiln
/// bench` builds exactly what `kiln train` builds.
pub fn build_parts<B: TrainBackend>(
    cfg: &RunConfig,
    device: &B::Device,
    weights: Option<StartWeights<'_>>,
    collective: Arc<dyn Collective>,
) -> Result<(Decoder<B>, Stepper<B>)> {
    let t = &cfg.training;
    // Every tensor is overwritten by the start weights unless a LoRA run
    // draws its adapters.
    let drawn = weights.is_none() || cfg.adapter.is_some();
    let mut model = seeded_model::<B>(cfg, device, drawn)?;
    if let Some(w) = &weights {
        model = if cfg.adapter.is_some() {
            // A fresh LoRA run starts its adapters from their init; a resumed
            // one finds them all in the checkpoint.
            let has = |n: &str| !is_adapter_name(n) || w.model.contains_key(n);
            load_named_tensors_where(model, w.model, &w.source, &has)?
        } else {
            load_named_tensors(model, w.model, &w.source)?
        };
    }
    if let Some(q) = cfg.quantize.as_ref().filter(|q| q.start_step == 0) {
        // QAT from the first step (the loop switches later starts on).
        model = crate::quantize::apply(model, q)?;
    }
    let trainable = TrainableSet::of_run(cfg);
    let table = trainable.table::<B, _>(&model)?;
    let model = TrainableSet::apply(model, &table);
    let mut precision = PrecisionPolicy::new(t.precision, t.seed);
    precision.trainable_in_f32 = cfg.adapter.is_some();
    let model = precision.prepare_trainable(model);
    let groups = ParamGroups::build(&cfg.optimizer, &table, default_decay)?;
    let mut opt = Optimizer::new(&cfg.optimizer, groups, cfg.tokens_per_step());
    opt.write_back = precision.write_back;
    if let Some(state) = weights.as_ref().and_then(|w| w.optimizer) {
        opt.import_state(state, device);
    }
    // A LoRA run leaves its base frozen and adds dense adapters: the base's
    // masks have nothing to keep there.
    if let (Some(w), None) = (&weights, &cfg.adapter) {
        if let Some(masks) = w.masks.filter(|m| !m.is_empty()) {
            let shapes = w
                .model
                .iter()
                .map(|(k, t)| (k.clone(), t.shape.clone()))
                .collect();
            opt.masks = crate::optim::Masks::new(masks, &shapes, &w.source, device)?;
        }
    }
    let stepper = Stepper {
        table,
        opt,
        precision,
        objective: Box::new(NextToken { fused: t.fused_ops }),
        collective,
        grad_clip: cfg.optimizer.grad_clip,
        fused: t.fused_ops,
        seed: t.seed,
        reseed_each_step: cfg.adapter.as_ref().is_some_and(|a| a.dropout > 0.0),
        steps_taken: 0,
        device: device.clone(),
        sharding: None,
    };
    Ok((model, stepper))
}

/// A world of one, for commands that train in a single process.
pub fn single_process() -> Arc<dyn Collective> {
    Arc::new(crate::world::SingleProcess)
}

/// The distillation objective of `[distill]`: the teacher checkpoint built
/// on the inner backend (checked to share the student's tokenizer), and/or
/// the offline cache (checked against the run's data).
fn teacher_objective<B: TrainBackend>(
    cfg: &RunConfig,
    d: &crate::config::DistillConfig,
    data: &crate::data_setup::RunData,
    device: &B::Device,
) -> Result<crate::distill::Distill<B>> {
    let teacher = match &d.teacher {
        Some(path) => Some(load_teacher::<B>(cfg, d, path, &data.tokenizer, device)?),
        None => None,
    };
    let cache = match &d.cache {
        Some(dir) => Some(crate::distill_cache_check::open_for_run(cfg, d, dir, data)?),
        None => None,
    };
    // Online batches need the model only when no cache serves them.
    let teacher = teacher
        .map(|(model, _)| model)
        .filter(|_| cache.is_none() || d.lmbda > 0.0);
    Ok(crate::distill::Distill {
        teacher,
        cache,
        loss: d.divergence()?,
        temperature: d.temperature,
        alpha: d.alpha,
        fused: cfg.training.fused_ops,
        lmbda: d.lmbda,
        new_tokens: d.gkd_new_tokens,
        seed: cfg.training.seed,
    })
}

/// The teacher of `[distill]` and its weights' SHA-256.
fn load_teacher<B: TrainBackend>(
    cfg: &RunConfig,
    d: &crate::config::DistillConfig,
    path: &std::path::Path,
    tokenizer: &Tokenizer,
    device: &B::Device,
) -> Result<(Decoder<B::InnerBackend>, String)> {
    let ckpt = companion_checkpoint(cfg, path, "distill.teacher", "a teacher", tokenizer)?;
    let sha = crate::distill_cache_build::weights_sha256(&ckpt.dir)?;
    if let Some(dir) = &d.cache {
        let m = crate::distill_cache::CacheManifest::read(dir)?;
        if m.teacher_sha256 != sha {
            return Err(TrainerError::invalid(
                "distill.cache",
                format!(
                    "{} was made from teacher {} (weights SHA-256 {}), not distill.teacher {} ({sha}): rebuild the cache from this teacher or drop one of the two",
                    dir.display(),
                    m.teacher.display(),
                    m.teacher_sha256,
                    ckpt.dir.display()
                ),
            ));
        }
    }
    let teacher = session::build_model::<B::InnerBackend>(&ckpt, device)?;
    let teacher = match d.teacher_dtype()? {
        Some(dtype) => crate::precision::cast_params(teacher, dtype),
        None => teacher,
    };
    Ok((teacher, sha))
}

/// A second model a run reads (a teacher, DoReMi's reference): refused when
/// its tokenizer differs from the run's or its vocabulary is smaller.
fn companion_checkpoint(
    cfg: &RunConfig,
    path: &std::path::Path,
    field: &str,
    what: &str,
    tokenizer: &Tokenizer,
) -> Result<session::LoadedCheckpoint> {
    let ckpt = session::load_checkpoint(path)?;
    let (ours, theirs) = (
        kiln_data::tokenizer_hash(tokenizer)?,
        kiln_data::tokenizer_hash(&ckpt.tokenizer)?,
    );
    if ours != theirs {
        return Err(TrainerError::invalid(
            field,
            format!(
                "{} has another tokenizer (SHA-256 {theirs}) than this run ({ours}): {what} must share the run's tokenizer",
                ckpt.dir.display()
            ),
        ));
    }
    if ckpt.config.model.vocab_size < cfg.model.vocab_size {
        return Err(TrainerError::invalid(
            field,
            format!(
                "{}'s vocabulary ({}) is smaller than this run's ({})",
                ckpt.dir.display(),
                ckpt.config.model.vocab_size,
                cfg.model.vocab_size
            ),
        ));
    }
    Ok(ckpt)
}

/// DoReMi's proxy objective of `[doremi]`: the reference checkpoint on the
/// inner backend, the weights starting from the run's mixture.
fn doremi_objective<B: TrainBackend>(
    cfg: &RunConfig,
    d: &crate::config::DoremiConfig,
    data: &crate::data_setup::RunData,
    collective: Arc<dyn Collective>,
    device: &B::Device,
) -> Result<crate::doremi::Doremi<B>> {
    let crate::data_setup::TrainStream::Mixture(sampler) = &data.train else {
        return Err(TrainerError::invalid(
            "doremi",
            "needs domains to weigh: train on prepared data with at least two domains",
        ));
    };
    let st = sampler.state();
    if st.domains.len() < 2 {
        return Err(TrainerError::invalid(
            "doremi",
            format!(
                "the data has one domain ({:?}): DoReMi weighs at least two",
                st.domains
            ),
        ));
    }
    let ckpt = companion_checkpoint(
        cfg,
        &d.reference,
        "doremi.reference",
        "the reference model",
        &data.tokenizer,
    )?;
    let reference = session::build_model::<B::InnerBackend>(&ckpt, device)?;
    let weights = crate::doremi::DomainWeights::new(st.domains, &st.weights, cfg.model.vocab_size);
    Ok(crate::doremi::Doremi::new(
        reference,
        weights,
        d.eta,
        d.smoothing,
        cfg.training.fused_ops,
        collective,
    ))
}
