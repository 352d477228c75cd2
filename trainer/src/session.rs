//! Loading what a checkpoint holds back into memory: config, tokenizer,
//! model weights, optimizer moments and trainer state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_data::Tokenizer;
use kiln_models::{load_named_tensors, Decoder, FusedOps, NamedTensor};

use crate::checkpoint;
use crate::config::{self, RunConfig};
use crate::error::{Result, TrainerError};
use crate::state::TrainerState;
use crate::weights;

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
pub const CONFIG_FILE: &str = "config.toml";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// A pruned checkpoint's masks (1 = kept, 0 = pruned) by weight name.
pub const MASKS_FILE: &str = "masks.safetensors";

/// The verified contents of one checkpoint directory.
pub struct LoadedCheckpoint {
    pub dir: PathBuf,
    /// What the checkpoint's weights are (full model, adapters, a shard).
    pub content: checkpoint::Content,
    pub config: RunConfig,
    pub tokenizer: Tokenizer,
    pub model: BTreeMap<String, NamedTensor>,
    pub optimizer: Option<BTreeMap<String, NamedTensor>>,
    /// Pruning masks (`kiln prune`, and runs started from a pruned checkpoint).
    pub masks: Option<BTreeMap<String, NamedTensor>>,
    pub state: TrainerState,
}

impl LoadedCheckpoint {
    /// A full model derived from this checkpoint (pruned, sliced): new
    /// weights, masks and `[model]`, no adapters, no optimizer state; the
    /// tokenizer and trainer state carried over.
    pub fn derived(
        &self,
        model_cfg: kiln_models::ModelConfig,
        model: BTreeMap<String, NamedTensor>,
        masks: Option<BTreeMap<String, NamedTensor>>,
    ) -> LoadedCheckpoint {
        let mut config = self.config.clone();
        config.adapter = None;
        config.model = model_cfg;
        LoadedCheckpoint {
            dir: self.dir.clone(),
            content: checkpoint::Content::Full,
            config,
            tokenizer: self.tokenizer.clone(),
            model,
            optimizer: None,
            masks,
            state: self.state.clone(),
        }
    }
}

fn file<'a>(files: &'a BTreeMap<String, Vec<u8>>, dir: &Path, name: &str) -> Result<&'a [u8]> {
    files.get(name).map(Vec::as_slice).ok_or_else(|| {
        TrainerError::checkpoint(
            dir.join(name),
            "is missing from the checkpoint manifest: the checkpoint is incomplete",
        )
    })
}

/// Reads and verifies a checkpoint (a `step-N` dir, or a run dir: its latest).
pub fn load_checkpoint(path: &Path) -> Result<LoadedCheckpoint> {
    let dir = checkpoint::resolve(path)?;
    let (manifest, files) = checkpoint::load_verified(&dir)?;
    let cfg_text = std::str::from_utf8(file(&files, &dir, CONFIG_FILE)?)
        .map_err(|_| TrainerError::checkpoint(dir.join(CONFIG_FILE), "is not UTF-8"))?;
    let doc: toml::Table = toml::from_str(cfg_text).map_err(|e| {
        TrainerError::checkpoint(
            dir.join(CONFIG_FILE),
            format!("not valid TOML: {}", e.to_string().replace('\n', " ")),
        )
    })?;
    let config = config::from_table(doc, &dir.join(CONFIG_FILE))?;
    let tok_text = std::str::from_utf8(file(&files, &dir, TOKENIZER_FILE)?)
        .map_err(|_| TrainerError::checkpoint(dir.join(TOKENIZER_FILE), "is not UTF-8"))?;
    let tokenizer = Tokenizer::from_json(tok_text)?;
    let mut model = weights::from_bytes(file(&files, &dir, MODEL_FILE)?, &dir.join(MODEL_FILE))?;
    let mut optimizer = match files.get(OPTIMIZER_FILE) {
        Some(bytes) => Some(weights::from_bytes(bytes, &dir.join(OPTIMIZER_FILE))?),
        None => None,
    };
    let mut content = manifest.content;
    if let checkpoint::Content::Sharded { world_size, .. } = content {
        let (params, state) = join_shards(&files, &dir, world_size)?;
        model.extend(params);
        optimizer = Some(state);
        // Joined: from here on the checkpoint is a full one.
        content = checkpoint::Content::Full;
    }
    let masks = match files.get(MASKS_FILE) {
        Some(bytes) => Some(weights::from_bytes(bytes, &dir.join(MASKS_FILE))?),
        None => None,
    };
    let state: TrainerState =
        serde_json::from_slice(file(&files, &dir, STATE_FILE)?).map_err(|e| {
            TrainerError::checkpoint(
                dir.join(STATE_FILE),
                format!("unreadable trainer state: {e}"),
            )
        })?;
    Ok(LoadedCheckpoint {
        dir,
        content,
        config,
        tokenizer,
        model,
        optimizer,
        masks,
        state,
    })
}

/// The full parameters and optimizer state of a sharded checkpoint, joined
/// from every rank's segments (any number of ranks can then take their own).
fn join_shards(
    files: &BTreeMap<String, Vec<u8>>,
    dir: &Path,
    world_size: usize,
) -> Result<(BTreeMap<String, NamedTensor>, BTreeMap<String, NamedTensor>)> {
    use crate::run::checkpointing::{ShardIndex, SHARDS_FILE, SHARD_PARAM_PREFIX};
    let index: ShardIndex =
        serde_json::from_slice(file(files, dir, SHARDS_FILE)?).map_err(|e| {
            TrainerError::checkpoint(
                dir.join(SHARDS_FILE),
                format!("unreadable shard index: {e}"),
            )
        })?;
    let (mut params, mut state) = (BTreeMap::new(), BTreeMap::new());
    for r in 0..world_size {
        let name = checkpoint::shard_file_name(r);
        for (key, t) in weights::from_bytes(file(files, dir, &name)?, &dir.join(&name))? {
            match key.strip_prefix(SHARD_PARAM_PREFIX) {
                Some(k) => params.insert(k.to_string(), t),
                None => state.insert(key, t),
            };
        }
    }
    let source = dir.join(checkpoint::shard_file_name(0));
    let params =
        crate::world::setup::join_segments(params, |n| index.shapes.get(n).cloned(), &source)?;
    let state = crate::world::setup::join_segments(state, |_| None, &source)?;
    Ok((params, state))
}

/// A model of the checkpoint's config on `device` holding its weights.
/// An adapter checkpoint is built over its base (verified by hash).
pub fn build_model<B: FusedOps>(ckpt: &LoadedCheckpoint, device: &B::Device) -> Result<Decoder<B>> {
    let mut model =
        Decoder::new(&ckpt.config.model, device)?.with_fused(ckpt.config.training.fused_ops);
    if let Some(a) = &ckpt.config.adapter {
        model = crate::adapter::attach(model, a)?;
    }
    let (weights, _) = crate::adapter::full_weights(ckpt)?;
    let source = ckpt.dir.join(MODEL_FILE).display().to_string();
    let model = load_named_tensors(model, &weights, &source)?;
    // A QAT run is evaluated (and sampled) as it trained: quantised.
    match &ckpt.config.quantize {
        Some(q) => crate::quantize::apply(model, q),
        None => Ok(model),
    }
}
