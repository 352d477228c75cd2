//! Running a decoder's embedding and block stack from outside the model.
//! The trainer's ZeRO-3 per-block gather plugs in here: it gathers each
//! block's parameters just for that block's application and cuts the
//! autodiff graph at the stack, so the model stays single-device code with
//! no dependency on the trainer.
//!
//! Why a cut and not one custom autodiff op per block: in burn 0.21 a
//! `Tensor::backward` called inside another backward's step deadlocks.
//! `GraphMutexClient::backward` ends with `cleanup_orphaned_entries`, which
//! locks the state mutex of every live graph, and the outer graph's is held
//! by the `AutodiffServer::backward` still running the outer step
//! (parking_lot mutexes are not reentrant). So a block's recomputation and
//! backward run as their own top-level backward passes, driven by the
//! trainer after the loss's backward.

use std::any::Any;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::layers::Rope;

/// Replaces the embedding and the stored blocks of a training forward
/// (no cache): from the tokens `[B, T]`, the residual stream `[B, T, dim]`
/// entering the final norm. `rope`: the rotary tables of the sequence
/// (None when no block attends).
pub trait StackRunner<B: Backend>: Send + Sync {
    fn run(&self, tokens: Tensor<B, 2, Int>, rope: Option<&Rope<B>>) -> Tensor<B, 3>;
}

/// A [`StackRunner`] carried by a `Decoder`, type-erased: burn's `Module`
/// derive treats a field generic over the backend as a module, and the
/// inner-backend copy of a model (`valid()`) must run without it (there the
/// downcast finds no runner for its backend).
#[derive(Clone, Default)]
pub struct StackSlot(Option<Arc<dyn Any + Send + Sync>>);

impl StackSlot {
    pub fn new<B: Backend>(runner: Arc<dyn StackRunner<B>>) -> Self {
        Self(Some(Arc::new(runner)))
    }

    /// The runner, when one was set for backend `B`.
    pub fn get<B: Backend>(&self) -> Option<&Arc<dyn StackRunner<B>>> {
        self.0.as_ref()?.downcast_ref::<Arc<dyn StackRunner<B>>>()
    }
}

impl std::fmt::Debug for StackSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.0.is_some() { "set" } else { "empty" };
        write!(f, "StackSlot({state})")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use burn::backend::Autodiff;
    use burn::module::AutodiffModule;
    use burn::tensor::TensorData;
    use burn_flex::Flex;

    use super::*;
    use crate::{Decoder, LanguageModel, ModelConfig};

    type AB = Autodiff<Flex>;

    /// Runs the model's own embedding and blocks, counting its calls.
    struct Own {
        model: Decoder<AB>,
        calls: AtomicUsize,
    }

    impl StackRunner<AB> for Own {
        fn run(&self, tokens: Tensor<AB, 2, Int>, rope: Option<&Rope<AB>>) -> Tensor<AB, 3> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let mut x = self.model.embed_tokens.forward(tokens); // [B, T, dim]
            for block in &self.model.layers {
                x = block.forward_alone(x, rope).expect("attention block"); // [B, T, dim]
            }
            x
        }
    }

    fn gqa_config() -> ModelConfig {
        ModelConfig {
            vocab_size: 40,
            max_seq_len: 16,
            ..crate::config::tests::mobilellm(16, 2, 4, 2, 32)
        }
    }

    /// A runner replaces the embedding and blocks of a training forward
    /// (same logits, bit for bit, when it runs them block by block with
    /// `Block::forward_alone`); generation and the inner-backend copy of
    /// the model never call it.
    #[test]
    fn a_runner_replaces_the_stack_of_a_training_forward() {
        let device = Default::default();
        let model = Decoder::<AB>::new(&gqa_config(), &device).expect("model");
        let ids: Vec<i64> = (0..10).map(|i| (i * 7 % 40) as i64).collect();
        let tokens = Tensor::<AB, 2, Int>::from_data(TensorData::new(ids, [2, 5]), &device);
        let want = model.forward(tokens.clone()).into_data(); // [2, 5, 40]
        let own = Arc::new(Own {
            model: model.clone(),
            calls: AtomicUsize::new(0),
        });
        let mut with = model.clone();
        with.stack_runner = StackSlot::new::<AB>(own.clone());
        let got = with.forward(tokens.clone()).into_data(); // [2, 5, 40]
        assert_eq!(got, want);
        assert_eq!(own.calls.load(Ordering::Relaxed), 1);
        let mut cache = with.new_cache();
        drop(with.forward_cached(tokens.clone(), &mut cache));
        let inner = with.valid().forward(tokens.inner()).into_data();
        assert_eq!(inner, want);
        assert_eq!(own.calls.load(Ordering::Relaxed), 1, "runner called again");
    }
}
