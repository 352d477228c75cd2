//! Saving a run's checkpoint: each component contributes its part (model
//! weights, optimizer state, trainer state, config, tokenizer) and the
//! manifest says what the weights are ([`Content`]). Only the leader writes
//! a full checkpoint; in a ZeRO run every rank writes its shard
//! ([`CheckpointWriter::save_sharded`]).

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use kiln_models::{named_tensors, Decoder, NamedTensor, TrainBackend};

use crate::checkpoint::{self, Content, FilePart};
use crate::error::{Result, TrainerError};
use crate::optim::Optimizer;
use crate::session::{
    CONFIG_FILE, MASKS_FILE, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, TOKENIZER_FILE,
};
use crate::state::TrainerState;
use crate::weights;
use crate::world::zero::Sharding;
use crate::world::{Collective, World};

/// Prefix of parameter segments in a shard file (optimizer state keys
/// start with their own prefixes: `exp_avg.`, ...).
pub const SHARD_PARAM_PREFIX: &str = "param/";
/// A sharded checkpoint's index: world size, strategy, full shapes.
pub const SHARDS_FILE: &str = "shards.json";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ShardIndex {
    pub world_size: usize,
    pub strategy: String,
    pub shapes: std::collections::BTreeMap<String, Vec<usize>>,
}

pub struct CheckpointWriter {
    pub run_dir: PathBuf,
    pub world: World,
    pub content: Content,
    /// The resolved config and tokenizer, saved with every checkpoint.
    pub cfg_toml: String,
    pub tokenizer_json: String,
    pub keep_last: usize,
    pub keep_best: bool,
    /// Adapter checkpoints: the tensors saved (adapters and the other
    /// trainable ones); the frozen base is named by hash, not copied.
    pub saved_names: Option<std::collections::BTreeSet<String>>,
}

impl CheckpointWriter {
    /// The files of a checkpoint of this run's content, each made when it
    /// is written (model tensors, then their bytes, dropped before the
    /// optimizer state is exported).
    pub fn parts<'a, B: TrainBackend>(
        &'a self,
        model: &'a Decoder<B>,
        opt: &'a Optimizer<B::InnerBackend>,
        state: &'a TrainerState,
    ) -> Vec<FilePart<'a>> {
        let model_part = move || {
            let mut tensors = named_tensors::<B::InnerBackend, _>(&model.valid());
            if let Some(keep) = &self.saved_names {
                tensors.retain(|name, _| keep.contains(name));
            }
            weights::to_bytes(&tensors, None)
        };
        let state_part = move || {
            serde_json::to_vec_pretty(state).map_err(|e| {
                TrainerError::checkpoint(Path::new(STATE_FILE), format!("cannot encode: {e}"))
            })
        };
        let mut parts: Vec<FilePart<'a>> = vec![
            (MODEL_FILE, Box::new(model_part)),
            (
                OPTIMIZER_FILE,
                Box::new(move || weights::to_bytes(&opt.export_state(), None)),
            ),
            (STATE_FILE, Box::new(state_part)),
            (
                CONFIG_FILE,
                Box::new(move || Ok(self.cfg_toml.as_bytes().to_vec())),
            ),
            (
                TOKENIZER_FILE,
                Box::new(move || Ok(self.tokenizer_json.as_bytes().to_vec())),
            ),
        ];
        if !opt.masks.is_empty() {
            // The masks travel with every checkpoint: a resume or a later
            // `[init] from` keeps the same weights at zero.
            parts.push((
                MASKS_FILE,
                Box::new(move || weights::to_bytes(opt.masks.saved(), None)),
            ));
        }
        parts
    }

    /// A ZeRO run's checkpoint: this rank's parameter and optimizer
    /// segments, and from rank 0 the weights outside the layout (frozen
    /// ones), trainer state, config, tokenizer, masks and `shards.json`
    /// (the full shape of every sharded parameter).
    pub fn save_sharded<B: TrainBackend>(
        &self,
        model: &Decoder<B>,
        opt: &Optimizer<B::InnerBackend>,
        state: &TrainerState,
        sharding: &mut Sharding,
        c: &dyn Collective,
    ) -> Result<PathBuf> {
        let content = Content::Sharded {
            world_size: self.world.size,
            strategy: sharding.strategy.name().into(),
        };
        let mut tensors: std::collections::BTreeMap<String, NamedTensor> = sharding
            .export_params(model)
            .into_iter()
            .map(|(k, v)| (format!("{SHARD_PARAM_PREFIX}{k}"), v))
            .collect();
        tensors.extend(opt.export_state());
        let name = checkpoint::shard_file_name(self.world.rank);
        let mine: FilePart<'_> = (
            name.as_str(),
            Box::new(move || weights::to_bytes(&tensors, None)),
        );
        let sharded: std::collections::BTreeSet<&str> = sharding
            .layout
            .slots
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        let index = ShardIndex {
            world_size: self.world.size,
            strategy: sharding.strategy.name().into(),
            shapes: sharding
                .layout
                .slots
                .iter()
                .map(|s| (s.name.clone(), s.shape.clone()))
                .collect(),
        };
        let mut leader: Vec<FilePart<'_>> = Vec::new();
        if self.world.is_leader() {
            let rest = move || {
                let mut all = named_tensors::<B::InnerBackend, _>(&model.valid());
                all.retain(|n, _| !sharded.contains(n.as_str()));
                weights::to_bytes(&all, None)
            };
            leader = self
                .parts(model, opt, state)
                .into_iter()
                .filter(|(n, _)| *n != MODEL_FILE && *n != OPTIMIZER_FILE)
                .collect();
            leader.push((MODEL_FILE, Box::new(rest)));
            leader.push((
                SHARDS_FILE,
                Box::new(move || {
                    serde_json::to_vec_pretty(&index).map_err(|e| {
                        TrainerError::checkpoint(
                            Path::new(SHARDS_FILE),
                            format!("cannot encode: {e}"),
                        )
                    })
                }),
            ));
        }
        let dir = checkpoint::save_sharded(&self.run_dir, state.step, &content, mine, leader, c)?;
        if self.world.is_leader() {
            let keep = if self.keep_best {
                state.best_step
            } else {
                None
            };
            checkpoint::prune(&self.run_dir, self.keep_last, keep);
        }
        Ok(dir)
    }

    /// Saves atomically and prunes old checkpoints; `None` on ranks that
    /// write nothing for this content.
    pub fn save<B: TrainBackend>(
        &self,
        model: &Decoder<B>,
        opt: &Optimizer<B::InnerBackend>,
        state: &TrainerState,
    ) -> Result<Option<PathBuf>> {
        if self.content == Content::Full && !self.world.is_leader() {
            return Ok(None);
        }
        let files = self.parts(model, opt, state);
        let dir = checkpoint::save_parts(&self.run_dir, state.step, &self.content, files)?;
        let keep = if self.keep_best {
            state.best_step
        } else {
            None
        };
        checkpoint::prune(&self.run_dir, self.keep_last, keep);
        Ok(Some(dir))
    }
}
