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
pub mod kernels;
pub mod precision;

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Int, Tensor, TensorPrimitive};

use precision::{cast_to, to_f32};

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

/// The composed burn versions: the reference for every kernel and the
/// fallback of every backend without one.
pub mod composed {
    use super::*;

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
        let max = logits.clone().max_dim(1); // [n, 1]
        let lse = (logits.clone() - max.clone()).exp().sum_dim(1).log() + max; // [n, 1]
        let picked = logits.gather(1, targets.reshape([n, 1])); // [n, 1]
        (
            unwrap((lse.clone() - picked).reshape([n])),
            unwrap(lse.reshape([n])),
        )
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
        let (lse, grad) = (
            wrap::<B, 1>(lse).reshape([n, 1]),
            wrap::<B, 1>(grad).reshape([n, 1]),
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
}

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
