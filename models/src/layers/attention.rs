//! Causal multi-head attention with grouped-query heads (GQA) and rotary
//! embeddings; one [`KvCache`] slot per application during generation.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor};

use super::{Linear, Rope};
use crate::ops::{causal_attention, FusedOps};

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Use the fused causal-attention kernel for full sequences; false = composed ops.
    pub fused: bool,
}

/// Keys and values seen so far, `[B, kv_heads, T_past, head_dim]` each.
#[derive(Debug, Clone, Default)]
pub struct KvCache<B: Backend> {
    pub kv: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
}

impl<B: Backend> KvCache<B> {
    pub fn len(&self) -> usize {
        self.kv.as_ref().map_or(0, |(k, _)| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: Backend> Attention<B> {
    pub fn new(
        dim: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        std: f64,
        device: &B::Device,
    ) -> Self {
        Self {
            q_proj: Linear::new(dim, n_heads * head_dim, std, device),
            k_proj: Linear::new(dim, n_kv_heads * head_dim, std, device),
            v_proj: Linear::new(dim, n_kv_heads * head_dim, std, device),
            o_proj: Linear::new(n_heads * head_dim, dim, std, device),
            n_heads,
            n_kv_heads,
            head_dim,
            fused: true,
        }
    }
}

impl<B: Backend> Attention<B> {
    /// The fused attention kernel and fused projections on or off.
    pub fn set_fused(&mut self, fused: bool) {
        self.fused = fused;
        for p in [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
        ] {
            p.fused = fused;
        }
    }
}

impl<B: FusedOps> Attention<B> {
    /// `[B, T, dim] -> [B, T, dim]`. With a cache, the new keys/values are
    /// appended and the queries sit at positions `cache.len()..`; `rope` must
    /// cover exactly those positions.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let (h, kvh, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        if self.fused && cache.is_none() {
            // Training and full-sequence scoring: everything stays in the
            // projections' [B, T, heads, hd] layout, no transposes.
            let q = rope.apply_bthd(self.q_proj.forward(x.clone()).reshape([b, t, h, hd])); // [B, T, H, hd]
            let k = rope.apply_bthd(self.k_proj.forward(x.clone()).reshape([b, t, kvh, hd])); // [B, T, KV, hd]
            let v = self.v_proj.forward(x).reshape([b, t, kvh, hd]); // [B, T, KV, hd]
            let y = causal_attention(q, k, v).reshape([b, t, h * hd]); // [B, T, H*hd]
            return self.o_proj.forward(y);
        }
        let q = self
            .q_proj
            .forward(x.clone())
            .reshape([b, t, h, hd])
            .swap_dims(1, 2); // [B, H, T, hd]
        let k = self
            .k_proj
            .forward(x.clone())
            .reshape([b, t, kvh, hd])
            .swap_dims(1, 2); // [B, KV, T, hd]
        let v = self
            .v_proj
            .forward(x)
            .reshape([b, t, kvh, hd])
            .swap_dims(1, 2); // [B, KV, T, hd]
        let q = rope.apply(q);
        let k = rope.apply(k);

        let past = cache.as_ref().map_or(0, |c| c.len());
        if self.fused && cache.is_none() {
            // Training and full-sequence scoring: one fused op, GQA inside the kernel.
            let y = causal_attention(q, k, v)
                .swap_dims(1, 2)
                .reshape([b, t, h * hd]); // [B, T, H*hd]
            return self.o_proj.forward(y);
        }
        let (k, v) = match cache {
            Some(cache) => {
                let (k, v) = match cache.kv.take() {
                    Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)), // [B, KV, past+T, hd]
                    None => (k, v),
                };
                cache.kv = Some((k.clone(), v.clone()));
                (k, v)
            }
            None => (k, v),
        };
        let k = repeat_kv(k, h / kvh); // [B, H, S, hd]
        let v = repeat_kv(v, h / kvh); // [B, H, S, hd]
        let s = k.dims()[2];

        let y = if past == 0 {
            let options = AttentionModuleOptions {
                is_causal: true,
                ..Default::default()
            };
            attention(q, k, v, None, None, options) // [B, H, T, hd]
        } else {
            // Queries at positions past..past+T see keys 0..=their own position.
            let mask = Tensor::<B, 2, Bool>::tril_mask([t, s], past as i64, &q.device())
                .unsqueeze::<4>()
                .expand([b, h, t, s]); // [B, H, T, S]
            attention(q, k, v, Some(mask), None, AttentionModuleOptions::default())
        };
        let y = y.swap_dims(1, 2).reshape([b, t, h * hd]); // [B, T, H*hd]
        self.o_proj.forward(y)
    }
}

/// GQA: each key/value head serves `rep` query heads, `[B, KV, S, hd] -> [B, KV*rep, S, hd]`.
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, rep: usize) -> Tensor<B, 4> {
    if rep == 1 {
        return x;
    }
    let [b, kvh, s, hd] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kvh, rep, s, hd]) // [B, KV, rep, S, hd]
        .reshape([b, kvh * rep, s, hd])
}
