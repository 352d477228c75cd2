//! Fake quantisation of a projection's weight (and optionally its input)
//! with a straight-through estimator: the forward sees exactly the values a
//! quantised deployment computes with (`quant.rs`), the backward passes the
//! gradient through where the value was inside the code range and zeroes it
//! where it was clamped. The work is `FusedOps::fake_quant` (a kernel on
//! the tensor's storage on CPU, one graph node under autodiff).

use burn::tensor::{Tensor, TensorPrimitive};

use crate::ops::{FakeQuantTarget, FusedOps};
use crate::quant::{ActFormat, QuantSpec};

fn fake_quant<B: FusedOps>(x: Tensor<B, 2>, target: FakeQuantTarget) -> Tensor<B, 2> {
    let out = B::fake_quant(x.into_primitive().tensor(), target);
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// `w [d_in, len]`, each column quantised in groups along `d_in`.
pub fn fake_quant_weight<B: FusedOps>(w: Tensor<B, 2>, spec: &QuantSpec) -> Tensor<B, 2> {
    let [n_in, _] = w.dims();
    let target = FakeQuantTarget::Weight {
        format: spec.weights,
        group: spec.group_len(n_in),
    };
    fake_quant(w, target)
}

/// `x [rows, d_in]` quantised per token as `spec.activations` says.
pub fn fake_quant_input<B: FusedOps>(x: Tensor<B, 2>, spec: &QuantSpec) -> Tensor<B, 2> {
    match spec.activations {
        ActFormat::None => x,
        format => fake_quant(x, FakeQuantTarget::Input(format)),
    }
}
