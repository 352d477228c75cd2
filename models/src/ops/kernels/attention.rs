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

// ------------------------------------------------------------------------------------------
// Register-tiled block products (x86 SIMD)
// ------------------------------------------------------------------------------------------

#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
mod kern {
    #[cfg(target_arch = "x86")]
    use std::arch::x86::*;
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// One block product `C[m, nv*W] (+)= A[m, k] B[k, nv*W]` described by raw strides:
    /// `A(r, k) = a[r*a_rs + k*a_cs]` (broadcast scalars), `B(k, v) = b[k*b_rs + v*W..][..W]`,
    /// `C(r, v) = c[r*c_rs + v*W..][..W]`. Non-accumulating products store `alpha * A B`;
    /// accumulating ones add `A B`.
    #[derive(Clone, Copy)]
    pub(super) struct Tile {
        pub kn: usize,
        pub a: *const f32,
        pub a_rs: usize,
        pub a_cs: usize,
        pub b: *const f32,
        pub b_rs: usize,
        pub c: *mut f32,
        pub c_rs: usize,
        pub alpha: f32,
    }

    trait Vect: Copy {
        unsafe fn zero() -> Self;
        unsafe fn splat(x: f32) -> Self;
        unsafe fn load(p: *const f32) -> Self;
        unsafe fn store(self, p: *mut f32);
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
        unsafe fn add(a: Self, b: Self) -> Self;
        unsafe fn mul(a: Self, b: Self) -> Self;
    }

    impl Vect for __m256 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm256_storeu_ps(p, self) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: Self, b: Self) -> Self {
            unsafe { _mm256_mul_ps(a, b) }
        }
    }

    impl Vect for __m512 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm512_storeu_ps(p, self) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: Self, b: Self) -> Self {
            unsafe { _mm512_mul_ps(a, b) }
        }
    }

    /// R x CV register tile, k loop of `t.kn` steps.
    #[inline(always)]
    unsafe fn mk<V: Vect, const W: usize, const R: usize, const CV: usize, const ACC: bool>(
        t: &Tile,
    ) {
        unsafe {
            let mut acc = [[V::zero(); CV]; R];
            let mut a = t.a;
            let mut b = t.b;
            for _ in 0..t.kn {
                let mut bv = [V::zero(); CV];
                for (v, x) in bv.iter_mut().enumerate() {
                    *x = V::load(b.add(v * W));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = V::splat(*a.add(r * t.a_rs));
                    for (x, &y) in row.iter_mut().zip(bv.iter()) {
                        *x = V::fma(av, y, *x);
                    }
                }
                a = a.add(t.a_cs);
                b = b.add(t.b_rs);
            }
            let alpha = V::splat(t.alpha);
            for (r, row) in acc.iter().enumerate() {
                for (v, &x) in row.iter().enumerate() {
                    let p = t.c.add(r * t.c_rs + v * W);
                    if ACC {
                        V::add(V::load(p), x).store(p);
                    } else {
                        V::mul(alpha, x).store(p);
                    }
                }
            }
        }
    }

    /// Kernel family for one instruction set: `W` lanes, tiles of at most `R` rows by `CV`
    /// vectors.
    pub(super) trait Simd {
        const W: usize;
        const R: usize;
        const CV: usize;
        /// # Safety
        /// The CPU supports the instruction set; `1 <= r <= R`, `1 <= cv <= CV`; the tile's
        /// pointers are valid for the strided extents.
        unsafe fn tile<const ACC: bool>(r: usize, cv: usize, t: &Tile);
    }

    pub(super) struct Avx2;
    pub(super) struct Avx512;

    impl Simd for Avx2 {
        const W: usize = 8;
        const R: usize = 6;
        const CV: usize = 2;
        #[inline(always)]
        unsafe fn tile<const ACC: bool>(r: usize, cv: usize, t: &Tile) {
            unsafe { tile_avx2::<ACC>(r, cv, t) }
        }
    }

    impl Simd for Avx512 {
        const W: usize = 16;
        const R: usize = 6;
        const CV: usize = 4;
        #[inline(always)]
        unsafe fn tile<const ACC: bool>(r: usize, cv: usize, t: &Tile) {
            unsafe { tile_avx512::<ACC>(r, cv, t) }
        }
    }

    macro_rules! dispatch {
        ($V:ty, $W:expr, $ACC:ident, $t:ident, $r:ident, $cv:ident; $( ($rr:literal, $cc:literal) ),* ) => {
            match ($r, $cv) {
                $( ($rr, $cc) => mk::<$V, $W, $rr, $cc, $ACC>($t), )*
                // Callers only pass 1 <= r <= R and 1 <= cv <= CV.
                _ => {}
            }
        };
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_avx2<const ACC: bool>(r: usize, cv: usize, t: &Tile) {
        unsafe {
            dispatch!(__m256, 8, ACC, t, r, cv;
            (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1),
            (1, 2), (2, 2), (3, 2), (4, 2), (5, 2), (6, 2));
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn tile_avx512<const ACC: bool>(r: usize, cv: usize, t: &Tile) {
        unsafe {
            dispatch!(__m512, 16, ACC, t, r, cv;
            (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1),
            (1, 2), (2, 2), (3, 2), (4, 2), (5, 2), (6, 2),
            (1, 3), (2, 3), (3, 3), (4, 3), (5, 3), (6, 3),
            (1, 4), (2, 4), (3, 4), (4, 4), (5, 4), (6, 4));
        }
    }

    /// Block product over slices, tile by tile: `C[m, nv*W] (+)= alpha * A[m, k] B[k, nv*W]`
    /// (see [`Tile`] for the layout; `alpha` only applies when `ACC` is false).
    /// `krange(row0, rows, vec0, vecs)` gives the k range `[k0, k1)` a tile needs; an empty
    /// range skips the tile (its C entries are left untouched).
    ///
    /// # Safety
    /// The CPU supports `S`'s instruction set.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn mm<S: Simd, const ACC: bool>(
        m: usize,
        nv: usize,
        k: usize,
        a: &[f32],
        a_rs: usize,
        a_cs: usize,
        b: &[f32],
        b_rs: usize,
        c: &mut [f32],
        c_rs: usize,
        alpha: f32,
        krange: impl Fn(usize, usize, usize, usize) -> (usize, usize),
    ) {
        unsafe {
            if m == 0 || nv == 0 || k == 0 {
                return;
            }
            assert!(
                a.len() > (m - 1) * a_rs + (k - 1) * a_cs,
                "mm: lhs out of bounds"
            );
            assert!(
                b.len() >= (k - 1) * b_rs + nv * S::W,
                "mm: rhs out of bounds"
            );
            assert!(
                c.len() >= (m - 1) * c_rs + nv * S::W,
                "mm: dst out of bounds"
            );
            let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
            let mut v0 = 0;
            while v0 < nv {
                let cv = S::CV.min(nv - v0);
                let mut r0 = 0;
                while r0 < m {
                    let r = S::R.min(m - r0);
                    let (k0, k1) = krange(r0, r, v0, cv);
                    let k1 = k1.min(k);
                    if k0 < k1 {
                        let t = Tile {
                            kn: k1 - k0,
                            a: ap.add(r0 * a_rs + k0 * a_cs),
                            a_rs,
                            a_cs,
                            b: bp.add(k0 * b_rs + v0 * S::W),
                            b_rs,
                            c: cp.add(r0 * c_rs + v0 * S::W),
                            c_rs,
                            alpha,
                        };
                        S::tile::<ACC>(r, cv, &t);
                    }
                    r0 += r;
                }
                v0 += cv;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Forward
// ------------------------------------------------------------------------------------------

struct FwdScratch {
    s: Vec<f32>,
    acc: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

impl FwdScratch {
    fn new(t: usize, dp: usize, w: usize) -> Self {
        let rows = BQ.min(t);
        FwdScratch {
            s: vec![0.0; rows * KC.min(round_up(t, w))],
            acc: vec![0.0; rows * dp],
            m: vec![0.0; rows],
            l: vec![0.0; rows],
        }
    }
}

/// Read-only inputs of one (batch, head) for the forward pass. `k_t` is K^T [d, tp] and
/// `v_p` is V [t, dp] (SIMD path) or the plain K [t, d] and V [t, d] (portable path).
struct FwdHead<'a> {
    q: &'a [f32],
    k_t: &'a [f32],
    v_p: &'a [f32],
    d: usize,
    dp: usize,
    tp: usize,
    scale: f32,
}

pub(crate) fn attention_forward_isa(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: AttnDims,
    isa: Isa,
) -> (Vec<f32>, Vec<f32>) {
    dims.validate();
    assert_eq!(
        q.len(),
        dims.q_len(),
        "attention_forward: q has the wrong length"
    );
    assert_eq!(
        k.len(),
        dims.kv_len(),
        "attention_forward: k has the wrong length"
    );
    assert_eq!(
        v.len(),
        dims.kv_len(),
        "attention_forward: v has the wrong length"
    );
    let AttnDims {
        heads: h,
        kv_heads: kvh,
        seq: t,
        head_dim: d,
        scale,
        ..
    } = dims;
    let mut o = zeros(dims.q_len());
    let mut lse = zeros(dims.lse_len());
    if dims.lse_len() == 0 {
        return (o, lse);
    }
    if d == 0 {
        // All scores are 0: uniform attention over i + 1 keys, empty outputs.
        for row in lse.chunks_mut(t) {
            for (i, x) in row.iter_mut().enumerate() {
                *x = ((i + 1) as f32).ln();
            }
        }
        return (o, lse);
    }
    let group = h / kvh;
    let w = lanes(isa);
    let (dp, tp) = (round_up(d, w), round_up(t, w));

    // SIMD path: K^T [d, tp] and row-padded V [t, dp] per kv head, built once in parallel.
    let mut k_t = Vec::new();
    let mut v_p = Vec::new();
    if w > 1 {
        k_t = zeros(dims.batch * kvh * d * tp);
        k_t.par_chunks_mut(d * tp)
            .zip(k.par_chunks(t * d))
            .for_each(|(dst, src)| transpose_pad(src, t, d, tp, dst));
        if dp != d {
            v_p = zeros(dims.batch * kvh * t * dp);
            v_p.par_chunks_mut(t * dp)
                .zip(v.par_chunks(t * d))
                .for_each(|(dst, src)| pad_rows(src, d, dp, dst));
        }
    }
    let (k_all, kt_stride): (&[f32], usize) = if w > 1 { (&k_t, d * tp) } else { (k, t * d) };
    let v_all: &[f32] = if w > 1 && dp != d { &v_p } else { v };

    struct Task<'a> {
        bh: usize,
        r0: usize,
        o: &'a mut [f32],
        lse: &'a mut [f32],
    }
    let mut tasks: Vec<Task> = Vec::with_capacity(dims.batch * h * t.div_ceil(BQ));
    for (bh, (o_head, lse_head)) in o.chunks_mut(t * d).zip(lse.chunks_mut(t)).enumerate() {
        for (qb, (o_blk, lse_blk)) in o_head
            .chunks_mut(BQ * d)
            .zip(lse_head.chunks_mut(BQ))
            .enumerate()
        {
            tasks.push(Task {
                bh,
                r0: qb * BQ,
                o: o_blk,
                lse: lse_blk,
            });
        }
    }
    // Heaviest (last) query blocks first for better load balance.
    tasks.sort_by_key(|task| std::cmp::Reverse(task.r0));

    tasks.into_par_iter().for_each_init(
        || FwdScratch::new(t, dp, w),
        |scr, task| {
            let (b_, hh) = (task.bh / h, task.bh % h);
            let kv = b_ * kvh + hh / group;
            let q_off = task.bh * t * d;
            let head = FwdHead {
                q: &q[q_off..q_off + t * d],
                k_t: &k_all[kv * kt_stride..(kv + 1) * kt_stride],
                v_p: &v_all[kv * t * dp..(kv + 1) * t * dp],
                d,
                dp,
                tp,
                scale,
            };
            match isa {
                Isa::Scalar => fwd_block_gemm(&head, task.r0, isa, scr, task.o, task.lse),
                // SAFETY: the Isa variant was produced by runtime feature detection.
                #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
                Isa::Avx2 => unsafe {
                    fwd_block_simd::<kern::Avx2>(&head, task.r0, isa, scr, task.o, task.lse)
                },
                #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
                Isa::Avx512 => unsafe {
                    fwd_block_simd::<kern::Avx512>(&head, task.r0, isa, scr, task.o, task.lse)
                },
            }
        },
    );
    (o, lse)
}

/// Online-softmax update of one query block for the score chunk in `s` (`nr` rows, row
/// stride `ld`, `nc` real keys starting at key `c0`): turns the scores into unnormalised
/// probabilities (masked entries and padding set to 0) and rescales `acc` rows (stride `acc_rs`).
#[allow(clippy::too_many_arguments)]
fn online_softmax_chunk(
    s: &mut [f32],
    ld: usize,
    r0: usize,
    c0: usize,
    nc: usize,
    isa: Isa,
    m: &mut [f32],
    l: &mut [f32],
    acc: &mut [f32],
    acc_rs: usize,
) {
    for (i, row) in s.chunks_exact_mut(ld).enumerate().take(m.len()) {
        let vis = visible(r0 + i, c0, nc);
        let (live, masked) = row.split_at_mut(vis);
        masked.fill(0.0);
        if vis == 0 {
            continue;
        }
        let m_new = m[i].max(fast_exp::row_max(isa, live));
        let sum = fast_exp::exp_sub_sum(isa, live, m_new);
        if m[i] != f32::NEG_INFINITY && m[i] != m_new {
            let corr = fast_exp::exp_scalar(m[i] - m_new);
            l[i] *= corr;
            fast_exp::scale_row(&mut acc[i * acc_rs..(i + 1) * acc_rs], corr);
        }
        l[i] += sum;
        m[i] = m_new;
    }
}

/// Writes `o = acc / l` and `lse = m + ln l` for one block.
fn finish_block(
    acc: &[f32],
    acc_rs: usize,
    d: usize,
    m: &[f32],
    l: &[f32],
    o_blk: &mut [f32],
    lse_blk: &mut [f32],
) {
    for i in 0..lse_blk.len() {
        let inv = 1.0 / l[i];
        let src = &acc[i * acc_rs..i * acc_rs + d];
        for (dst, &a) in o_blk[i * d..(i + 1) * d].iter_mut().zip(src) {
            *dst = a * inv;
        }
        lse_blk[i] = m[i] + l[i].ln();
    }
}

/// One query block of one head, SIMD kernels (`o_blk`/`lse_blk` hold the block's rows).
///
/// # Safety
/// The CPU supports `S`'s instruction set; `head` uses `S::W` padding.
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
unsafe fn fwd_block_simd<S: kern::Simd>(
    x: &FwdHead,
    r0: usize,
    isa: Isa,
    scr: &mut FwdScratch,
    o_blk: &mut [f32],
    lse_blk: &mut [f32],
) {
    unsafe {
        let (d, dp, tp, w) = (x.d, x.dp, x.tp, S::W);
        let nr = lse_blk.len();
        let end = r0 + nr;
        let q_blk = &x.q[r0 * d..end * d];
        let acc = &mut scr.acc[..nr * dp];
        let m = &mut scr.m[..nr];
        let l = &mut scr.l[..nr];
        acc.fill(0.0);
        m.fill(f32::NEG_INFINITY);
        l.fill(0.0);

        let mut c0 = 0;
        while c0 < end {
            let nc = KC.min(end - c0);
            let ncp = round_up(nc, w);
            let s = &mut scr.s[..nr * ncp];
            // S = scale * Q K^T, skipping tiles entirely above the diagonal.
            kern::mm::<S, false>(
                nr,
                ncp / w,
                d,
                q_blk,
                d,
                1,
                &x.k_t[c0..],
                tp,
                s,
                ncp,
                x.scale,
                |i0, ri, v0, _| {
                    if c0 + v0 * w > r0 + i0 + ri - 1 {
                        (0, 0)
                    } else {
                        (0, d)
                    }
                },
            );
            online_softmax_chunk(s, ncp, r0, c0, nc, isa, m, l, acc, dp);
            // acc += P V, only over the keys visible to the tile's last row.
            kern::mm::<S, true>(
                nr,
                dp / w,
                nc,
                s,
                ncp,
                1,
                &x.v_p[c0 * dp..],
                dp,
                acc,
                dp,
                1.0,
                |i0, ri, _, _| (0, visible(r0 + i0 + ri - 1, c0, nc)),
            );
            c0 += nc;
        }
        finish_block(acc, dp, d, m, l, o_blk, lse_blk);
    }
}

/// `dst[m, n] (+)= beta * lhs[m, k] * rhs[k, n]` through `gemm`, unit column stride for `dst`.
///
/// # Safety
/// All pointers must be valid for the strided extents described.
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_mm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_cs: usize,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_cs: usize,
    rhs_rs: usize,
    beta: f32,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `s[nr, nc] = scale * q_blk[nr, d] * k_chunk[nc, d]^T` (row stride `nc`) through `gemm`.
#[inline]
fn gemm_scores(
    s: &mut [f32],
    q_blk: &[f32],
    k_chunk: &[f32],
    nr: usize,
    nc: usize,
    d: usize,
    scale: f32,
) {
    assert!(s.len() >= nr * nc && q_blk.len() >= nr * d && k_chunk.len() >= nc * d);
    // SAFETY: extents checked above.
    unsafe {
        gemm_mm(
            nr,
            nc,
            d,
            s.as_mut_ptr(),
            nc,
            false,
            q_blk.as_ptr(),
            1,
            d,
            k_chunk.as_ptr(),
            d,
            1,
            scale,
        );
    }
}

/// Portable version of [`fwd_block_simd`] (`x.k_t`/`x.v_p` are plain K and V, `dp == d`).
fn fwd_block_gemm(
    x: &FwdHead,
    r0: usize,
    isa: Isa,
    scr: &mut FwdScratch,
    o_blk: &mut [f32],
    lse_blk: &mut [f32],
) {
    let d = x.d;
    let nr = lse_blk.len();
    let end = r0 + nr;
    let q_blk = &x.q[r0 * d..end * d];
    let acc = &mut scr.acc[..nr * d];
    let m = &mut scr.m[..nr];
    let l = &mut scr.l[..nr];
    acc.fill(0.0);
    m.fill(f32::NEG_INFINITY);
    l.fill(0.0);

    let mut c0 = 0;
    while c0 < end {
        let nc = KC.min(end - c0);
        let s = &mut scr.s[..nr * nc];
        gemm_scores(s, q_blk, &x.k_t[c0 * d..(c0 + nc) * d], nr, nc, d, x.scale);
        online_softmax_chunk(s, nc, r0, c0, nc, isa, m, l, acc, d);
        let v_chunk = &x.v_p[c0 * d..(c0 + nc) * d];
        // SAFETY: acc is nr x d, s is nr x nc, v_chunk is nc x d.
        unsafe {
            gemm_mm(
                nr,
                d,
                nc,
                acc.as_mut_ptr(),
                d,
                true,
                s.as_ptr(),
                1,
                nc,
                v_chunk.as_ptr(),
                1,
                d,
                1.0,
            );
        }
        c0 += nc;
    }
    finish_block(acc, d, d, m, l, o_blk, lse_blk);
}

// ------------------------------------------------------------------------------------------
// Backward
// ------------------------------------------------------------------------------------------

/// Per-task scratch of the backward pass, allocated once per (batch, kv head) task.
struct BwdScratch {
    s: Vec<f32>,
    dp: Vec<f32>,
    di: Vec<f32>,
    // SIMD path only (empty otherwise); the padded ones only when d is not a multiple of W.
    k_t: Vec<f32>,
    v_t: Vec<f32>,
    k_p: Vec<f32>,
    dk_p: Vec<f32>,
    dv_p: Vec<f32>,
    q_p: Vec<f32>,
    do_p: Vec<f32>,
    dq_p: Vec<f32>,
}

impl BwdScratch {
    fn new(t: usize, d: usize, w: usize) -> Self {
        let rows = BQ.min(t);
        let (dp, tp) = (round_up(d, w), round_up(t, w));
        let simd = w > 1;
        let padded = simd && dp != d;
        let sz = |on: bool, n: usize| if on { vec![0.0f32; n] } else { Vec::new() };
        BwdScratch {
            s: vec![0.0; rows * KC.min(tp)],
            dp: vec![0.0; rows * KC.min(tp)],
            di: vec![0.0; rows],
            k_t: sz(simd, d * tp),
            v_t: sz(simd, d * tp),
            k_p: sz(padded, t * dp),
            dk_p: sz(padded, t * dp),
            dv_p: sz(padded, t * dp),
            q_p: sz(padded, rows * dp),
            do_p: sz(padded, rows * dp),
            dq_p: sz(padded, rows * dp),
        }
    }
}

/// How the backward pass is parallelised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum BwdSplit {
    /// `PerKvHead` unless there are few (batch, kv head) tasks per thread and `h > kvh`.
    Auto,
    /// One task per (batch, kv head), accumulating dk/dv in place.
    PerKvHead,
    /// One task per (batch, query head) with private dk/dv partials, summed afterwards.
    PerHead,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward_isa(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    lse: &[f32],
    d_o: &[f32],
    dims: AttnDims,
    isa: Isa,
    split: BwdSplit,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    dims.validate();
    assert_eq!(
        q.len(),
        dims.q_len(),
        "attention_backward: q has the wrong length"
    );
    assert_eq!(
        k.len(),
        dims.kv_len(),
        "attention_backward: k has the wrong length"
    );
    assert_eq!(
        v.len(),
        dims.kv_len(),
        "attention_backward: v has the wrong length"
    );
    assert_eq!(
        o.len(),
        dims.q_len(),
        "attention_backward: o has the wrong length"
    );
    assert_eq!(
        d_o.len(),
        dims.q_len(),
        "attention_backward: d_o has the wrong length"
    );
    assert_eq!(
        lse.len(),
        dims.lse_len(),
        "attention_backward: lse has the wrong length"
    );
    let AttnDims {
        batch: b,
        heads: h,
        kv_heads: kvh,
        seq: t,
        head_dim: d,
        scale,
    } = dims;
    let mut dq = zeros(dims.q_len());
    let mut dk = zeros(dims.kv_len());
    let mut dv = zeros(dims.kv_len());
    if dims.lse_len() == 0 || d == 0 {
        return (dq, dk, dv);
    }
    let group = h / kvh;
    let hd = t * d;
    let w = lanes(isa);
    let per_head = match split {
        BwdSplit::PerKvHead => false,
        BwdSplit::PerHead => true,
        // With fewer than ~4 equal tasks per thread the tail imbalance is significant.
        BwdSplit::Auto => group > 1 && b * kvh < 4 * rayon::current_num_threads(),
    };

    // Backward of `n` query heads starting at head index `h0` (in [b*h] order) that all use
    // kv head `kv`, accumulating into dq_g [n, t, d] and dk_h, dv_h [t, d].
    let run = |scr: &mut BwdScratch,
               kv: usize,
               h0: usize,
               n: usize,
               dq_g: &mut [f32],
               dk_h: &mut [f32],
               dv_h: &mut [f32]| {
        let x = KvGroup {
            q: &q[h0 * hd..(h0 + n) * hd],
            o: &o[h0 * hd..(h0 + n) * hd],
            d_o: &d_o[h0 * hd..(h0 + n) * hd],
            lse: &lse[h0 * t..(h0 + n) * t],
            k: &k[kv * hd..(kv + 1) * hd],
            v: &v[kv * hd..(kv + 1) * hd],
            t,
            d,
            scale,
        };
        match isa {
            Isa::Scalar => bwd_group_gemm(&x, isa, scr, dq_g, dk_h, dv_h),
            // SAFETY: the Isa variant was produced by runtime feature detection.
            #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
            Isa::Avx2 => unsafe { bwd_group_simd::<kern::Avx2>(&x, isa, scr, dq_g, dk_h, dv_h) },
            #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
            Isa::Avx512 => unsafe {
                bwd_group_simd::<kern::Avx512>(&x, isa, scr, dq_g, dk_h, dv_h)
            },
        }
    };

    if !per_head {
        // Heads of kv group `bk` = b_*kvh + kh are the contiguous heads bk*group.. in [b, h] order.
        dq.par_chunks_mut(group * hd)
            .zip(dk.par_chunks_mut(hd))
            .zip(dv.par_chunks_mut(hd))
            .enumerate()
            .with_max_len(1)
            .for_each_init(
                || BwdScratch::new(t, d, w),
                |scr, (bk, ((dq_g, dk_h), dv_h))| run(scr, bk, bk * group, group, dq_g, dk_h, dv_h),
            );
    } else {
        let mut dk_part = zeros(dims.q_len());
        let mut dv_part = zeros(dims.q_len());
        dq.par_chunks_mut(hd)
            .zip(dk_part.par_chunks_mut(hd))
            .zip(dv_part.par_chunks_mut(hd))
            .enumerate()
            .with_max_len(1)
            .for_each_init(
                || BwdScratch::new(t, d, w),
                |scr, (bh, ((dq_h, dk_h), dv_h))| run(scr, bh / group, bh, 1, dq_h, dk_h, dv_h),
            );
        dk.par_chunks_mut(hd)
            .zip(dv.par_chunks_mut(hd))
            .enumerate()
            .for_each(|(bk, (dk_h, dv_h))| {
                for gi in 0..group {
                    let src = (bk * group + gi) * hd..(bk * group + gi + 1) * hd;
                    for (a, &x) in dk_h.iter_mut().zip(&dk_part[src.clone()]) {
                        *a += x;
                    }
                    for (a, &x) in dv_h.iter_mut().zip(&dv_part[src]) {
                        *a += x;
                    }
                }
            });
    }
    (dq, dk, dv)
}

/// Inputs of one backward task: `n` query heads sharing one kv head (q, o, d_o as
/// [n, t, d], lse as [n, t]) and that kv head's k, v [t, d].
struct KvGroup<'a> {
    q: &'a [f32],
    o: &'a [f32],
    d_o: &'a [f32],
    lse: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    t: usize,
    d: usize,
    scale: f32,
}

/// `di[i] = dO_i . O_i` for the block's rows.
fn row_dots(isa: Isa, d_o: &[f32], o: &[f32], d: usize, di: &mut [f32]) {
    for (i, x) in di.iter_mut().enumerate() {
        *x = fast_exp::dot(isa, &d_o[i * d..(i + 1) * d], &o[i * d..(i + 1) * d]);
    }
}

/// Recomputes P (in `s`) and turns `dp` into `dS * scale` for a score chunk: `nr` rows of
/// stride `ld`, `nc` real keys from key `c0`; masked entries and padding set to 0.
#[allow(clippy::too_many_arguments)]
fn probs_and_ds(
    s: &mut [f32],
    dp: &mut [f32],
    ld: usize,
    r0: usize,
    c0: usize,
    nc: usize,
    lse: &[f32],
    di: &[f32],
    scale: f32,
    isa: Isa,
) {
    for (i, (p_row, g_row)) in s
        .chunks_exact_mut(ld)
        .zip(dp.chunks_exact_mut(ld))
        .enumerate()
        .take(lse.len())
    {
        let vis = visible(r0 + i, c0, nc);
        let (p_live, p_masked) = p_row.split_at_mut(vis);
        let (g_live, g_masked) = g_row.split_at_mut(vis);
        p_masked.fill(0.0);
        g_masked.fill(0.0);
        fast_exp::exp_sub(isa, p_live, lse[i]);
        fast_exp::softmax_bwd_row(isa, p_live, g_live, di[i], scale);
    }
}

/// Backward of one (batch, kv head) group with the SIMD kernels.
///
/// # Safety
/// The CPU supports `S`'s instruction set.
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
unsafe fn bwd_group_simd<S: kern::Simd>(
    x: &KvGroup,
    isa: Isa,
    scr: &mut BwdScratch,
    dq_g: &mut [f32],
    dk_h: &mut [f32],
    dv_h: &mut [f32],
) {
    unsafe {
        let (t, d, w, scale) = (x.t, x.d, S::W, x.scale);
        let (dp, tp) = (round_up(d, w), round_up(t, w));
        let nvd = dp / w;
        let padded = dp != d;
        let hd = t * d;
        let BwdScratch {
            s,
            dp: g,
            di,
            k_t,
            v_t,
            k_p,
            dk_p,
            dv_p,
            q_p,
            do_p,
            dq_p,
        } = scr;
        transpose_pad(x.k, t, d, tp, k_t);
        transpose_pad(x.v, t, d, tp, v_t);
        let (kp, dkp, dvp): (&[f32], &mut [f32], &mut [f32]) = if padded {
            pad_rows(x.k, d, dp, k_p);
            dk_p.fill(0.0);
            dv_p.fill(0.0);
            (&k_p[..], &mut dk_p[..], &mut dv_p[..])
        } else {
            (x.k, &mut *dk_h, &mut *dv_h)
        };

        for (gi, dq_head) in dq_g.chunks_mut(hd).enumerate() {
            let q_head = &x.q[gi * hd..(gi + 1) * hd];
            let o_head = &x.o[gi * hd..(gi + 1) * hd];
            let do_head = &x.d_o[gi * hd..(gi + 1) * hd];
            let lse_head = &x.lse[gi * t..(gi + 1) * t];
            let mut r0 = 0;
            while r0 < t {
                let nr = BQ.min(t - r0);
                let end = r0 + nr;
                let rows = r0 * d..end * d;
                let q_blk = &q_head[rows.clone()];
                let do_blk = &do_head[rows.clone()];
                let lse_blk = &lse_head[r0..end];
                let di = &mut di[..nr];
                row_dots(isa, do_blk, &o_head[rows.clone()], d, di);
                let (qp, dop, dqp): (&[f32], &[f32], &mut [f32]) = if padded {
                    pad_rows(q_blk, d, dp, q_p);
                    pad_rows(do_blk, d, dp, do_p);
                    dq_p[..nr * dp].fill(0.0);
                    (&q_p[..nr * dp], &do_p[..nr * dp], &mut dq_p[..nr * dp])
                } else {
                    (q_blk, do_blk, &mut dq_head[rows.clone()])
                };

                let mut c0 = 0;
                while c0 < end {
                    let nc = KC.min(end - c0);
                    let ncp = round_up(nc, w);
                    let s = &mut s[..nr * ncp];
                    let g = &mut g[..nr * ncp];
                    let above = |i0: usize, ri: usize, v0: usize, _: usize| {
                        if c0 + v0 * w > r0 + i0 + ri - 1 {
                            (0, 0)
                        } else {
                            (0, d)
                        }
                    };
                    // S = scale * Q K^T ; dP = dO V^T
                    kern::mm::<S, false>(
                        nr,
                        ncp / w,
                        d,
                        q_blk,
                        d,
                        1,
                        &k_t[c0..],
                        tp,
                        s,
                        ncp,
                        scale,
                        above,
                    );
                    kern::mm::<S, false>(
                        nr,
                        ncp / w,
                        d,
                        do_blk,
                        d,
                        1,
                        &v_t[c0..],
                        tp,
                        g,
                        ncp,
                        1.0,
                        above,
                    );
                    probs_and_ds(s, g, ncp, r0, c0, nc, lse_blk, di, scale, isa);
                    // Key rows j only receive from queries i >= c0 + j - r0.
                    let from_queries = |j0: usize, _: usize, _: usize, _: usize| {
                        ((c0 + j0).saturating_sub(r0).min(nr), nr)
                    };
                    // dV += P^T dO ; dK += (scale dS)^T Q
                    kern::mm::<S, true>(
                        nc,
                        nvd,
                        nr,
                        s,
                        1,
                        ncp,
                        dop,
                        dp,
                        &mut dvp[c0 * dp..],
                        dp,
                        1.0,
                        from_queries,
                    );
                    kern::mm::<S, true>(
                        nc,
                        nvd,
                        nr,
                        g,
                        1,
                        ncp,
                        qp,
                        dp,
                        &mut dkp[c0 * dp..],
                        dp,
                        1.0,
                        from_queries,
                    );
                    // dQ += (scale dS) K, over the keys visible to the tile's last row.
                    kern::mm::<S, true>(
                        nr,
                        nvd,
                        nc,
                        g,
                        ncp,
                        1,
                        &kp[c0 * dp..],
                        dp,
                        dqp,
                        dp,
                        1.0,
                        |i0, ri, _, _| (0, visible(r0 + i0 + ri - 1, c0, nc)),
                    );
                    c0 += nc;
                }
                if padded {
                    unpad_rows(&dq_p[..nr * dp], d, dp, &mut dq_head[rows]);
                }
                r0 += nr;
            }
        }
        if padded {
            unpad_rows(dk_p, d, dp, dk_h);
            unpad_rows(dv_p, d, dp, dv_h);
        }
    }
}

/// Portable backward of one (batch, kv head) group through `gemm`.
fn bwd_group_gemm(
    x: &KvGroup,
    isa: Isa,
    scr: &mut BwdScratch,
    dq_g: &mut [f32],
    dk_h: &mut [f32],
    dv_h: &mut [f32],
) {
    let (t, d, scale) = (x.t, x.d, x.scale);
    let hd = t * d;
    for (gi, dq_head) in dq_g.chunks_mut(hd).enumerate() {
        let q_head = &x.q[gi * hd..(gi + 1) * hd];
        let o_head = &x.o[gi * hd..(gi + 1) * hd];
        let do_head = &x.d_o[gi * hd..(gi + 1) * hd];
        let lse_head = &x.lse[gi * t..(gi + 1) * t];
        let mut r0 = 0;
        while r0 < t {
            let nr = BQ.min(t - r0);
            let end = r0 + nr;
            let rows = r0 * d..end * d;
            let q_blk = &q_head[rows.clone()];
            let do_blk = &do_head[rows.clone()];
            let dq_blk = &mut dq_head[rows.clone()];
            let lse_blk = &lse_head[r0..end];
            let di = &mut scr.di[..nr];
            row_dots(isa, do_blk, &o_head[rows], d, di);
            let mut c0 = 0;
            while c0 < end {
                let nc = KC.min(end - c0);
                let kc = c0 * d..(c0 + nc) * d;
                let k_chunk = &x.k[kc.clone()];
                let v_chunk = &x.v[kc.clone()];
                let s = &mut scr.s[..nr * nc];
                let g = &mut scr.dp[..nr * nc];
                gemm_scores(s, q_blk, k_chunk, nr, nc, d, scale);
                // SAFETY: g is nr x nc, do_blk is nr x d, v_chunk is nc x d (read transposed).
                unsafe {
                    gemm_mm(
                        nr,
                        nc,
                        d,
                        g.as_mut_ptr(),
                        nc,
                        false,
                        do_blk.as_ptr(),
                        1,
                        d,
                        v_chunk.as_ptr(),
                        d,
                        1,
                        1.0,
                    );
                }
                probs_and_ds(s, g, nc, r0, c0, nc, lse_blk, di, scale, isa);
                let dk_c = &mut dk_h[kc.clone()];
                let dv_c = &mut dv_h[kc];
                // SAFETY: s/g are nr x nc (row stride nc); dk_c/dv_c/k_chunk are nc x d;
                // q_blk/do_blk/dq_blk are nr x d.
                unsafe {
                    // dV += P^T dO
                    gemm_mm(
                        nc,
                        d,
                        nr,
                        dv_c.as_mut_ptr(),
                        d,
                        true,
                        s.as_ptr(),
                        nc,
                        1,
                        do_blk.as_ptr(),
                        1,
                        d,
                        1.0,
                    );
                    // dK += (scale dS)^T Q
                    gemm_mm(
                        nc,
                        d,
                        nr,
                        dk_c.as_mut_ptr(),
                        d,
                        true,
                        g.as_ptr(),
                        nc,
                        1,
                        q_blk.as_ptr(),
                        1,
                        d,
                        1.0,
                    );
                    // dQ += (scale dS) K
                    gemm_mm(
                        nr,
                        d,
                        nc,
                        dq_blk.as_mut_ptr(),
                        d,
                        true,
                        g.as_ptr(),
                        1,
                        nc,
                        k_chunk.as_ptr(),
                        1,
                        d,
                        1.0,
                    );
                }
                c0 += nc;
            }
            r0 += nr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        /// Uniform in [-1, 1).
        fn uniform(&mut self) -> f32 {
            ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }
        fn vec(&mut self, n: usize, amp: f32) -> Vec<f32> {
            (0..n).map(|_| self.uniform() * amp).collect()
        }
    }

    fn to64(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&v| v as f64).collect()
    }

    /// Reference probabilities of one (b, h): P [t, t] (masked entries 0) and lse [t].
    fn ref_probs(qh: &[f64], kh: &[f64], t: usize, d: usize, scale: f64) -> (Vec<f64>, Vec<f64>) {
        let mut p = vec![0.0; t * t];
        let mut lse = vec![0.0; t];
        for i in 0..t {
            let row = &mut p[i * t..(i + 1) * t];
            let mut mx = f64::NEG_INFINITY;
            for j in 0..=i {
                let s: f64 = (0..d).map(|c| qh[i * d + c] * kh[j * d + c]).sum::<f64>() * scale;
                row[j] = s;
                mx = mx.max(s);
            }
            let mut sum = 0.0;
            for x in row[..=i].iter_mut() {
                *x = (*x - mx).exp();
                sum += *x;
            }
            for x in row[..=i].iter_mut() {
                *x /= sum;
            }
            lse[i] = mx + sum.ln();
        }
        (p, lse)
    }

    fn ref_forward(q: &[f64], k: &[f64], v: &[f64], dims: AttnDims) -> (Vec<f64>, Vec<f64>) {
        let AttnDims {
            batch: b,
            heads: h,
            kv_heads: kvh,
            seq: t,
            head_dim: d,
            scale,
        } = dims;
        let g = h / kvh;
        let mut o = vec![0.0; b * h * t * d];
        let mut lse = vec![0.0; b * h * t];
        for bi in 0..b {
            for hi in 0..h {
                let qo = (bi * h + hi) * t * d;
                let ko = (bi * kvh + hi / g) * t * d;
                let (p, l) = ref_probs(&q[qo..qo + t * d], &k[ko..ko + t * d], t, d, scale as f64);
                lse[(bi * h + hi) * t..(bi * h + hi + 1) * t].copy_from_slice(&l);
                for i in 0..t {
                    for j in 0..=i {
                        for c in 0..d {
                            o[qo + i * d + c] += p[i * t + j] * v[ko + j * d + c];
                        }
                    }
                }
            }
        }
        (o, lse)
    }

    fn ref_backward(
        q: &[f64],
        k: &[f64],
        v: &[f64],
        d_o: &[f64],
        dims: AttnDims,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let AttnDims {
            batch: b,
            heads: h,
            kv_heads: kvh,
            seq: t,
            head_dim: d,
            scale,
        } = dims;
        let scale = scale as f64;
        let g = h / kvh;
        let mut dq = vec![0.0; b * h * t * d];
        let mut dk = vec![0.0; b * kvh * t * d];
        let mut dv = vec![0.0; b * kvh * t * d];
        for bi in 0..b {
            for hi in 0..h {
                let qo = (bi * h + hi) * t * d;
                let ko = (bi * kvh + hi / g) * t * d;
                let (p, _) = ref_probs(&q[qo..qo + t * d], &k[ko..ko + t * d], t, d, scale);
                for i in 0..t {
                    // dP_ij = dO_i . V_j ; D_i = sum_j P_ij dP_ij
                    let mut dpr = vec![0.0; i + 1];
                    let mut dsum = 0.0;
                    for j in 0..=i {
                        dpr[j] = (0..d)
                            .map(|c| d_o[qo + i * d + c] * v[ko + j * d + c])
                            .sum::<f64>();
                        dsum += p[i * t + j] * dpr[j];
                    }
                    for j in 0..=i {
                        let pij = p[i * t + j];
                        let ds = pij * (dpr[j] - dsum);
                        for c in 0..d {
                            dv[ko + j * d + c] += pij * d_o[qo + i * d + c];
                            dq[qo + i * d + c] += scale * ds * k[ko + j * d + c];
                            dk[ko + j * d + c] += scale * ds * q[qo + i * d + c];
                        }
                    }
                }
            }
        }
        (dq, dk, dv)
    }

    /// max |a - r| / max |r|
    fn rel_err(a: &[f32], r: &[f64]) -> f64 {
        assert_eq!(a.len(), r.len());
        let mut num = 0.0f64;
        let mut den = 0.0f64;
        for (&x, &y) in a.iter().zip(r) {
            assert!(x.is_finite(), "non-finite output");
            num = num.max((x as f64 - y).abs());
            den = den.max(y.abs());
        }
        if den == 0.0 {
            num
        } else {
            num / den
        }
    }

    /// Returns the relative errors [o, lse, dq, dk, dv] (gradients: worst over both backward
    /// parallelisation modes).
    fn check_case(dims: AttnDims, rng: &mut Rng, amp: f32, isa: Isa) -> [f64; 5] {
        let q = rng.vec(dims.q_len(), amp);
        let k = rng.vec(dims.kv_len(), amp);
        let v = rng.vec(dims.kv_len(), 1.0);
        let d_o = rng.vec(dims.q_len(), 1.0);
        let (o, lse) = attention_forward_isa(&q, &k, &v, dims, isa);
        let (q64, k64, v64, do64) = (to64(&q), to64(&k), to64(&v), to64(&d_o));
        let (ro, rlse) = ref_forward(&q64, &k64, &v64, dims);
        let (rdq, rdk, rdv) = ref_backward(&q64, &k64, &v64, &do64, dims);
        let mut e = [rel_err(&o, &ro), rel_err(&lse, &rlse), 0.0, 0.0, 0.0];
        for split in [BwdSplit::PerKvHead, BwdSplit::PerHead] {
            let (dq, dk, dv) = attention_backward_isa(&q, &k, &v, &o, &lse, &d_o, dims, isa, split);
            e[2] = e[2].max(rel_err(&dq, &rdq));
            e[3] = e[3].max(rel_err(&dk, &rdk));
            e[4] = e[4].max(rel_err(&dv, &rdv));
        }
        e
    }

    fn run_cases(cases: &[(AttnDims, f32)], tol: f64, label: &str, rng: &mut Rng) {
        let mut worst = [0.0f64; 5];
        for isa in Isa::available() {
            for &(dims, amp) in cases {
                let e = check_case(dims, rng, amp, isa);
                for (w, x) in worst.iter_mut().zip(e) {
                    *w = w.max(x);
                }
                assert!(
                    e.iter().all(|&x| x < tol),
                    "{label} {isa:?} {dims:?} amp {amp}: errors {e:?}"
                );
            }
        }
        eprintln!(
            "{label}: {} cases x {:?}; worst rel errors o {:.2e} lse {:.2e} dq {:.2e} dk {:.2e} dv {:.2e}",
            cases.len(),
            Isa::available(),
            worst[0],
            worst[1],
            worst[2],
            worst[3],
            worst[4]
        );
    }

    fn dims(batch: usize, heads: usize, kv_heads: usize, seq: usize, head_dim: usize) -> AttnDims {
        AttnDims {
            batch,
            heads,
            kv_heads,
            seq,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
        }
    }

    #[test]
    fn matches_reference_fixed_shapes() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let cases = [
            (dims(1, 1, 1, 1, 8), 1.0),
            (dims(2, 2, 2, 1, 24), 1.0),
            (dims(1, 4, 1, 37, 40), 1.0),
            (dims(2, 4, 4, 37, 24), 1.0),
            (dims(1, 2, 1, 64, 64), 1.0),
            (dims(1, 2, 2, 65, 64), 1.0),
            (dims(2, 4, 2, 130, 32), 1.0),
            (dims(1, 8, 2, 200, 17), 1.0),
            (dims(1, 1, 1, 3, 1), 1.0),
            // multi-chunk (online softmax across KC-key chunks) paths
            (dims(1, 2, 1, 600, 24), 1.0),
            (dims(1, 1, 1, 1100, 40), 1.0),
        ];
        run_cases(&cases, 1e-5, "fixed shapes", &mut rng);
    }

    #[test]
    fn matches_reference_random_shapes() {
        let mut rng = Rng(0xDEAD_BEEF_1234_5678);
        let mut cases = Vec::new();
        for _ in 0..30 {
            let kvh = 1 + rng.below(3);
            let g = [1, 2, 4][rng.below(3)];
            let b = 1 + rng.below(3);
            let t = 1 + rng.below(160);
            let d = 1 + rng.below(80);
            let mut dm = dims(b, kvh * g, kvh, t, d);
            // occasionally a non-standard scale
            if rng.below(4) == 0 {
                dm.scale = 0.05 + rng.uniform().abs();
            }
            cases.push((dm, 1.0 + rng.uniform().abs()));
        }
        run_cases(&cases, 1e-5, "random shapes", &mut rng);
    }

    /// Large-magnitude scores (|s| up to a few hundred, nearly one-hot softmax rows). The
    /// f32 rounding of a score s is ~|s| * 6e-8 in the exponent, so errors grow with |s|;
    /// the tolerance is relaxed accordingly.
    #[test]
    fn large_magnitude_scores() {
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        let cases = [
            (dims(1, 2, 1, 37, 24), 4.0),
            (dims(2, 4, 2, 100, 64), 4.0),
            (dims(1, 2, 2, 64, 40), 8.0),
            (dims(1, 2, 1, 600, 16), 8.0),
        ];
        let mut rng2 = Rng(rng.next_u64());
        let mut max_score = 0.0f32;
        for &(dm, amp) in &cases {
            // |q . k| * scale <= d * amp^2 * scale; report the bound actually reached on a sample.
            let mut r = Rng(7);
            let qv = r.vec(dm.head_dim * 64, amp);
            let kv = r.vec(dm.head_dim * 64, amp);
            for i in 0..64 {
                for j in 0..64 {
                    let s: f32 = (0..dm.head_dim)
                        .map(|c| qv[i * dm.head_dim + c] * kv[j * dm.head_dim + c])
                        .sum();
                    max_score = max_score.max(s.abs() * dm.scale);
                }
            }
        }
        eprintln!("large scores: sampled max |scaled score| ~ {max_score:.1}");
        run_cases(&cases, 2e-5, "large scores", &mut rng2);
        // And an extreme scale: scores of order 1e4 (hard max); must stay finite and exact-ish.
        let mut dm = dims(1, 2, 1, 50, 16);
        dm.scale = 100.0;
        let e = check_case(dm, &mut rng, 1.0, Isa::detect());
        eprintln!("extreme scale 100: rel errors {e:?}");
        assert!(e.iter().all(|&x| x < 1e-2), "{e:?}");
    }

    #[test]
    fn empty_and_degenerate() {
        let (o, lse) = attention_forward(&[], &[], &[], dims(0, 2, 1, 5, 4));
        assert!(o.is_empty() && lse.is_empty());
        let dm = AttnDims {
            batch: 1,
            heads: 2,
            kv_heads: 1,
            seq: 3,
            head_dim: 0,
            scale: 1.0,
        };
        let (o, lse) = attention_forward(&[], &[], &[], dm);
        assert!(o.is_empty());
        assert!((lse[2] - 3f32.ln()).abs() < 1e-6);
        let (dq, dk, dv) = attention_backward(&[], &[], &[], &o, &lse, &[], dm);
        assert!(dq.is_empty() && dk.is_empty() && dv.is_empty());
    }

    /// Central finite differences of L = sum(O * W) in f64 against the kernel's gradients.
    #[test]
    fn finite_difference_gradients() {
        let mut rng = Rng(0x5555_AAAA_1234_4321);
        let dm = AttnDims {
            batch: 1,
            heads: 2,
            kv_heads: 1,
            seq: 5,
            head_dim: 3,
            scale: 0.7,
        };
        let q = rng.vec(dm.q_len(), 1.5);
        let k = rng.vec(dm.kv_len(), 1.5);
        let v = rng.vec(dm.kv_len(), 1.0);
        let w = rng.vec(dm.q_len(), 1.0);
        let (o, lse) = attention_forward(&q, &k, &v, dm);
        let (dq, dk, dv) = attention_backward(&q, &k, &v, &o, &lse, &w, dm);
        let w64 = to64(&w);
        let loss = |q: &[f64], k: &[f64], v: &[f64]| -> f64 {
            let (o, _) = ref_forward(q, k, v, dm);
            o.iter().zip(&w64).map(|(a, b)| a * b).sum()
        };
        let eps = 1e-5;
        let mut worst = 0.0f64;
        for which in 0..3 {
            let (n, grad) = match which {
                0 => (q.len(), &dq),
                1 => (k.len(), &dk),
                _ => (v.len(), &dv),
            };
            for idx in [0, n / 3, n / 2, n - 1] {
                let mut args = [to64(&q), to64(&k), to64(&v)];
                args[which][idx] += eps;
                let lp = loss(&args[0], &args[1], &args[2]);
                args[which][idx] -= 2.0 * eps;
                let lm = loss(&args[0], &args[1], &args[2]);
                let fd = (lp - lm) / (2.0 * eps);
                let err = (fd - grad[idx] as f64).abs() / fd.abs().max(1.0);
                worst = worst.max(err);
                assert!(
                    err < 1e-5,
                    "input {which} idx {idx}: fd {fd} kernel {}",
                    grad[idx]
                );
            }
        }
        eprintln!("finite differences: worst error {worst:.2e}");
    }

    fn best_of<F: FnMut()>(n: usize, mut f: F) -> f64 {
        let mut best = f64::INFINITY;
        for _ in 0..n {
            let t0 = std::time::Instant::now();
            f();
            best = best.min(t0.elapsed().as_secs_f64() * 1e3);
        }
        best
    }

    #[test]
    #[ignore]
    fn bench() {
        let reps: usize = std::env::var("ATTN_BENCH_REPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5);
        eprintln!(
            "rayon threads: {}, best of {reps}; public API uses {:?}",
            rayon::current_num_threads(),
            Isa::detect()
        );
        for dm in [dims(8, 4, 2, 256, 64), dims(12, 4, 4, 64, 32)] {
            let mut rng = Rng(42);
            let q = rng.vec(dm.q_len(), 1.0);
            let k = rng.vec(dm.kv_len(), 1.0);
            let v = rng.vec(dm.kv_len(), 1.0);
            let d_o = rng.vec(dm.q_len(), 1.0);
            let (o, lse) = attention_forward(&q, &k, &v, dm);
            // warm-up (first-touch page faults, rayon pool start-up)
            std::hint::black_box(attention_backward(&q, &k, &v, &o, &lse, &d_o, dm));
            let fwd = best_of(reps, || {
                std::hint::black_box(attention_forward(&q, &k, &v, dm));
            });
            let bwd = best_of(reps, || {
                std::hint::black_box(attention_backward(&q, &k, &v, &o, &lse, &d_o, dm));
            });
            eprintln!(
                "b={} h={} kvh={} t={} d={}: forward {fwd:.2} ms, backward {bwd:.2} ms",
                dm.batch, dm.heads, dm.kv_heads, dm.seq, dm.head_dim
            );
            if std::env::var("ATTN_BENCH_ALL_ISAS").is_ok() {
                for isa in Isa::available() {
                    let fwd = best_of(reps, || {
                        std::hint::black_box(attention_forward_isa(&q, &k, &v, dm, isa));
                    });
                    let bwd = best_of(reps, || {
                        std::hint::black_box(attention_backward_isa(
                            &q,
                            &k,
                            &v,
                            &o,
                            &lse,
                            &d_o,
                            dm,
                            isa,
                            BwdSplit::Auto,
                        ));
                    });
                    eprintln!("    {isa:?}: forward {fwd:.2} ms, backward {bwd:.2} ms");
                }
            }
        }
    }
}
