//! AdamW with decoupled weight decay, exactly as `torch.optim.AdamW`:
//! `p *= 1 - lr wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//! p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)`. State is kept per named
//! parameter (so it can be saved by name and, later, sharded).

use std::collections::{BTreeMap, HashMap};

use burn::module::{AutodiffModule, ModuleMapper, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use kiln_models::NamedTensor;

use crate::config::OptimizerConfig;
use crate::grads::{GradStore, ParamTable};

pub struct Moments<B: Backend> {
    pub m: Tensor<B, 1>,
    pub v: Tensor<B, 1>,
}

pub struct AdamW<B: Backend> {
    pub cfg: OptimizerConfig,
    /// Number of updates applied so far (bias correction).
    pub t: u64,
    pub state: BTreeMap<String, Moments<B>>,
    /// Which parameters get weight decay, by name.
    pub decay: HashMap<String, bool>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(cfg: OptimizerConfig, decay: HashMap<String, bool>) -> Self {
        Self {
            cfg,
            t: 0,
            state: BTreeMap::new(),
            decay,
        }
    }

    /// Applies one update with learning rate `lr`, consuming the gradients.
    pub fn step<AB, M>(&mut self, model: M, table: &ParamTable, grads: GradStore<B>, lr: f64) -> M
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        self.begin_step();
        let mut mapper = Mapper::<AB> {
            opt: self,
            table,
            grads: grads.grads,
            lr,
        };
        model.map(&mut mapper)
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
    ) -> Tensor<B, 1> {
        let c = &self.cfg;
        let (b1, b2) = (c.beta1, c.beta2);
        let wd = if self.decay.get(name).copied().unwrap_or(false) {
            c.weight_decay
        } else {
            0.0
        };
        let p = if wd > 0.0 {
            p.mul_scalar(1.0 - lr * wd)
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
        let denom = v.clone().sqrt().div_scalar(bc2_sqrt).add_scalar(c.eps);
        let p = p - (m.clone() / denom).mul_scalar(lr / bc1);
        self.state.insert(name.to_string(), Moments { m, v });
        p
    }

    /// Host copies of the moments: `exp_avg.NAME` and `exp_avg_sq.NAME`.
    pub fn export_state(&self) -> BTreeMap<String, NamedTensor> {
        let mut out = BTreeMap::new();
        for (name, s) in &self.state {
            for (prefix, t) in [("exp_avg", &s.m), ("exp_avg_sq", &s.v)] {
                let data = t
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .unwrap_or_default();
                out.insert(
                    format!("{prefix}.{name}"),
                    NamedTensor {
                        shape: vec![data.len()],
                        data,
                    },
                );
            }
        }
        out
    }

    /// Restores moments saved by [`export_state`]; `t` comes from trainer state.
    pub fn import_state(&mut self, tensors: &BTreeMap<String, NamedTensor>, device: &B::Device) {
        self.state.clear();
        for (key, t) in tensors {
            let Some(name) = key.strip_prefix("exp_avg.") else {
                continue;
            };
            let Some(v) = tensors.get(&format!("exp_avg_sq.{name}")) else {
                continue;
            };
            let to = |t: &NamedTensor| {
                Tensor::<B, 1>::from_data(TensorData::new(t.data.clone(), [t.data.len()]), device)
            };
            self.state
                .insert(name.to_string(), Moments { m: to(t), v: to(v) });
        }
    }
}

struct Mapper<'a, AB: AutodiffBackend> {
    opt: &'a mut AdamW<AB::InnerBackend>,
    table: &'a ParamTable,
    grads: BTreeMap<String, Tensor<AB::InnerBackend, 1>>,
    lr: f64,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for Mapper<'_, AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(info) = self.table.by_id.get(&id).map(|&i| &self.table.infos[i]) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let Some(g) = self.grads.remove(&info.name) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let shape = tensor.dims();
        let n: usize = shape.iter().product();
        let p = tensor.inner().reshape([n]); // [n]
        let updated = self.opt.update(&info.name, p, g, self.lr).reshape(shape);
        Param::from_mapped_value(id, Tensor::from_inner(updated).require_grad(), mapper)
    }
}
