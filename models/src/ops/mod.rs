//! Fused operations with hand-written backward passes: causal attention,
//! cross-entropy, SwiGLU's `silu(gate) * up`, RMSNorm, RoPE, the Mamba
//! selective scan, the RWKV-7 WKV recurrence, and the 2-D
//! matmul of every projection (an allocation fix on Flex, see
//! `kernels/matmul.rs`).
//!
//! [`FusedOps`] is a backend extension trait. Its provided methods are the
//! composed burn versions (the reference every fused kernel is tested
//! against, and what CUDA/wgpu run until they get device kernels); the Flex
//! backend overrides them with SIMD + rayon kernels (`flex.rs`), and
//! `Autodiff<B>` wires forward/backward pairs into the graph (`autodiff.rs`),
//! so autodiff never decomposes these ops into dozens of small ones.

mod autodiff;
mod flex;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod gpu;
mod hook;
pub mod kernels;
pub mod precision;

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Int, Tensor, TensorPrimitive};

pub use hook::BackwardHook;
pub use kernels::distill::Divergence;
pub use kernels::fake_quant::FakeQuantTarget;
use precision::{cast_to, to_f32};

/// A target that takes no loss (PyTorch's `ignore_index` default): its row
/// has loss 0 and a gradient of exactly zero (the fused kernel does not
/// even read it). Instruction tuning marks prompt tokens and padding so.
pub const IGNORE_INDEX: i64 = -100;

fn wrap<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn unwrap<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// `[b, h, t, d]` query heads grouped over `kv` key/value heads: `[b, kv, t, d] -> [b, h, t, d]`.
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, h: usize) -> Tensor<B, 4> {
    let [b, kv, t, d] = x.dims();
    if kv == h {
        return x;
    }
    x.unsqueeze_dim::<5>(2)
        .expand([b, kv, h / kv, t, d])
        .reshape([b, h, t, d])
}

/// Sums the gradients of the query heads that share a key/value head.
fn group_sum<B: Backend>(x: Tensor<B, 4>, kv: usize) -> Tensor<B, 4> {
    let [b, h, t, d] = x.dims();
    if kv == h {
        return x;
    }
    x.reshape([b, kv, h / kv, t, d])
        .sum_dim(2)
        .reshape([b, kv, t, d])
}

pub mod composed;

/// Fused ops; the provided methods run [`composed`].
pub trait FusedOps: Backend {
    /// Causal GQA attention on `[b, t, heads, d]` tensors: `(o [b, t, h, d], lse [b, h, t])`.
    fn attention_fwd(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed::attention_fwd::<Self>(q, k, v, scale)
    }

    /// `(dq, dk, dv)` of `attention_fwd`, recomputing probabilities from `lse`.
    #[allow(clippy::too_many_arguments)]
    fn attention_bwd(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        o: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed::attention_bwd::<Self>(q, k, v, o, lse, d_o, scale)
    }

    /// Per-row cross-entropy: `(loss [n], lse [n])`.
    fn cross_entropy_fwd(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed::cross_entropy_fwd::<Self>(logits, targets)
    }

    /// `grad * (softmax(logits) - onehot(targets))`.
    fn cross_entropy_bwd(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed::cross_entropy_bwd::<Self>(logits, targets, lse, grad)
    }

    /// `silu(gate) * up` (flattened, equal shapes).
    fn silu_mul_fwd(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::silu_mul_fwd::<Self>(gate, up)
    }

    /// `(d_gate, d_up)` of `silu_mul_fwd`.
    fn silu_mul_bwd(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed::silu_mul_bwd::<Self>(gate, up, grad)
    }

    /// RMSNorm of `x [n, d]`: `(y, inv_rms [n])`.
    fn rms_norm_fwd(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed::rms_norm_fwd::<Self>(x, w, eps)
    }

    /// `(dx, dw)` of `rms_norm_fwd`.
    fn rms_norm_bwd(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        inv: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed::rms_norm_bwd::<Self>(x, w, inv, dy)
    }

    /// Rotary embedding of `x [b, t, h, d]` with `cos, sin [t, d/2]`
    /// (`inverse`: the transposed rotation, i.e. the backward pass).
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        inverse: bool,
    ) -> FloatTensor<Self> {
        composed::rope::<Self>(x, cos, sin, inverse)
    }

    /// `value` in place of `x` (same shape) in the forward; in the backward
    /// `x` gets the output's gradient times `mask` (as is when `None`): a
    /// straight-through estimator, one graph node (fake quantisation).
    fn straight_through(
        x: FloatTensor<Self>,
        value: FloatTensor<Self>,
        mask: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        let _ = (x, mask);
        value
    }

    /// Per-row distillation divergence `[n]` (times `T^2`) of f32 student
    /// logits from f32 teacher logits (`[n, v]`). The provided version
    /// copies through the host into `kernels::distill`.
    fn distill_fwd(
        student: FloatTensor<Self>,
        teacher: FloatTensor<Self>,
        div: Divergence,
        temperature: f64,
    ) -> FloatTensor<Self> {
        composed::distill_fwd::<Self>(student, teacher, div, temperature)
    }

    /// The student's logit gradient `[n, v]` of `sum_i gy_i distill_fwd_i`.
    fn distill_bwd(
        student: FloatTensor<Self>,
        teacher: FloatTensor<Self>,
        gy: FloatTensor<Self>,
        div: Divergence,
        temperature: f64,
    ) -> FloatTensor<Self> {
        composed::distill_bwd::<Self>(student, teacher, gy, div, temperature)
    }

    /// `x [rows, cols]` fake-quantised as `target` says: the values a
    /// quantised deployment computes with, and the straight-through mask
    /// (`None` when nothing was clamped). The provided version copies
    /// through the host; Flex works on the tensor's storage.
    fn fake_quant_fwd(
        x: FloatTensor<Self>,
        target: FakeQuantTarget,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        composed::fake_quant_fwd::<Self>(x, target)
    }

    /// [`FusedOps::fake_quant_fwd`]'s values with a straight-through
    /// backward: one graph node under autodiff.
    fn fake_quant(x: FloatTensor<Self>, target: FakeQuantTarget) -> FloatTensor<Self> {
        let (value, mask) = Self::fake_quant_fwd(x.clone(), target);
        Self::straight_through(x, value, mask)
    }

    /// `a [m, k] @ b [k, n]`; either operand may be a strided view (a
    /// transpose). Its backward is two more `matmul`s on transposed views.
    fn matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(a, b)
    }

    /// Mamba-1 selective scan `y [b, t, d]` of `u, dt [b, t, d]`, `a [d, n]`,
    /// `bm, cm [b, t, n]`, `dd [d]` (softplus of `dt` inside).
    fn selective_scan_fwd(
        u: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        a: FloatTensor<Self>,
        bm: FloatTensor<Self>,
        cm: FloatTensor<Self>,
        dd: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed::selective_scan_fwd::<Self>(u, dt, a, bm, cm, dd)
    }

    /// `[du, ddt, da, dbm, dcm, ddd]` of `selective_scan_fwd`.
    #[allow(clippy::too_many_arguments)]
    fn selective_scan_bwd(
        u: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        a: FloatTensor<Self>,
        bm: FloatTensor<Self>,
        cm: FloatTensor<Self>,
        dd: FloatTensor<Self>,
        gy: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 6] {
        composed::selective_scan_bwd::<Self>(u, dt, a, bm, cm, dd, gy)
    }
    /// RWKV-7 WKV recurrence `y [b, t, c]` of `r, w, k, v, a, b [b, t, c]`
    /// (`c = heads * head_size`, `w` the decay factor) from a zero state.
    #[allow(clippy::too_many_arguments)]
    fn wkv7_fwd(
        r: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        head_size: usize,
    ) -> FloatTensor<Self> {
        composed::wkv7_fwd::<Self>(r, w, k, v, a, b, head_size)
    }

    /// `[dr, dw, dk, dv, da, db]` of `wkv7_fwd`.
    #[allow(clippy::too_many_arguments)]
    fn wkv7_bwd(
        r: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        gy: FloatTensor<Self>,
        head_size: usize,
    ) -> [FloatTensor<Self>; 6] {
        composed::wkv7_bwd::<Self>(r, w, k, v, a, b, gy, head_size)
    }

    /// `output` (1-D, computed by the caller from the 1-D `input` off the
    /// graph) as a graph node whose backward is `hook` ([`BackwardHook`]):
    /// how code outside the model attaches a hand-written backward (the
    /// trainer's ZeRO-3 parameter all-gather, whose backward is a
    /// reduce-scatter). Without autodiff there is no graph: `output`.
    fn with_backward(
        input: FloatTensor<Self>,
        output: FloatTensor<Self>,
        hook: std::sync::Arc<dyn BackwardHook>,
    ) -> FloatTensor<Self> {
        let _ = (input, hook);
        output
    }
}

// ---- Tensor-level entry points used by the models and the trainer ----

/// Causal attention, `q [b, t, h, d]`, `k, v [b, t, kv, d]` -> `[b, t, h, d]`.
pub fn causal_attention<B: FusedOps>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let d = q.dims()[3];
    let scale = 1.0 / (d as f32).sqrt();
    let ((q, dtype), (k, _), (v, _)) = (to_f32(q), to_f32(k), to_f32(v));
    let (o, _) = B::attention_fwd(unwrap(q), unwrap(k), unwrap(v), scale);
    cast_to(wrap(o), dtype)
}

/// Per-row cross-entropy, `[n, v]` x `[n]` -> `[n]`.
pub fn cross_entropy_rows<B: FusedOps>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    // The loss is f32 whatever the logits' dtype.
    let (logits, _) = to_f32(logits);
    let (loss, _) = B::cross_entropy_fwd(unwrap(logits), targets.into_primitive());
    wrap(loss)
}

/// Per-position distillation divergence `[n]` (times `T^2`) of `student`
/// from `teacher` (`[n, v]` logits, any float dtype; computed in f32 and
/// f64). Fused: one graph node whose backward recomputes the
/// probabilities from the two logit rows; the teacher gets no gradient.
pub fn distill_rows<B: FusedOps>(
    student: Tensor<B, 2>,
    teacher: Tensor<B, 2>,
    div: Divergence,
    temperature: f64,
) -> Tensor<B, 1> {
    let ((student, _), (teacher, _)) = (to_f32(student), to_f32(teacher));
    wrap(B::distill_fwd(
        unwrap(student),
        unwrap(teacher),
        div,
        temperature,
    ))
}

/// `silu(gate) * up` for tensors of equal shape.
pub fn silu_mul<B: FusedOps, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    let dims = gate.dims();
    let n = gate.shape().num_elements();
    let ((gate, dtype), (up, _)) = (to_f32(gate), to_f32(up));
    let out = B::silu_mul_fwd(unwrap(gate.reshape([n])), unwrap(up.reshape([n])));
    cast_to(wrap::<B, 1>(out).reshape(dims), dtype)
}

/// RMSNorm over the last dim of `x [.., d]` with weight `w [d]`.
pub fn rms_norm<B: FusedOps, const D: usize>(
    x: Tensor<B, D>,
    w: Tensor<B, 1>,
    eps: f32,
) -> Tensor<B, D> {
    let dims = x.dims();
    let d = dims[D - 1];
    let n = x.shape().num_elements() / d.max(1);
    let ((x, dtype), (w, _)) = (to_f32(x), to_f32(w));
    let (y, _) = B::rms_norm_fwd(unwrap(x.reshape([n, d])), unwrap(w), eps);
    cast_to(wrap::<B, 2>(y).reshape(dims), dtype)
}

/// `a [m, k] @ b [k, n] -> [m, n]` through [`FusedOps::matmul`].
pub fn matmul<B: FusedOps>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 2> {
    wrap(B::matmul(unwrap(a), unwrap(b)))
}

/// Rotary embedding of `x [b, t, h, d]` with the half tables `cos, sin [t, d/2]`.
pub fn rope<B: FusedOps>(x: Tensor<B, 4>, cos: Tensor<B, 2>, sin: Tensor<B, 2>) -> Tensor<B, 4> {
    let ((x, dtype), (cos, _), (sin, _)) = (to_f32(x), to_f32(cos), to_f32(sin));
    cast_to(
        wrap(B::rope(unwrap(x), unwrap(cos), unwrap(sin), false)),
        dtype,
    )
}

/// Mamba-1 selective scan over whole sequences (one fused op with a
/// hand-written backward): `u, dt [b, t, d]`, `a [d, n]` (negative),
/// `bm, cm [b, t, n]`, `dd [d]` -> `y [b, t, d]`; `delta = softplus(dt)`.
pub fn selective_scan<B: FusedOps>(
    u: Tensor<B, 3>,
    dt: Tensor<B, 3>,
    a: Tensor<B, 2>,
    bm: Tensor<B, 3>,
    cm: Tensor<B, 3>,
    dd: Tensor<B, 1>,
) -> Tensor<B, 3> {
    // The scan runs in f32 whatever the training precision.
    let ((u, dtype), (dt, _), (a, _)) = (to_f32(u), to_f32(dt), to_f32(a));
    let ((bm, _), (cm, _), (dd, _)) = (to_f32(bm), to_f32(cm), to_f32(dd));
    let y = B::selective_scan_fwd(
        unwrap(u),
        unwrap(dt),
        unwrap(a),
        unwrap(bm),
        unwrap(cm),
        unwrap(dd),
    );
    cast_to(wrap(y), dtype)
}

/// RWKV-7 WKV recurrence over whole sequences (one fused op with a
/// hand-written backward): `r, w, k, v, a, b [b, t, heads * head_size]` ->
/// `y [b, t, heads * head_size]`, from a zero state; `w` is the decay factor.
pub fn wkv7<B: FusedOps>(
    r: Tensor<B, 3>,
    w: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    a: Tensor<B, 3>,
    b: Tensor<B, 3>,
    head_size: usize,
) -> Tensor<B, 3> {
    // The recurrence runs in f32 whatever the training precision.
    let ((r, dtype), (w, _), (k, _)) = (to_f32(r), to_f32(w), to_f32(k));
    let ((v, _), (a, _), (b, _)) = (to_f32(v), to_f32(a), to_f32(b));
    let y = B::wkv7_fwd(
        unwrap(r),
        unwrap(w),
        unwrap(k),
        unwrap(v),
        unwrap(a),
        unwrap(b),
        head_size,
    );
    cast_to(wrap(y), dtype)
}
