//! Parameter groups: the weight decay and learning-rate multiplier of each
//! named parameter, from the model's no-decay rule and `[[optimizer.groups]]`.

use std::collections::BTreeMap;

use crate::config::{OptimizerConfig, ParamGroupConfig};
use crate::error::{Result, TrainerError};
use crate::grads::ParamTable;

/// What the optimizer applies to one parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupSettings {
    pub weight_decay: f64,
    pub lr_scale: f64,
}

/// Settings by parameter name.
#[derive(Debug, Clone, Default)]
pub struct ParamGroups {
    pub by_name: BTreeMap<String, GroupSettings>,
}

impl ParamGroups {
    /// `decays(name, rank)` is the model's rule (no decay on norms, biases,
    /// embeddings, SSM/RWKV vectors); the first `[[optimizer.groups]]` entry
    /// whose pattern matches a name overrides it. A pattern that matches no
    /// parameter is an error (a typo would silently change nothing).
    pub fn build(
        cfg: &OptimizerConfig,
        table: &ParamTable,
        decays: impl Fn(&str, usize) -> bool,
    ) -> Result<Self> {
        let mut used = vec![false; cfg.groups.len()];
        let mut by_name = BTreeMap::new();
        for p in &table.infos {
            let default_wd = if decays(&p.name, p.shape.len()) {
                cfg.weight_decay
            } else {
                0.0
            };
            let mut s = GroupSettings {
                weight_decay: default_wd,
                lr_scale: 1.0,
            };
            if let Some(i) = cfg
                .groups
                .iter()
                .position(|g| glob_match(&g.params, &p.name))
            {
                used[i] = true;
                let g: &ParamGroupConfig = &cfg.groups[i];
                s.weight_decay = g.weight_decay.unwrap_or(default_wd);
                s.lr_scale = g.lr_scale;
            }
            by_name.insert(p.name.clone(), s);
        }
        if let Some(i) = used.iter().position(|u| !u) {
            return Err(TrainerError::invalid(
                format!("optimizer.groups[{i}].params"),
                format!(
                    "{:?} matches no parameter; names look like \"model.layers.0.self_attn.q_proj.weight\" (`*` matches any run of characters)",
                    cfg.groups[i].params
                ),
            ));
        }
        Ok(Self { by_name })
    }

    /// Settings of `name`; parameters outside the table get no decay.
    pub fn get(&self, name: &str) -> GroupSettings {
        self.by_name.get(name).copied().unwrap_or(GroupSettings {
            weight_decay: 0.0,
            lr_scale: 1.0,
        })
    }
}

/// The default weight-decay rule (optimizer policy, by checkpoint name):
/// decay only 2-D+ `.weight` matrices of projections: not norms, biases,
/// embeddings, Mamba's `A_log` and `D` (mamba_ssm's `_no_weight_decay`), or
/// RWKV-7's LoRA factors and `r_k` (train_temp decays 2-D `.weight` tensors
/// only; it does decay its `emb.weight`, and so does this).
pub fn default_decay(name: &str, rank: usize) -> bool {
    // LoRA factors decay like the projections they adapt (as torch's AdamW
    // over peft's parameters does).
    if kiln_models::is_adapter_name(name) {
        return true;
    }
    rank >= 2
        && name.ends_with(".weight")
        && !name.contains("embed_tokens")
        && !name.contains("embeddings")
}

/// `*` matches any run of characters (including dots); everything else is literal.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob_matches_stars_and_literals() {
        assert!(glob_match("lm_head.weight", "lm_head.weight"));
        assert!(!glob_match("lm_head", "lm_head.weight"));
        assert!(glob_match(
            "*norm*",
            "model.layers.3.input_layernorm.weight"
        ));
        assert!(glob_match(
            "model.layers.*.mlp.*",
            "model.layers.10.mlp.up_proj.weight"
        ));
        assert!(!glob_match(
            "model.layers.*.mlp.*",
            "model.layers.1.self_attn.q_proj.weight"
        ));
        assert!(glob_match("*", "anything"));
        assert!(!glob_match("a*a", "a"));
    }
}
