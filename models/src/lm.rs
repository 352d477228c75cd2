//! The one trait every architecture implements; the loss lives in the trainer.

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};

use crate::ops::FusedOps;

/// What the trainer needs of a backend: autodiff plus the fused ops on both
/// the autodiff backend and the inner one (evaluation, generation).
pub trait TrainBackend: AutodiffBackend<InnerBackend: FusedOps> + FusedOps {}

impl<B> TrainBackend for B
where
    B: AutodiffBackend + FusedOps,
    B::InnerBackend: FusedOps,
{
}

pub trait LanguageModel<B: FusedOps>: Module<B> {
    /// Per-sequence state for incremental generation (KV cache, SSM state).
    type Cache;

    /// `[B, T]` token ids -> `[B, T, vocab]` logits.
    fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3>;

    fn new_cache(&self) -> Self::Cache;

    /// Logits for new tokens that continue the sequence held in `cache`,
    /// which is updated in place. Equal to slicing the full forward.
    fn forward_cached(&self, tokens: Tensor<B, 2, Int>, cache: &mut Self::Cache) -> Tensor<B, 3>;

    fn vocab_size(&self) -> usize;

    fn max_seq_len(&self) -> usize;

    /// Checkpoint name of the parameter at module path `path`
    /// (e.g. `layers.0.self_attn.q_proj.weight` -> `model.layers.0...`).
    fn tensor_name(&self, path: &str) -> String;
}
