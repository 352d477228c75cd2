//! RWKV-7 "Goose" block (Peng et al. 2025, arXiv 2503.14456). Reference:
//! BlinkDL/RWKV-LM `RWKV-v7/rwkv_v7_demo.py` (the maths, the parity oracle of
//! tests/reference/rwkv7_parity.py) and `RWKV-v7/train_temp/src/model.py`
//! (the initialisation). Field names are the official checkpoint's
//! (`att.x_r`, `att.w1`, `att.receptance`, `ffn.key`, ...).
//!
//! Time mix, with the token shift `xx = shift(x) - x` and `x_* = x + xx mu_*`:
//! `r, k, v = W_{r,k,v} x_*`; `w = -softplus(-(w0 + tanh(x_w W1) W2)) - 0.5`
//! (decay factor `exp(-exp(w))`); after the first RWKV layer the value
//! residual `v += (v_first - v) sigmoid(v0 + x_v V1 V2)`;
//! `a = sigmoid(a0 + x_a A1 A2)`; `g = sigmoid(x_g G1) G2`;
//! `kk = normalize_per_head(k k_k)`; `k = k (1 + (a - 1) k_a)`;
//! WKV with `a = -kk`, `b = kk a`; `GroupNorm(H, eps 64e-5)` plus
//! `(sum_head r k r_k) v`; `out = W_o(o g)`.
//! Channel mix: `W_v relu(W_k(x + xx mu_k))^2`.

use burn::module::{Module, Param};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use std::collections::BTreeMap;

use crate::config::RwkvRanks;
use crate::hf::transpose;
use crate::init::orthogonal;
use crate::layers::layer_norm::group_norm;
use crate::layers::{LayerNorm, Linear};
use crate::ops::{composed, wkv7, FusedOps};
use crate::{ModelConfig, NamedTensor};

/// GroupNorm eps of `ln_x` (the reference's `64e-5`, fixed).
pub const LN_X_EPS: f64 = 64e-5;
/// torch's `F.normalize` eps.
const NORMALIZE_EPS: f64 = 1e-12;

#[derive(Module, Debug)]
pub struct TimeMix<B: Backend> {
    /// Token-shift mixing coefficients `[C]` (official shape `[1, 1, C]`).
    pub x_r: Param<Tensor<B, 1>>,
    pub x_w: Param<Tensor<B, 1>>,
    pub x_k: Param<Tensor<B, 1>>,
    pub x_v: Param<Tensor<B, 1>>,
    pub x_a: Param<Tensor<B, 1>>,
    pub x_g: Param<Tensor<B, 1>>,
    /// Decay: bias `[C]` and low-rank factors `C -> Dw -> C`, projections
    /// whose weights are the checkpoint's `att.w1` / `att.w2` as they are
    /// (`x @ W` in both; [`rwkv_param_name`]).
    pub w0: Param<Tensor<B, 1>>,
    pub w1: Linear<B>,
    pub w2: Linear<B>,
    /// In-context learning rate `a`: bias and low-rank factors.
    pub a0: Param<Tensor<B, 1>>,
    pub a1: Linear<B>,
    pub a2: Linear<B>,
    /// Value residual gate: absent in the first RWKV block (it makes `v_first`).
    pub v0: Option<Param<Tensor<B, 1>>>,
    pub v1: Option<Linear<B>>,
    pub v2: Option<Linear<B>>,
    /// Output gate low-rank factors.
    pub g1: Linear<B>,
    pub g2: Linear<B>,
    /// Key normalisation and replacement scales `[C]`, bonus `[H, N]`.
    pub k_k: Param<Tensor<B, 1>>,
    pub k_a: Param<Tensor<B, 1>>,
    pub r_k: Param<Tensor<B, 2>>,
    pub receptance: Linear<B>,
    pub key: Linear<B>,
    pub value: Linear<B>,
    pub output: Linear<B>,
    /// Per-head GroupNorm of the WKV output (weight and bias `[C]`).
    pub ln_x: LayerNorm<B>,
    pub head_size: usize,
    /// Fused WKV kernel and projections; false = per-timestep tensor ops.
    pub fused: bool,
}

#[derive(Module, Debug)]
pub struct ChannelMix<B: Backend> {
    pub x_k: Param<Tensor<B, 1>>,
    /// `C -> F` and `F -> C`.
    pub key: Linear<B>,
    pub value: Linear<B>,
}

/// `x = ln0(x)` (block 0 only); `x += att(ln1 x)`; `x += ffn(ln2 x)`.
#[derive(Module, Debug)]
pub struct RwkvBlock<B: Backend> {
    pub ln0: Option<LayerNorm<B>>,
    pub ln1: LayerNorm<B>,
    pub ln2: LayerNorm<B>,
    pub att: TimeMix<B>,
    pub ffn: ChannelMix<B>,
}

/// Recurrent state of one RWKV block during generation: the last input of
/// each token shift `[b, C]` and the WKV state `[b, H, N, N]`. Its size does
/// not grow with the sequence.
#[derive(Debug, Clone, Default)]
pub struct RwkvState<B: Backend> {
    pub att_x: Option<Tensor<B, 2>>,
    pub wkv: Option<Tensor<B, 4>>,
    pub ffn_x: Option<Tensor<B, 2>>,
}

fn param<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

/// The zero-initialised projections (`att.output`, `ffn.value`, the first
/// low-rank factors).
fn zero_linear<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    Linear::from_weight(Tensor::zeros([d_in, d_out], device))
}

/// A projection stored `[d_in, d_out]` with torch's orthogonal init of its
/// `[d_out, d_in]` weight (the transpose of an orthogonal matrix is one).
pub fn orthogonal_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    gain: f64,
    device: &B::Device,
) -> Linear<B> {
    Linear::from_weight(orthogonal(d_in, d_out, gain, device))
}

/// train_temp's `ortho_init(x, scale)` of a second low-rank factor `[rows, cols]`.
fn lora_up<B: Backend>(rows: usize, cols: usize, device: &B::Device) -> Linear<B> {
    let gain = if rows > cols {
        (rows as f64 / cols as f64).sqrt()
    } else {
        1.0
    };
    orthogonal_linear(rows, cols, gain * 0.1, device)
}

impl<B: Backend> RwkvBlock<B> {
    /// train_temp's init (`RWKV_Tmix_x070.__init__` and `generate_init_weight`)
    /// for layer `layer` of `n_layers`: mixing ramps, zigzag decay bias, zero
    /// first LoRA factors and orthogonal second ones (gain 0.1), orthogonal
    /// r/v/ffn-key projections (key 0.1), zero output and ffn value, `ln_x`
    /// weight `((layer + 1) / L)^0.7`. `first` marks the block that makes
    /// `v_first`; `ln0` is given to layer 0.
    pub fn new(cfg: &ModelConfig, layer: usize, first: bool, device: &B::Device) -> Self {
        let (c, n, f) = (cfg.dim, cfg.head_size, cfg.resolved_rwkv_ffn_dim());
        let h = c / n;
        let layers = cfg.n_layers as f64;
        let RwkvRanks {
            decay,
            aaa,
            mv,
            gate,
        } = cfg.rwkv_ranks();
        let ratio_0_to_1 = if cfg.n_layers > 1 {
            layer as f64 / (layers - 1.0)
        } else {
            0.0
        };
        let ratio_1_to_almost0 = 1.0 - layer as f64 / layers;
        let ddd: Vec<f64> = (0..c).map(|i| i as f64 / c as f64).collect();
        let ramp = |p: f64| -> Vec<f32> {
            ddd.iter()
                .map(|&d| (1.0 - d.powf(p * ratio_1_to_almost0)) as f32)
                .collect()
        };
        let span = (c.max(2) - 1) as f64;
        let linear: Vec<f64> = (0..c).map(|i| i as f64 / span - 0.5).collect();
        let half = ((n.max(2) - 1) as f64) / 2.0;
        let zigzag: Vec<f64> = (0..c)
            .map(|i| {
                let z = ((i % n) as f64 - half) / half;
                z * z.abs()
            })
            .collect();
        let vec_of =
            |g: &dyn Fn(usize) -> f64| -> Vec<f32> { (0..c).map(|i| g(i) as f32).collect() };
        let w0 = vec_of(&|i| {
            -6.0 + 6.0 * (i as f64 / span).powf(1.0 + ratio_0_to_1.powf(0.3))
                + 0.5
                + zigzag[i] * 2.5
        });
        let a0 = vec_of(&|i| -0.19 + zigzag[i] * 0.3 + linear[i] * 0.4);
        let v0 = vec_of(&|i| 0.73 - linear[i] * 0.4);
        let k_k = vec_of(&|i| 0.71 - linear[i] * 0.1);
        let ln_x_scale = ((layer + 1) as f64 / layers).powf(0.7) as f32;
        let mut ln_x = LayerNorm::new(c, LN_X_EPS, device);
        ln_x.weight = param(vec![ln_x_scale; c], [c], device);
        let ffn_ratio = ratio_1_to_almost0.powi(4);
        let att = TimeMix {
            x_r: param(ramp(0.2), [c], device),
            x_w: param(ramp(0.9), [c], device),
            x_k: param(ramp(0.7), [c], device),
            x_v: param(ramp(0.7), [c], device),
            x_a: param(ramp(0.9), [c], device),
            x_g: param(ramp(0.2), [c], device),
            w0: param(w0, [c], device),
            w1: zero_linear(c, decay, device),
            w2: lora_up(decay, c, device),
            a0: param(a0, [c], device),
            a1: zero_linear(c, aaa, device),
            a2: lora_up(aaa, c, device),
            v0: (!first).then(|| param(v0, [c], device)),
            v1: (!first).then(|| zero_linear(c, mv, device)),
            v2: (!first).then(|| lora_up(mv, c, device)),
            g1: zero_linear(c, gate, device),
            g2: lora_up(gate, c, device),
            k_k: param(k_k, [c], device),
            k_a: param(vec![1.02; c], [c], device),
            r_k: param(vec![-0.04; c], [h, n], device),
            receptance: orthogonal_linear(c, c, 1.0, device),
            key: orthogonal_linear(c, c, 0.1, device),
            value: orthogonal_linear(c, c, 1.0, device),
            output: zero_linear(c, c, device),
            ln_x,
            head_size: n,
            fused: true,
        };
        let ffn = ChannelMix {
            x_k: param(
                ddd.iter()
                    .map(|&d| (1.0 - d.powf(ffn_ratio)) as f32)
                    .collect(),
                [c],
                device,
            ),
            key: orthogonal_linear(c, f, 1.0, device),
            value: zero_linear(f, c, device),
        };
        let eps = cfg.norm_eps;
        Self {
            ln0: (layer == 0).then(|| LayerNorm::new(c, eps, device)),
            ln1: LayerNorm::new(c, eps, device),
            ln2: LayerNorm::new(c, eps, device),
            att,
            ffn,
        }
    }

    pub fn set_fused(&mut self, fused: bool) {
        let att = &mut self.att;
        att.fused = fused;
        let gate = [att.v1.as_mut(), att.v2.as_mut()].into_iter().flatten();
        for p in [
            &mut att.receptance,
            &mut att.key,
            &mut att.value,
            &mut att.output,
            &mut att.w1,
            &mut att.w2,
            &mut att.a1,
            &mut att.a2,
            &mut att.g1,
            &mut att.g2,
            &mut self.ffn.key,
            &mut self.ffn.value,
        ]
        .into_iter()
        .chain(gate)
        {
            p.fused = fused;
        }
    }
}

/// `shift(x) - x` for `x [b, t, C]`, where `shift` puts `prev [b, C]` (zeros
/// if absent) before the sequence; returns it and the last input `[b, C]`.
fn token_shift<B: Backend>(
    x: &Tensor<B, 3>,
    prev: Option<Tensor<B, 2>>,
) -> (Tensor<B, 3>, Tensor<B, 2>) {
    let [b, t, c] = x.dims();
    let prev = prev
        .unwrap_or_else(|| Tensor::zeros([b, c], &x.device()))
        .reshape([b, 1, c]); // [b, 1, C]
    let shifted = if t > 1 {
        Tensor::cat(vec![prev, x.clone().narrow(1, 0, t - 1)], 1)
    } else {
        prev
    }; // [b, t, C]
    let last = x.clone().narrow(1, t - 1, 1).reshape([b, c]);
    (shifted - x.clone(), last)
}

fn row<B: Backend>(p: &Param<Tensor<B, 1>>) -> Tensor<B, 3> {
    let c = p.dims()[0];
    p.val().reshape([1, 1, c])
}

impl<B: FusedOps> TimeMix<B> {
    /// `[b, t, C] -> [b, t, C]`. The first RWKV block stores its `v` in
    /// `v_first`; later ones read it. With a state, continues its sequence.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        v_first: &mut Option<Tensor<B, 3>>,
        state: Option<&mut RwkvState<B>>,
    ) -> Tensor<B, 3> {
        let [bsz, t, c] = x.dims();
        let n = self.head_size;
        let h = c / n;
        let (xx, last) = token_shift(&x, state.as_ref().and_then(|s| s.att_x.clone()));
        let mix = |mu: &Param<Tensor<B, 1>>| x.clone() + xx.clone() * row(mu); // [b, t, C]
        let (xr, xw, xk, xv, xa, xg) = (
            mix(&self.x_r),
            mix(&self.x_w),
            mix(&self.x_k),
            mix(&self.x_v),
            mix(&self.x_a),
            mix(&self.x_g),
        );
        let r = self.receptance.forward(xr); // [b, t, C]
        let w_pre = row(&self.w0) + self.w2.forward(self.w1.forward(xw).tanh()); // [b, t, C]
                                                                                 // w = -softplus(-w_pre) - 0.5, the soft clamp to (-inf, -0.5).
        let w = composed::softplus(w_pre.neg()).neg().sub_scalar(0.5); // [b, t, C]
        let k = self.key.forward(xk); // [b, t, C]
        let mut v = self.value.forward(xv.clone()); // [b, t, C]
        match (&self.v0, &self.v1, &self.v2, v_first.as_ref()) {
            (Some(v0), Some(v1), Some(v2), Some(first)) => {
                let gate = sigmoid(row(v0) + v2.forward(v1.forward(xv))); // [b, t, C]
                v = v.clone() + (first.clone() - v) * gate;
            }
            _ => *v_first = Some(v.clone()),
        }
        let a = sigmoid(row(&self.a0) + self.a2.forward(self.a1.forward(xa))); // [b, t, C]
        let g = self.g2.forward(sigmoid(self.g1.forward(xg))); // [b, t, C]
        let kk = (k.clone() * row(&self.k_k)).reshape([bsz, t, h, n]); // [b, t, H, N]
        let norm = kk
            .clone()
            .powi_scalar(2)
            .sum_dim(3)
            .sqrt()
            .clamp_min(NORMALIZE_EPS); // [b, t, H, 1]
        let kk = (kk / norm).reshape([bsz, t, c]); // [b, t, C]
        let k = k * (a.clone().sub_scalar(1.0) * row(&self.k_a)).add_scalar(1.0); // [b, t, C]
        let decay = w.exp().neg().exp(); // [b, t, C], in (0, 1)
        let (wa, wb) = (kk.clone().neg(), kk * a);
        let y = if self.fused && state.is_none() {
            wkv7(r.clone(), decay, k.clone(), v.clone(), wa, wb, n)
        } else {
            // Per-timestep tensor ops: the unfused path, and generation,
            // which continues from (and keeps) the state.
            let mut state = state;
            let s0 = state.as_mut().and_then(|s| s.wkv.take());
            let heads = |z: Tensor<B, 3>| z.reshape([bsz, t, h, n]);
            let (y, last_state) = composed::wkv7_states(
                heads(r.clone()),
                heads(decay),
                heads(k.clone()),
                heads(v.clone()),
                heads(wa),
                heads(wb),
                s0,
                false,
            );
            if let Some(s) = state {
                s.wkv = Some(last_state.reshape([bsz, h, n, n]));
                s.att_x = Some(last);
            }
            y.reshape([bsz, t, c])
        }; // [b, t, C]
        let y = group_norm(
            y,
            h,
            self.ln_x.weight.val(),
            self.ln_x.bias.val(),
            self.ln_x.eps,
        );
        let bonus = (r * k * self.r_k.val().reshape([1, 1, c]))
            .reshape([bsz, t, h, n])
            .sum_dim(3); // [b, t, H, 1]
        let y = y + (bonus * v.reshape([bsz, t, h, n])).reshape([bsz, t, c]); // [b, t, C]
        self.output.forward(y * g)
    }
}

impl<B: FusedOps> ChannelMix<B> {
    /// `[b, t, C] -> [b, t, C]`; with a state, continues its sequence.
    pub fn forward(&self, x: Tensor<B, 3>, state: Option<&mut RwkvState<B>>) -> Tensor<B, 3> {
        let prev = state.as_ref().and_then(|s| s.ffn_x.clone());
        let (xx, last) = token_shift(&x, prev);
        if let Some(s) = state {
            s.ffn_x = Some(last);
        }
        let k = self.key.forward(x + xx * row(&self.x_k)); // [b, t, F]
        self.value.forward(relu(k).powi_scalar(2)) // [b, t, C]
    }
}

impl<B: FusedOps> RwkvBlock<B> {
    /// `[b, t, C] -> [b, t, C]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        v_first: &mut Option<Tensor<B, 3>>,
        mut state: Option<&mut RwkvState<B>>,
    ) -> Tensor<B, 3> {
        let x = match &self.ln0 {
            Some(ln0) => ln0.forward(x),
            None => x,
        };
        let x = x.clone()
            + self
                .att
                .forward(self.ln1.forward(x), v_first, state.as_deref_mut());
        x.clone() + self.ffn.forward(self.ln2.forward(x), state)
    }
}

/// The low-rank factors are `Linear`s (so they multiply where every
/// projection does) but checkpoint tensors without a `.weight` suffix, as in
/// the official checkpoint: module path `att.w1.weight` -> `att.w1`. This
/// also keeps them out of weight decay, which is by `.weight` name.
pub fn rwkv_param_name(path: &str) -> String {
    const FACTORS: [&str; 8] = ["w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2"];
    if let Some(head) = path.strip_suffix(".weight") {
        if let Some((_, factor)) = head.rsplit_once(".att.") {
            if FACTORS.contains(&factor) {
                return head.to_string();
            }
        }
    }
    path.to_string()
}

/// Tensors the official checkpoint stores `[1, 1, C]` (ours: `[C]`).
fn is_channel_vector(name: &str) -> bool {
    const VECTORS: [&str; 12] = [
        "att.x_r", "att.x_w", "att.x_k", "att.x_v", "att.x_a", "att.x_g", "att.w0", "att.a0",
        "att.v0", "att.k_k", "att.k_a", "ffn.x_k",
    ];
    VECTORS.iter().any(|v| name.ends_with(v))
}

/// Projections stored `[in, out]` here and `[out, in]` (torch `nn.Linear`)
/// in the official checkpoint. The LoRA factors (`w1`, `w2`, ...) are plain
/// `x @ W` matrices in both and keep their layout.
fn is_projection(name: &str, shape: &[usize]) -> bool {
    shape.len() == 2 && name.ends_with(".weight") && name != "emb.weight"
}

/// Checkpoint tensors of an `arch = "rwkv7"` model -> the official `.pth`
/// layout the `rwkv` pip package reads (same names; vectors `[1, 1, C]`,
/// projections transposed).
pub fn export_rwkv7(ckpt: &BTreeMap<String, NamedTensor>) -> BTreeMap<String, NamedTensor> {
    ckpt.iter()
        .map(|(name, t)| {
            let t = if is_projection(name, &t.shape) {
                transpose(t)
            } else if is_channel_vector(name) {
                NamedTensor {
                    shape: vec![1, 1, t.data.len()],
                    data: t.data.clone(),
                }
            } else {
                t.clone()
            };
            (name.clone(), t)
        })
        .collect()
}

/// Official RWKV-7 tensors -> checkpoint tensors. Layer 0's unused
/// `v0/v1/v2` (official checkpoints carry them) are dropped.
pub fn import_rwkv7(official: &BTreeMap<String, NamedTensor>) -> BTreeMap<String, NamedTensor> {
    official
        .iter()
        .filter(|(name, _)| {
            !["blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"].contains(&name.as_str())
        })
        .map(|(name, t)| {
            let t = if is_projection(name, &t.shape) {
                transpose(t)
            } else if is_channel_vector(name) {
                NamedTensor {
                    shape: vec![t.data.len()],
                    data: t.data.clone(),
                }
            } else {
                t.clone()
            };
            (name.clone(), t)
        })
        .collect()
}
