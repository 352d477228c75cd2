//! Which parameters train. A frozen parameter gets no gradient (burn does
//! not track it), no optimizer state, no share of the clipping norm, and
//! stays frozen in every precision mode. The set comes from
//! `training.freeze` (checkpoint-name globs) and, in a LoRA run, from
//! `[adapter]`: the whole base is frozen but the adapters and the
//! `adapter.trainable` globs.

use std::collections::HashSet;

use burn::module::{AutodiffModule, ModuleMapper, Param, ParamId};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use kiln_models::{is_adapter_name, param_infos, FusedOps, LanguageModel};

use crate::config::RunConfig;
use crate::error::{Result, TrainerError};
use crate::grads::ParamTable;
use crate::optim::groups::glob_match;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainableSet {
    /// Globs over checkpoint names (`*` matches any run of characters).
    pub freeze: Vec<String>,
    /// A LoRA run: only adapters and tensors matching these globs train.
    pub adapters_plus: Option<Vec<String>>,
}

impl TrainableSet {
    pub fn freezing(globs: &[String]) -> Self {
        Self {
            freeze: globs.to_vec(),
            adapters_plus: None,
        }
    }

    /// The set a run config asks for.
    pub fn of_run(cfg: &RunConfig) -> Self {
        Self {
            freeze: cfg.training.freeze.clone(),
            adapters_plus: cfg.adapter.as_ref().map(|a| a.trainable.clone()),
        }
    }

    pub fn is_frozen(&self, name: &str) -> bool {
        if self.freeze.iter().any(|g| glob_match(g, name)) {
            return true;
        }
        match &self.adapters_plus {
            Some(globs) => !is_adapter_name(name) && !globs.iter().any(|g| glob_match(g, name)),
            None => false,
        }
    }

    /// The parameter table of `model` under this set. A glob matching no
    /// parameter is an error (a typo would silently train everything).
    pub fn table<B: FusedOps, M: LanguageModel<B>>(&self, model: &M) -> Result<ParamTable> {
        let infos = param_infos::<B, M>(model);
        for (i, glob) in self.freeze.iter().enumerate() {
            if !infos.iter().any(|p| glob_match(glob, &p.name)) {
                return Err(TrainerError::invalid(
                    format!("training.freeze[{i}]"),
                    format!(
                        "{glob:?} matches no parameter; names look like \"{}\" (`*` matches any run of characters)",
                        infos.first().map_or("model.embed_tokens.weight", |p| p.name.as_str())
                    ),
                ));
            }
        }
        for (i, glob) in self.adapters_plus.iter().flatten().enumerate() {
            if !infos.iter().any(|p| glob_match(glob, &p.name)) {
                return Err(TrainerError::invalid(
                    format!("adapter.trainable[{i}]"),
                    format!("{glob:?} matches no parameter; names look like \"model.embed_tokens.weight\""),
                ));
            }
        }
        Ok(ParamTable::with_frozen::<B, M>(model, |n| {
            self.is_frozen(n)
        }))
    }

    /// `model` with the table's frozen parameters marked as not requiring grad.
    pub fn apply<AB: AutodiffBackend, M: AutodiffModule<AB>>(model: M, table: &ParamTable) -> M {
        if table.frozen.is_empty() {
            return model;
        }
        let ids: HashSet<ParamId> = table.frozen.iter().map(|p| p.id).collect();
        model.map(&mut Freeze { ids })
    }
}

struct Freeze {
    ids: HashSet<ParamId>,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for Freeze {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = if self.ids.contains(&id) {
            // A fresh leaf that burn does not track.
            Tensor::from_inner(tensor.inner())
        } else {
            tensor
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}
