//! Quantisation-aware training and quantised evaluation: `[quantize]`
//! turns fake quantisation on in the selected projections (from
//! `start_step` in training; always when evaluating a checkpoint).

use kiln_models::{Decoder, FusedOps, ProjectionName};

use crate::config::QuantizeConfig;
use crate::error::{Result, TrainerError};

/// `model` with fake quantisation on the projections `cfg` selects; a
/// target glob that selects nothing is an error.
pub fn apply<B: FusedOps>(mut model: Decoder<B>, cfg: &QuantizeConfig) -> Result<Decoder<B>> {
    let names = model.projection_names();
    for (i, g) in cfg.targets.iter().enumerate() {
        let probe = QuantizeConfig {
            targets: vec![g.clone()],
            ..cfg.clone()
        };
        if !names.iter().any(|p| probe.selects(&p.name)) {
            return Err(TrainerError::invalid(
                format!("quantize.targets[{i}]"),
                format!(
                    "{g:?} matches no projection; names look like \"{}\"",
                    names.first().map_or("", |p| p.name.as_str())
                ),
            ));
        }
    }
    let spec = cfg.spec();
    let fits = |p: &ProjectionName| p.d_in.is_multiple_of(spec.group_len(p.d_in));
    if !cfg.targets.is_empty() {
        if let Some(p) = names.iter().find(|p| cfg.selects(&p.name) && !fits(p)) {
            return Err(TrainerError::invalid(
                "quantize.targets",
                format!(
                    "select {} whose {} inputs are not a multiple of the {:?} group of {}: leave it out of the targets{}",
                    p.name,
                    p.d_in,
                    cfg.weights,
                    spec.group_len(p.d_in),
                    if cfg.weights.is_gguf_block() { " (GGUF keeps such tensors in f16)" } else { " or choose a group that divides it" }
                ),
            ));
        }
    }
    // Default targets: the projections the format applies to (GGUF keeps
    // the others, e.g. Mamba's narrow dt_proj, in f16).
    let select = |p: &ProjectionName| cfg.selects(&p.name) && fits(p);
    if model.set_quant(Some(spec), &select) == 0 {
        return Err(TrainerError::invalid(
            "quantize",
            format!("{:?} applies to no projection of this model (no input width is a multiple of its group)", cfg.weights),
        ));
    }
    Ok(model)
}
