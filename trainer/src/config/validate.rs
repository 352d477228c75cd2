//! Semantic checks of a parsed `RunConfig`, beyond what the types enforce:
//! every error names the field path and the fix.

use super::{DeviceSpec, OptimizerKind, Precision, RunConfig, ScheduleKind, TokenizerKindConfig};
use crate::error::{Result, TrainerError};

fn positive_finite(field: &str, v: f64, hint: &str) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(TrainerError::invalid(
            field,
            format!("{v} must be a positive finite number{hint}"),
        ))
    }
}

impl RunConfig {
    /// Semantic checks beyond types. The model's own checks run once the
    /// vocabulary is known (see `validate_model`).
    pub fn validate(&self) -> Result<()> {
        self.validate_training()?;
        self.validate_data_settings()?;
        self.validate_optimizer()?;
        self.validate_schedule()?;
        self.validate_sections()
    }

    /// `[training]`: sizes, cadence, precision and device.
    fn validate_training(&self) -> Result<()> {
        let t = &self.training;
        if t.max_steps == 0 {
            return Err(TrainerError::invalid(
                "training.max_steps",
                "0 must be at least 1",
            ));
        }
        if t.batch_size == 0 {
            return Err(TrainerError::invalid(
                "training.batch_size",
                "0 must be at least 1",
            ));
        }
        if t.grad_accum == 0 {
            return Err(TrainerError::invalid(
                "training.grad_accum",
                "0 must be at least 1 (1 = no accumulation)",
            ));
        }
        if t.max_nonfinite_steps == 0 {
            return Err(TrainerError::invalid(
                "training.max_nonfinite_steps",
                "0 must be at least 1",
            ));
        }
        if t.eval_batches == 0 {
            return Err(TrainerError::invalid(
                "training.eval_batches",
                "0 must be at least 1",
            ));
        }
        DeviceSpec::parse(&t.device)?;
        if t.precision == Precision::Bf16Pure && !t.fused_ops {
            return Err(TrainerError::invalid(
                "training.precision",
                "\"bf16-pure\" needs training.fused_ops = true (the fused ops keep softmax, norms and the loss in f32)",
            ));
        }
        if t.precision != Precision::Fp32 && DeviceSpec::parse(&t.device)? == DeviceSpec::Wgpu {
            return Err(TrainerError::invalid(
                "training.precision",
                format!(
                    "{} is not available on wgpu (WebGPU has no bf16 and its f16 is optional): use \"fp32\" there, or training.device = \"cuda:0\" / \"cpu\"",
                    serde_json::to_string(&t.precision).unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }

    /// `[data]` and `[tokenizer]` settings.
    fn validate_data_settings(&self) -> Result<()> {
        let seq = self.seq_len();
        if seq == 0 || seq > self.model.max_seq_len {
            return Err(TrainerError::invalid(
                "data.seq_len",
                format!(
                    "{seq} must be between 1 and model.max_seq_len = {}",
                    self.model.max_seq_len
                ),
            ));
        }
        self.validate_data_sources()?;
        let f = self.data.val_fraction;
        if self.data.val.is_none() && !self.data.uses_shards() && !(f > 0.0 && f < 1.0) {
            return Err(TrainerError::invalid(
                "data.val_fraction",
                format!("{f} must be in (0, 1), e.g. 0.1"),
            ));
        }
        if self.data.train.is_none() && self.data.stories_docs == 0 {
            return Err(TrainerError::invalid(
                "data.stories_docs",
                "0 must be at least 1 (or set data.train)",
            ));
        }
        if let Some(fmt) = &self.data.format {
            if fmt != "text" && fmt != "jsonl" {
                return Err(TrainerError::invalid(
                    "data.format",
                    format!("\"{fmt}\" must be \"text\" or \"jsonl\""),
                ));
            }
        }
        if self.tokenizer.path.is_none()
            && self.tokenizer.kind == TokenizerKindConfig::Bpe
            && self.tokenizer.vocab_size < 260
        {
            return Err(TrainerError::invalid(
                "tokenizer.vocab_size",
                format!(
                    "{} is too small for a byte-level BPE: use at least 260 (e.g. 8192)",
                    self.tokenizer.vocab_size
                ),
            ));
        }
        Ok(())
    }

    /// `[optimizer]`.
    fn validate_optimizer(&self) -> Result<()> {
        let o = &self.optimizer;
        positive_finite("optimizer.lr", o.lr, " (e.g. 3e-4)")?;
        positive_finite("optimizer.eps", o.eps, " (e.g. 1e-8)")?;
        let (b1, b2) = o.betas();
        for (field, b) in [("optimizer.beta1", b1), ("optimizer.beta2", b2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(TrainerError::invalid(
                    field,
                    format!("{b} must be in [0, 1), e.g. 0.9 / 0.95"),
                ));
            }
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return Err(TrainerError::invalid(
                "optimizer.weight_decay",
                format!("{} must be >= 0", o.weight_decay),
            ));
        }
        if !(o.grad_clip.is_finite() && o.grad_clip >= 0.0) {
            return Err(TrainerError::invalid(
                "optimizer.grad_clip",
                format!("{} must be >= 0 (0 = off)", o.grad_clip),
            ));
        }
        if o.kind == OptimizerKind::Sophia {
            positive_finite("optimizer.rho", o.rho, " (Sophia: 0.03-0.05)")?;
            if o.hessian_every == 0 {
                return Err(TrainerError::invalid(
                    "optimizer.hessian_every",
                    "0 must be at least 1 (Sophia refreshes its Hessian every k steps, e.g. 10)",
                ));
            }
        }
        for (i, g) in o.groups.iter().enumerate() {
            if g.params.is_empty() {
                return Err(TrainerError::invalid(
                    format!("optimizer.groups[{i}].params"),
                    "is empty: give a parameter name pattern such as \"*norm*\"",
                ));
            }
            if !(g.lr_scale.is_finite() && g.lr_scale >= 0.0) {
                return Err(TrainerError::invalid(
                    format!("optimizer.groups[{i}].lr_scale"),
                    format!("{} must be a finite number >= 0", g.lr_scale),
                ));
            }
            if let Some(wd) = g.weight_decay {
                if !(wd.is_finite() && wd >= 0.0) {
                    return Err(TrainerError::invalid(
                        format!("optimizer.groups[{i}].weight_decay"),
                        format!("{wd} must be >= 0"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `[schedule]`.
    fn validate_schedule(&self) -> Result<()> {
        let (t, o) = (&self.training, &self.optimizer);
        let s = &self.schedule;
        if !(s.min_lr.is_finite() && s.min_lr >= 0.0 && s.min_lr <= o.lr) {
            return Err(TrainerError::invalid(
                "schedule.min_lr",
                format!("{} must be between 0 and optimizer.lr = {}", s.min_lr, o.lr),
            ));
        }
        if s.warmup_steps >= t.max_steps && s.kind != ScheduleKind::Constant {
            return Err(TrainerError::invalid(
                "schedule.warmup_steps",
                format!(
                    "{} must be below training.max_steps = {}",
                    s.warmup_steps, t.max_steps
                ),
            ));
        }
        if !(s.decay_fraction > 0.0 && s.decay_fraction <= 1.0) {
            return Err(TrainerError::invalid(
                "schedule.decay_fraction",
                format!("{} must be in (0, 1]", s.decay_fraction),
            ));
        }
        Ok(())
    }

    /// `[checkpoint]`, the model once its vocabulary is known, and the optional sections.
    fn validate_sections(&self) -> Result<()> {
        if self.checkpoint.keep_last == 0 {
            return Err(TrainerError::invalid(
                "checkpoint.keep_last",
                "0 must be at least 1",
            ));
        }
        if self.model.vocab_size > 0 {
            self.model.validate()?;
        }
        if let Some(q) = &self.quantize {
            q.validate()?;
        }
        if let Some(d) = &self.distill {
            d.validate()?;
        }
        if let Some(d) = &self.doremi {
            d.validate()?;
            if self.distill.is_some() {
                return Err(TrainerError::invalid(
                    "doremi",
                    "cannot be combined with [distill]: a DoReMi proxy learns from the data alone",
                ));
            }
            if !self.data.uses_shards() || self.data.instruct.is_some() {
                return Err(TrainerError::invalid(
                    "doremi",
                    "needs domains to weigh: train on prepared data (data.datasets or data.spec) \
                     with at least two domains",
                ));
            }
        }
        self.distributed.validate()?;
        if let Some(a) = &self.adapter {
            a.validate()?;
            if self.init.is_none() {
                return Err(TrainerError::invalid(
                    "adapter",
                    "needs a base to adapt: add [init] from = \"RUN_DIR/checkpoints/step-N\"",
                ));
            }
        }
        Ok(())
    }

    /// `[data]`: one kind of source, and mixture weights that can be normalised.
    fn validate_data_sources(&self) -> Result<()> {
        let d = &self.data;
        if d.uses_shards() {
            if d.train.is_some() || d.val.is_some() {
                return Err(TrainerError::invalid(
                    "data.train",
                    "cannot be combined with data.datasets / data.spec: give raw files as a \
                     [[source]] of the data spec, or drop data.datasets",
                ));
            }
            if !d.datasets.is_empty() && d.spec.is_some() {
                return Err(TrainerError::invalid(
                    "data.spec",
                    "cannot be combined with data.datasets: prepare the spec with \
                     `kiln data prepare` and list its output in data.datasets",
                ));
            }
        } else if !d.mixture.is_empty() {
            return Err(TrainerError::invalid(
                "data.mixture",
                "weights need domains: set data.datasets (prepared) or data.spec (raw sources)",
            ));
        }
        for (name, w) in &d.mixture {
            if !(w.is_finite() && *w >= 0.0) {
                return Err(TrainerError::invalid(
                    format!("data.mixture.{name}"),
                    format!("{w} must be a finite weight >= 0"),
                ));
            }
        }
        if !d.mixture.is_empty() && d.mixture.values().sum::<f64>() <= 0.0 {
            return Err(TrainerError::invalid(
                "data.mixture",
                "the weights sum to 0: they must sum to a positive number (e.g. web = 0.7, \
                 books = 0.3)",
            ));
        }
        Ok(())
    }
}
