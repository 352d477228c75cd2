//! The Llama-style decoder (Touvron et al. 2023) and the small-model variants
//! built on it: MobileLLM (arXiv 2402.14905: deep-narrow, GQA, embedding
//! sharing, immediate block-wise weight sharing) and MobiLlama (arXiv
//! 2402.16840: one SwiGLU FFN shared by every block).
//! Reference: `transformers.models.llama.modeling_llama` (tensor names match it).

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::layers::{Attention, Embedding, KvCache, Linear, RmsNorm, Rope, SwiGluMlp};
use crate::ops::FusedOps;
use crate::{LanguageModel, ModelConfig, ModelError};

/// Pre-norm block: `x += attn(n1 x); x += mlp(n2 x)`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    pub post_attention_layernorm: RmsNorm<B>,
    /// `None` when the model shares one FFN across blocks (MobiLlama).
    pub mlp: Option<SwiGluMlp<B>>,
}

impl<B: FusedOps> Block<B> {
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

#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    pub embed_tokens: Embedding<B>,
    /// Stored blocks; each is applied `share_repeat` times in a row.
    pub layers: Vec<Block<B>>,
    pub shared_mlp: Option<SwiGluMlp<B>>,
    pub norm: RmsNorm<B>,
    /// `None` when the head shares the embedding table.
    pub lm_head: Option<Linear<B>>,
    pub share_repeat: usize,
    pub rope_theta: f64,
    pub head_dim: usize,
    pub max_seq_len: usize,
}

/// One KV cache slot per block application (a shared block applied twice has
/// two slots: its two applications see different inputs).
#[derive(Debug, Clone)]
pub struct DecoderCache<B: Backend> {
    pub slots: Vec<KvCache<B>>,
}

impl<B: Backend> DecoderCache<B> {
    pub fn len(&self) -> usize {
        self.slots.first().map_or(0, KvCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: Backend> Decoder<B> {
    /// Random init: normal(0, init_std) for matrices, ones for norms.
    pub fn new(cfg: &ModelConfig, device: &B::Device) -> Result<Self, ModelError> {
        cfg.validate()?;
        let (d, std) = (cfg.dim, cfg.init_std);
        let layers = (0..cfg.n_layers)
            .map(|_| Block {
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
            })
            .collect();
        Ok(Self {
            embed_tokens: Embedding::new(cfg.vocab_size, d, std, device),
            layers,
            shared_mlp: cfg
                .shared_ffn
                .then(|| SwiGluMlp::new(d, cfg.ffn_dim, std, device)),
            norm: RmsNorm::new(d, cfg.norm_eps, device),
            lm_head: (!cfg.tie_embeddings).then(|| Linear::new(d, cfg.vocab_size, std, device)),
            share_repeat: cfg.share_repeat,
            rope_theta: cfg.rope_theta,
            head_dim: cfg.head_dim(),
            max_seq_len: cfg.max_seq_len,
        })
    }

    /// Turns the fused kernels on or off in every layer (`[training] fused_ops`).
    pub fn with_fused(mut self, fused: bool) -> Self {
        for block in self.layers.iter_mut() {
            block.input_layernorm.fused = fused;
            block.post_attention_layernorm.fused = fused;
            block.self_attn.set_fused(fused);
            if let Some(m) = block.mlp.as_mut() {
                m.set_fused(fused);
            }
        }
        if let Some(m) = self.shared_mlp.as_mut() {
            m.set_fused(fused);
        }
        if let Some(head) = self.lm_head.as_mut() {
            head.fused = fused;
        }
        self.embed_tokens.fused = fused;
        self.norm.fused = fused;
        self
    }
}

impl<B: FusedOps> Decoder<B> {
    fn run(
        &self,
        tokens: Tensor<B, 2, Int>,
        mut cache: Option<&mut DecoderCache<B>>,
    ) -> Tensor<B, 3> {
        let [_, t] = tokens.dims();
        let offset = cache.as_ref().map_or(0, |c| c.len());
        let rope = Rope::new(self.head_dim, self.rope_theta, offset, t, &tokens.device());
        let mut x = self.embed_tokens.forward(tokens); // [B, T, dim]
        for (i, block) in self.layers.iter().enumerate() {
            for r in 0..self.share_repeat {
                let slot = cache
                    .as_deref_mut()
                    .map(|c| &mut c.slots[i * self.share_repeat + r]);
                x = block.forward(x, &rope, slot, self.shared_mlp.as_ref());
            }
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
        self.run(tokens, None)
    }

    fn new_cache(&self) -> DecoderCache<B> {
        DecoderCache {
            slots: vec![KvCache { kv: None }; self.layers.len() * self.share_repeat],
        }
    }

    fn forward_cached(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: &mut DecoderCache<B>,
    ) -> Tensor<B, 3> {
        self.run(tokens, Some(cache))
    }

    fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.dims()[0]
    }

    fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    fn tensor_name(path: &str) -> String {
        if path.starts_with("lm_head") {
            path.to_string()
        } else {
            format!("model.{path}")
        }
    }

    fn weight_decay(name: &str, rank: usize) -> bool {
        // Decay only matrices of projections: not norms, biases or embeddings.
        rank >= 2 && !name.contains("embed_tokens")
    }
}
