//! Pruning masks kept through training: a run that starts from a pruned
//! checkpoint (or resumes one that did) zeroes the pruned weights'
//! gradients before clipping and the weights themselves after every update.
//! The gradients alone would keep AdamW's moments and decoupled decay at
//! zero; masking the weights too makes "exactly zero" independent of the
//! update rule (Sophia's Hessian, stochastic rounding in bf16-pure).

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};
use kiln_models::NamedTensor;

use crate::error::{Result, TrainerError};
use crate::grads::GradStore;

/// Masks by parameter name, on the device and as loaded.
pub struct Masks<B: Backend> {
    /// `[n]` per flattened parameter: true where the weight is pruned.
    pruned: BTreeMap<String, Tensor<B, 1, Bool>>,
    /// 1 = kept, 0 = pruned, as saved with every checkpoint.
    saved: BTreeMap<String, NamedTensor>,
}

impl<B: Backend> Default for Masks<B> {
    fn default() -> Self {
        Self {
            pruned: BTreeMap::new(),
            saved: BTreeMap::new(),
        }
    }
}

impl<B: Backend> Masks<B> {
    /// Masks for the parameters of `shapes` (name -> shape); a mask of an
    /// unknown name or another shape is an error naming it.
    pub fn new(
        masks: &BTreeMap<String, NamedTensor>,
        shapes: &BTreeMap<String, Vec<usize>>,
        source: &str,
        device: &B::Device,
    ) -> Result<Self> {
        let mut pruned = BTreeMap::new();
        for (name, m) in masks {
            if shapes.get(name) != Some(&m.shape)
                || m.data.len() != m.shape.iter().product::<usize>()
            {
                return Err(TrainerError::invalid(
                    source,
                    format!(
                        "holds a mask for {name} of shape {:?}, but the model's is {:?}: the masks do not belong to this model",
                        m.shape,
                        shapes.get(name)
                    ),
                ));
            }
            let flags: Vec<bool> = m.data.iter().map(|&v| v == 0.0).collect();
            let n = flags.len();
            pruned.insert(
                name.clone(),
                Tensor::from_data(TensorData::new(flags, [n]), device),
            );
        }
        Ok(Self {
            pruned,
            saved: masks.clone(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.pruned.is_empty()
    }

    /// What a checkpoint of the run saves.
    pub fn saved(&self) -> &BTreeMap<String, NamedTensor> {
        &self.saved
    }

    /// `t` (the flattened parameter `name`) with its pruned entries set to
    /// +0.0; untouched without a mask.
    pub fn apply(&self, name: &str, t: Tensor<B, 1>) -> Tensor<B, 1> {
        match self.pruned.get(name) {
            Some(m) => t.mask_fill(m.clone(), 0.0),
            None => t,
        }
    }

    /// Zeroes the pruned entries of every masked gradient, so they count in
    /// neither the clipping norm nor the optimizer's moments.
    pub fn apply_grads(&self, grads: &mut GradStore<B>) {
        if self.is_empty() {
            return;
        }
        for (name, g) in grads.grads.iter_mut() {
            if self.pruned.contains_key(name) {
                *g = self.apply(name, g.clone());
            }
        }
    }
}
