//! Mamba-1 block (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with
//! Selective State Spaces", arXiv 2312.00752). Reference implementation:
//! state-spaces/mamba `mamba_ssm/modules/mamba_simple.py`; parameter names and
//! layouts mirror Hugging Face `MambaForCausalLM` (`backbone.layers.{i}.norm`,
//! `.mixer.{in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj}`), whose
//! slow path is the parity oracle (tests/reference/mamba_parity.py).
//!
//! `x, z = split(in_proj(x))`; `u = silu(causal_depthwise_conv(x))`;
//! `dt, B, C = split(x_proj(u))`; `delta = softplus(dt_proj(dt))`;
//! `h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t`, `y_t = C_t h_t + D u_t`;
//! `out = out_proj(y * silu(z))`, with `A = -exp(A_log)`.

use burn::module::{Module, Param};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};

use crate::layers::{Linear, RmsNorm};
use crate::ops::{composed, selective_scan, silu_mul, FusedOps};
use crate::ModelConfig;

/// Causal depthwise convolution over time, Hugging Face layout: weight
/// `[d_inner, 1, K]`, bias `[d_inner]`.
#[derive(Module, Debug)]
pub struct CausalConv<B: Backend> {
    pub weight: Param<Tensor<B, 3>>,
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> CausalConv<B> {
    /// `out[t] = bias + sum_k w[k] x[t - (K-1) + k]` over `xp [b, K-1+t, d]`
    /// (the input with its K-1 predecessors in front) -> `[b, t, d]`.
    fn apply_padded(&self, xp: Tensor<B, 3>, t: usize) -> Tensor<B, 3> {
        let [di, _, k] = self.weight.dims();
        let w = self.weight.val().reshape([di, k]); // [d, K]
        let mut out = self.bias.val().reshape([1, 1, di]); // [1, 1, d]
        for j in 0..k {
            let tap = w.clone().narrow(1, j, 1).reshape([1, 1, di]); // [1, 1, d]
            out = out + xp.clone().narrow(1, j, t) * tap; // [b, t, d]
        }
        out
    }

    /// Zero history: `[b, t, d] -> [b, t, d]`.
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, di] = x.dims();
        let k = self.weight.dims()[2];
        let pad = Tensor::zeros([b, k - 1, di], &x.device());
        self.apply_padded(Tensor::cat(vec![pad, x], 1), t)
    }
}

/// Fields `a_log` and `d` are checkpoint tensors `A_log` and `D`
/// ([`hf_param_name`]).
#[derive(Module, Debug)]
pub struct MambaMixer<B: Backend> {
    pub in_proj: Linear<B>,
    pub conv1d: CausalConv<B>,
    pub x_proj: Linear<B>,
    /// `R -> d_inner`, with a bias.
    pub dt_proj: Linear<B>,
    /// `[d_inner, N]`; `A = -exp(A_log)`.
    pub a_log: Param<Tensor<B, 2>>,
    /// `[d_inner]` skip connection.
    pub d: Param<Tensor<B, 1>>,
    pub out_proj: Linear<B>,
    pub dt_rank: usize,
    pub d_state: usize,
    /// Use the fused selective scan and gate; false = per-timestep tensor ops.
    pub fused: bool,
}

/// Pre-norm Mamba block: `x += mixer(norm(x))`.
#[derive(Module, Debug)]
pub struct MambaBlock<B: Backend> {
    pub norm: RmsNorm<B>,
    pub mixer: MambaMixer<B>,
}

/// Recurrent state of one Mamba block during generation: the last K-1 conv
/// inputs `[b, K-1, d_inner]` and the SSM state `[b, d_inner, N]`. Its size
/// does not grow with the sequence.
#[derive(Debug, Clone, Default)]
pub struct MambaState<B: Backend> {
    pub conv: Option<Tensor<B, 3>>,
    pub ssm: Option<Tensor<B, 3>>,
}

fn uniform<B: Backend, const D: usize>(
    shape: [usize; D],
    bound: f64,
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Uniform(-bound, bound), device)
}

impl<B: Backend> MambaBlock<B> {
    /// mamba_ssm's init: PyTorch-default (kaiming-uniform) projections and
    /// conv, `dt_proj.W ~ U(+-R^-0.5)`, `dt_proj.bias = inv_softplus(dt)` with
    /// `dt = exp(U(ln 1e-3, ln 1e-1))` clamped at 1e-4, `A_log = ln(1..N)`,
    /// `D = 1`, out_proj scaled by `1/sqrt(n_layers)` (rescale_prenorm_residual).
    pub fn new(cfg: &ModelConfig, device: &B::Device) -> Self {
        let (d, di, n, r, k) = (
            cfg.dim,
            cfg.d_inner(),
            cfg.d_state,
            cfg.resolved_dt_rank(),
            cfg.d_conv,
        );
        let fan_in = |f: usize| 1.0 / (f as f64).sqrt();
        let dt: Tensor<B, 1> = Tensor::random(
            [di],
            Distribution::Uniform(1e-3f64.ln(), 1e-1f64.ln()),
            device,
        )
        .exp()
        .clamp_min(1e-4);
        // inv_softplus(dt) = dt + log(-expm1(-dt))
        let inv_dt = dt.clone() + dt.neg().exp().neg().add_scalar(1.0).log();
        let a_log: Vec<f32> = (0..di)
            .flat_map(|_| (1..=n).map(|i| (i as f32).ln()))
            .collect();
        let out_scale = fan_in(di) / (cfg.n_layers as f64).sqrt();
        Self {
            norm: RmsNorm::new(d, cfg.norm_eps, device),
            mixer: MambaMixer {
                in_proj: Linear::from_weight(uniform([d, 2 * di], fan_in(d), device)),
                conv1d: CausalConv {
                    weight: Param::from_tensor(uniform([di, 1, k], fan_in(k), device)),
                    bias: Param::from_tensor(uniform([di], fan_in(k), device)),
                },
                x_proj: Linear::from_weight(uniform([di, r + 2 * n], fan_in(di), device)),
                dt_proj: Linear::from_weight(uniform([r, di], fan_in(r), device)).with_bias(inv_dt),
                a_log: Param::from_tensor(Tensor::from_data(
                    TensorData::new(a_log, [di, n]),
                    device,
                )),
                d: Param::from_tensor(Tensor::ones([di], device)),
                out_proj: Linear::from_weight(uniform([di, d], out_scale, device)),
                dt_rank: r,
                d_state: n,
                fused: true,
            },
        }
    }

    pub fn set_fused(&mut self, fused: bool) {
        self.norm.fused = fused;
        self.mixer.fused = fused;
        for p in [
            &mut self.mixer.in_proj,
            &mut self.mixer.x_proj,
            &mut self.mixer.dt_proj,
            &mut self.mixer.out_proj,
        ] {
            p.fused = fused;
        }
    }
}

impl<B: FusedOps> MambaBlock<B> {
    /// `[b, t, dim] -> [b, t, dim]`; with a state, continues the sequence it holds.
    pub fn forward(&self, x: Tensor<B, 3>, state: Option<&mut MambaState<B>>) -> Tensor<B, 3> {
        x.clone() + self.mixer.forward(self.norm.forward(x), state)
    }
}

impl<B: FusedOps> MambaMixer<B> {
    pub fn forward(&self, x: Tensor<B, 3>, state: Option<&mut MambaState<B>>) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let di = self.d.dims()[0];
        let (r, n) = (self.dt_rank, self.d_state);
        // Splitting the weight, not the output: the activations stay
        // contiguous (a narrowed [b, t, 2 di] would be copied by every consumer).
        let xs = self.in_proj.forward_cols(x.clone(), 0, di); // [b, t, di]
        let z = self.in_proj.forward_cols(x, di, di); // [b, t, di]
        let k = self.conv1d.weight.dims()[2];
        let (conv, new_hist) = match state.as_deref() {
            None => (self.conv1d.forward(xs), None),
            Some(s) => {
                let hist = s
                    .conv
                    .clone()
                    .unwrap_or_else(|| Tensor::zeros([b, k - 1, di], &xs.device()));
                let xp = Tensor::cat(vec![hist, xs], 1); // [b, K-1+t, di]
                let new_hist = xp.clone().narrow(1, t, k - 1); // [b, K-1, di]
                (self.conv1d.apply_padded(xp, t), Some(new_hist))
            }
        };
        let u = silu(conv); // [b, t, di]
        let dt_low = self.x_proj.forward_cols(u.clone(), 0, r); // [b, t, R]
        let bm = self.x_proj.forward_cols(u.clone(), r, n); // [b, t, N]
        let cm = self.x_proj.forward_cols(u.clone(), r + n, n); // [b, t, N]
        let dt = self.dt_proj.forward(dt_low); // [b, t, di], before softplus
        let a = self.a_log.val().exp().neg(); // [di, N]
        let y = match state {
            Some(s) => {
                // Recurrent: keep the last K-1 conv inputs and the final SSM state.
                let (y, h) = scan_steps(u, dt, a, bm, cm, self.d.val(), s.ssm.take());
                s.ssm = Some(h);
                s.conv = new_hist;
                y
            }
            None if self.fused => selective_scan(u, dt, a, bm, cm, self.d.val()),
            None => scan_steps(u, dt, a, bm, cm, self.d.val(), None).0,
        }; // [b, t, di]
        let gated = if self.fused {
            silu_mul(z, y)
        } else {
            silu(z) * y
        }; // [b, t, di]
        self.out_proj.forward(gated)
    }
}

/// The Hugging Face name of a Mamba parameter path (`mixer.a_log` ->
/// `mixer.A_log`, `mixer.d` -> `mixer.D`); other paths are unchanged.
pub fn hf_param_name(path: &str) -> String {
    if let Some(head) = path.strip_suffix(".mixer.a_log") {
        return format!("{head}.mixer.A_log");
    }
    if let Some(head) = path.strip_suffix(".mixer.d") {
        return format!("{head}.mixer.D");
    }
    path.to_string()
}

/// The selective scan one time step at a time in tensor ops, from an optional
/// initial state `h0 [b, d, N]`: returns `(y [b, t, d], h_T [b, d, N])`. The
/// reference the fused kernel is tested against, the unfused training path,
/// and the recurrent step of generation.
pub fn scan_steps<B: Backend>(
    u: Tensor<B, 3>,
    dt: Tensor<B, 3>,
    a: Tensor<B, 2>,
    bm: Tensor<B, 3>,
    cm: Tensor<B, 3>,
    dd: Tensor<B, 1>,
    h0: Option<Tensor<B, 3>>,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let [b, t, d] = u.dims();
    let n = a.dims()[1];
    let delta = composed::softplus(dt); // [b, t, d]
    let mut h = h0.unwrap_or_else(|| Tensor::zeros([b, d, n], &u.device()));
    let mut ys = Vec::with_capacity(t);
    for i in 0..t {
        let delta_i = delta.clone().narrow(1, i, 1).reshape([b, d, 1]); // [b, d, 1]
        let u_i = u.clone().narrow(1, i, 1).reshape([b, d, 1]); // [b, d, 1]
        let b_i = bm.clone().narrow(1, i, 1); // [b, 1, N]
        let c_i = cm.clone().narrow(1, i, 1); // [b, 1, N]
        let decay = (delta_i.clone() * a.clone().unsqueeze::<3>()).exp(); // [b, d, N]
        h = decay * h + delta_i * u_i * b_i; // [b, d, N]
        ys.push((h.clone() * c_i).sum_dim(2).reshape([b, 1, d])); // [b, 1, d]
    }
    let y = Tensor::cat(ys, 1) + u * dd.reshape([1, 1, d]); // [b, t, d]
    (y, h)
}
