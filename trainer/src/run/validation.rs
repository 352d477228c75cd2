//! Validation during training: mean loss over the run's fixed validation
//! batches, pooled over domains and per domain.

use burn::module::AutodiffModule;
use burn::tensor::ElementConversion;
use kiln_data::Batch;
use kiln_models::{Decoder, FusedOps, LanguageModel, TrainBackend};

use crate::data_setup::ValSet;
use crate::loss::cross_entropy;
use crate::objective::batch_tensors;
use crate::precision::PrecisionPolicy;
use crate::run::output::RunOutput;

/// Mean loss over fixed batches with the inference model.
pub fn evaluate<B: FusedOps>(
    model: &Decoder<B>,
    batches: &[Batch],
    device: &B::Device,
    fused: bool,
) -> f64 {
    let mut total = 0.0;
    let mut count = 0usize;
    for b in batches {
        let (x, y) = batch_tensors::<B>(b, device);
        let loss: f32 = cross_entropy(model.forward(x), y, fused)
            .into_scalar()
            .elem();
        total += loss as f64 * b.batch_size as f64;
        count += b.batch_size;
    }
    if count == 0 {
        f64::NAN
    } else {
        total / count as f64
    }
}

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
        let loss = evaluate(&inner, &set.batches, device, fused);
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
