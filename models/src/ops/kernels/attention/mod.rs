//! Fused causal scaled-dot-product attention (forward + backward) on CPU, flash-attention
//! style, over plain contiguous `f32` slices.
//!
//! * Forward: rayon tasks over (batch, head, query block of [`BQ`] rows). For each block the
//!   keys `0..block_end` are processed in chunks of at most [`KC`] keys: one block product for
//!   the scores, masked online softmax per row (a single pass when `block_end <= KC`), one
//!   block product for `P V`. Key tiles above the diagonal are never computed; inside the
//!   diagonal the masked entries are set to zero.
//! * Backward: rayon tasks over (batch, kv head); each task owns its `dk`/`dv` slices and the
//!   `dq` rows of the query heads of its group, so there are no races and no reductions.
//!   Probabilities are recomputed from `q`, `k` and `lse` with the same kernels and shapes as
//!   the forward pass. When there are fewer than 4 such tasks per rayon thread and
//!   `heads > kv_heads`, tasks are per (batch, query head) instead, with private dk/dv partials
//!   summed per kv head afterwards (better load balance, one extra q-sized buffer each for dk/dv).
//!
//! Block products: on x86-64 with AVX2+FMA (or AVX-512F) they run on register-tiled
//! broadcast-FMA microkernels (8 or 16 lanes, selected at runtime) that read K^T / V^T from a
//! once-per-head transposed copy and skip tiles above the causal diagonal. Elsewhere they fall
//! back to `gemm::gemm` with `Parallelism::None`. Row-wise softmax work uses
//! [`super::fast_exp`].

// `fast_exp.rs` must be a sibling module (declared next to this one).
use super::fast_exp::{self, Isa};
use rayon::prelude::*;

/// Query rows per block.
const BQ: usize = 64;
/// Maximum keys per score chunk (the online softmax rescales between chunks). Multiple of 16.
const KC: usize = 512;

#[derive(Clone, Copy, Debug)]
pub struct AttnDims {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub seq: usize,
    pub head_dim: usize,
    pub scale: f32,
}

impl AttnDims {
    fn q_len(&self) -> usize {
        self.batch * self.heads * self.seq * self.head_dim
    }
    fn kv_len(&self) -> usize {
        self.batch * self.kv_heads * self.seq * self.head_dim
    }
    fn lse_len(&self) -> usize {
        self.batch * self.heads * self.seq
    }
    fn validate(&self) {
        assert!(
            self.kv_heads > 0 && self.heads.is_multiple_of(self.kv_heads),
            "attention: heads ({}) must be a positive multiple of kv_heads ({})",
            self.heads,
            self.kv_heads
        );
    }
}

/// Causal scaled-dot-product attention with grouped-query heads.
/// q: [b, h, t, d]; k, v: [b, kvh, t, d] (h % kvh == 0; query head i uses kv head i / (h / kvh));
/// all contiguous row-major. Query position i attends keys 0..=i.
/// Returns (o [b, h, t, d], lse [b, h, t]) where lse is the natural-log sum-exp of the
/// scaled scores of each query row (saved for backward).
pub fn attention_forward(q: &[f32], k: &[f32], v: &[f32], dims: AttnDims) -> (Vec<f32>, Vec<f32>) {
    attention_forward_isa(q, k, v, dims, Isa::detect())
}

/// Gradients given dO [b, h, t, d]. Recomputes the probabilities from q, k and lse (no
/// [t, t] matrix of the whole batch is kept between forward and backward).
/// Returns (dq [b,h,t,d], dk [b,kvh,t,d], dv [b,kvh,t,d]); dk/dv sum over the query heads
/// that share each kv head.
pub fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    lse: &[f32],
    d_o: &[f32],
    dims: AttnDims,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    attention_backward_isa(q, k, v, o, lse, d_o, dims, Isa::detect(), BwdSplit::Auto)
}

/// Zero-filled vector, filled in parallel (a serial memset of the outputs is visible).
fn zeros(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    v.par_extend((0..n).into_par_iter().with_min_len(1 << 14).map(|_| 0.0f32));
    v
}

#[inline]
fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}

/// Number of keys of chunk `c0..c0+nc` visible to query `qi` (causal).
#[inline]
fn visible(qi: usize, c0: usize, nc: usize) -> usize {
    (qi + 1).saturating_sub(c0).min(nc)
}

/// Lanes of the block-product kernels for `isa` (1 = portable gemm path).
#[inline]
fn lanes(isa: Isa) -> usize {
    match isa {
        Isa::Scalar => 1,
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        Isa::Avx2 => 8,
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        Isa::Avx512 => 16,
    }
}

/// `dst[rows, dp] <- src[rows, d]`, zero padding columns `d..dp`.
fn pad_rows(src: &[f32], d: usize, dp: usize, dst: &mut [f32]) {
    for (s, o) in src.chunks_exact(d).zip(dst.chunks_exact_mut(dp)) {
        o[..d].copy_from_slice(s);
        o[d..].fill(0.0);
    }
}

/// `dst[rows, d] <- src[rows, dp][.., ..d]`.
fn unpad_rows(src: &[f32], d: usize, dp: usize, dst: &mut [f32]) {
    for (s, o) in src.chunks_exact(dp).zip(dst.chunks_exact_mut(d)) {
        o.copy_from_slice(&s[..d]);
    }
}

/// `dst[d, tp] <- src[t, d]^T`, zero padding columns `t..tp`.
fn transpose_pad(src: &[f32], t: usize, d: usize, tp: usize, dst: &mut [f32]) {
    assert!(src.len() >= t * d && dst.len() >= d * tp);
    // 16 x 16 blocks: 16 read streams along d, contiguous 16-float writes along t.
    const TB: usize = 16;
    for j0 in (0..t).step_by(TB) {
        let jn = TB.min(t - j0);
        for c0 in (0..d).step_by(TB) {
            let cn = TB.min(d - c0);
            let mut blk = [[0.0f32; TB]; TB];
            for (jj, row) in blk.iter_mut().enumerate().take(jn) {
                row[..cn].copy_from_slice(&src[(j0 + jj) * d + c0..(j0 + jj) * d + c0 + cn]);
            }
            for cc in 0..cn {
                let out = &mut dst[(c0 + cc) * tp + j0..(c0 + cc) * tp + j0 + jn];
                for (jj, x) in out.iter_mut().enumerate() {
                    *x = blk[jj][cc];
                }
            }
        }
    }
    for c in 0..d {
        dst[c * tp + t..(c + 1) * tp].fill(0.0);
    }
}

mod backward;
mod forward;
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
mod kern;
#[cfg(test)]
mod tests;

#[allow(unused_imports)]
use backward::*;
#[allow(unused_imports)]
use forward::*;
