//! `kiln config check`: the resolved plan of a run, printed before training
//! and saved with it.

use serde::Serialize;

use kiln_models::BlockKind;

use crate::config::RunConfig;

#[derive(Debug, Serialize)]
pub struct Plan {
    /// `"llama"`, `"mamba"`, `"rwkv7"`, or e.g. `"mamba (2 attention + 4 mamba blocks)"`.
    pub architecture: String,
    pub params: usize,
    pub non_embedding_params: usize,
    pub effective_layers: usize,
    pub vocab_size: usize,
    pub seq_len: usize,
    pub micro_batch: usize,
    pub grad_accum: usize,
    pub tokens_per_step: usize,
    pub total_tokens: u64,
    pub train_flops_per_token: f64,
    /// Weights + grads + two optimizer moments at the run's precision
    /// (`Precision::bytes_per_param`: 16 bytes per parameter in fp32).
    pub memory_states_gb: f64,
    /// Activations kept for backward, per micro-batch (fp32 estimate).
    pub memory_activations_gb: f64,
    pub memory_total_gb: f64,
}

pub fn plan(cfg: &RunConfig) -> Plan {
    plan_with_trainable(cfg, None)
}

/// [`plan`] where only `trainable` parameters (of a frozen base, LoRA
/// adapters included) have gradients and optimizer state; the others cost
/// their weight bytes alone (gradient and two f32 moments, 12 bytes, less).
pub fn plan_with_trainable(cfg: &RunConfig, trainable: Option<usize>) -> Plan {
    let m = &cfg.model;
    let params = m.num_params();
    let (b, t) = (cfg.training.batch_size as f64, cfg.seq_len() as f64);
    let (d, h, v) = (m.dim as f64, m.n_heads as f64, m.vocab_size as f64);
    // Korthikanti et al. 2022: ~34 s b d + 5 a s^2 b bytes per layer at 16 bit;
    // doubled for fp32. The SwiGLU width and the logits (3 copies) are added.
    let per_layer = (34.0 * t * b * d + 5.0 * h * t * t * b + 4.0 * t * b * m.ffn_dim as f64) * 2.0;
    // A Mamba block keeps ~9 d_inner + 4 d floats per token (projections,
    // conv, delta, gate; the scan recomputes its states in backward).
    let mamba_layer = 4.0 * t * b * (9.0 * m.d_inner() as f64 + 4.0 * d);
    // An RWKV-7 block keeps ~24 C floats per token in the time mix (six
    // mixed inputs, r/w/k/v/a/g/kk and their pre-activations, the WKV output;
    // the recurrence recomputes its states) and 2 F in the channel mix.
    let rwkv_layer = 4.0 * t * b * (24.0 * d + 2.0 * m.resolved_rwkv_ffn_dim() as f64);
    let kinds = m.block_kinds();
    let count = |kind: BlockKind| kinds.iter().filter(|&&k| k == kind).count();
    let (n_attn, n_mamba, n_rwkv) = (
        count(BlockKind::Attention),
        count(BlockKind::Mamba),
        count(BlockKind::Rwkv),
    );
    let layers_act =
        (per_layer * n_attn as f64 + mamba_layer * n_mamba as f64 + rwkv_layer * n_rwkv as f64)
            * m.share_repeat as f64;
    let act = layers_act + 3.0 * 4.0 * b * t * v;
    let arch = format!("{:?}", m.arch).to_lowercase();
    let parts: Vec<String> = [("attention", n_attn), ("mamba", n_mamba), ("rwkv", n_rwkv)]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{n} {name}"))
        .collect();
    let architecture = if parts.len() > 1 {
        format!("{arch} ({} blocks)", parts.join(" + "))
    } else {
        arch
    };
    let per_param = cfg.training.precision.bytes_per_param();
    let states = match trainable {
        Some(n) => {
            // Adapters add parameters beyond the base's, all frozen then.
            let frozen = if cfg.adapter.is_some() {
                params
            } else {
                params.saturating_sub(n)
            };
            (per_param - 12.0) * frozen as f64 + per_param * n as f64
        }
        None => per_param * params as f64,
    };
    let gb = 1024f64.powi(3);
    Plan {
        architecture,
        params,
        non_embedding_params: m.num_non_embedding_params(),
        effective_layers: m.effective_layers(),
        vocab_size: m.vocab_size,
        seq_len: cfg.seq_len(),
        micro_batch: cfg.training.batch_size,
        grad_accum: cfg.training.grad_accum,
        tokens_per_step: cfg.tokens_per_step(),
        total_tokens: cfg.tokens_per_step() as u64 * cfg.training.max_steps,
        train_flops_per_token: m.train_flops_per_token(cfg.seq_len()),
        memory_states_gb: states / gb,
        memory_activations_gb: act / gb,
        memory_total_gb: (states + act) / gb,
    }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Plan {
    pub fn render(&self) -> String {
        format!(
            "architecture:       {}\n\
             parameters:         {} ({} non-embedding)\n\
             layers applied:     {}\n\
             vocab size:         {}\n\
             tokens per step:    {} (micro-batch {} x seq {} x accumulation {})\n\
             total tokens:       {}\n\
             train FLOPs/token:  {:.3e}\n\
             estimated memory:   {:.2} GB (weights+grads+optimizer state {:.2} GB, activations {:.2} GB)",
            self.architecture,
            thousands(self.params),
            thousands(self.non_embedding_params),
            self.effective_layers,
            self.vocab_size,
            thousands(self.tokens_per_step),
            self.micro_batch,
            self.seq_len,
            self.grad_accum,
            thousands(self.total_tokens as usize),
            self.train_flops_per_token,
            self.memory_total_gb,
            self.memory_states_gb,
            self.memory_activations_gb
        )
    }
}
