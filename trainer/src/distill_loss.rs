//! Knowledge-distillation losses between a student's and a teacher's
//! logits over the vocabulary (specs.md section 8b), at temperature `T`
//! (`p = softmax(logits / T)`), each scaled by `T^2` so the gradient's size
//! does not depend on `T` (Hinton et al.). The student's gradient comes from
//! autodiff over these composed ops; the teacher is a constant. Positions
//! whose target is ignored (instruction prompts, padding) take no part.
//!
//! - forward KL: `sum p_T (log p_T - log p_S)` (Hinton; torchtune `ForwardKLLoss`)
//! - reverse KL: `sum p_S (log p_S - log p_T)` (MiniLLM, token level)
//! - generalised JSD (GKD, TRL `generalized_jsd_loss`), `m = beta p_T + (1 - beta) p_S`:
//!   `beta KL(p_T || m) + (1 - beta) KL(p_S || m)` (TRL does not scale by `T^2`)
//! - skew KL (DistiLLM): `KL(p_T || alpha p_T + (1 - alpha) p_S)`

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use kiln_models::ops::{distill_rows, Divergence, FusedOps};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

/// Which divergence a student minimises against its teacher.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "loss")]
pub enum DistillLoss {
    ForwardKl,
    ReverseKl,
    /// GKD's interpolation weight of the teacher (TRL default 0.5).
    Jsd {
        beta: f64,
    },
    /// DistiLLM's share of the teacher in the skewed mixture (0.1).
    SkewKl {
        alpha: f64,
    },
}

impl DistillLoss {
    /// The mixing weight must lie strictly between 0 and 1.
    pub fn validate(&self, field: &str) -> Result<()> {
        let (name, w) = match self {
            DistillLoss::Jsd { beta } => ("beta", *beta),
            DistillLoss::SkewKl { alpha } => ("skew", *alpha),
            _ => return Ok(()),
        };
        if w > 0.0 && w < 1.0 {
            Ok(())
        } else {
            Err(TrainerError::invalid(
                format!("{field}.{name}"),
                format!("{w} must be in (0, 1) (GKD's beta 0.5, DistiLLM's alpha 0.1)"),
            ))
        }
    }
}

/// `log(exp(a) + exp(b))` elementwise, stable (and exact when one side is
/// `-inf`).
fn log_add_exp<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 2> {
    let hi = a.clone().max_pair(b.clone()); // [N, V]
    let lo = a.min_pair(b); // [N, V]
    hi.clone() + (lo - hi).exp().log1p()
}

/// Per-position divergence `[N]` of `student` from `teacher` (`[N, V]`
/// logits), times `T^2`.
pub fn divergence<B: Backend>(
    student: Tensor<B, 2>,
    teacher: Tensor<B, 2>,
    loss: DistillLoss,
    temperature: f64,
) -> Tensor<B, 1> {
    let [n, _] = student.dims();
    let inv_t = 1.0 / temperature;
    let ls = log_softmax(student.mul_scalar(inv_t), 1); // [N, V]
    let lt = log_softmax(teacher.mul_scalar(inv_t), 1); // [N, V]
    let kl = |p_log: Tensor<B, 2>, q_log: Tensor<B, 2>| {
        (p_log.clone().exp() * (p_log - q_log)).sum_dim(1)
    }; // [N, 1]
    let per = match loss {
        DistillLoss::ForwardKl => kl(lt, ls),
        DistillLoss::ReverseKl => kl(ls, lt),
        DistillLoss::Jsd { beta } => {
            let lm = log_add_exp(
                lt.clone().add_scalar(beta.ln()),
                ls.clone().add_scalar((1.0 - beta).ln()),
            ); // [N, V]
            kl(lt, lm.clone()).mul_scalar(beta) + kl(ls, lm).mul_scalar(1.0 - beta)
        }
        DistillLoss::SkewKl { alpha } => {
            let lq = log_add_exp(
                lt.clone().add_scalar(alpha.ln()),
                ls.add_scalar((1.0 - alpha).ln()),
            ); // [N, V]
            kl(lt, lq)
        }
    };
    per.reshape([n]).mul_scalar(temperature * temperature)
}

impl DistillLoss {
    /// The fused kernel's name for this divergence.
    pub fn kernel(self) -> Divergence {
        match self {
            DistillLoss::ForwardKl => Divergence::ForwardKl,
            DistillLoss::ReverseKl => Divergence::ReverseKl,
            DistillLoss::Jsd { beta } => Divergence::Jsd(beta),
            DistillLoss::SkewKl { alpha } => Divergence::SkewKl(alpha),
        }
    }
}

/// Mean of [`divergence`] over the positions with `keep = 1` (`[N]`, 0/1),
/// of which there are `scored`; `[1]`. `fused`: one kernel per row
/// (`kiln_models::ops::distill_rows`) instead of the composed ops above.
pub fn distill_loss<B: FusedOps>(
    student: Tensor<B, 2>,
    teacher: Tensor<B, 2>,
    keep: Tensor<B, 1>,
    scored: usize,
    loss: DistillLoss,
    temperature: f64,
    fused: bool,
) -> Tensor<B, 1> {
    let per_row = if fused {
        distill_rows(student, teacher, loss.kernel(), temperature)
    } else {
        divergence(student, teacher, loss, temperature)
    }; // [N]
    (per_row * keep).sum().div_scalar(scored.max(1) as f64)
}
