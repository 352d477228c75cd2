//! Learning-rate schedules as pure functions of the step (as nanoGPT does),
//! so resume needs no scheduler state.

use crate::config::{DecayShape, ScheduleConfig, ScheduleKind};

/// Learning rate for `step` (0-based) of `total` steps, peak `lr`.
pub fn lr_at(cfg: &ScheduleConfig, lr: f64, step: u64, total: u64) -> f64 {
    let warmup = cfg.warmup_steps;
    if cfg.kind != ScheduleKind::Constant && step < warmup {
        // nanoGPT: linear ramp reaching the peak at the end of warmup.
        return lr * (step + 1) as f64 / warmup as f64;
    }
    match cfg.kind {
        ScheduleKind::Constant => lr,
        ScheduleKind::Cosine => {
            if step >= total {
                return cfg.min_lr;
            }
            let ratio = (step - warmup) as f64 / (total - warmup).max(1) as f64;
            let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
            cfg.min_lr + coeff * (lr - cfg.min_lr)
        }
        ScheduleKind::Wsd => {
            // Warmup, a stable plateau, then a decay over the last fraction.
            let decay_steps = ((total as f64 * cfg.decay_fraction).round() as u64).max(1);
            let decay_start = total.saturating_sub(decay_steps).max(warmup);
            if step < decay_start {
                return lr;
            }
            let progress =
                ((step - decay_start + 1) as f64 / (total - decay_start).max(1) as f64).min(1.0);
            let scale = match cfg.decay_shape {
                DecayShape::Linear => 1.0 - progress,
                DecayShape::OneMinusSqrt => 1.0 - progress.sqrt(),
            };
            cfg.min_lr + scale * (lr - cfg.min_lr)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: ScheduleKind) -> ScheduleConfig {
        ScheduleConfig {
            kind,
            warmup_steps: 10,
            min_lr: 1e-4,
            decay_fraction: 0.2,
            decay_shape: DecayShape::Linear,
        }
    }

    #[test]
    fn cosine_warms_up_then_decays_to_min() {
        let c = cfg(ScheduleKind::Cosine);
        assert!((lr_at(&c, 1e-3, 0, 100) - 1e-4).abs() < 1e-12);
        assert!((lr_at(&c, 1e-3, 9, 100) - 1e-3).abs() < 1e-12);
        assert!((lr_at(&c, 1e-3, 10, 100) - 1e-3).abs() < 1e-12);
        assert!((lr_at(&c, 1e-3, 55, 100) - 5.5e-4).abs() < 1e-12);
        assert!((lr_at(&c, 1e-3, 100, 100) - 1e-4).abs() < 1e-12);
    }

    #[test]
    fn wsd_is_flat_then_decays_over_the_last_fifth() {
        let c = cfg(ScheduleKind::Wsd);
        assert_eq!(lr_at(&c, 1e-3, 50, 100), 1e-3);
        assert_eq!(lr_at(&c, 1e-3, 79, 100), 1e-3);
        assert!(lr_at(&c, 1e-3, 80, 100) < 1e-3);
        assert!((lr_at(&c, 1e-3, 99, 100) - 1e-4).abs() < 1e-12);
    }
}
