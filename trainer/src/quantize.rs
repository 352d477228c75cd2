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
    let select = |p: &ProjectionName| cfg.selects(&p.name);
    model.set_quant(Some(cfg.spec()), &select);
    Ok(model)
}
