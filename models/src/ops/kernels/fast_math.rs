//! Vectorisable `exp` / `sigmoid` and the runtime ISA dispatch shared by the kernels.
//!
//! All element functions are `#[inline(always)]` and branch-free (selects only) so that LLVM
//! can auto-vectorise the loops that use them. Kernels are written once, generic over an
//! [`Isa`] marker, and instantiated inside `#[target_feature]` functions by [`dispatch`];
//! the portable instantiation is compiled for the baseline target (SSE2 on x86-64).
//!
//! Determinism: every reduction in these kernels uses an explicit, fixed lane layout, so the
//! result does not depend on the vector width LLVM picks. The AVX2 and AVX-512 paths both use
//! fused multiply-adds and give bitwise identical results; the portable path (no FMA) differs
//! from them in the last bits.

/// Instruction-set marker the kernels are generic over. Only `fma` differs between ISAs.
pub(crate) trait Isa: Copy {
    /// `a * b + c`, fused where the ISA has FMA, separately rounded otherwise.
    fn fma(a: f32, b: f32, c: f32) -> f32;
}

/// Baseline target: no FMA (a `mul_add` here would be a slow libm call).
#[derive(Clone, Copy)]
pub(crate) struct Portable;
impl Isa for Portable {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// x86-64 with FMA (used by the AVX2 and the AVX-512 instantiations).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy)]
pub(crate) struct Fused;
impl Isa for Fused {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// A kernel body generic over the ISA. `run` and everything it calls must be
/// `#[inline(always)]` so that it is compiled with the features of the dispatching function.
pub(crate) trait SimdKernel {
    type Output;
    fn run<I: Isa>(self) -> Self::Output;
}

/// Code path of a kernel. Ordered: each level needs the CPU features of the ones below it.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Level {
    Portable,
    Avx2,
    Avx512,
}

impl Level {
    fn code(self) -> u8 {
        match self {
            Level::Portable => 1,
            Level::Avx2 => 2,
            Level::Avx512 => 3,
        }
    }
    fn from_code(c: u8) -> Option<Level> {
        match c {
            1 => Some(Level::Portable),
            2 => Some(Level::Avx2),
            3 => Some(Level::Avx512),
            _ => None,
        }
    }
}

/// Best level the CPU supports (cached).
#[cfg(target_arch = "x86_64")]
fn hw_level() -> Level {
    use std::sync::atomic::{AtomicU8, Ordering};
    static HW: AtomicU8 = AtomicU8::new(0);
    if let Some(l) = Level::from_code(HW.load(Ordering::Relaxed)) {
        return l;
    }
    let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    let l = if avx2 && is_x86_feature_detected!("avx512f") {
        Level::Avx512
    } else if avx2 {
        Level::Avx2
    } else {
        Level::Portable
    };
    HW.store(l.code(), Ordering::Relaxed);
    l
}

#[cfg(not(target_arch = "x86_64"))]
fn hw_level() -> Level {
    Level::Portable
}

/// Level the public kernels use: the CPU's best, lowered by the environment variables
/// `KILN_NO_AVX512` (use AVX2) or `KILN_NO_SIMD` (portable code) if set (read once, cached).
pub(crate) fn level() -> Level {
    use std::sync::atomic::{AtomicU8, Ordering};
    static LEVEL: AtomicU8 = AtomicU8::new(0);
    if let Some(l) = Level::from_code(LEVEL.load(Ordering::Relaxed)) {
        return l;
    }
    let mut l = hw_level();
    if std::env::var_os("KILN_NO_AVX512").is_some() {
        l = l.min(Level::Avx2);
    }
    if std::env::var_os("KILN_NO_SIMD").is_some() {
        l = Level::Portable;
    }
    LEVEL.store(l.code(), Ordering::Relaxed);
    l
}

/// All levels this CPU can run (for tests comparing the code paths).
#[cfg(test)]
pub(crate) fn available_levels() -> Vec<Level> {
    [Level::Portable, Level::Avx2, Level::Avx512]
        .into_iter()
        .filter(|&l| l <= hw_level())
        .collect()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: SimdKernel>(k: K) -> K::Output {
    k.run::<Fused>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512<K: SimdKernel>(k: K) -> K::Output {
    k.run::<Fused>()
}

/// Runs `k` on the code path `level`, lowered to what the CPU supports.
#[inline]
pub(crate) fn dispatch<K: SimdKernel>(level: Level, k: K) -> K::Output {
    match level.min(hw_level()) {
        // SAFETY: `hw_level` detected these CPU features at run time.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { run_avx512(k) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { run_avx2(k) },
        _ => k.run::<Portable>(),
    }
}

/// Name of the code path the public kernels take ("avx512", "avx2" or "portable").
pub fn simd_level_name() -> &'static str {
    match level() {
        Level::Avx512 => "avx512",
        Level::Avx2 => "avx2",
        Level::Portable => "portable",
    }
}

// ---------------------------------------------------------------------------------------------
// exp
// ---------------------------------------------------------------------------------------------

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split Cephes-style: `LN2_HI` has 9 significant bits, so `n * LN2_HI` is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding it rounds to the nearest integer, which lands in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// ~ln(f32::MIN_POSITIVE). Below it exp(x) would be subnormal and is flushed to 0 (x = -inf
/// included): subnormal arithmetic costs x86 microcode assists (3-5x slower loops here).
const EXP_ZERO_BELOW: f32 = -87.336_54;
/// Above this exp(x) overflows; between ln(f32::MAX) and here it overflows naturally.
const EXP_INF_ABOVE: f32 = 88.8;

/// exp(x) for one f32, branch-free. Max error 1 ulp (measured) wherever the result is a normal
/// float. exp(x) = 0 for x < -87.3365 (and -inf), i.e. would-be subnormal results are flushed
/// to zero (absolute error < f32::MIN_POSITIVE); +inf for x > 88.7228 (and +inf); NaN for NaN.
#[inline(always)]
pub(crate) fn exp_g<I: Isa>(x: f32) -> f32 {
    // `clamp` keeps NaN as NaN (unlike min/max).
    let xc = x.clamp(EXP_ZERO_BELOW, EXP_INF_ABOVE);
    // n = round(x / ln2), n in [-126, 128].
    let t = I::fma(xc, LOG2E, ROUND_MAGIC);
    let n = t - ROUND_MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    // r = x - n ln2, |r| <= ~0.35.
    let r = I::fma(n, -LN2_HI, xc);
    let r = I::fma(n, -LN2_LO, r);
    // Cephes expf polynomial: exp(r) ~ 1 + r + r^2 P(r).
    let mut p = 1.987_569_1e-4_f32;
    p = I::fma(p, r, 1.398_199_9e-3);
    p = I::fma(p, r, 8.333_452e-3);
    p = I::fma(p, r, 4.166_579_6e-2);
    p = I::fma(p, r, 1.666_666_5e-1);
    p = I::fma(p, r, 0.5);
    let r2 = r * r;
    let p = I::fma(p, r2, r) + 1.0;
    // Scale by 2^n as 2^n1 * 2^n2 so that n = 128 needs no special case.
    let n1 = ni >> 1;
    let n2 = ni.wrapping_sub(n1);
    let s1 = f32::from_bits((n1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((n2.wrapping_add(127) as u32) << 23);
    let y = p * s1 * s2;
    if x < EXP_ZERO_BELOW {
        0.0
    } else if x > EXP_INF_ABOVE {
        f32::INFINITY
    } else {
        y
    }
}

/// Below this sigmoid(x) < ~1.6e-38 is returned as 0 (avoids subnormal divisions).
const SIGMOID_ZERO_BELOW: f32 = -87.0;

/// Logistic sigmoid 1 / (1 + exp(-x)); 0 for x < -87 (and -inf), 1 for x > 17 (rounding),
/// NaN for NaN. Max relative error ~1.5e-7 elsewhere.
#[inline(always)]
pub(crate) fn sigmoid_g<I: Isa>(x: f32) -> f32 {
    // Keep the division's result normal; `max` would turn NaN into -87, so compare instead.
    let xc = if x < SIGMOID_ZERO_BELOW {
        SIGMOID_ZERO_BELOW
    } else {
        x
    };
    let s = 1.0 / (1.0 + exp_g::<I>(-xc));
    if x < SIGMOID_ZERO_BELOW {
        0.0
    } else {
        s
    }
}

/// Scalar exp (portable instantiation; same algorithm as the slice kernels).
pub fn exp(x: f32) -> f32 {
    exp_g::<Portable>(x)
}

/// Scalar logistic sigmoid (portable instantiation).
pub fn sigmoid(x: f32) -> f32 {
    sigmoid_g::<Portable>(x)
}

struct ExpInplace<'a>(&'a mut [f32]);
impl SimdKernel for ExpInplace<'_> {
    type Output = ();
    #[inline(always)]
    fn run<I: Isa>(self) {
        for v in self.0.iter_mut() {
            *v = exp_g::<I>(*v);
        }
    }
}

struct SigmoidInplace<'a>(&'a mut [f32]);
impl SimdKernel for SigmoidInplace<'_> {
    type Output = ();
    #[inline(always)]
    fn run<I: Isa>(self) {
        for v in self.0.iter_mut() {
            *v = sigmoid_g::<I>(*v);
        }
    }
}

/// x <- exp(x) elementwise (single-threaded, SIMD-dispatched).
pub fn exp_inplace(x: &mut [f32]) {
    dispatch(level(), ExpInplace(x))
}

/// x <- sigmoid(x) elementwise (single-threaded, SIMD-dispatched).
pub fn sigmoid_inplace(x: &mut [f32]) {
    dispatch(level(), SigmoidInplace(x))
}

// ---------------------------------------------------------------------------------------------
// Fixed-layout reductions (16 explicit lanes, combined in a fixed order).
// ---------------------------------------------------------------------------------------------

pub(crate) const LANES: usize = 16;

/// Combines 16 lane partials pairwise in a fixed order, in f64.
#[inline(always)]
pub(crate) fn hsum_lanes(acc: &[f32; LANES]) -> f64 {
    let mut s = [0f64; 8];
    for k in 0..8 {
        s[k] = acc[k] as f64 + acc[k + 8] as f64;
    }
    let a = (s[0] + s[4]) + (s[2] + s[6]);
    let b = (s[1] + s[5]) + (s[3] + s[7]);
    a + b
}

/// Block length of the f32 partial sums; blocks are accumulated in f64.
pub(crate) const BLOCK: usize = 512;

/// sum_j a_j * b_j, f32 lanes within blocks of `BLOCK`, f64 across blocks. Equal lengths.
#[inline(always)]
pub(crate) fn dot_g<I: Isa>(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut total = 0f64;
    for (ab, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let mut acc = [0f32; LANES];
        let (ac, ar) = ab.as_chunks::<LANES>();
        let (bc, br) = bb.as_chunks::<LANES>();
        for (x, y) in ac.iter().zip(bc) {
            for k in 0..LANES {
                acc[k] = I::fma(x[k], y[k], acc[k]);
            }
        }
        // Tail: zero-padded to a full lane group (constant indices keep the loop SLP-friendly).
        let (mut x, mut y) = ([0f32; LANES], [0f32; LANES]);
        x[..ar.len()].copy_from_slice(ar);
        y[..br.len()].copy_from_slice(br);
        for k in 0..LANES {
            acc[k] = I::fma(x[k], y[k], acc[k]);
        }
        total += hsum_lanes(&acc);
    }
    total
}

/// sum_j a_j, same layout as `dot_g`.
#[inline(always)]
pub(crate) fn sum_g(a: &[f32]) -> f64 {
    let mut total = 0f64;
    for blk in a.chunks(BLOCK) {
        let mut acc = [0f32; LANES];
        let (c, r) = blk.as_chunks::<LANES>();
        for x in c {
            for k in 0..LANES {
                acc[k] += x[k];
            }
        }
        let mut x = [0f32; LANES];
        x[..r.len()].copy_from_slice(r);
        for k in 0..LANES {
            acc[k] += x[k];
        }
        total += hsum_lanes(&acc);
    }
    total
}

/// Max over a slice (NaN entries are skipped; -inf for an empty or all-NaN slice).
#[inline(always)]
pub(crate) fn max_g(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let (c, r) = a.as_chunks::<LANES>();
    for x in c {
        for k in 0..LANES {
            acc[k] = if x[k] > acc[k] { x[k] } else { acc[k] };
        }
    }
    let mut x = [f32::NEG_INFINITY; LANES];
    x[..r.len()].copy_from_slice(r);
    for k in 0..LANES {
        acc[k] = if x[k] > acc[k] { x[k] } else { acc[k] };
    }
    let mut m = acc[0];
    for v in &acc[1..] {
        m = if *v > m { *v } else { m };
    }
    m
}

/// Below this many elements the kernels run on the calling thread.
pub(crate) const PAR_MIN_ELEMS: usize = 1 << 15;

#[cfg(test)]
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;

    fn ulp_diff(a: f32, b: f32) -> u32 {
        if a == b {
            return 0;
        }
        let ia = a.to_bits() as i32;
        let ib = b.to_bits() as i32;
        (ia.wrapping_sub(ib)).unsigned_abs()
    }

    #[test]
    fn exp_special_values() {
        let fs: [fn(f32) -> f32; 2] = [exp, |x| {
            let mut v = [x];
            exp_inplace(&mut v);
            v[0]
        }];
        for f in fs {
            assert_eq!(f(f32::NEG_INFINITY), 0.0);
            assert_eq!(f(-104.5), 0.0);
            assert_eq!(f(-1000.0), 0.0);
            assert_eq!(f(f32::INFINITY), f32::INFINITY);
            assert_eq!(f(89.0), f32::INFINITY);
            assert_eq!(f(1000.0), f32::INFINITY);
            assert!(f(f32::NAN).is_nan());
            assert_eq!(f(0.0), 1.0);
            assert!(f(88.72).is_finite());
        }
        assert_eq!(sigmoid(-200.0), 0.0);
        assert_eq!(sigmoid(-87.5), 0.0);
        assert!(sigmoid(-86.9) >= f32::MIN_POSITIVE);
        assert_eq!(sigmoid(f32::NEG_INFINITY), 0.0);
        assert_eq!(sigmoid(f32::INFINITY), 1.0);
        assert_eq!(sigmoid(200.0), 1.0);
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(f32::NAN).is_nan());
    }

    #[test]
    fn exp_ulp_sweep() {
        // Dense sweep of the normal-result range, both code paths.
        let mut xs: Vec<f32> = Vec::new();
        let mut x = -87.3f32;
        while x < 88.7 {
            xs.push(x);
            x += 0.000_731;
        }
        let mut scalar_ulp = 0;
        for &x in &xs {
            scalar_ulp = scalar_ulp.max(ulp_diff(exp(x), (x as f64).exp() as f32));
        }
        assert!(scalar_ulp <= 2);
        for l in available_levels() {
            let mut v = xs.clone();
            dispatch(l, ExpInplace(&mut v));
            let mut max_ulp = 0;
            for (i, &x) in xs.iter().enumerate() {
                max_ulp = max_ulp.max(ulp_diff(v[i], (x as f64).exp() as f32));
            }
            eprintln!("exp max ulp vs correctly rounded, {l:?}: {max_ulp} (scalar {scalar_ulp})");
            assert!(max_ulp <= 2);
            let mut special = [
                f32::NEG_INFINITY,
                -104.5,
                f32::INFINITY,
                89.0,
                f32::NAN,
                0.0,
            ];
            dispatch(l, ExpInplace(&mut special));
            assert_eq!(&special[..4], &[0.0, 0.0, f32::INFINITY, f32::INFINITY]);
            assert!(special[4].is_nan() && special[5] == 1.0);
        }
        // Would-be subnormal results are flushed to 0; normal ones stay accurate at the edge.
        let mut x = -103.9f32;
        while x < -87.34 {
            assert_eq!(exp(x), 0.0, "{x}");
            x += 0.01;
        }
        let mut x = -87.3365f32;
        while x < -87.2 {
            let got = exp(x);
            assert!(got >= f32::MIN_POSITIVE, "{x}");
            assert!(ulp_diff(got, (x as f64).exp() as f32) <= 1, "{x}");
            x += 1e-5;
        }
    }

    #[test]
    fn sigmoid_accuracy() {
        let mut xs: Vec<f32> = Vec::new();
        let mut x = -100.0f32;
        while x < 100.0 {
            xs.push(x);
            x += 0.00377;
        }
        for l in available_levels() {
            let mut v = xs.clone();
            dispatch(l, SigmoidInplace(&mut v));
            let mut max_rel = 0f64;
            for (i, &x) in xs.iter().enumerate() {
                let want = 1.0 / (1.0 + (-(x as f64)).exp());
                if want > 1e-37 {
                    max_rel = max_rel.max(((v[i] as f64) - want).abs() / want);
                }
            }
            eprintln!("sigmoid max rel err, {l:?}: {max_rel:e}");
            assert!(max_rel < 4e-7);
        }
    }
}
