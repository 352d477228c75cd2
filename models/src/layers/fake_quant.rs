//! Fake quantisation of a projection's weight (and optionally its input)
//! with a straight-through estimator: the forward sees exactly the values a
//! quantised deployment computes with (`quant.rs`), the backward passes the
//! gradient through where the value was inside the code range and zeroes it
//! where it was clamped.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use crate::ops::FusedOps;
use rayon::prelude::*;

use crate::quant::{
    fake_quant_act_q8_0, fake_quant_rows, fake_quant_token_int8, transposed, ActFormat, QuantSpec,
};

fn host<B: Backend>(t: &Tensor<B, 2>) -> Vec<f32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default()
}

/// `fq` in place of `x`, with the gradient of `x` times `mask` (None = 1):
/// one straight-through graph node (`FusedOps::straight_through`).
fn straight_through<B: FusedOps>(
    x: Tensor<B, 2>,
    fq: Vec<f32>,
    mask: Option<Vec<f32>>,
) -> Tensor<B, 2> {
    let (shape, device, dtype) = (x.dims(), x.device(), x.dtype());
    let constant = |v: Vec<f32>| {
        Tensor::<B, 2>::from_data(TensorData::new(v, shape), &device)
            .cast(dtype)
            .into_primitive()
            .tensor()
    };
    let (fq, mask) = (constant(fq), mask.map(constant));
    let out = B::straight_through(x.into_primitive().tensor(), fq, mask);
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// `w [d_in, len]`, each column quantised in groups along `d_in`.
pub fn fake_quant_weight<B: FusedOps>(w: Tensor<B, 2>, spec: &QuantSpec) -> Tensor<B, 2> {
    let [n_in, n_out] = w.dims();
    let rows = transposed(&host(&w), n_in, n_out); // [d_out, d_in]
    let (fq, mask, clamped) = fake_quant_rows(spec.weights, &rows, n_in, spec.group_len(n_in));
    let fq = transposed(&fq, n_out, n_in); // [d_in, d_out]
    let mask = clamped.then(|| transposed(&mask, n_out, n_in));
    straight_through(w, fq, mask)
}

/// `f` on each row of `[rows, d]` values, rows in parallel.
fn per_row(values: &[f32], d: usize, f: fn(&[f32], &mut [f32])) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    out.par_chunks_mut(d.max(1))
        .zip(values.par_chunks(d.max(1)))
        .for_each(|(o, row)| f(row, o));
    out
}

/// `x [rows, d_in]` quantised per token as `spec.activations` says.
pub fn fake_quant_input<B: FusedOps>(x: Tensor<B, 2>, spec: &QuantSpec) -> Tensor<B, 2> {
    let [_, d] = x.dims();
    let values = host(&x);
    let fq = match spec.activations {
        ActFormat::None => return x,
        ActFormat::Int8Token => per_row(&values, d, fake_quant_token_int8),
        ActFormat::Q8_0 => per_row(&values, d, fake_quant_act_q8_0),
    };
    // Scales come from each row's own maximum: nothing is ever clamped.
    straight_through(x, fq, None)
}
