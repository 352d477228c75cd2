//! Gradients by parameter name. Every gradient passes through [`GradStore`]
//! between backward and the optimizer: accumulation, global-norm clipping and
//! (later) the data-parallel reduce all act here.

use std::collections::{BTreeMap, HashMap};

use burn::module::{AutodiffModule, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use kiln_models::{param_infos, LanguageModel, ParamInfo};

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

/// Name, id and rank of each trainable parameter, computed once per run.
pub struct ParamTable {
    pub infos: Vec<ParamInfo>,
    pub by_id: HashMap<ParamId, usize>,
}

impl ParamTable {
    pub fn new<B: kiln_models::FusedOps, M: LanguageModel<B>>(model: &M) -> Self {
        let infos = param_infos::<B, M>(model);
        let by_id = infos.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
        Self { infos, by_id }
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
                // Gradients are accumulated, clipped and applied in f32 in
                // every precision mode (bf16-pure weights have bf16 grads).
                let g = if g.dtype() == burn::tensor::DType::F32 {
                    g
                } else {
                    g.cast(burn::tensor::FloatDType::F32)
                };
                let g = match self.grads.remove(&info.name) {
                    Some(prev) => prev + g,
                    None => g,
                };
                self.grads.insert(info.name.clone(), g);
            }
        }
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
