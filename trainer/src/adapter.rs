//! LoRA runs: which projections carry adapters, what trains beside them,
//! and the base an adapter checkpoint names by hash. The adapter arithmetic
//! itself lives in the models crate (`Linear::project`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use kiln_models::{named_tensors, Decoder, FusedOps, NamedTensor};

use crate::checkpoint::{self, tensors_sha256, Content};
use crate::config::{short_target, AdapterConfig, RunConfig};
use crate::error::{Result, TrainerError};
use crate::optim::groups::glob_match;
use crate::session::{
    self, LoadedCheckpoint, CONFIG_FILE, MASKS_FILE, MODEL_FILE, STATE_FILE, TOKENIZER_FILE,
};
use crate::weights;

/// `model` with fresh adapters on the projections `cfg.targets` names. A
/// target that matches no projection is an error showing what names look like.
pub fn attach<B: FusedOps>(mut model: Decoder<B>, cfg: &AdapterConfig) -> Result<Decoder<B>> {
    let names = model.projection_names();
    let matches = |target: &str, path: &str, name: &str| match short_target(target) {
        Some(tails) => tails
            .iter()
            .any(|t| path.ends_with(&format!(".{t}")) || path == *t),
        None => glob_match(target, name) || glob_match(target, &format!("{name}.weight")),
    };
    for (i, target) in cfg.targets.iter().enumerate() {
        if !names.iter().any(|p| matches(target, &p.path, &p.name)) {
            let example = names.first().map_or("", |p| p.name.as_str());
            return Err(TrainerError::invalid(
                format!("adapter.targets[{i}]"),
                format!(
                    "{target:?} matches no projection of this model: use short names (q k v o gate up down; in_proj x_proj dt_proj out_proj; receptance key value output) or globs over names like \"{example}\""
                ),
            ));
        }
    }
    let select =
        |p: &kiln_models::ProjectionName| cfg.targets.iter().any(|t| matches(t, &p.path, &p.name));
    let (model, _) = model.with_lora(&cfg.spec(), &select)?;
    Ok(model)
}

/// What a run's checkpoints hold: the whole model, or (LoRA) the adapters
/// and `adapter.trainable` tensors over the base of this hash.
pub fn run_content(cfg: &RunConfig, base: Option<&BTreeMap<String, NamedTensor>>) -> Content {
    match (&cfg.adapter, base) {
        (Some(_), Some(base)) => Content::Adapters {
            base_sha256: tensors_sha256(base),
        },
        _ => Content::Full,
    }
}

/// Every weight of a checkpoint: its own, or for an adapter checkpoint the
/// base's (`init.from`, checked against the hash the checkpoint names)
/// overlaid with the checkpoint's tensors. Also the base hash, if any.
/// Weights by checkpoint name, borrowed or owned.
pub type Weights<'a> = Cow<'a, BTreeMap<String, NamedTensor>>;

/// (A full checkpoint's own weights are borrowed, not copied.)
pub fn full_weights(ckpt: &LoadedCheckpoint) -> Result<(Weights<'_>, Option<String>)> {
    let Content::Adapters { base_sha256 } = &ckpt.content else {
        return Ok((Cow::Borrowed(&ckpt.model), None));
    };
    let Some(init) = &ckpt.config.init else {
        return Err(TrainerError::checkpoint(
            &ckpt.dir,
            "holds adapters but its config names no base ([init] from): the checkpoint is incomplete",
        ));
    };
    let base = session::load_checkpoint(&init.from)?;
    let found = tensors_sha256(&base.model);
    if &found != base_sha256 {
        return Err(TrainerError::checkpoint(
            &ckpt.dir,
            format!(
                "adapts a base with weights SHA-256 {base_sha256}, but {} has {found}: point [init] from at the checkpoint these adapters were trained on",
                base.dir.display()
            ),
        ));
    }
    if !matches!(base.content, Content::Full) {
        return Err(TrainerError::checkpoint(
            &base.dir,
            "is not a full checkpoint: an adapter's base must be one (merge adapters first with `kiln merge`)",
        ));
    }
    let mut all = base.model;
    all.extend(ckpt.model.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok((Cow::Owned(all), Some(base_sha256.clone())))
}

/// `ckpt` merged when it holds adapters (`None`: it already is a full
/// model); use as `merged.as_ref().unwrap_or(ckpt)`.
pub fn merged_if_adapters(ckpt: &LoadedCheckpoint) -> Result<Option<LoadedCheckpoint>> {
    ckpt.config
        .adapter
        .as_ref()
        .map(|_| merged(ckpt))
        .transpose()
}

/// An adapter checkpoint as an ordinary one: every adapter folded into its
/// base weight in f32 (`W + s A B`), `[adapter]` dropped from the config.
pub fn merged(ckpt: &LoadedCheckpoint) -> Result<LoadedCheckpoint> {
    if ckpt.config.adapter.is_none() {
        return Err(TrainerError::checkpoint(
            &ckpt.dir,
            "holds no adapters (its config has no [adapter]): there is nothing to merge; it already is a full model",
        ));
    }
    let model: Decoder<Flex> = session::build_model(ckpt, &Default::default())?;
    let model = model.merge_adapters();
    let mut config = ckpt.config.clone();
    config.adapter = None;
    Ok(LoadedCheckpoint {
        dir: ckpt.dir.clone(),
        content: Content::Full,
        config,
        tokenizer: ckpt.tokenizer.clone(),
        model: named_tensors::<Flex, _>(&model),
        optimizer: None,
        // The merged weights are dense again: a pruned base's masks no
        // longer describe them.
        masks: None,
        state: ckpt.state.clone(),
    })
}

/// Writes `ckpt` (a full model) as the checkpoint of run directory `out`,
/// atomically; `out` must not hold checkpoints yet.
pub fn save_full(ckpt: &LoadedCheckpoint, out: &Path) -> Result<PathBuf> {
    if !checkpoint::list(out).is_empty() {
        return Err(TrainerError::checkpoint(
            out,
            "already holds checkpoints: choose a new --out directory",
        ));
    }
    let state = serde_json::to_vec_pretty(&ckpt.state)
        .map_err(|e| TrainerError::Internal(format!("cannot encode the trainer state: {e}")))?;
    let mut files = vec![
        (MODEL_FILE, weights::to_bytes(&ckpt.model, None)?),
        (STATE_FILE, state),
        (CONFIG_FILE, ckpt.config.to_toml()?.into_bytes()),
        (TOKENIZER_FILE, ckpt.tokenizer.to_json()?.into_bytes()),
    ];
    if let Some(masks) = &ckpt.masks {
        files.push((MASKS_FILE, weights::to_bytes(masks, None)?));
    }
    checkpoint::save(out, ckpt.state.step, &Content::Full, files)
}
