//! Saving a run's checkpoint: each component contributes its part (model
//! weights, optimizer state, trainer state, config, tokenizer) and the
//! manifest says what the weights are ([`Content`]). Only the leader writes
//! a full checkpoint; a sharded run will write one `Content::Shard` per rank.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use kiln_models::{named_tensors, Decoder, TrainBackend};

use crate::checkpoint::{self, Content, FilePart};
use crate::error::{Result, TrainerError};
use crate::optim::Optimizer;
use crate::session::{
    CONFIG_FILE, MASKS_FILE, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, TOKENIZER_FILE,
};
use crate::state::TrainerState;
use crate::weights;
use crate::world::World;

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
