//! What a training step minimises. Today: next-token cross-entropy.
//! Distillation (a teacher's logits) and DoReMi (per-domain weights updated
//! during training) are further implementations of [`Objective`]; the step
//! does not change for them.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use kiln_data::instruct::IGNORE;
use kiln_data::Batch;
use kiln_models::ops::IGNORE_INDEX;
use kiln_models::{Decoder, FusedOps, LanguageModel};

use crate::loss::{masked_mean_over, token_nll};

/// The loss of one micro-batch under a model. An objective may carry state
/// across steps (DoReMi's domain weights): it is saved in the trainer state
/// and restored on resume.
pub trait Objective<B: FusedOps> {
    /// Mean loss over the batch, `[1]`, tracked for backward.
    fn loss(&self, model: &Decoder<B>, batch: &Batch, device: &B::Device) -> Tensor<B, 1> {
        self.loss_over(model, batch, device, scored_targets(batch) as f64)
    }

    /// The batch's summed loss divided by `scored` (see
    /// [`crate::loss::masked_mean_over`]: a data-parallel rank divides by
    /// its share of the global micro-batch's scored targets).
    fn loss_over(
        &self,
        model: &Decoder<B>,
        batch: &Batch,
        device: &B::Device,
        scored: f64,
    ) -> Tensor<B, 1>;

    /// A step of `micro_batches` calls to [`Objective::loss`] begins.
    fn start_step(&self, _micro_batches: usize) {}

    /// State to save in checkpoints (`None`: stateless).
    fn state(&self) -> Option<serde_json::Value> {
        None
    }

    /// Continues from a checkpoint's [`Objective::state`].
    fn restore(&self, _state: Option<&serde_json::Value>) -> crate::error::Result<()> {
        Ok(())
    }

    /// Scalars to log with each logged step (TensorBoard tag, value).
    fn metrics(&self) -> Vec<(String, f64)> {
        Vec::new()
    }

    /// Files the objective writes into the run directory at every
    /// checkpoint (name, contents), given the run's path and step.
    fn run_files(&self, _run: &str, _step: u64) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// An error the objective met inside `loss_over` (a failed collective),
    /// taken once; the step checks it after every loss.
    fn failure(&self) -> Option<crate::error::TrainerError> {
        None
    }
}

/// Mean next-token cross-entropy over the positions that take loss (all of
/// them, except [`IGNORE`] targets: prompts and padding of instruction data).
#[derive(Debug, Clone, Copy)]
pub struct NextToken {
    /// The fused one-pass cross-entropy kernel; false = composed ops.
    pub fused: bool,
}

impl<B: FusedOps> Objective<B> for NextToken {
    fn loss_over(
        &self,
        model: &Decoder<B>,
        batch: &Batch,
        device: &B::Device,
        scored: f64,
    ) -> Tensor<B, 1> {
        let (x, y) = batch_tensors::<B>(batch, device); // [B, T], [B, T]
        let nll = token_nll(model.forward(x), y, self.fused); // [B, T]
        masked_mean_over(nll, scored)
    }
}

/// Targets of a batch that take loss.
pub fn scored_targets(batch: &Batch) -> usize {
    batch.targets.iter().filter(|&&t| t != IGNORE).count()
}

/// `[B, T]` ids of a batch as tensors; [`IGNORE`] targets become the loss's
/// `IGNORE_INDEX`.
pub fn batch_tensors<B: Backend>(
    batch: &Batch,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let shape = [batch.batch_size, batch.seq_len];
    let to = |v: &[u32]| {
        let ids: Vec<i64> = v
            .iter()
            .map(|&x| if x == IGNORE { IGNORE_INDEX } else { x as i64 })
            .collect();
        Tensor::<B, 2, Int>::from_data(TensorData::new(ids, shape), device)
    };
    (to(&batch.inputs), to(&batch.targets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use kiln_models::ModelConfig;

    /// The objective is the loss the parity tests check: cross-entropy of
    /// the model's logits on the batch's targets.
    #[test]
    fn next_token_is_the_mean_cross_entropy_of_the_batch() {
        let cfg: ModelConfig = toml::from_str(
            "vocab_size = 11\ndim = 8\nn_layers = 1\nn_heads = 2\nffn_dim = 16\nmax_seq_len = 8\n",
        )
        .expect("config");
        let dev = Default::default();
        let model = Decoder::<Flex>::new(&cfg, &dev).expect("model");
        let batch = Batch {
            inputs: (0..12).map(|i| i % 11).collect(),
            targets: (0..12).map(|i| (i * 3 + 1) % 11).collect(),
            batch_size: 2,
            seq_len: 6,
            origins: Vec::new(),
        };
        let got: f32 = NextToken { fused: true }
            .loss(&model, &batch, &dev)
            .into_scalar();
        // By hand: log-softmax of the logits, picked at each target.
        let (x, _) = batch_tensors::<Flex>(&batch, &dev);
        let logits: Vec<f32> = model.forward(x).into_data().into_vec().expect("logits");
        let mut total = 0.0f64;
        for (row, &t) in logits.chunks(11).zip(&batch.targets) {
            let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            total += lse - row[t as usize] as f64;
        }
        let want = total / 12.0;
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
    }
}
