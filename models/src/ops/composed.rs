//! The composed burn versions: the reference for every kernel and the
//! fallback of every backend without one.

use super::*;
use burn::tensor::TensorData;

/// Causal attention over `q [b, t, h, d]`, `k, v [b, t, kv, d]` (GQA; the
/// layout projections produce, so no transposes are needed around it):
/// returns `(o [b, t, h, d], lse [b, h, t])`.
pub fn attention_fwd<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    scale: f32,
) -> (FloatTensor<B>, FloatTensor<B>) {
    // [b, t, h, d] in and out; the maths below runs in [b, h, t, d].
    let (q, k, v) = (
        wrap::<B, 4>(q).swap_dims(1, 2),
        wrap::<B, 4>(k).swap_dims(1, 2),
        wrap::<B, 4>(v).swap_dims(1, 2),
    );
    let [_, h, t, _] = q.dims();
    let (k, v) = (repeat_kv(k, h), repeat_kv(v, h));
    let mask =
        Tensor::<B, 2, burn::tensor::Bool>::tril_mask([t, t], 0, &q.device()).unsqueeze::<4>(); // [1, 1, t, t]
    let s = q
        .matmul(k.swap_dims(2, 3))
        .mul_scalar(scale)
        .mask_fill(mask, f32::NEG_INFINITY); // [b, h, t, t]
    let max = s.clone().max_dim(3); // [b, h, t, 1]
    let lse = (s.clone() - max.clone()).exp().sum_dim(3).log() + max; // [b, h, t, 1]
    let p = (s - lse.clone()).exp(); // [b, h, t, t]
    let o = p.matmul(v).swap_dims(1, 2); // [b, t, h, d]
    (unwrap(o), unwrap(lse.squeeze_dim::<3>(3)))
}

/// Gradients `(dq, dk, dv)` of `attention_fwd` given `d_o`.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    o: FloatTensor<B>,
    lse: FloatTensor<B>,
    d_o: FloatTensor<B>,
    scale: f32,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let t4 = |x| wrap::<B, 4>(x).swap_dims(1, 2); // [b, t, h, d] -> [b, h, t, d]
    let (q, k, v, o, d_o) = (t4(q), t4(k), t4(v), t4(o), t4(d_o));
    let lse = wrap::<B, 3>(lse);
    let kvh = k.dims()[1];
    let [_, h, t, _] = q.dims();
    let (kr, vr) = (repeat_kv(k, h), repeat_kv(v, h));
    let mask =
        Tensor::<B, 2, burn::tensor::Bool>::tril_mask([t, t], 0, &q.device()).unsqueeze::<4>();
    let s = q
        .clone()
        .matmul(kr.clone().swap_dims(2, 3))
        .mul_scalar(scale)
        .mask_fill(mask, f32::NEG_INFINITY);
    let p = (s - lse.unsqueeze_dim::<4>(3)).exp(); // [b, h, t, t]
    let dv = p.clone().swap_dims(2, 3).matmul(d_o.clone()); // [b, h, t, d]
    let dp = d_o.clone().matmul(vr.swap_dims(2, 3)); // [b, h, t, t]
    let delta = (d_o * o).sum_dim(3); // [b, h, t, 1]
    let ds = p * (dp - delta); // [b, h, t, t]
    let dq = ds.clone().matmul(kr).mul_scalar(scale);
    let dk = ds.swap_dims(2, 3).matmul(q).mul_scalar(scale);
    (
        unwrap(dq.swap_dims(1, 2)),
        unwrap(group_sum(dk, kvh).swap_dims(1, 2)),
        unwrap(group_sum(dv, kvh).swap_dims(1, 2)),
    )
}

/// Per-row cross-entropy of `logits [n, v]` against `targets [n]`:
/// returns `(loss [n], lse [n])`.
pub fn cross_entropy_fwd<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let logits = wrap::<B, 2>(logits);
    let targets = Tensor::<B, 1, Int>::from_primitive(targets);
    let n = logits.dims()[0];
    let (targets, keep) = ignoring(targets); // [n], [n, 1]
    let max = logits.clone().max_dim(1); // [n, 1]
    let lse = (logits.clone() - max.clone()).exp().sum_dim(1).log() + max; // [n, 1]
    let picked = logits.gather(1, targets.reshape([n, 1])); // [n, 1]
    (
        unwrap(((lse.clone() - picked) * keep).reshape([n])),
        unwrap(lse.reshape([n])),
    )
}

/// Targets with [`IGNORE_INDEX`] replaced by 0 (any valid index) and the
/// `[n, 1]` mask (1 = takes loss) that zeroes their loss and gradient.
fn ignoring<B: Backend>(targets: Tensor<B, 1, Int>) -> (Tensor<B, 1, Int>, Tensor<B, 2>) {
    let n = targets.dims()[0];
    let ignored = targets.clone().equal_elem(IGNORE_INDEX); // [n]
    let keep = ignored.clone().bool_not().float().reshape([n, 1]); // [n, 1]
    (targets.mask_fill(ignored, 0), keep)
}

/// `dlogits = grad * (softmax(logits) - onehot(targets))`.
pub fn cross_entropy_bwd<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
    lse: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let logits = wrap::<B, 2>(logits);
    let [n, v] = logits.dims();
    let targets = Tensor::<B, 1, Int>::from_primitive(targets);
    let (targets, keep) = ignoring(targets); // [n], [n, 1]
    let (lse, grad) = (
        wrap::<B, 1>(lse).reshape([n, 1]),
        wrap::<B, 1>(grad).reshape([n, 1]) * keep,
    );
    let cols = Tensor::<B, 1, Int>::arange(0..v as i64, &logits.device())
        .reshape([1, v])
        .expand([n, v]);
    let onehot: Tensor<B, 2> = targets.reshape([n, 1]).expand([n, v]).equal(cols).float(); // [n, v]
    unwrap(((logits - lse).exp() - onehot) * grad)
}

/// `silu(gate) * up` over equal-shape tensors.
pub fn silu_mul_fwd<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> FloatTensor<B> {
    let (g, u) = (wrap::<B, 1>(gate), wrap::<B, 1>(up));
    unwrap(burn::tensor::activation::silu(g) * u)
}

/// `(d_gate, d_up)` of `silu_mul_fwd`.
pub fn silu_mul_bwd<B: Backend>(
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (g, u, d) = (wrap::<B, 1>(gate), wrap::<B, 1>(up), wrap::<B, 1>(grad));
    let s = burn::tensor::activation::sigmoid(g.clone());
    let du = d.clone() * g.clone() * s.clone();
    let dg = d * u * s.clone() * (s.neg().add_scalar(1.0) * g).add_scalar(1.0);
    (unwrap(dg), unwrap(du))
}

/// RMSNorm of `x [n, d]` with weight `w [d]`: returns `(y [n, d], inv_rms [n])`.
pub fn rms_norm_fwd<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    eps: f32,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (x, w) = (wrap::<B, 2>(x), wrap::<B, 1>(w));
    let n = x.dims()[0];
    let inv = x
        .clone()
        .powi_scalar(2)
        .mean_dim(1)
        .add_scalar(eps)
        .sqrt()
        .recip(); // [n, 1]
    (
        unwrap(x * inv.clone() * w.unsqueeze()),
        unwrap(inv.reshape([n])),
    )
}

/// `(dx, dw)` of `rms_norm_fwd`.
pub fn rms_norm_bwd<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    inv: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (x, w, dy) = (wrap::<B, 2>(x), wrap::<B, 1>(w), wrap::<B, 2>(dy));
    let [n, d] = x.dims();
    let inv = wrap::<B, 1>(inv).reshape([n, 1]);
    let wdy = dy.clone() * w.unsqueeze(); // [n, d]
    let dot = (wdy.clone() * x.clone()).sum_dim(1).div_scalar(d as f32); // [n, 1]
    let dx = (wdy - x.clone() * inv.clone().powi_scalar(2) * dot) * inv.clone();
    let dw = (dy * x * inv).sum_dim(0).reshape([d]);
    (unwrap(dx), unwrap(dw))
}

/// Rotary embedding (rotate-half) of `x [b, t, h, d]` with `cos, sin [t, d/2]`;
/// `inverse` rotates by the negative angle (the backward pass).
pub fn rope<B: Backend>(
    x: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
    inverse: bool,
) -> FloatTensor<B> {
    let x = wrap::<B, 4>(x);
    let [_, t, _, d] = x.dims();
    let half = d / 2;
    let full = |c: FloatTensor<B>| {
        let c = wrap::<B, 2>(c);
        Tensor::cat(vec![c.clone(), c], 1).reshape([1, t, 1, d]) // [1, t, 1, d]
    };
    let (cos, sin) = (full(cos), full(sin));
    let sin = if inverse { sin.neg() } else { sin };
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3); // [b, t, h, d]
    unwrap(x * cos + rotated * sin)
}

/// Mamba-1 selective scan, one tensor op per time step: `u, dt [b, t, d]`,
/// `a [d, n]`, `bm, cm [b, t, n]`, `dd [d]` -> `y [b, t, d]` with
/// `delta = softplus(dt)`, `h_t = exp(delta_t a) h_{t-1} + delta_t u_t bm_t`,
/// `y_t = h_t . cm_t + dd u_t` (the reference of the fused kernel; under
/// autodiff its gradient is burn's own).
pub fn selective_scan_fwd<B: Backend>(
    u: FloatTensor<B>,
    dt: FloatTensor<B>,
    a: FloatTensor<B>,
    bm: FloatTensor<B>,
    cm: FloatTensor<B>,
    dd: FloatTensor<B>,
) -> FloatTensor<B> {
    let (u, dt, a) = (wrap::<B, 3>(u), wrap::<B, 3>(dt), wrap::<B, 2>(a));
    let (bm, cm, dd) = (wrap::<B, 3>(bm), wrap::<B, 3>(cm), wrap::<B, 1>(dd));
    let [b, t, d] = u.dims();
    let n = a.dims()[1];
    let delta = softplus(dt); // [b, t, d]
    let decay = (delta.clone().unsqueeze_dim::<4>(3) * a.unsqueeze::<4>()).exp(); // [b, t, d, n]
    let drive = (delta * u.clone()).unsqueeze_dim::<4>(3) * bm.unsqueeze_dim::<4>(2); // [b, t, d, n]
    let mut h = Tensor::<B, 3>::zeros([b, d, n], &u.device());
    let mut ys = Vec::with_capacity(t);
    for i in 0..t {
        let step = |x: &Tensor<B, 4>| x.clone().narrow(1, i, 1).reshape([b, d, n]);
        h = step(&decay) * h + step(&drive); // [b, d, n]
        let c_i = cm.clone().narrow(1, i, 1); // [b, 1, n]
        ys.push((h.clone() * c_i).sum_dim(2).reshape([b, 1, d])); // [b, 1, d]
    }
    let y = Tensor::cat(ys, 1) + u * dd.reshape([1, 1, d]); // [b, t, d]
    unwrap(y)
}

/// Gradients `[du, ddt, da, dbm, dcm, ddd]` of `selective_scan_fwd` given
/// `gy`, from the adjoint recurrence `gh_t = gy_t cm_t + decay_{t+1} gh_{t+1}`
/// (the fallback of backends without a kernel).
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_bwd<B: Backend>(
    u: FloatTensor<B>,
    dt: FloatTensor<B>,
    a: FloatTensor<B>,
    bm: FloatTensor<B>,
    cm: FloatTensor<B>,
    dd: FloatTensor<B>,
    gy: FloatTensor<B>,
) -> [FloatTensor<B>; 6] {
    let (u, dt, a) = (wrap::<B, 3>(u), wrap::<B, 3>(dt), wrap::<B, 2>(a));
    let (bm, cm, dd, gy) = (
        wrap::<B, 3>(bm),
        wrap::<B, 3>(cm),
        wrap::<B, 1>(dd),
        wrap::<B, 3>(gy),
    );
    let [b, t, d] = u.dims();
    let n = a.dims()[1];
    let delta = softplus(dt.clone()); // [b, t, d]
    let decay = (delta.clone().unsqueeze_dim::<4>(3) * a.clone().unsqueeze::<4>()).exp(); // [b, t, d, n]
    let du = (delta.clone() * u.clone()).unsqueeze_dim::<4>(3); // [b, t, d, 1]
    let drive = du.clone() * bm.clone().unsqueeze_dim::<4>(2); // [b, t, d, n]
    let step = |x: &Tensor<B, 4>, i: usize| x.clone().narrow(1, i, 1).reshape([b, d, n]);
    let mut h = Tensor::<B, 3>::zeros([b, d, n], &u.device());
    let mut hs = Vec::with_capacity(t);
    for i in 0..t {
        h = step(&decay, i) * h + step(&drive, i);
        hs.push(h.clone().unsqueeze_dim::<4>(1));
    }
    let hs = Tensor::cat(hs, 1); // [b, t, d, n]
    let zero = Tensor::<B, 4>::zeros([b, 1, d, n], &u.device());
    let prev = if t > 1 {
        Tensor::cat(vec![zero, hs.clone().narrow(1, 0, t - 1)], 1) // h_{t-1}, [b, t, d, n]
    } else {
        zero
    };
    let gy4 = gy.clone().unsqueeze_dim::<4>(3); // [b, t, d, 1]
    let emit = gy4.clone() * cm.unsqueeze_dim::<4>(2); // [b, t, d, n]
    let mut carry = Tensor::<B, 3>::zeros([b, d, n], &u.device());
    let mut ghs = vec![];
    for i in (0..t).rev() {
        let gh = step(&emit, i) + carry; // [b, d, n]
        carry = step(&decay, i) * gh.clone();
        ghs.push(gh.unsqueeze_dim::<4>(1));
    }
    ghs.reverse();
    let gh = Tensor::cat(ghs, 1); // [b, t, d, n]
    let g_cm = (gy4 * hs).sum_dim(2).reshape([b, t, n]);
    let g_bm = (gh.clone() * du).sum_dim(2).reshape([b, t, n]);
    let bm4 = bm.unsqueeze_dim::<4>(2); // [b, t, 1, n]
    let g_u = (gh.clone() * bm4.clone()).sum_dim(3).reshape([b, t, d]) * delta.clone()
        + gy.clone() * dd.clone().reshape([1, 1, d]);
    let decayed_prev = prev * decay; // [b, t, d, n]
    let g_delta = (gh.clone()
        * (decayed_prev.clone() * a.unsqueeze::<4>() + bm4 * u.clone().unsqueeze_dim::<4>(3)))
    .sum_dim(3)
    .reshape([b, t, d]);
    let g_a = (gh * decayed_prev * delta.unsqueeze_dim::<4>(3))
        .sum_dim(0)
        .sum_dim(1)
        .reshape([d, n]);
    let g_dd = (gy * u).sum_dim(0).sum_dim(1).reshape([d]);
    let g_dt = g_delta * softplus_grad(dt);
    [
        unwrap(g_u),
        unwrap(g_dt),
        unwrap(g_a),
        unwrap(g_bm),
        unwrap(g_cm),
        unwrap(g_dd),
    ]
}

/// RWKV-7 WKV recurrence one tensor op per time step: `r, w, k, v, a, b
/// [b, t, h * n]` -> `y [b, t, h * n]`, per head `sa = S a`,
/// `S <- S diag(w) + sa b^T + v k^T`, `y = S r` from `S = 0` (the reference
/// of the fused kernel; under autodiff its gradient is burn's own).
#[allow(clippy::too_many_arguments)]
pub fn wkv7_fwd<B: Backend>(
    r: FloatTensor<B>,
    w: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    head_size: usize,
) -> FloatTensor<B> {
    let x = [r, w, k, v, a, b].map(wrap::<B, 3>);
    let [bsz, t, c] = x[0].dims();
    let [r, w, k, v, a, b] = x.map(|t3| t3.reshape([bsz, t, c / head_size, head_size]));
    let (y, _) = wkv7_states(r, w, k, v, a, b, None, false);
    unwrap(y.reshape([bsz, t, c]))
}

/// The recurrence on `[b, t, h, n]` inputs from `s0 [b, h, n, n]` (zero
/// if absent): `y [b, t, h, n]` and the states after every step
/// `[b, t, h, n, n]` stacked on dim 1 when `keep_all`, else the final
/// state `[b, 1, h, n, n]`.
#[allow(clippy::too_many_arguments)]
pub fn wkv7_states<B: Backend>(
    r: Tensor<B, 4>,
    w: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    a: Tensor<B, 4>,
    b: Tensor<B, 4>,
    s0: Option<Tensor<B, 4>>,
    keep_all: bool,
) -> (Tensor<B, 4>, Tensor<B, 5>) {
    let [bsz, t, h, n] = r.dims();
    let mut s = s0.unwrap_or_else(|| Tensor::zeros([bsz, h, n, n], &r.device()));
    let at = |x: &Tensor<B, 4>, i: usize| x.clone().narrow(1, i, 1).reshape([bsz, h, n]);
    let (mut ys, mut states) = (Vec::with_capacity(t), Vec::new());
    for i in 0..t {
        let row = |x: &Tensor<B, 4>| at(x, i).unsqueeze_dim::<4>(2); // [b, h, 1, n]
        let col = |x: &Tensor<B, 4>| at(x, i).unsqueeze_dim::<4>(3); // [b, h, n, 1]
        let sa = (s.clone() * row(&a)).sum_dim(3); // [b, h, n, 1]
        s = s * row(&w) + sa * row(&b) + col(&v) * row(&k); // [b, h, n, n]
        ys.push((s.clone() * row(&r)).sum_dim(3).reshape([bsz, 1, h, n]));
        if keep_all {
            states.push(s.clone().unsqueeze_dim::<5>(1));
        }
    }
    if !keep_all {
        states.push(s.unsqueeze_dim::<5>(1));
    }
    (Tensor::cat(ys, 1), Tensor::cat(states, 1))
}

/// Gradients `[dr, dw, dk, dv, da, db]` of `wkv7_fwd` given `gy`, from the
/// adjoint recurrence `dS_{t-1} = dS_t diag(w_t) + (dS_t b_t) a_t^T`
/// with every state kept (the fallback of backends without a kernel).
#[allow(clippy::too_many_arguments)]
pub fn wkv7_bwd<B: Backend>(
    r: FloatTensor<B>,
    w: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    gy: FloatTensor<B>,
    head_size: usize,
) -> [FloatTensor<B>; 6] {
    let x = [r, w, k, v, a, b, gy].map(wrap::<B, 3>);
    let [bsz, t, c] = x[0].dims();
    let (h, n) = (c / head_size, head_size);
    let [r, w, k, v, a, b, gy] = x.map(|t3| t3.reshape([bsz, t, h, n]));
    let (_, states) = wkv7_states(
        r.clone(),
        w.clone(),
        k.clone(),
        v.clone(),
        a.clone(),
        b.clone(),
        None,
        true,
    ); // [b, t, h, n, n]
    let at = |x: &Tensor<B, 4>, i: usize| x.clone().narrow(1, i, 1).reshape([bsz, h, n]);
    let row = |x: &Tensor<B, 4>, i: usize| at(x, i).unsqueeze_dim::<4>(2); // [b, h, 1, n]
    let col = |x: &Tensor<B, 4>, i: usize| at(x, i).unsqueeze_dim::<4>(3); // [b, h, n, 1]
    let state = |i: usize| states.clone().narrow(1, i, 1).reshape([bsz, h, n, n]);
    let flat_row = |g: Tensor<B, 4>| g.reshape([bsz, 1, h, n]); // [b, h, 1|n, n|1] -> [b, 1, h, n]
    let mut ds = Tensor::<B, 4>::zeros([bsz, h, n, n], &r.device());
    let mut gs: [Vec<Tensor<B, 4>>; 6] = Default::default();
    for i in (0..t).rev() {
        let prev = if i > 0 {
            state(i - 1)
        } else {
            Tensor::zeros([bsz, h, n, n], &r.device())
        };
        ds = ds + col(&gy, i) * row(&r, i);
        let dr = (state(i) * col(&gy, i)).sum_dim(2); // [b, h, 1, n]
        let dw = (prev.clone() * ds.clone()).sum_dim(2);
        let dk = (ds.clone() * col(&v, i)).sum_dim(2);
        let dv = (ds.clone() * row(&k, i)).sum_dim(3); // [b, h, n, 1]
        let sa = (prev.clone() * row(&a, i)).sum_dim(3); // [b, h, n, 1]
        let db = (ds.clone() * sa).sum_dim(2);
        let dsa = (ds.clone() * row(&b, i)).sum_dim(3); // [b, h, n, 1]
        let da = (prev * dsa.clone()).sum_dim(2);
        ds = ds * row(&w, i) + dsa * row(&a, i);
        for (slot, g) in gs.iter_mut().zip([dr, dw, dk, dv, da, db]) {
            slot.push(flat_row(g));
        }
    }
    gs.map(|mut parts| {
        parts.reverse();
        unwrap(Tensor::cat(parts, 1).reshape([bsz, t, c]))
    })
}

/// torch's `F.softplus` (identity above 20).
pub fn softplus<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let big = x.clone().greater_elem(20.0);
    let soft = x.clone().clamp_max(20.0).exp().log1p();
    soft.mask_where(big, x)
}

/// d softplus / dx.
pub fn softplus_grad<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let big = x.clone().greater_elem(20.0);
    let s = burn::tensor::activation::sigmoid(x.clone());
    s.mask_fill(big, 1.0)
}

/// Fake quantisation through a host copy (backends without a kernel): the
/// values and the mask in `x`'s dtype and device.
pub fn fake_quant_fwd<B: Backend>(
    x: FloatTensor<B>,
    target: FakeQuantTarget,
) -> (FloatTensor<B>, Option<FloatTensor<B>>) {
    let x = wrap::<B, 2>(x);
    let ([rows, cols], device, dtype) = (x.dims(), x.device(), x.dtype());
    let host = x
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default();
    let view = kernels::fake_quant::View::contiguous(&host, rows, cols);
    let (fq, mask) = kernels::fake_quant::fake_quant(view, target);
    let constant = |v: Vec<f32>| {
        let t = Tensor::<B, 2>::from_data(TensorData::new(v, [rows, cols]), &device);
        unwrap(t.cast(dtype))
    };
    (constant(fq), mask.map(constant))
}

fn host_f32<B: Backend, const D: usize>(x: FloatTensor<B>) -> (Vec<f32>, [usize; D]) {
    let x = wrap::<B, D>(x);
    let dims = x.dims();
    let values = x
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default();
    (values, dims)
}

/// The device and host f32 copies of a student's and a teacher's `[n, v]` logits.
#[allow(clippy::type_complexity)]
fn host_logits<B: Backend>(
    student: FloatTensor<B>,
    teacher: FloatTensor<B>,
) -> (B::Device, Vec<f32>, Vec<f32>, [usize; 2]) {
    let device = wrap::<B, 2>(student.clone()).device();
    let (s, dims) = host_f32::<B, 2>(student);
    let (t, _) = host_f32::<B, 2>(teacher);
    (device, s, t, dims)
}

/// Distillation divergence per row through a host copy (backends without
/// a kernel).
pub fn distill_fwd<B: Backend>(
    student: FloatTensor<B>,
    teacher: FloatTensor<B>,
    div: Divergence,
    temperature: f64,
) -> FloatTensor<B> {
    let (device, s, t, [n, v]) = host_logits::<B>(student, teacher);
    let rows = kernels::distill::forward(&s, &t, v, div, temperature);
    unwrap(Tensor::<B, 1>::from_data(
        TensorData::new(rows, [n]),
        &device,
    ))
}

/// The student's gradient of [`distill_fwd`] through a host copy.
pub fn distill_bwd<B: Backend>(
    student: FloatTensor<B>,
    teacher: FloatTensor<B>,
    gy: FloatTensor<B>,
    div: Divergence,
    temperature: f64,
) -> FloatTensor<B> {
    let (device, s, t, [n, v]) = host_logits::<B>(student, teacher);
    let (g, _) = host_f32::<B, 1>(gy);
    let grad = kernels::distill::backward(&s, &t, &g, v, div, temperature);
    unwrap(Tensor::<B, 2>::from_data(
        TensorData::new(grad, [n, v]),
        &device,
    ))
}
