//! Gradients by parameter name. Every gradient passes through [`GradStore`]
//! between backward and the optimizer: accumulation, the data-parallel
//! reduce and global-norm clipping all act here. Only trainable parameters
//! (those in [`ParamTable::infos`]) have gradients.

use std::collections::{BTreeMap, HashMap};

use burn::module::{AutodiffModule, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use kiln_models::{param_infos, LanguageModel, ParamInfo};

use crate::error::{Result, TrainerError};
use crate::precision::policy::master_grad;
use crate::world::Collective;

/// Flattened gradients keyed by checkpoint name, on the inner backend.
pub struct GradStore<B: Backend> {
    pub grads: BTreeMap<String, Tensor<B, 1>>,
}

impl<B: Backend> Default for GradStore<B> {
    fn default() -> Self {
        Self {
            grads: BTreeMap::new(),
        }
    }
}

/// Name, id and shape of each trainable parameter (and the frozen ones
/// apart), computed once per run.
pub struct ParamTable {
    /// Trainable parameters: these get gradients, optimizer state and a
    /// share of the clipping norm.
    pub infos: Vec<ParamInfo>,
    pub by_id: HashMap<ParamId, usize>,
    /// Frozen parameters: no gradient, no optimizer state, never updated.
    pub frozen: Vec<ParamInfo>,
}

impl ParamTable {
    /// Every parameter trainable.
    pub fn new<B: kiln_models::FusedOps, M: LanguageModel<B>>(model: &M) -> Self {
        Self::with_frozen::<B, M>(model, |_| false)
    }

    /// Parameters whose checkpoint name satisfies `frozen` are set apart.
    pub fn with_frozen<B: kiln_models::FusedOps, M: LanguageModel<B>>(
        model: &M,
        frozen: impl Fn(&str) -> bool,
    ) -> Self {
        let (frozen, infos): (Vec<ParamInfo>, Vec<ParamInfo>) = param_infos::<B, M>(model)
            .into_iter()
            .partition(|p| frozen(&p.name));
        let by_id = infos.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
        Self {
            infos,
            by_id,
            frozen,
        }
    }

    /// Elements of the trainable parameters.
    pub fn trainable_elements(&self) -> usize {
        self.infos
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }
}

fn take_flat<B: AutodiffBackend>(
    grads: &mut GradientsParams,
    info: &ParamInfo,
) -> Option<Tensor<B::InnerBackend, 1>> {
    let n: usize = info.shape.iter().product();
    match info.shape.len() {
        1 => grads.remove::<B::InnerBackend, 1>(info.id),
        2 => grads
            .remove::<B::InnerBackend, 2>(info.id)
            .map(|g| g.reshape([n])),
        3 => grads
            .remove::<B::InnerBackend, 3>(info.id)
            .map(|g| g.reshape([n])),
        4 => grads
            .remove::<B::InnerBackend, 4>(info.id)
            .map(|g| g.reshape([n])),
        _ => None,
    }
}

impl<B: Backend> GradStore<B> {
    /// Adds the gradients of one backward pass (micro-batch).
    pub fn accumulate<AB, M>(&mut self, model: &M, table: &ParamTable, backward: AB::Gradients)
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        let mut grads = GradientsParams::from_grads(backward, model);
        for info in &table.infos {
            if let Some(g) = take_flat::<AB>(&mut grads, info) {
                let g = master_grad(g);
                let g = match self.grads.remove(&info.name) {
                    Some(prev) => prev + g,
                    None => g,
                };
                self.grads.insert(info.name.clone(), g);
            }
        }
    }

    /// The data-parallel reduce: every rank ends with the mean of all ranks'
    /// gradients (one all-reduce over the concatenated buffer). A no-op in a
    /// world of one.
    pub fn all_reduce_mean(&mut self, collective: &dyn Collective) -> Result<()> {
        let size = collective.world().size;
        if size == 1 || self.grads.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = self.grads.keys().cloned().collect();
        let device = self.grads[&names[0]].device();
        let parts: Vec<Tensor<B, 1>> = names.iter().map(|n| self.grads[n].clone()).collect();
        let mut flat: Vec<f32> = Tensor::cat(parts, 0)
            .into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|e| {
                TrainerError::Internal(format!("reading gradients for the reduce: {e:?}"))
            })?;
        collective.all_reduce_sum(&mut flat)?;
        let inv = 1.0 / size as f32;
        let mut offset = 0;
        for name in names {
            let n = self.grads[&name].dims()[0];
            let mean: Vec<f32> = flat[offset..offset + n].iter().map(|v| v * inv).collect();
            offset += n;
            self.grads
                .insert(name, Tensor::from_data(TensorData::new(mean, [n]), &device));
        }
        Ok(())
    }

    /// Multiplies every gradient by `factor` (fp16 loss-scale removal).
    pub fn scale(&mut self, factor: f64) {
        for g in self.grads.values_mut() {
            *g = g.clone().mul_scalar(factor);
        }
    }

    /// L2 norm over all gradients, one host sync.
    pub fn global_norm(&self) -> f64 {
        let squares: Vec<Tensor<B, 1>> = self
            .grads
            .values()
            .map(|g| g.clone().powi_scalar(2).sum())
            .collect();
        if squares.is_empty() {
            return 0.0;
        }
        let total: f32 = Tensor::cat(squares, 0).sum().into_scalar().elem();
        (total as f64).sqrt()
    }

    /// Global-norm clipping as `torch.nn.utils.clip_grad_norm_`: scale by
    /// `max / (norm + 1e-6)` when that is below 1. Returns the pre-clip norm.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> f64 {
        let norm = self.global_norm();
        if max_norm > 0.0 && norm.is_finite() {
            let coef = (max_norm as f32) / (norm as f32 + 1e-6);
            if coef < 1.0 {
                for g in self.grads.values_mut() {
                    *g = g.clone().mul_scalar(coef);
                }
            }
        }
        norm
    }
}

use burn::tensor::ElementConversion;
