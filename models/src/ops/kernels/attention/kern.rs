//! Register-tiled broadcast-FMA microkernels (AVX-512 / AVX2) for the block products.

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
unsafe fn mk<V: Vect, const W: usize, const R: usize, const CV: usize, const ACC: bool>(t: &Tile) {
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
