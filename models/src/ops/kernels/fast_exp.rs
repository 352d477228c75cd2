//! Vectorised row kernels used by the fused attention: a Cephes-style `exp` (about 1-2 ulp
//! over the range that matters here), row maximum, `x <- exp(x - m)` with and without the
//! sum, the softmax-backward `dp <- p * (dp - d)` and a dot product.
//!
//! Every function takes an [`Isa`] chosen once at runtime by [`Isa::detect`]: `Avx2` runs
//! `#[target_feature(enable = "avx2,fma")]` code, `Avx512` 16-lane `avx512f` code, `Scalar` is a portable fallback that uses
//! the same polynomial (without fused multiply-adds).
//!
//! `exp` semantics: inputs below about -87.34 (including `-inf`) give exactly `0.0`; inputs
//! are clamped above at 88.0 (so `exp(x)` for `x` in (88, 88.72] is under-estimated and
//! `+inf` gives `exp(88)`); NaN propagates. The attention kernels only ever pass
//! `score - max <= ~0`, so the clamp never matters there.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    Scalar,
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    Avx2,
    /// AVX-512F (plus AVX2/FMA): 16-lane kernels.
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    Avx512,
}

impl Isa {
    /// Best implementation available on this CPU.
    #[inline]
    pub(crate) fn detect() -> Isa {
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                if is_x86_feature_detected!("avx512f") {
                    return Isa::Avx512;
                }
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// All implementations usable on this CPU (for tests and benchmarks).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar];
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        {
            let best = Isa::detect();
            if best != Isa::Scalar {
                v.push(Isa::Avx2);
            }
            if best == Isa::Avx512 {
                v.push(Isa::Avx512);
            }
        }
        v
    }
}

const EXP_HI: f32 = 88.0;
const EXP_LO: f32 = -87.336_54; // ~ ln(2^-126): below this the result is flushed to 0
const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln(2) split in a part exactly representable with few bits and a remainder (Cephes).
const LN2_HI: f32 = 0.693_359_4; // = 355/512 exactly
const LN2_LO: f32 = -2.121_944_4e-4;
const P0: f32 = 1.987_569_1e-4;
const P1: f32 = 1.398_199_9e-3;
const P2: f32 = 8.333_452e-3;
const P3: f32 = 4.166_579_6e-2;
const P4: f32 = 1.666_666_5e-1;
const P5: f32 = 0.5; // Cephes: 5.0000001201e-1, which rounds to 0.5 in f32
/// 1.5 * 2^23: adding and subtracting it rounds an |x| < 2^22 to the nearest integer (ties to even).
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Portable scalar `exp` with the same algorithm as the SIMD version.
#[inline]
pub(crate) fn exp_scalar(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < EXP_LO {
        return 0.0;
    }
    let x = if x > EXP_HI { EXP_HI } else { x };
    let n = (x * LOG2E + ROUND_MAGIC) - ROUND_MAGIC;
    let r = x - n * LN2_HI;
    let r = r - n * LN2_LO;
    let mut y = P0;
    y = y * r + P1;
    y = y * r + P2;
    y = y * r + P3;
    y = y * r + P4;
    y = y * r + P5;
    y = y * (r * r) + r + 1.0;
    // n is in [-126, 127] here, so the biased exponent is a normal one.
    let pow2 = f32::from_bits(((n as i32 + 127) as u32) << 23);
    y * pow2
}

/// Maximum of `x` (`-inf` for an empty slice).
#[inline]
pub(crate) fn row_max(isa: Isa, x: &[f32]) -> f32 {
    match isa {
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        // SAFETY: `Isa::Avx2` is only constructed after runtime detection of avx2 and fma.
        Isa::Avx2 => unsafe { avx2::row_max(x) },
        // SAFETY: `Isa::Avx512` is only constructed after runtime detection of avx512f.
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        Isa::Avx512 => unsafe { avx512::row_max(x) },
        Isa::Scalar => {
            let mut lanes = [f32::NEG_INFINITY; 8];
            let mut chunks = x.chunks_exact(8);
            for c in &mut chunks {
                for l in 0..8 {
                    lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
                }
            }
            let mut m = f32::NEG_INFINITY;
            for &v in lanes.iter().chain(chunks.remainder()) {
                if v > m {
                    m = v;
                }
            }
            m
        }
    }
}

/// `x[j] <- exp(x[j] - m)`; returns the sum of the new values.
#[inline]
pub(crate) fn exp_sub_sum(isa: Isa, x: &mut [f32], m: f32) -> f32 {
    match isa {
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        // SAFETY: `Isa::Avx2` is only constructed after runtime detection of avx2 and fma.
        Isa::Avx2 => unsafe { avx2::exp_sub::<true>(x, m) },
        // SAFETY: `Isa::Avx512` is only constructed after runtime detection of avx512f.
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        Isa::Avx512 => unsafe { avx512::exp_sub::<true>(x, m) },
        Isa::Scalar => {
            let mut lanes = [0.0f32; 8];
            let mut chunks = x.chunks_exact_mut(8);
            for c in &mut chunks {
                for l in 0..8 {
                    let e = exp_scalar(c[l] - m);
                    c[l] = e;
                    lanes[l] += e;
                }
            }
            let mut s = 0.0f32;
            for v in chunks.into_remainder() {
                *v = exp_scalar(*v - m);
                s += *v;
            }
            s + lanes.iter().sum::<f32>()
        }
    }
}

/// `x[j] <- exp(x[j] - m)`.
#[inline]
pub(crate) fn exp_sub(isa: Isa, x: &mut [f32], m: f32) {
    match isa {
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        // SAFETY: `Isa::Avx2` is only constructed after runtime detection of avx2 and fma.
        Isa::Avx2 => unsafe {
            avx2::exp_sub::<false>(x, m);
        },
        // SAFETY: `Isa::Avx512` is only constructed after runtime detection of avx512f.
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        Isa::Avx512 => unsafe {
            avx512::exp_sub::<false>(x, m);
        },
        Isa::Scalar => {
            for v in x.iter_mut() {
                *v = exp_scalar(*v - m);
            }
        }
    }
}

/// Softmax backward for one row: `dp[j] <- p[j] * (dp[j] - d) * scale`.
#[inline]
pub(crate) fn softmax_bwd_row(isa: Isa, p: &[f32], dp: &mut [f32], d: f32, scale: f32) {
    debug_assert_eq!(p.len(), dp.len());
    match isa {
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        // SAFETY: `Isa::Avx2` is only constructed after runtime detection of avx2 and fma.
        Isa::Avx2 => unsafe { avx2::softmax_bwd_row(p, dp, d, scale) },
        // SAFETY: `Isa::Avx512` is only constructed after runtime detection of avx512f.
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        Isa::Avx512 => unsafe { avx512::softmax_bwd_row(p, dp, d, scale) },
        Isa::Scalar => {
            for (g, &pv) in dp.iter_mut().zip(p) {
                *g = pv * (*g - d) * scale;
            }
        }
    }
}

/// Dot product (f32 accumulation in 8 or more independent lanes).
#[inline]
pub(crate) fn dot(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    match isa {
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        // SAFETY: `Isa::Avx2` is only constructed after runtime detection of avx2 and fma.
        Isa::Avx2 => unsafe { avx2::dot(a, b) },
        // SAFETY: `Isa::Avx512` is only constructed after runtime detection of avx512f.
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        Isa::Avx512 => unsafe { avx512::dot(a, b) },
        Isa::Scalar => {
            let mut lanes = [0.0f32; 8];
            let mut ca = a.chunks_exact(8);
            let mut cb = b.chunks_exact(8);
            for (x, y) in (&mut ca).zip(&mut cb) {
                for l in 0..8 {
                    lanes[l] += x[l] * y[l];
                }
            }
            let mut s = 0.0f32;
            for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
                s += x * y;
            }
            s + lanes.iter().sum::<f32>()
        }
    }
}

/// `x[j] *= s`.
#[inline]
pub(crate) fn scale_row(x: &mut [f32], s: f32) {
    for v in x.iter_mut() {
        *v *= s;
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
mod avx2 {
    #[cfg(target_arch = "x86")]
    use std::arch::x86::*;
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    use super::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        unsafe {
            let lo = _mm256_castps256_ps128(v);
            let hi = _mm256_extractf128_ps(v, 1);
            let s = _mm_add_ps(lo, hi);
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01));
            _mm_cvtss_f32(s)
        }
    }

    #[inline(always)]
    unsafe fn hmax(v: __m256) -> f32 {
        unsafe {
            let lo = _mm256_castps256_ps128(v);
            let hi = _mm256_extractf128_ps(v, 1);
            let s = _mm_max_ps(lo, hi);
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 0b01));
            _mm_cvtss_f32(s)
        }
    }

    /// Lane mask with the first `n` (< 8) lanes set.
    #[inline(always)]
    unsafe fn tail_mask(n: usize) -> __m256i {
        unsafe {
            let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp256(x: __m256) -> __m256 {
        let zero_mask = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_LO));
        // max/min return the second operand when either is NaN: keep x second so NaN survives.
        let x = _mm256_max_ps(_mm256_set1_ps(EXP_LO), x);
        let x = _mm256_min_ps(_mm256_set1_ps(EXP_HI), x);
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut y = _mm256_set1_ps(P0);
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(P1));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(P2));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(P3));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(P4));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(P5));
        let r2 = _mm256_mul_ps(r, r);
        y = _mm256_fmadd_ps(y, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        // NaN lanes convert to i32::MIN; the garbage exponent is irrelevant since y is NaN.
        let ni = _mm256_cvtps_epi32(n);
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            ni,
            _mm256_set1_epi32(127),
        )));
        _mm256_andnot_ps(zero_mask, _mm256_mul_ps(y, pow2))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn row_max(x: &[f32]) -> f32 {
        unsafe {
            let n = x.len();
            let p = x.as_ptr();
            let mut m0 = _mm256_set1_ps(f32::NEG_INFINITY);
            let mut m1 = m0;
            let mut i = 0;
            while i + 16 <= n {
                m0 = _mm256_max_ps(m0, _mm256_loadu_ps(p.add(i)));
                m1 = _mm256_max_ps(m1, _mm256_loadu_ps(p.add(i + 8)));
                i += 16;
            }
            if i + 8 <= n {
                m0 = _mm256_max_ps(m0, _mm256_loadu_ps(p.add(i)));
                i += 8;
            }
            if i < n {
                let mask = tail_mask(n - i);
                let v = _mm256_maskload_ps(p.add(i), mask);
                let v = _mm256_blendv_ps(m1, v, _mm256_castsi256_ps(mask));
                m1 = _mm256_max_ps(m1, v);
            }
            hmax(_mm256_max_ps(m0, m1))
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_sub<const SUM: bool>(x: &mut [f32], m: f32) -> f32 {
        unsafe {
            let n = x.len();
            let p = x.as_mut_ptr();
            let mv = _mm256_set1_ps(m);
            let mut s0 = _mm256_setzero_ps();
            let mut s1 = _mm256_setzero_ps();
            let mut i = 0;
            while i + 16 <= n {
                let e0 = exp256(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mv));
                let e1 = exp256(_mm256_sub_ps(_mm256_loadu_ps(p.add(i + 8)), mv));
                _mm256_storeu_ps(p.add(i), e0);
                _mm256_storeu_ps(p.add(i + 8), e1);
                if SUM {
                    s0 = _mm256_add_ps(s0, e0);
                    s1 = _mm256_add_ps(s1, e1);
                }
                i += 16;
            }
            if i + 8 <= n {
                let e0 = exp256(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mv));
                _mm256_storeu_ps(p.add(i), e0);
                if SUM {
                    s0 = _mm256_add_ps(s0, e0);
                }
                i += 8;
            }
            if i < n {
                let mask = tail_mask(n - i);
                let e = exp256(_mm256_sub_ps(_mm256_maskload_ps(p.add(i), mask), mv));
                let e = _mm256_and_ps(e, _mm256_castsi256_ps(mask));
                _mm256_maskstore_ps(p.add(i), mask, e);
                if SUM {
                    s1 = _mm256_add_ps(s1, e);
                }
            }
            if SUM {
                hsum(_mm256_add_ps(s0, s1))
            } else {
                0.0
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_bwd_row(pr: &[f32], dp: &mut [f32], d: f32, scale: f32) {
        unsafe {
            let n = pr.len().min(dp.len());
            let pp = pr.as_ptr();
            let gp = dp.as_mut_ptr();
            let dv = _mm256_set1_ps(d);
            let sv = _mm256_set1_ps(scale);
            let mut i = 0;
            while i + 8 <= n {
                let g = _mm256_sub_ps(_mm256_loadu_ps(gp.add(i)), dv);
                let g = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(pp.add(i)), g), sv);
                _mm256_storeu_ps(gp.add(i), g);
                i += 8;
            }
            while i < n {
                *gp.add(i) = *pp.add(i) * (*gp.add(i) - d) * scale;
                i += 1;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        unsafe {
            let n = a.len().min(b.len());
            let pa = a.as_ptr();
            let pb = b.as_ptr();
            let mut s0 = _mm256_setzero_ps();
            let mut s1 = _mm256_setzero_ps();
            let mut i = 0;
            while i + 16 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
                s1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    s1,
                );
                i += 16;
            }
            if i + 8 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
                i += 8;
            }
            let mut s = hsum(_mm256_add_ps(s0, s1));
            while i < n {
                s += *pa.add(i) * *pb.add(i);
                i += 1;
            }
            s
        }
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
mod avx512 {
    #[cfg(target_arch = "x86")]
    use std::arch::x86::*;
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    use super::*;

    #[inline(always)]
    fn tail(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// Same polynomial and FMA sequence as the AVX2 version (bitwise identical results).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp512(x: __m512) -> __m512 {
        let keep = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, _mm512_set1_ps(EXP_LO));
        let x = _mm512_max_ps(_mm512_set1_ps(EXP_LO), x);
        let x = _mm512_min_ps(_mm512_set1_ps(EXP_HI), x);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut y = _mm512_set1_ps(P0);
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(P1));
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(P2));
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(P3));
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(P4));
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(P5));
        let r2 = _mm512_mul_ps(r, r);
        y = _mm512_fmadd_ps(y, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
        _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(y, n))
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn row_max(x: &[f32]) -> f32 {
        unsafe {
            let n = x.len();
            let p = x.as_ptr();
            let mut m0 = _mm512_set1_ps(f32::NEG_INFINITY);
            let mut m1 = m0;
            let mut i = 0;
            while i + 32 <= n {
                m0 = _mm512_max_ps(m0, _mm512_loadu_ps(p.add(i)));
                m1 = _mm512_max_ps(m1, _mm512_loadu_ps(p.add(i + 16)));
                i += 32;
            }
            if i + 16 <= n {
                m0 = _mm512_max_ps(m0, _mm512_loadu_ps(p.add(i)));
                i += 16;
            }
            if i < n {
                m1 = _mm512_mask_max_ps(
                    m1,
                    tail(n - i),
                    m1,
                    _mm512_maskz_loadu_ps(tail(n - i), p.add(i)),
                );
            }
            _mm512_reduce_max_ps(_mm512_max_ps(m0, m1))
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_sub<const SUM: bool>(x: &mut [f32], m: f32) -> f32 {
        unsafe {
            let n = x.len();
            let p = x.as_mut_ptr();
            let mv = _mm512_set1_ps(m);
            let mut s0 = _mm512_setzero_ps();
            let mut s1 = _mm512_setzero_ps();
            let mut i = 0;
            while i + 32 <= n {
                let e0 = exp512(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), mv));
                let e1 = exp512(_mm512_sub_ps(_mm512_loadu_ps(p.add(i + 16)), mv));
                _mm512_storeu_ps(p.add(i), e0);
                _mm512_storeu_ps(p.add(i + 16), e1);
                if SUM {
                    s0 = _mm512_add_ps(s0, e0);
                    s1 = _mm512_add_ps(s1, e1);
                }
                i += 32;
            }
            if i + 16 <= n {
                let e0 = exp512(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), mv));
                _mm512_storeu_ps(p.add(i), e0);
                if SUM {
                    s0 = _mm512_add_ps(s0, e0);
                }
                i += 16;
            }
            if i < n {
                let k = tail(n - i);
                let e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, p.add(i)), mv));
                _mm512_mask_storeu_ps(p.add(i), k, e);
                if SUM {
                    s1 = _mm512_mask_add_ps(s1, k, s1, e);
                }
            }
            if SUM {
                _mm512_reduce_add_ps(_mm512_add_ps(s0, s1))
            } else {
                0.0
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn softmax_bwd_row(pr: &[f32], dp: &mut [f32], d: f32, scale: f32) {
        unsafe {
            let n = pr.len().min(dp.len());
            let pp = pr.as_ptr();
            let gp = dp.as_mut_ptr();
            let dv = _mm512_set1_ps(d);
            let sv = _mm512_set1_ps(scale);
            let mut i = 0;
            while i < n {
                let k = if n - i >= 16 { 0xffff } else { tail(n - i) };
                let g = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, gp.add(i)), dv);
                let g = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, pp.add(i)), g), sv);
                _mm512_mask_storeu_ps(gp.add(i), k, g);
                i += 16;
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        unsafe {
            let n = a.len().min(b.len());
            let pa = a.as_ptr();
            let pb = b.as_ptr();
            let mut s0 = _mm512_setzero_ps();
            let mut s1 = _mm512_setzero_ps();
            let mut i = 0;
            while i + 32 <= n {
                s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), s0);
                s1 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(i + 16)),
                    _mm512_loadu_ps(pb.add(i + 16)),
                    s1,
                );
                i += 32;
            }
            while i < n {
                let k = if n - i >= 16 { 0xffff } else { tail(n - i) };
                s0 = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(k, pa.add(i)),
                    _mm512_maskz_loadu_ps(k, pb.add(i)),
                    s0,
                );
                i += 16;
            }
            _mm512_reduce_add_ps(_mm512_add_ps(s0, s1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulp_diff(a: f32, b: f32) -> u32 {
        if a == b {
            return 0;
        }
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_accuracy_and_edge_cases() {
        for isa in Isa::available() {
            let mut max_ulp = 0u32;
            let mut xs: Vec<f32> = Vec::new();
            let mut x = -87.0f32;
            while x < 88.0 {
                xs.push(x);
                x += 0.000_37;
            }
            let mut ys = xs.clone();
            exp_sub(isa, &mut ys, 0.0);
            for (&x, &y) in xs.iter().zip(&ys) {
                let r = (x as f64).exp() as f32;
                if r.is_normal() {
                    max_ulp = max_ulp.max(ulp_diff(y, r));
                }
            }
            assert!(max_ulp <= 3, "{isa:?}: max ulp {max_ulp}");
            eprintln!("{isa:?}: exp max ulp over [-87, 88]: {max_ulp}");

            let mut edge = vec![
                f32::NEG_INFINITY,
                -1e30,
                -100.0,
                -87.5,
                0.0,
                f32::NAN,
                -0.0,
                1e-30,
            ];
            exp_sub(isa, &mut edge, 0.0);
            assert_eq!(&edge[..4], &[0.0, 0.0, 0.0, 0.0]);
            assert_eq!(edge[4], 1.0);
            assert!(edge[5].is_nan());
            assert_eq!(edge[6], 1.0);
            assert_eq!(edge[7], 1.0);
        }
    }

    #[test]
    fn row_ops_match_scalar() {
        for isa in Isa::available() {
            for n in 0..70usize {
                let x: Vec<f32> = (0..n)
                    .map(|i| ((i * 7919 % 31) as f32) * -0.37 - 1.0)
                    .collect();
                assert_eq!(row_max(isa, &x), row_max(Isa::Scalar, &x));
                let mut a = x.clone();
                let mut b = x.clone();
                let sa = exp_sub_sum(isa, &mut a, 0.5);
                let sb = exp_sub_sum(Isa::Scalar, &mut b, 0.5);
                assert!((sa - sb).abs() <= 1e-5 * sb.abs().max(1.0));
                for (u, v) in a.iter().zip(&b) {
                    assert!(ulp_diff(*u, *v) <= 2);
                }
                let da = dot(isa, &x, &a);
                let db = dot(Isa::Scalar, &x, &a);
                assert!((da - db).abs() <= 1e-5 * db.abs().max(1.0));
                let mut ga = x.clone();
                let mut gb = x.clone();
                softmax_bwd_row(isa, &a, &mut ga, 0.25, 0.3);
                softmax_bwd_row(Isa::Scalar, &a, &mut gb, 0.25, 0.3);
                for (u, v) in ga.iter().zip(&gb) {
                    assert!(
                        (u - v).abs() <= 1e-6 * v.abs().max(1e-3),
                        "{isa:?} n={n}: {u} vs {v}"
                    );
                }
            }
        }
    }
}
