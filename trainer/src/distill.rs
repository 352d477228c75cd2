//! The distillation objective: the student's next-token loss mixed with a
//! divergence from a teacher's distribution on the same batch. The teacher
//! runs forward only, on the inner (non-autodiff) backend: no graph, no
//! gradient, no optimizer state.

use burn::tensor::Tensor;
use kiln_data::Batch;
use kiln_models::{Decoder, LanguageModel, TrainBackend};

use crate::distill_loss::{distill_loss, DistillLoss};
use crate::loss::{masked_mean_over, token_nll};
use crate::objective::{batch_tensors, scored_targets, Objective};

pub struct Distill<B: TrainBackend> {
    pub teacher: Decoder<B::InnerBackend>,
    pub loss: DistillLoss,
    pub temperature: f64,
    /// Weight of the divergence; the next-token loss gets `1 - alpha`.
    pub alpha: f64,
    pub fused: bool,
}

impl<B: TrainBackend> Objective<B> for Distill<B> {
    fn loss_over(
        &self,
        model: &Decoder<B>,
        batch: &Batch,
        device: &B::Device,
        divisor: f64,
    ) -> Tensor<B, 1> {
        let (x, y) = batch_tensors::<B>(batch, device); // [B, T], [B, T]
        let [b, t] = x.dims();
        let logits = model.forward(x.clone()); // [B, T, V]
        let v = logits.dims()[2];
        let teacher = self.teacher.forward(x.inner()); // [B, T, V'], no graph
                                                       // A half-precision teacher's logits are compared in f32.
        let teacher = teacher.narrow(2, 0, v).cast(burn::tensor::FloatDType::F32);
        let teacher = Tensor::<B, 3>::from_inner(teacher); // [B, T, V]
        let scored = scored_targets(batch);
        let keep: Vec<f32> = batch
            .targets
            .iter()
            .map(|&t| {
                if t == kiln_data::instruct::IGNORE {
                    0.0
                } else {
                    1.0
                }
            })
            .collect();
        let keep = Tensor::<B, 1>::from_data(burn::tensor::TensorData::new(keep, [b * t]), device);
        let kd = distill_loss(
            logits.clone().reshape([b * t, v]),
            teacher.reshape([b * t, v]),
            keep,
            scored,
            self.loss,
            self.temperature,
            self.fused,
        );
        // The divergence is a mean over this batch's `scored` rows: rescaled
        // to a mean over `divisor` (a rank's share of the global count).
        let kd = kd.mul_scalar(scored.max(1) as f64 / divisor.max(1e-30));
        let ce = masked_mean_over(token_nll(logits, y, self.fused), divisor);
        kd.mul_scalar(self.alpha) + ce.mul_scalar(1.0 - self.alpha)
    }
}
