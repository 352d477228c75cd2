//! A training run as components: [`setup`] prepares it once, [`crate::step`]
//! runs each step, [`output`] shows and logs (leader rank only),
//! [`checkpointing`] saves, [`validation`] evaluates, [`overrides`] decides
//! what `--set` may change on resume. `crate::train::train` tells the story.

pub mod checkpointing;
pub mod output;
pub mod overrides;
pub mod setup;
pub mod validation;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::RunConfig;
use crate::session::LoadedCheckpoint;
use crate::world::Collective;

/// Where a run starts.
// One per run: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Start {
    /// A new run from a config (with `[init] from`: fine-tuning).
    Fresh(RunConfig),
    /// The run of this (verified, loaded once) checkpoint continues, with
    /// `--set` overrides that may change on resume.
    Resume {
        checkpoint: Box<LoadedCheckpoint>,
        overrides: Vec<String>,
    },
}

pub struct TrainRequest {
    pub start: Start,
    pub run_dir: PathBuf,
    /// Set by SIGINT/SIGTERM: save a checkpoint and stop after this step.
    pub stop: Arc<AtomicBool>,
    /// This process's rank and the collective engine between ranks.
    pub collective: Arc<dyn Collective>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    pub step: u64,
    pub interrupted: bool,
    pub final_val_loss: Option<f64>,
}
