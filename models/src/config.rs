//! `[model]` section of a run config: the Llama-style decoder family
//! (Llama, MobileLLM, MobileLLM-LS, MobiLlama), Mamba-1, RWKV-7, and hybrid
//! stacks mixing their blocks; derived sizes as methods.

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Which architecture a `[model]` section describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Pre-norm Llama decoder (RMSNorm, RoPE, GQA, SwiGLU).
    #[default]
    Llama,
    /// Mamba-1 selective-SSM blocks (Hugging Face `MambaForCausalLM` names).
    Mamba,
    /// RWKV-7 "Goose" time-mix + channel-mix blocks (official `.pth` names:
    /// `emb`, `blocks.{i}.att/ffn`, `ln_out`, `head`), LayerNorms.
    Rwkv7,
}

impl Arch {
    /// The block every layer has unless `model.blocks` says otherwise.
    pub fn default_block(self) -> BlockKind {
        match self {
            Arch::Llama => BlockKind::Attention,
            Arch::Mamba => BlockKind::Mamba,
            Arch::Rwkv7 => BlockKind::Rwkv,
        }
    }
}

/// One layer's kind in a (possibly hybrid) stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// Llama block: `x += attn(n1 x); x += mlp(n2 x)`.
    Attention,
    /// Mamba-1 block: `x += mixer(norm x)`.
    Mamba,
    /// RWKV-7 block: `x += att(ln1 x); x += ffn(ln2 x)`.
    Rwkv,
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
    /// Attention heads (needed when the stack has attention blocks).
    #[serde(default)]
    pub n_heads: usize,
    /// Key/value heads (GQA); defaults to `n_heads` (full multi-head attention).
    #[serde(default)]
    pub n_kv_heads: Option<usize>,
    /// SwiGLU hidden width (attention blocks).
    #[serde(default)]
    pub ffn_dim: usize,
    /// Width of one attention head; absent: `dim / n_heads`. Set when the
    /// heads do not tile `dim` (a structurally pruned checkpoint keeps its
    /// heads' width, and so its rotary frequencies, while dropping heads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
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
    /// Kind of each layer for hybrid stacks, e.g. `["mamba", "mamba",
    /// "attention"]`: either `n_layers` entries or a pattern repeated to
    /// `n_layers`. Empty: every layer is the arch's own block.
    #[serde(default)]
    pub blocks: Vec<BlockKind>,
    /// Mamba: SSM state size N per channel.
    #[serde(default = "default_d_state")]
    pub d_state: usize,
    /// Mamba: inner width = expand * dim.
    #[serde(default = "default_expand")]
    pub expand: usize,
    /// Mamba: causal depthwise convolution width.
    #[serde(default = "default_d_conv")]
    pub d_conv: usize,
    /// Mamba: rank of the delta projection; absent: ceil(dim / 16).
    #[serde(default)]
    pub dt_rank: Option<usize>,
    /// RWKV-7: head size N (the WKV state per head is N x N).
    #[serde(default = "default_head_size")]
    pub head_size: usize,
    /// RWKV-7: channel-mix width; absent: 4 * dim.
    #[serde(default)]
    pub rwkv_ffn_dim: Option<usize>,
    /// RWKV-7 LoRA ranks of the decay (w), in-context rate (a), value
    /// residual (v) and gate (g); absent: train_temp's suggestion from dim
    /// (64 / 64 / 32 / 128 at dim 768).
    #[serde(default)]
    pub decay_lora: Option<usize>,
    #[serde(default)]
    pub aaa_lora: Option<usize>,
    #[serde(default)]
    pub mv_lora: Option<usize>,
    #[serde(default)]
    pub gate_lora: Option<usize>,
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
fn default_d_state() -> usize {
    16
}
fn default_expand() -> usize {
    2
}
fn default_d_conv() -> usize {
    4
}
fn default_head_size() -> usize {
    64
}

/// RWKV-7 LoRA ranks of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RwkvRanks {
    pub decay: usize,
    pub aaa: usize,
    pub mv: usize,
    pub gate: usize,
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
        self.head_dim
            .unwrap_or_else(|| self.dim.checked_div(self.n_heads).unwrap_or(0))
    }

    /// Mamba inner width (`d_inner`).
    pub fn d_inner(&self) -> usize {
        self.expand * self.dim
    }

    /// Mamba delta rank R (`"auto"` in Hugging Face: ceil(dim / 16)).
    pub fn resolved_dt_rank(&self) -> usize {
        self.dt_rank.unwrap_or(self.dim.div_ceil(16))
    }

    /// RWKV-7 heads (`dim / head_size`).
    pub fn rwkv_heads(&self) -> usize {
        self.dim.checked_div(self.head_size).unwrap_or(0)
    }

    /// RWKV-7 channel-mix width.
    pub fn resolved_rwkv_ffn_dim(&self) -> usize {
        self.rwkv_ffn_dim.unwrap_or(4 * self.dim)
    }

    /// RWKV-7 LoRA ranks: train_temp's `max(32, round(k sqrt(C) / 32) * 32)`
    /// with k = 2.5 (decay, a), 1.7 (value residual), 5 (gate), Python's
    /// half-to-even rounding, unless set.
    pub fn rwkv_ranks(&self) -> RwkvRanks {
        let suggest = |k: f64| {
            let r = (k * (self.dim as f64).sqrt() / 32.0).round_ties_even() as usize * 32;
            r.max(32)
        };
        RwkvRanks {
            decay: self.decay_lora.unwrap_or_else(|| suggest(2.5)),
            aaa: self.aaa_lora.unwrap_or_else(|| suggest(2.5)),
            mv: self.mv_lora.unwrap_or_else(|| suggest(1.7)),
            gate: self.gate_lora.unwrap_or_else(|| suggest(5.0)),
        }
    }

    /// Index of the first RWKV layer: it makes `v_first` and has no value
    /// residual of its own (nor `v0/v1/v2`).
    pub fn first_rwkv_layer(&self) -> Option<usize> {
        self.block_kinds()
            .iter()
            .position(|&k| k == BlockKind::Rwkv)
    }

    /// Kind of every stored layer (`blocks` expanded to `n_layers`).
    pub fn block_kinds(&self) -> Vec<BlockKind> {
        if self.blocks.is_empty() {
            return vec![self.arch.default_block(); self.n_layers];
        }
        (0..self.n_layers)
            .map(|i| self.blocks[i % self.blocks.len()])
            .collect()
    }

    pub fn has_block(&self, kind: BlockKind) -> bool {
        self.block_kinds().contains(&kind)
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
            ("max_seq_len", self.max_seq_len),
        ] {
            if v == 0 {
                return Err(invalid(field, v, "must be at least 1"));
            }
        }
        if !self.blocks.is_empty() && !self.n_layers.is_multiple_of(self.blocks.len()) {
            return Err(invalid(
                "blocks",
                format!("{:?} ({} entries)", self.blocks, self.blocks.len()),
                format!(
                    "must have n_layers = {} entries or a pattern whose length divides it",
                    self.n_layers
                ),
            ));
        }
        if self.has_block(BlockKind::Attention) {
            self.validate_attention()?;
        } else if self.shared_ffn {
            return Err(invalid(
                "shared_ffn",
                true,
                "needs attention blocks (the FFN lives in them): remove it or add \"attention\" to model.blocks",
            ));
        }
        if self.has_block(BlockKind::Mamba) {
            self.validate_mamba()?;
        }
        if self.has_block(BlockKind::Rwkv) {
            self.validate_rwkv()?;
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

    /// Checks the fields attention blocks use.
    fn validate_attention(&self) -> Result<(), ModelError> {
        for (field, v) in [("n_heads", self.n_heads), ("ffn_dim", self.ffn_dim)] {
            if v == 0 {
                return Err(invalid(
                    field,
                    v,
                    "must be at least 1 (attention blocks need it)",
                ));
            }
        }
        let kv = self.kv_heads();
        if kv == 0 {
            return Err(invalid("n_kv_heads", kv, "must be at least 1"));
        }
        if !self.n_heads.is_multiple_of(kv) {
            return Err(invalid(
                "n_heads",
                self.n_heads,
                format!("is not divisible by model.n_kv_heads = {kv}: pick n_kv_heads among the divisors of n_heads"),
            ));
        }
        if self.head_dim == Some(0) {
            return Err(invalid(
                "head_dim",
                0,
                "must be at least 1 (leave it out for dim / n_heads)",
            ));
        }
        if self.head_dim.is_none() && !self.dim.is_multiple_of(self.n_heads) {
            return Err(invalid(
                "dim",
                self.dim,
                format!(
                    "is not divisible by model.n_heads = {}: dim must be n_heads * head_dim",
                    self.n_heads
                ),
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(invalid(
                "dim",
                self.dim,
                format!(
                    "gives an odd head_dim = {}: rotary embeddings need an even head_dim",
                    self.head_dim()
                ),
            ));
        }
        Ok(())
    }

    /// Checks the fields Mamba blocks use.
    fn validate_mamba(&self) -> Result<(), ModelError> {
        if !(1..=256).contains(&self.d_state) {
            return Err(invalid(
                "d_state",
                self.d_state,
                "must be between 1 and 256 (Mamba-1 uses 16)",
            ));
        }
        if !(1..=8).contains(&self.expand) {
            return Err(invalid(
                "expand",
                self.expand,
                "must be between 1 and 8 (Mamba uses 2)",
            ));
        }
        if !(2..=16).contains(&self.d_conv) {
            return Err(invalid(
                "d_conv",
                self.d_conv,
                "must be between 2 and 16 (Mamba uses 4)",
            ));
        }
        if self.resolved_dt_rank() == 0 {
            return Err(invalid(
                "dt_rank",
                0,
                "must be at least 1 (leave it out for ceil(dim / 16))",
            ));
        }
        Ok(())
    }

    /// Checks the fields RWKV-7 blocks use.
    fn validate_rwkv(&self) -> Result<(), ModelError> {
        if !(1..=256).contains(&self.head_size) {
            return Err(invalid(
                "head_size",
                self.head_size,
                "must be between 1 and 256 (RWKV-7 uses 64)",
            ));
        }
        if !self.dim.is_multiple_of(self.head_size) {
            return Err(invalid(
                "dim",
                self.dim,
                format!(
                    "is not divisible by model.head_size = {}: RWKV-7 splits dim into heads of head_size",
                    self.head_size
                ),
            ));
        }
        if self.resolved_rwkv_ffn_dim() == 0 {
            return Err(invalid(
                "rwkv_ffn_dim",
                0,
                "must be at least 1 (leave it out for 4 * dim)",
            ));
        }
        for (field, v) in [
            ("decay_lora", self.decay_lora),
            ("aaa_lora", self.aaa_lora),
            ("mv_lora", self.mv_lora),
            ("gate_lora", self.gate_lora),
        ] {
            if v == Some(0) {
                return Err(invalid(
                    field,
                    0,
                    "must be at least 1 (leave it out for the suggested rank)",
                ));
            }
        }
        if self.first_rwkv_layer().is_some_and(|i| i > 0) && self.arch == Arch::Rwkv7 {
            return Err(invalid(
                "blocks",
                format!("{:?}", self.blocks),
                "must start with \"rwkv\" when arch = \"rwkv7\" (block 0 normalises the embedding with ln0)",
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
        let attn_block = attn + 2 * d + if self.shared_ffn { 0 } else { mlp };
        let blocks: usize = self
            .block_kinds()
            .iter()
            .map(|k| match k {
                BlockKind::Attention => attn_block,
                BlockKind::Mamba => self.mamba_block_params(),
                BlockKind::Rwkv => self.rwkv_block_params(false),
            })
            .sum();
        // The first RWKV block has no value-residual LoRA but has ln0 when
        // it is layer 0.
        let first_rwkv = match self.first_rwkv_layer() {
            Some(i) => {
                self.rwkv_block_params(true) + if i == 0 { 2 * d } else { 0 }
                    - self.rwkv_block_params(false)
            }
            None => 0,
        };
        let shared = if self.shared_ffn { mlp } else { 0 };
        let head = if self.tie_embeddings { 0 } else { v * d };
        v * d + blocks + first_rwkv + shared + self.final_norm_params() + head
    }

    /// RWKV-7 stacks end with a LayerNorm (weight and bias), others with RMSNorm.
    pub fn final_norm_params(&self) -> usize {
        if self.arch == Arch::Rwkv7 {
            2 * self.dim
        } else {
            self.dim
        }
    }

    /// ln1 + ln2 + time mix (6 mixing vectors, w0/a0/v0, LoRAs, k_k, k_a,
    /// r_k, four C x C projections, ln_x) + channel mix (x_k, key, value).
    fn rwkv_block_params(&self, first: bool) -> usize {
        let (c, f) = (self.dim, self.resolved_rwkv_ffn_dim());
        let r = self.rwkv_ranks();
        let value_residual = if first { 0 } else { c + 2 * c * r.mv };
        let att = 6 * c
            + c
            + 2 * c * r.decay
            + c
            + 2 * c * r.aaa
            + value_residual
            + 2 * c * r.gate
            + 3 * c
            + 4 * c * c
            + 2 * c;
        4 * c + att + c + 2 * c * f
    }

    /// Norm + in_proj + conv (with bias) + x_proj + dt_proj (with bias) +
    /// A_log + D + out_proj.
    fn mamba_block_params(&self) -> usize {
        let (d, di, n, r) = (
            self.dim,
            self.d_inner(),
            self.d_state,
            self.resolved_dt_rank(),
        );
        d + d * 2 * di
            + di * self.d_conv
            + di
            + di * (r + 2 * n)
            + r * di
            + di
            + di * n
            + di
            + di * d
    }

    /// Parameters outside the embedding table (the usual "non-embedding" count).
    pub fn num_non_embedding_params(&self) -> usize {
        self.num_params() - self.vocab_size * self.dim
    }

    /// Training FLOPs per token: 6 per weight use in a matmul (forward 2 +
    /// backward 4, shared blocks counted per application, the head once) plus
    /// causal attention scores and values, 6 * L * d_attn * T (half of PaLM's
    /// 12 L d T: only the lower triangle is needed), as
    /// ../shared/reference/torch_llama_bench.py counts them. A Mamba block adds
    /// its selective scan, ~27 FLOPs per (channel, state) element (forward 9:
    /// exp, two multiply-adds and the output dot; backward 18); an RWKV-7
    /// block its WKV recurrence, ~28 FLOPs per element of the N x N state.
    pub fn train_flops_per_token(&self, seq_len: usize) -> f64 {
        let (d, f, v) = (self.dim as f64, self.ffn_dim as f64, self.vocab_size as f64);
        let hd = self.head_dim() as f64;
        let (h, kv) = (self.n_heads as f64, self.kv_heads() as f64);
        let attn_weights = d * h * hd * 2.0 + d * kv * hd * 2.0 + 3.0 * d * f;
        let (di, n, r) = (
            self.d_inner() as f64,
            self.d_state as f64,
            self.resolved_dt_rank() as f64,
        );
        let mamba_weights = d * 2.0 * di + di * (r + 2.0 * n) + r * di + di * d;
        let rk = self.rwkv_ranks();
        let rwkv_weights = 4.0 * d * d
            + 2.0 * d * self.resolved_rwkv_ffn_dim() as f64
            + 2.0 * d * (rk.decay + rk.aaa + rk.mv + rk.gate) as f64;
        let mut flops = 6.0 * v * d; // the head (tied or not) is a matmul
        for kind in self.block_kinds() {
            let per_application = match kind {
                BlockKind::Attention => 6.0 * attn_weights + 6.0 * h * hd * seq_len as f64,
                BlockKind::Mamba => 6.0 * mamba_weights + 27.0 * di * n,
                // WKV per head and token: ~8 N^2 forward, ~20 N^2 backward.
                BlockKind::Rwkv => 6.0 * rwkv_weights + 28.0 * d * self.head_size as f64,
            };
            flops += per_application * self.share_repeat as f64;
        }
        flops
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A Llama config of the MobileLLM family (vocab 32000, seq 2048).
    pub(crate) fn mobilellm(
        dim: usize,
        layers: usize,
        heads: usize,
        kv: usize,
        ffn: usize,
    ) -> ModelConfig {
        ModelConfig {
            arch: Arch::Llama,
            vocab_size: 32000,
            dim,
            n_layers: layers,
            n_heads: heads,
            n_kv_heads: Some(kv),
            ffn_dim: ffn,
            head_dim: None,
            max_seq_len: 2048,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
            tie_embeddings: true,
            share_repeat: 1,
            shared_ffn: false,
            init_std: 0.02,
            blocks: vec![],
            d_state: 16,
            expand: 2,
            d_conv: 4,
            dt_rank: None,
            head_size: 64,
            rwkv_ffn_dim: None,
            decay_lora: None,
            aaa_lora: None,
            mv_lora: None,
            gate_lora: None,
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

    #[test]
    fn mamba_130m_parameter_count() {
        let cfg = ModelConfig {
            arch: Arch::Mamba,
            vocab_size: 50280,
            n_heads: 0,
            ffn_dim: 0,
            ..mobilellm(768, 24, 1, 1, 1)
        };
        cfg.validate().expect("valid");
        // state-spaces/mamba-130m-hf: 129,135,360 parameters (tied head).
        assert_eq!(cfg.num_params(), 129_135_360);
    }

    #[test]
    fn hybrid_pattern_must_divide_layers() {
        let cfg = ModelConfig {
            blocks: vec![BlockKind::Mamba, BlockKind::Mamba, BlockKind::Attention],
            ..mobilellm(64, 4, 4, 4, 128)
        };
        let msg = cfg.validate().expect_err("5 layers").to_string();
        assert!(msg.contains("model.blocks"), "{msg}");
        let ok = ModelConfig { n_layers: 6, ..cfg };
        ok.validate()
            .expect("6 layers take the 3-block pattern twice");
        assert_eq!(ok.block_kinds()[5], BlockKind::Attention);
    }
}
