//! SophiaG (Liu et al. 2023, arXiv 2305.14342; reference `Liuhong99/Sophia`
//! `sophia.py`, the `rho`/`bs` form of `../shared/docs/specs.md` section 7):
//!
//! `p *= 1 - lr wd; m = b1 m + (1-b1) g;
//!  p -= lr * sign(m) * min(|m| / (rho * B * h + 1e-15), 1)`
//!
//! with `B` the tokens per batch and no bias correction. `h` is the
//! Gauss-Newton-Bartlett estimate, refreshed every `hessian_every` steps by
//! the trainer: `h = b2 h + (1-b2) g_hat^2`, where `g_hat` is the (clipped)
//! gradient of the loss against labels sampled from the model's own logits.
//! Before the first refresh `h = 0` and the update is sign-SGD.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};
use kiln_models::NamedTensor;

use super::state_io::{from_named, to_named};

pub struct SophiaState<B: Backend> {
    pub m: Tensor<B, 1>,
    pub h: Option<Tensor<B, 1>>,
}

pub struct Sophia<B: Backend> {
    pub beta1: f64,
    pub beta2: f64,
    pub rho: f64,
    /// Tokens per optimizer step (`B` in the update).
    pub batch_tokens: f64,
    pub t: u64,
    pub state: BTreeMap<String, SophiaState<B>>,
    /// Per-parameter count of coordinates not clipped in the last step, and
    /// the total count: the win rate, read on demand (no sync per step).
    not_clipped: Vec<Tensor<B, 1>>,
    coords: usize,
}

impl<B: Backend> Sophia<B> {
    pub fn new(beta1: f64, beta2: f64, rho: f64, batch_tokens: f64) -> Self {
        Self {
            beta1,
            beta2,
            rho,
            batch_tokens,
            t: 0,
            state: BTreeMap::new(),
            not_clipped: Vec::new(),
            coords: 0,
        }
    }

    pub fn begin_step(&mut self) {
        self.t += 1;
        self.not_clipped.clear();
        self.coords = 0;
    }

    pub fn update(
        &mut self,
        name: &str,
        p: Tensor<B, 1>,
        g: Tensor<B, 1>,
        lr: f64,
        weight_decay: f64,
    ) -> Tensor<B, 1> {
        let b1 = self.beta1;
        let p = if weight_decay > 0.0 {
            p.mul_scalar(1.0 - lr * weight_decay)
        } else {
            p
        };
        let prev = self.state.remove(name);
        let (m, h) = match prev {
            Some(s) => (s.m.mul_scalar(b1) + g.mul_scalar(1.0 - b1), s.h),
            None => (g.mul_scalar(1.0 - b1), None),
        };
        let n = m.dims()[0];
        let ratio = match &h {
            // |m| / (rho B h + 1e-15), capped at 1: [n]
            Some(h) => (m.clone().abs()
                / h.clone()
                    .mul_scalar(self.rho * self.batch_tokens)
                    .add_scalar(1e-15))
            .clamp_max(1.0),
            // h = 0: |m| / 1e-15 >= 1 for every non-zero m.
            None => m.clone().abs().mul_scalar(1e15).clamp_max(1.0),
        };
        self.not_clipped
            .push(ratio.clone().lower_elem(1.0).float().sum());
        self.coords += n;
        let p = p - (m.clone().sign() * ratio).mul_scalar(lr);
        self.state.insert(name.to_string(), SophiaState { m, h });
        p
    }

    /// `h = b2 h + (1 - b2) g_hat^2` for one parameter.
    pub fn update_hessian(&mut self, name: &str, g_hat: Tensor<B, 1>) {
        let b2 = self.beta2;
        let sq = g_hat.powi_scalar(2).mul_scalar(1.0 - b2);
        let entry = self.state.entry(name.to_string());
        let s = entry.or_insert_with(|| SophiaState {
            m: sq.zeros_like(),
            h: None,
        });
        s.h = Some(match s.h.take() {
            Some(h) => h.mul_scalar(b2) + sq,
            None => sq,
        });
    }

    /// Fraction of coordinates whose last update was not clipped (healthy
    /// 0.1-0.5 per the paper's logs); None before the first step.
    pub fn win_rate(&self) -> Option<f64> {
        if self.coords == 0 {
            return None;
        }
        let total: f64 = self
            .not_clipped
            .iter()
            .map(|t| {
                let v: f32 = t.clone().into_scalar().elem();
                v as f64
            })
            .sum();
        Some(total / self.coords as f64)
    }

    /// `exp_avg.NAME` and `hessian.NAME`.
    pub fn export_state(&self) -> BTreeMap<String, NamedTensor> {
        let mut out = BTreeMap::new();
        for (name, s) in &self.state {
            out.insert(format!("exp_avg.{name}"), to_named(&s.m));
            if let Some(h) = &s.h {
                out.insert(format!("hessian.{name}"), to_named(h));
            }
        }
        out
    }

    pub fn import_state(&mut self, tensors: &BTreeMap<String, NamedTensor>, device: &B::Device) {
        self.state.clear();
        for (key, t) in tensors {
            let Some(name) = key.strip_prefix("exp_avg.") else {
                continue;
            };
            let h = tensors
                .get(&format!("hessian.{name}"))
                .map(|h| from_named(h, device));
            self.state.insert(
                name.to_string(),
                SophiaState {
                    m: from_named(t, device),
                    h,
                },
            );
        }
    }
}
