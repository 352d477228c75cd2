//! Kiln's trainer: configs, the training loop, optimizer, checkpoints,
//! metrics, generation, evaluation, export and benchmarks. Generic over
//! burn's `AutodiffBackend`; the `kiln` binary picks the backend.

pub mod adapter;
pub mod allocator;
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data_instruct;
pub mod data_setup;
pub mod distill;
pub mod distill_cache;
pub mod distill_cache_build;
pub mod distill_cache_check;
pub mod distill_loss;
pub mod doremi;
pub mod error;
pub mod eval;
pub mod export;
pub mod export_peft;
pub mod fsutil;
pub mod generate;
pub mod gguf;
pub mod grads;
pub mod loss;
pub mod metrics;
pub mod objective;
pub mod optim;
pub mod perplexity;
pub mod plan;
pub mod precision;
pub mod prune;
pub mod prune_structured;
pub mod qa_eval;
pub mod quantize;
pub mod run;
pub mod schedule;
pub mod session;
pub mod state;
pub mod step;
pub mod torch_pth;
pub mod train;
pub mod trainable;
pub mod weights;
pub mod world;

pub use error::{Result, TrainerError};
