//! Kiln's one integration-test binary: parity with PyTorch references,
//! exact resume, crash safety, bad input and the end-to-end CLI.

mod common;

mod autocast_reach;
mod bad_input;
mod classifier_cli;
mod cli;
mod cli_regressions;
mod curate;
mod curate_keep;
mod curate_ranked;
mod curation_filters;
mod curation_minhash;
mod data;
mod data_bad_input;
mod distill;
mod distill_cache;
mod distill_cache_cli;
mod distributed;
#[cfg(feature = "mpi")]
mod distributed_mpi;
mod doremi;
mod fused_ops;
mod gguf;
mod lora;
mod lora_cli;
mod mamba;
mod optim_model_parity;
mod optim_parity;
mod parity;
mod precision;
mod prune;
mod prune_structured;
mod quant;
mod resume;
mod rwkv7;
mod ssm_cli;
mod trainer_components;
