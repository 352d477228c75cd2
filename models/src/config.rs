//! `[model]` section of a run config: the Llama-style decoder family
//! (Llama, MobileLLM, MobileLLM-LS, MobiLlama) and its derived sizes.

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Which architecture a `[model]` section describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Pre-norm Llama decoder (RMSNorm, RoPE, GQA, SwiGLU).
    #[default]
    Llama,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default)]
    pub arch: Arch,
    /// Vocabulary size; 0 means "take it from the tokenizer".
    #[serde(default)]
    pub vocab_size: usize,
    pub dim: usize,
    /// Stored blocks. With `share_repeat = 2` the effective depth is twice this.
    pub n_layers: usize,
    pub n_heads: usize,
    /// Key/value heads (GQA); defaults to `n_heads` (full multi-head attention).
    #[serde(default)]
    pub n_kv_heads: Option<usize>,
    /// SwiGLU hidden width.
    pub ffn_dim: usize,
    pub max_seq_len: usize,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    /// Share the embedding with the output head (MobileLLM): no `lm_head`.
    #[serde(default = "default_true")]
    pub tie_embeddings: bool,
    /// Immediate block-wise weight sharing (MobileLLM-LS): each stored block
    /// is applied this many times back to back.
    #[serde(default = "default_one")]
    pub share_repeat: usize,
    /// One SwiGLU FFN shared by every block (MobiLlama).
    #[serde(default)]
    pub shared_ffn: bool,
    #[serde(default = "default_init_std")]
    pub init_std: f64,
}

fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_one() -> usize {
    1
}
fn default_init_std() -> f64 {
    0.02
}

fn invalid(field: &str, value: impl ToString, problem: impl Into<String>) -> ModelError {
    ModelError::InvalidConfig {
        field: format!("model.{field}"),
        value: value.to_string(),
        problem: problem.into(),
    }
}

impl ModelConfig {
    pub fn kv_heads(&self) -> usize {
        self.n_kv_heads.unwrap_or(self.n_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    /// Blocks applied in one forward pass.
    pub fn effective_layers(&self) -> usize {
        self.n_layers * self.share_repeat
    }

    /// Checks every field; the error names the field path and the fix.
    pub fn validate(&self) -> Result<(), ModelError> {
        for (field, v) in [
            ("dim", self.dim),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("ffn_dim", self.ffn_dim),
            ("max_seq_len", self.max_seq_len),
        ] {
            if v == 0 {
                return Err(invalid(field, v, "must be at least 1"));
            }
        }
        let kv = self.kv_heads();
        if kv == 0 {
            return Err(invalid("n_kv_heads", kv, "must be at least 1"));
        }
        if self.n_heads % kv != 0 {
            return Err(invalid(
                "n_heads",
                self.n_heads,
                format!("is not divisible by model.n_kv_heads = {kv}: pick n_kv_heads among the divisors of n_heads"),
            ));
        }
        if self.dim % self.n_heads != 0 {
            return Err(invalid(
                "dim",
                self.dim,
                format!(
                    "is not divisible by model.n_heads = {}: dim must be n_heads * head_dim",
                    self.n_heads
                ),
            ));
        }
        if self.head_dim() % 2 != 0 {
            return Err(invalid(
                "dim",
                self.dim,
                format!(
                    "gives an odd head_dim = {}: rotary embeddings need an even head_dim",
                    self.head_dim()
                ),
            ));
        }
        if !(1..=8).contains(&self.share_repeat) {
            return Err(invalid(
                "share_repeat",
                self.share_repeat,
                "must be between 1 and 8 (2 is MobileLLM-LS)",
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(invalid(
                "rope_theta",
                self.rope_theta,
                "must be a finite number above 1 (Llama uses 10000)",
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return Err(invalid(
                "norm_eps",
                self.norm_eps,
                "must be in (0, 1) (Llama uses 1e-5)",
            ));
        }
        if !(self.init_std.is_finite() && self.init_std > 0.0 && self.init_std < 1.0) {
            return Err(invalid(
                "init_std",
                self.init_std,
                "must be in (0, 1) (Llama uses 0.02)",
            ));
        }
        if self.vocab_size == 0 {
            return Err(invalid(
                "vocab_size",
                0,
                "is not resolved: set model.vocab_size or let the tokenizer fill it in",
            ));
        }
        Ok(())
    }

    /// Exact parameter count (each shared tensor counted once).
    pub fn num_params(&self) -> usize {
        let (d, f, v) = (self.dim, self.ffn_dim, self.vocab_size);
        let hd = self.head_dim();
        let attn = d * self.n_heads * hd * 2 + d * self.kv_heads() * hd * 2;
        let mlp = 3 * d * f;
        let norms = 2 * d;
        let per_block = attn + norms + if self.shared_ffn { 0 } else { mlp };
        let shared = if self.shared_ffn { mlp } else { 0 };
        let head = if self.tie_embeddings { 0 } else { v * d };
        v * d + self.n_layers * per_block + shared + d + head
    }

    /// Parameters outside the embedding table (the usual "non-embedding" count).
    pub fn num_non_embedding_params(&self) -> usize {
        self.num_params() - self.vocab_size * self.dim
    }

    /// Training FLOPs per token: 6 per weight use in a matmul (forward 2 +
    /// backward 4, shared blocks counted per application, the head once) plus
    /// causal attention scores and values, 6 * L * d_attn * T (half of PaLM's
    /// 12 L d T: only the lower triangle is needed), as
    /// ../shared/reference/torch_llama_bench.py counts them.
    pub fn train_flops_per_token(&self, seq_len: usize) -> f64 {
        let (d, f, v) = (self.dim as f64, self.ffn_dim as f64, self.vocab_size as f64);
        let hd = self.head_dim() as f64;
        let (h, kv) = (self.n_heads as f64, self.kv_heads() as f64);
        let per_layer = d * h * hd * 2.0 + d * kv * hd * 2.0 + 3.0 * d * f;
        let layers = self.effective_layers() as f64;
        let matmul_weights = layers * per_layer + v * d; // the head (tied or not) is a matmul
        6.0 * matmul_weights + 6.0 * layers * h * hd * seq_len as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mobilellm(dim: usize, layers: usize, heads: usize, kv: usize, ffn: usize) -> ModelConfig {
        ModelConfig {
            arch: Arch::Llama,
            vocab_size: 32000,
            dim,
            n_layers: layers,
            n_heads: heads,
            n_kv_heads: Some(kv),
            ffn_dim: ffn,
            max_seq_len: 2048,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
            tie_embeddings: true,
            share_repeat: 1,
            shared_ffn: false,
            init_std: 0.02,
        }
    }

    #[test]
    fn published_parameter_counts() {
        assert_eq!(mobilellm(576, 30, 9, 3, 1536).num_params(), 124_635_456);
        let ls = ModelConfig {
            share_repeat: 2,
            ..mobilellm(576, 30, 9, 3, 1536)
        };
        assert_eq!(ls.num_params(), 124_635_456);
        assert_eq!(mobilellm(960, 32, 15, 5, 2560).num_params(), 345_355_200);
        let mobillama = ModelConfig {
            tie_embeddings: false,
            shared_ffn: true,
            ..mobilellm(2048, 22, 32, 32, 5632)
        };
        assert_eq!(mobillama.num_params(), 534_865_920);
    }

    #[test]
    fn gqa_divisibility_error_names_both_fields() {
        let cfg = ModelConfig {
            n_heads: 9,
            n_kv_heads: Some(4),
            ..mobilellm(576, 2, 9, 4, 64)
        };
        let msg = cfg.validate().unwrap_err().to_string();
        assert!(
            msg.contains("model.n_heads = 9 is not divisible by model.n_kv_heads = 4"),
            "{msg}"
        );
    }
}
