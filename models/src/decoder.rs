//! The Llama-style decoder (Touvron et al. 2023) and the small-model variants
//! built on it: MobileLLM (arXiv 2402.14905: deep-narrow, GQA, embedding
//! sharing, immediate block-wise weight sharing) and MobiLlama (arXiv
//! 2402.16840: one SwiGLU FFN shared by every block).
//! Reference: `transformers.models.llama.modeling_llama` (tensor names match it).
//!
//! The same model type carries Mamba (`arch = "mamba"`, see `mamba.rs`),
//! RWKV-7 (`arch = "rwkv7"`, see `rwkv7.rs`) and hybrid stacks: its layers
//! are an enum of block kinds, so training, resume, eval, generation and
//! bench use one type for every architecture.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::config::{Arch, BlockKind};
use crate::layers::{Attention, Embedding, KvCache, LayerNorm, Linear, RmsNorm, Rope, SwiGluMlp};
use crate::mamba::{hf_param_name, MambaBlock, MambaState};
use crate::ops::FusedOps;
use crate::rwkv7::{orthogonal_linear, rwkv_param_name, RwkvBlock, RwkvState};
use crate::stack::StackSlot;
use crate::{LanguageModel, ModelConfig, ModelError};

/// One layer of the stack. (burn's enum modules add the variant name to the
/// module path; `naming.rs` leaves it out of checkpoint names.)
// The variants differ in size (an RWKV block holds 16 `Linear`s), but a model
// holds a few blocks in one `Vec`, and burn has no `Module` for `Box`.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Block<B: Backend> {
    Attention(AttentionBlock<B>),
    Mamba(MambaBlock<B>),
    Rwkv(RwkvBlock<B>),
}

/// Generation state of one block application.
#[derive(Debug, Clone)]
pub enum BlockCache<B: Backend> {
    Kv(KvCache<B>),
    Mamba(MambaState<B>),
    Rwkv(RwkvState<B>),
}

/// The norm before the head: RMSNorm, or LayerNorm in RWKV-7 stacks.
#[derive(Module, Debug)]
pub enum FinalNorm<B: Backend> {
    Rms(RmsNorm<B>),
    Layer(LayerNorm<B>),
}

impl<B: Backend> FinalNorm<B> {
    pub fn weight(&self) -> Tensor<B, 1> {
        match self {
            FinalNorm::Rms(n) => n.weight.val(),
            FinalNorm::Layer(n) => n.weight.val(),
        }
    }
}

impl<B: FusedOps> FinalNorm<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            FinalNorm::Rms(n) => n.forward(x),
            FinalNorm::Layer(n) => n.forward(x),
        }
    }
}

/// Pre-norm block: `x += attn(n1 x); x += mlp(n2 x)`.
#[derive(Module, Debug)]
pub struct AttentionBlock<B: Backend> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    pub post_attention_layernorm: RmsNorm<B>,
    /// `None` when the model shares one FFN across blocks (MobiLlama).
    pub mlp: Option<SwiGluMlp<B>>,
}

impl<B: FusedOps> AttentionBlock<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        cache: Option<&mut KvCache<B>>,
        shared_mlp: Option<&SwiGluMlp<B>>,
    ) -> Tensor<B, 3> {
        let x = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), rope, cache); // [B, T, dim]
        let mlp = match (&self.mlp, shared_mlp) {
            (Some(own), _) => own,
            (None, Some(shared)) => shared,
            // Construction guarantees one of the two exists.
            (None, None) => return x,
        };
        x.clone() + mlp.forward(self.post_attention_layernorm.forward(x)) // [B, T, dim]
    }
}

impl<B: FusedOps> Block<B> {
    /// One application of a block in a training forward (no cache), on
    /// its own: what ZeRO-3's per-block gather runs once per block. An
    /// attention block needs its own FFN and the rotary tables; a Mamba
    /// block needs nothing else. None for RWKV-7 (its value residual runs
    /// through the stack) and for a block the stack must help.
    pub fn forward_alone(&self, x: Tensor<B, 3>, rope: Option<&Rope<B>>) -> Option<Tensor<B, 3>> {
        match (self, rope) {
            (Block::Attention(b), Some(rope)) if b.mlp.is_some() => {
                Some(b.forward(x, rope, None, None)) // [B, T, dim]
            }
            (Block::Mamba(b), _) => Some(b.forward(x, None)), // [B, T, dim]
            _ => None,
        }
    }
}

impl<B: Backend> Block<B> {
    /// Whether [`Block::forward_alone`] runs this block.
    pub fn runs_alone(&self) -> bool {
        match self {
            Block::Attention(b) => b.mlp.is_some(),
            Block::Mamba(_) => true,
            Block::Rwkv(_) => false,
        }
    }
}

#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    pub embed_tokens: Embedding<B>,
    /// Stored blocks; each is applied `share_repeat` times in a row.
    pub layers: Vec<Block<B>>,
    pub shared_mlp: Option<SwiGluMlp<B>>,
    pub norm: FinalNorm<B>,
    /// `None` when the head shares the embedding table.
    pub lm_head: Option<Linear<B>>,
    pub share_repeat: usize,
    pub rope_theta: f64,
    /// 0 when the stack has no attention blocks.
    pub head_dim: usize,
    pub max_seq_len: usize,
    /// Checkpoint names follow Hugging Face Mamba (`backbone.*`) instead of
    /// Llama (`model.*`).
    pub mamba_names: bool,
    /// Checkpoint names follow the official RWKV-7 `.pth` (`emb`, `blocks.*`,
    /// `ln_out`, `head`).
    pub rwkv_names: bool,
    /// Set by the trainer (ZeRO-3's per-block gather) to run the embedding
    /// and blocks of a training forward; empty otherwise.
    pub stack_runner: StackSlot,
}

/// One cache slot per block application (a shared block applied twice has
/// two slots: its two applications see different inputs). Attention slots
/// grow with the sequence; Mamba slots are a fixed-size recurrent state.
#[derive(Debug, Clone)]
pub struct DecoderCache<B: Backend> {
    pub slots: Vec<BlockCache<B>>,
    /// Tokens seen so far.
    pub pos: usize,
}

impl<B: Backend> DecoderCache<B> {
    pub fn len(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: Backend> Decoder<B> {
    /// Random init: normal(0, init_std) for attention matrices and the
    /// embedding, ones for norms, mamba_ssm's init for Mamba blocks,
    /// train_temp's for RWKV-7 (with, when `arch = "rwkv7"`, its embedding
    /// `U(+-1e-4)` and orthogonal head of gain `0.5 sqrt(max(V / C, 1))`).
    pub fn new(cfg: &ModelConfig, device: &B::Device) -> Result<Self, ModelError> {
        cfg.validate()?;
        let (d, std) = (cfg.dim, cfg.init_std);
        let first_rwkv = cfg.first_rwkv_layer();
        let rwkv = cfg.arch == Arch::Rwkv7;
        let layers = cfg
            .block_kinds()
            .into_iter()
            .enumerate()
            .map(|(i, kind)| match kind {
                BlockKind::Attention => Block::Attention(AttentionBlock {
                    input_layernorm: RmsNorm::new(d, cfg.norm_eps, device),
                    self_attn: Attention::new(
                        d,
                        cfg.n_heads,
                        cfg.kv_heads(),
                        cfg.head_dim(),
                        std,
                        device,
                    ),
                    post_attention_layernorm: RmsNorm::new(d, cfg.norm_eps, device),
                    mlp: (!cfg.shared_ffn).then(|| SwiGluMlp::new(d, cfg.ffn_dim, std, device)),
                }),
                BlockKind::Mamba => Block::Mamba(MambaBlock::new(cfg, device)),
                BlockKind::Rwkv => {
                    Block::Rwkv(RwkvBlock::new(cfg, i, Some(i) == first_rwkv, device))
                }
            })
            .collect();
        let mut embed_tokens = Embedding::new(cfg.vocab_size, d, std, device);
        let (norm, lm_head) = if rwkv {
            embed_tokens.weight = burn::module::Param::from_tensor(Tensor::random(
                [cfg.vocab_size, d],
                burn::tensor::Distribution::Uniform(-1e-4, 1e-4),
                device,
            ));
            let ratio = (cfg.vocab_size as f64 / d as f64).max(1.0);
            (
                FinalNorm::Layer(LayerNorm::new(d, cfg.norm_eps, device)),
                (!cfg.tie_embeddings)
                    .then(|| orthogonal_linear(d, cfg.vocab_size, 0.5 * ratio.sqrt(), device)),
            )
        } else {
            (
                FinalNorm::Rms(RmsNorm::new(d, cfg.norm_eps, device)),
                (!cfg.tie_embeddings).then(|| Linear::new(d, cfg.vocab_size, std, device)),
            )
        };
        Ok(Self {
            embed_tokens,
            layers,
            shared_mlp: cfg
                .shared_ffn
                .then(|| SwiGluMlp::new(d, cfg.ffn_dim, std, device)),
            norm,
            lm_head,
            share_repeat: cfg.share_repeat,
            rope_theta: cfg.rope_theta,
            head_dim: if cfg.has_block(BlockKind::Attention) {
                cfg.head_dim()
            } else {
                0
            },
            max_seq_len: cfg.max_seq_len,
            mamba_names: cfg.arch == Arch::Mamba,
            rwkv_names: rwkv,
            stack_runner: StackSlot::default(),
        })
    }

    /// Turns the fused kernels on or off in every layer (`[training] fused_ops`).
    pub fn with_fused(mut self, fused: bool) -> Self {
        for block in self.layers.iter_mut() {
            match block {
                Block::Attention(block) => {
                    block.input_layernorm.fused = fused;
                    block.post_attention_layernorm.fused = fused;
                    block.self_attn.set_fused(fused);
                    if let Some(m) = block.mlp.as_mut() {
                        m.set_fused(fused);
                    }
                }
                Block::Mamba(block) => block.set_fused(fused),
                Block::Rwkv(block) => block.set_fused(fused),
            }
        }
        if let Some(m) = self.shared_mlp.as_mut() {
            m.set_fused(fused);
        }
        if let Some(head) = self.lm_head.as_mut() {
            head.fused = fused;
        }
        self.embed_tokens.fused = fused;
        if let FinalNorm::Rms(norm) = &mut self.norm {
            norm.fused = fused;
        }
        self
    }
}

impl<B: FusedOps> Decoder<B> {
    /// The residual stream entering each stored block and leaving the last
    /// one (`n_layers + 1` tensors `[B, T, dim]`; a block shared
    /// `share_repeat` times counts once): what structured pruning's block
    /// importance compares.
    pub fn block_states(&self, tokens: Tensor<B, 2, Int>) -> Vec<Tensor<B, 3>> {
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        drop(self.run(tokens, None, Some(&mut states))); // [B, T, vocab]
        states
    }

    fn run(
        &self,
        tokens: Tensor<B, 2, Int>,
        mut cache: Option<&mut DecoderCache<B>>,
        mut states: Option<&mut Vec<Tensor<B, 3>>>,
    ) -> Tensor<B, 3> {
        let [_, t] = tokens.dims();
        let offset = cache.as_ref().map_or(0, |c| c.len());
        // Rotary tables only when some block attends.
        let rope = (self.head_dim > 0)
            .then(|| Rope::new(self.head_dim, self.rope_theta, offset, t, &tokens.device()));
        let runner = match (&cache, &states) {
            (None, None) => self.stack_runner.get::<B>(),
            _ => None,
        };
        let mut x = match runner {
            Some(r) => r.run(tokens, rope.as_ref()),   // [B, T, dim]
            None => self.embed_tokens.forward(tokens), // [B, T, dim]
        };
        // RWKV-7's value residual: the first RWKV block's v, read by the others.
        let mut v_first = None;
        // A runner has applied the blocks itself.
        let stored = if runner.is_some() {
            &[][..]
        } else {
            &self.layers[..]
        };
        for (i, block) in stored.iter().enumerate() {
            if let Some(s) = states.as_deref_mut() {
                s.push(x.clone());
            }
            for r in 0..self.share_repeat {
                let slot = cache
                    .as_deref_mut()
                    .map(|c| &mut c.slots[i * self.share_repeat + r]);
                x = match (block, &rope) {
                    (Block::Attention(block), Some(rope)) => {
                        let kv = match slot {
                            Some(BlockCache::Kv(kv)) => Some(kv),
                            _ => None,
                        };
                        block.forward(x, rope, kv, self.shared_mlp.as_ref())
                    }
                    // head_dim > 0 whenever an attention block exists.
                    (Block::Attention(_), None) => x,
                    (Block::Mamba(block), _) => {
                        let state = match slot {
                            Some(BlockCache::Mamba(s)) => Some(s),
                            _ => None,
                        };
                        block.forward(x, state)
                    }
                    (Block::Rwkv(block), _) => {
                        let state = match slot {
                            Some(BlockCache::Rwkv(s)) => Some(s),
                            _ => None,
                        };
                        block.forward(x, &mut v_first, state)
                    }
                };
            }
        }
        if let Some(s) = states {
            s.push(x.clone());
        }
        if let Some(c) = cache {
            c.pos += t;
        }
        let x = self.norm.forward(x); // [B, T, dim]
        match &self.lm_head {
            Some(head) => head.forward(x),
            None => self.embed_tokens.attend(x),
        } // [B, T, vocab]
    }
}

impl<B: FusedOps> LanguageModel<B> for Decoder<B> {
    type Cache = DecoderCache<B>;

    fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.run(tokens, None, None)
    }

    fn new_cache(&self) -> DecoderCache<B> {
        let mut slots = Vec::with_capacity(self.layers.len() * self.share_repeat);
        for block in &self.layers {
            for _ in 0..self.share_repeat {
                slots.push(match block {
                    Block::Attention(_) => BlockCache::Kv(KvCache { kv: None }),
                    Block::Mamba(_) => BlockCache::Mamba(MambaState::default()),
                    Block::Rwkv(_) => BlockCache::Rwkv(RwkvState::default()),
                });
            }
        }
        DecoderCache { slots, pos: 0 }
    }

    fn forward_cached(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: &mut DecoderCache<B>,
    ) -> Tensor<B, 3> {
        self.run(tokens, Some(cache), None)
    }

    fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.dims()[0]
    }

    fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    fn tensor_name(&self, path: &str) -> String {
        let path = rwkv_param_name(&hf_param_name(path));
        let path = path.as_str();
        if self.rwkv_names {
            // The official RWKV-7 .pth: emb, blocks.{i}.*, ln_out, head.
            return match path {
                "embed_tokens.weight" => "emb.weight".to_string(),
                "lm_head.weight" => "head.weight".to_string(),
                _ => match (path.strip_prefix("layers."), path.strip_prefix("norm.")) {
                    (Some(rest), _) => format!("blocks.{rest}"),
                    (None, Some(rest)) => format!("ln_out.{rest}"),
                    _ => path.to_string(),
                },
            };
        }
        if path.starts_with("lm_head") {
            return path.to_string();
        }
        if !self.mamba_names {
            return format!("model.{path}");
        }
        // Hugging Face MambaForCausalLM: backbone.{embeddings, layers, norm_f}.
        match path {
            "embed_tokens.weight" => "backbone.embeddings.weight".to_string(),
            "norm.weight" => "backbone.norm_f.weight".to_string(),
            _ => format!("backbone.{path}"),
        }
    }
}
