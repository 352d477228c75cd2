//! AdamW with decoupled weight decay, exactly as `torch.optim.AdamW`:
//! `p *= 1 - lr wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//! p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)`. State is kept per named
//! parameter (so it can be saved by name and, later, sharded).

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use kiln_models::NamedTensor;

use super::state_io::{from_named, to_named};

pub struct Moments<B: Backend> {
    pub m: Tensor<B, 1>,
    pub v: Tensor<B, 1>,
}

pub struct AdamW<B: Backend> {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Number of updates applied so far (bias correction).
    pub t: u64,
    pub state: BTreeMap<String, Moments<B>>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(beta1: f64, beta2: f64, eps: f64) -> Self {
        Self {
            beta1,
            beta2,
            eps,
            t: 0,
            state: BTreeMap::new(),
        }
    }

    /// Counts one update (bias correction); call once per step before `update`.
    pub fn begin_step(&mut self) {
        self.t += 1;
    }

    /// The AdamW update of one flattened parameter `p` with gradient `g`.
    pub fn update(
        &mut self,
        name: &str,
        p: Tensor<B, 1>,
        g: Tensor<B, 1>,
        lr: f64,
        weight_decay: f64,
    ) -> Tensor<B, 1> {
        let (b1, b2) = (self.beta1, self.beta2);
        let p = if weight_decay > 0.0 {
            p.mul_scalar(1.0 - lr * weight_decay)
        } else {
            p
        };
        let (m, v) = match self.state.remove(name) {
            Some(s) => (
                s.m.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1),
                s.v.mul_scalar(b2) + g.powi_scalar(2).mul_scalar(1.0 - b2),
            ),
            None => (
                g.clone().mul_scalar(1.0 - b1),
                g.powi_scalar(2).mul_scalar(1.0 - b2),
            ),
        };
        let t = self.t as i32;
        let bc1 = 1.0 - b1.powi(t);
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let denom = v.clone().sqrt().div_scalar(bc2_sqrt).add_scalar(self.eps);
        let p = p - (m.clone() / denom).mul_scalar(lr / bc1);
        self.state.insert(name.to_string(), Moments { m, v });
        p
    }

    /// Host copies of the moments: `exp_avg.NAME` and `exp_avg_sq.NAME`
    /// (PyTorch's state names).
    pub fn export_state(&self) -> BTreeMap<String, NamedTensor> {
        let mut out = BTreeMap::new();
        for (name, s) in &self.state {
            out.insert(format!("exp_avg.{name}"), to_named(&s.m));
            out.insert(format!("exp_avg_sq.{name}"), to_named(&s.v));
        }
        out
    }

    /// Restores moments saved by [`Self::export_state`]; `t` comes from trainer state.
    pub fn import_state(&mut self, tensors: &BTreeMap<String, NamedTensor>, device: &B::Device) {
        self.state.clear();
        for (key, t) in tensors {
            let Some(name) = key.strip_prefix("exp_avg.") else {
                continue;
            };
            let Some(v) = tensors.get(&format!("exp_avg_sq.{name}")) else {
                continue;
            };
            self.state.insert(
                name.to_string(),
                Moments {
                    m: from_named(t, device),
                    v: from_named(v, device),
                },
            );
        }
    }
}
