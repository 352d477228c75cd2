//! `kiln train --resume RUN --set key=value`: the keys that can change
//! without breaking the run (its length, evaluation / checkpoint / logging
//! cadence, and the schedule where the steps already trained keep their
//! learning rates) apply and are recorded in the run's config; any other
//! key is an error naming it.

use std::path::Path;

use crate::config::{apply_overrides, from_table, RunConfig};
use crate::error::{Result, TrainerError};
use crate::schedule::lr_at;

/// Keys (or `section.*`) that `--set` may change on resume.
const RESUMABLE: &[&str] = &[
    "training.max_steps",
    "training.eval_every",
    "training.eval_batches",
    "training.log_every",
    "training.max_nonfinite_steps",
    "checkpoint.*",
    "logging.*",
    "schedule.*",
    // A sharded checkpoint reshards: the strategy and buckets may change.
    "distributed.*",
    // New domain weights (DoReMi's); the sampler refuses them unless
    // data.reweight_on_resume is set too.
    "data.mixture.*",
    "data.reweight_on_resume",
];

fn key_of(item: &str) -> &str {
    item.split_once('=').map_or(item, |(k, _)| k).trim()
}

fn resumable(key: &str) -> bool {
    RESUMABLE
        .iter()
        .any(|allowed| match allowed.strip_suffix('*') {
            Some(section) => key.starts_with(section),
            None => key == *allowed,
        })
}

/// The run's config with `overrides` applied, and the notes to log (one line
/// per key, plus the learning-rate change at the resume step if any).
pub fn apply_on_resume(
    saved: &RunConfig,
    overrides: &[String],
    step: u64,
) -> Result<(RunConfig, Vec<String>)> {
    if overrides.is_empty() {
        return Ok((saved.clone(), Vec::new()));
    }
    for item in overrides {
        let key = key_of(item);
        if !resumable(key) {
            return Err(TrainerError::invalid(
                key,
                format!(
                    "cannot change on --resume (it would break the run's exact continuation); \
                     keys that can: {}; for other changes start a new run with [init] from = the checkpoint",
                    RESUMABLE.join(", ")
                ),
            ));
        }
    }
    let mut doc: toml::Table = toml::from_str(&saved.to_toml()?)
        .map_err(|e| TrainerError::Internal(format!("re-reading the run's config: {e}")))?;
    apply_overrides(&mut doc, overrides)?;
    let cfg = from_table(doc, Path::new("--set"))?;
    cfg.validate()?;
    let t = &cfg.training;
    if t.max_steps < step {
        return Err(TrainerError::invalid(
            "training.max_steps",
            format!(
                "{} is below the run's {step} completed steps: give a larger value",
                t.max_steps
            ),
        ));
    }
    // Schedule keys must leave the learning rate of every trained step as it was.
    let old_total = saved.training.max_steps;
    let lr = saved.optimizer.lr;
    if cfg.schedule != saved.schedule {
        if let Some(s) = (0..step).find(|&s| {
            lr_at(&saved.schedule, lr, s, old_total) != lr_at(&cfg.schedule, lr, s, old_total)
        }) {
            return Err(TrainerError::invalid(
                overrides.iter().map(|o| key_of(o)).find(|k| k.starts_with("schedule.")).unwrap_or("schedule"),
                format!(
                    "would change the learning rate of step {s}, already trained ({:.3e} -> {:.3e}): \
                     only schedule changes that begin after step {step} can apply on resume",
                    lr_at(&saved.schedule, lr, s, old_total),
                    lr_at(&cfg.schedule, lr, s, old_total)
                ),
            ));
        }
    }
    let mut notes: Vec<String> = overrides
        .iter()
        .map(|o| format!("resume: --set {} applied", o.trim()))
        .collect();
    let (before, after) = (
        lr_at(&saved.schedule, lr, step, old_total),
        lr_at(&cfg.schedule, lr, step, t.max_steps),
    );
    if step < t.max_steps && before != after {
        notes.push(format!(
            "resume: the learning rate at step {step} is now {after:.3e} (it was {before:.3e}): the {} schedule is stretched to {} steps",
            format!("{:?}", cfg.schedule.kind).to_lowercase(),
            t.max_steps
        ));
    }
    Ok((cfg, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(schedule: &str) -> RunConfig {
        let text = format!(
            "[model]\ndim = 8\nn_layers = 1\nn_heads = 2\nffn_dim = 16\nmax_seq_len = 8\n\
             [optimizer]\nlr = 1e-3\n[schedule]\n{schedule}\n[training]\nmax_steps = 60\nbatch_size = 2\n"
        );
        from_table(toml::from_str(&text).expect("toml"), Path::new("t.toml")).expect("config")
    }

    #[test]
    fn max_steps_and_cadence_apply() {
        let cfg = saved("kind = \"constant\"");
        let set = [
            "training.max_steps=100".to_string(),
            "checkpoint.every=5".into(),
        ];
        let (out, notes) = apply_on_resume(&cfg, &set, 60).expect("applies");
        assert_eq!(out.training.max_steps, 100);
        assert_eq!(out.checkpoint.every, 5);
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    #[test]
    fn other_keys_are_errors_naming_them() {
        let cfg = saved("kind = \"constant\"");
        for key in ["model.dim=16", "training.batch_size=4", "optimizer.lr=1"] {
            let err = apply_on_resume(&cfg, &[key.to_string()], 10).expect_err(key);
            let k = key_of(key);
            assert!(err.to_string().starts_with(k), "{err}");
        }
    }

    #[test]
    fn schedule_changes_must_spare_trained_steps() {
        let cfg = saved("kind = \"wsd\"\nwarmup_steps = 5\ndecay_fraction = 0.2\nmin_lr = 1e-5");
        // Decay starts at step 48: changing its length at step 20 is fine...
        let (out, _) = apply_on_resume(&cfg, &["schedule.decay_fraction=0.5".into()], 20)
            .expect("before the decay");
        assert_eq!(out.schedule.decay_fraction, 0.5);
        // ...but not once the decay has begun.
        let err = apply_on_resume(&cfg, &["schedule.decay_fraction=0.5".into()], 50)
            .expect_err("inside the decay");
        assert!(
            err.to_string().starts_with("schedule.decay_fraction"),
            "{err}"
        );
    }

    #[test]
    fn stretching_a_cosine_says_how_the_lr_moves() {
        let cfg = saved("kind = \"cosine\"\nwarmup_steps = 5\nmin_lr = 1e-4");
        let (_, notes) =
            apply_on_resume(&cfg, &["training.max_steps=120".into()], 60).expect("applies");
        assert!(
            notes.iter().any(|n| n.contains("learning rate at step 60")),
            "{notes:?}"
        );
        let err = apply_on_resume(&cfg, &["training.max_steps=10".into()], 60).expect_err("below");
        assert!(err.to_string().starts_with("training.max_steps"), "{err}");
    }
}
