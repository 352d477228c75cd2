//! Validation during training: mean loss over the run's fixed validation
//! batches, pooled over domains and per domain.

use burn::module::AutodiffModule;
use kiln_models::{Decoder, TrainBackend};

use crate::data_setup::ValSet;
use crate::eval::evaluate_batches;
use crate::precision::PrecisionPolicy;
use crate::run::output::RunOutput;

/// Validation loss at `step`, logged (`val/loss`, `val/ppl`, `val/loss/<domain>`);
/// None when there is nothing to evaluate.
pub fn validate<B: TrainBackend>(
    model: &Decoder<B>,
    sets: &[ValSet],
    precision: &PrecisionPolicy,
    fused: bool,
    device: &B::Device,
    out: &mut RunOutput,
    step: u64,
) -> Option<f64> {
    let _autocast = precision.autocast_scope();
    let inner = model.valid();
    // Pooled over all domains' rows, and per domain when there are several.
    let (mut total, mut rows) = (0.0f64, 0usize);
    for set in sets {
        let n: usize = set.batches.iter().map(|b| b.batch_size).sum();
        let loss = evaluate_batches(&inner, &set.batches, device, fused, false).loss;
        if let (Some(domain), true) = (&set.domain, loss.is_finite()) {
            out.scalar(step, &format!("val/loss/{domain}"), loss);
        }
        if n > 0 {
            total += loss * n as f64;
            rows += n;
        }
    }
    let val = total / rows.max(1) as f64;
    if rows == 0 || !val.is_finite() {
        return None;
    }
    out.scalar(step, "val/loss", val);
    out.scalar(step, "val/ppl", val.exp());
    out.flush();
    out.line(&format!(
        "step {step}: val loss {val:.4} (ppl {:.2})",
        val.exp()
    ));
    Some(val)
}
