//! An op whose backward is written outside the model: the caller computes
//! `output` from `input` itself (off the graph) and supplies the gradient
//! map. The trainer's ZeRO-3 uses it for the all-gather of a rank's
//! parameter shard, whose backward is the reduce-scatter of the gradient;
//! the models stay single-device code with no dependency on the trainer.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorData};

use super::{unwrap, wrap};

/// The gradient of an op's 1-D input from the gradient of its 1-D output,
/// as host f32 values. Called once per backward pass that reaches the op.
pub trait BackwardHook: Send + Sync + std::fmt::Debug {
    fn backward(&self, grad_output: Vec<f32>) -> Vec<f32>;
}

#[derive(Debug)]
struct HookBackward(Arc<dyn BackwardHook>);

impl<B: Backend> Backward<B, 1> for HookBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let Some(node) = node else { return };
        let device = B::float_device(&grad);
        // A gradient that cannot be read leaves the hook to report zeros'
        // consequences: the trainer checks the hook's own error slot.
        let values = wrap::<B, 1>(grad)
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap_or_default();
        let out = self.0.backward(values);
        let n = out.len();
        let g = Tensor::<B, 1>::from_data(TensorData::new(out, [n]), &device); // [input len]
        grads.register::<B>(node.id, unwrap(g));
    }
}

/// `output` joined to the graph as a function of `input` with backward `hook`.
pub(super) fn with_backward<B: Backend, C: CheckpointStrategy>(
    input: FloatTensor<Autodiff<B, C>>,
    output: FloatTensor<Autodiff<B, C>>,
    hook: Arc<dyn BackwardHook>,
) -> FloatTensor<Autodiff<B, C>> {
    match HookBackward(hook)
        .prepare::<C>([input.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((), output.primitive),
        OpsKind::UnTracked(prep) => prep.finish(output.primitive),
    }
}
