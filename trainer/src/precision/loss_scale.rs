//! Dynamic loss scaling for fp16 (as `torch.amp.GradScaler`): backward on
//! `loss * S`, unscale the gradients, and on any non-finite gradient skip the
//! step (weights, optimizer state and update count untouched) and halve S;
//! after `growth_interval` good steps in a row, double S.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub scale: f64,
    /// Good steps since the last change of scale.
    pub good_steps: u64,
    pub growth_interval: u64,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self {
            scale: 65536.0,
            good_steps: 0,
            growth_interval: 2000,
        }
    }
}

impl LossScaler {
    /// Records a step's outcome: `finite` = every gradient was finite.
    /// Returns whether the optimizer may apply the update.
    pub fn update(&mut self, finite: bool) -> bool {
        if !finite {
            self.scale = (self.scale * 0.5).max(1.0);
            self.good_steps = 0;
            return false;
        }
        self.good_steps += 1;
        if self.good_steps >= self.growth_interval {
            self.scale *= 2.0;
            self.good_steps = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_halves_and_good_steps_double() {
        let mut s = LossScaler {
            scale: 1024.0,
            good_steps: 5,
            growth_interval: 3,
        };
        assert!(!s.update(false));
        assert_eq!((s.scale, s.good_steps), (512.0, 0));
        assert!(s.update(true));
        assert!(s.update(true));
        assert_eq!(s.scale, 512.0);
        assert!(s.update(true));
        assert_eq!((s.scale, s.good_steps), (1024.0, 0));
    }
}
