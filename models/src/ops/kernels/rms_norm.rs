//! RMSNorm over the last dimension: y = x * inv_rms * w, and its backward.
//!
//! Rows are processed in fixed-size row chunks (`rows_per_task(d)`, independent of the thread
//! count). The weight gradient is reduced as one f32 partial per chunk, then the partials are
//! summed in chunk order in f64, so every output is bitwise reproducible and independent of
//! the number of threads.

use super::fast_math::{dispatch, dot_g, level, Isa, Level, SimdKernel, BLOCK, PAR_MIN_ELEMS};
use rayon::prelude::*;

/// Elements per row chunk (rounded to whole rows, at least one row).
const TASK_ELEMS: usize = 1 << 14;

fn rows_per_task(d: usize) -> usize {
    (TASK_ELEMS / d.max(1)).max(1)
}

struct Fwd<'a> {
    x: &'a [f32],
    w: &'a [f32],
    d: usize,
    eps: f32,
    y: &'a mut [f32],
    inv_rms: &'a mut [f32],
}

impl SimdKernel for Fwd<'_> {
    type Output = ();
    #[inline(always)]
    fn run<I: Isa>(self) {
        let d = self.d;
        let rows = self.x.chunks_exact(d).zip(self.y.chunks_exact_mut(d));
        for ((xr, yr), inv_out) in rows.zip(self.inv_rms.iter_mut()) {
            // Mean of squares rounded once to f32, then + eps and 1/sqrt in f32.
            let ms = (dot_g::<I>(xr, xr) / d as f64) as f32;
            let inv = 1.0 / (ms + self.eps).sqrt();
            *inv_out = inv;
            for ((o, &xv), &wv) in yr.iter_mut().zip(xr).zip(self.w) {
                *o = xv * inv * wv;
            }
        }
    }
}

/// y = x * inv_rms * w with inv_rms_i = 1 / sqrt(mean_j x_ij^2 + eps) (computed in f32 as
/// PyTorch does: mean of squares, + eps, rsqrt). Returns (y [n, d], inv_rms [n]).
///
/// The sum of squares is accumulated in f32 lanes per 512 columns and in f64 across those
/// blocks, then rounded to f32 once. Panics if `x.len() != n * d` or `w.len() != d`.
pub fn rms_norm_forward(
    x: &[f32],
    w: &[f32],
    n: usize,
    d: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    forward_at(level(), x, w, n, d, eps)
}

fn forward_at(
    level: Level,
    x: &[f32],
    w: &[f32],
    n: usize,
    d: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), n * d, "rms_norm_forward: x.len() != n * d");
    assert_eq!(w.len(), d, "rms_norm_forward: w.len() != d");
    let mut y = vec![0f32; n * d];
    let mut inv_rms = vec![0f32; n];
    if n == 0 || d == 0 {
        // Empty rows: mean of squares is taken as 0.
        inv_rms.iter_mut().for_each(|v| *v = 1.0 / eps.sqrt());
        return (y, inv_rms);
    }
    if n * d < PAR_MIN_ELEMS {
        dispatch(
            level,
            Fwd {
                x,
                w,
                d,
                eps,
                y: &mut y,
                inv_rms: &mut inv_rms,
            },
        );
    } else {
        let r = rows_per_task(d);
        y.par_chunks_mut(r * d)
            .zip(inv_rms.par_chunks_mut(r))
            .zip(x.par_chunks(r * d))
            .for_each(|((y, inv_rms), x)| {
                dispatch(
                    level,
                    Fwd {
                        x,
                        w,
                        d,
                        eps,
                        y,
                        inv_rms,
                    },
                )
            });
    }
    (y, inv_rms)
}

struct Bwd<'a> {
    x: &'a [f32],
    w: &'a [f32],
    inv_rms: &'a [f32],
    dy: &'a [f32],
    d: usize,
    dx: &'a mut [f32],
    /// Partial dw for this chunk of rows, length d, zero-initialised.
    dw: &'a mut [f32],
}

/// sum_k a_k * b_k * c_k with the same lane/block layout as `dot_g` (a * b is rounded to f32
/// first, into a stack buffer, which keeps the lane loop simple enough to vectorise).
#[inline(always)]
fn dot3_g<I: Isa>(a: &[f32], b: &[f32], c: &[f32]) -> f64 {
    let mut buf = [0f32; BLOCK];
    let mut total = 0f64;
    for ((ab, bb), cb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)).zip(c.chunks(BLOCK)) {
        let p = &mut buf[..ab.len()];
        for ((p, &x), &y) in p.iter_mut().zip(ab).zip(bb) {
            *p = x * y;
        }
        total += dot_g::<I>(p, cb);
    }
    total
}

impl SimdKernel for Bwd<'_> {
    type Output = ();
    #[inline(always)]
    fn run<I: Isa>(self) {
        let d = self.d;
        let w = self.w;
        let rows = self.x.chunks_exact(d).zip(self.dy.chunks_exact(d));
        let rows = rows.zip(self.dx.chunks_exact_mut(d)).zip(self.inv_rms);
        for (((xr, dyr), dxr), &inv) in rows {
            // k = inv^2 * mean_k(w_k dy_k x_k)
            let mean = dot3_g::<I>(w, dyr, xr) / d as f64;
            let k = (inv as f64 * inv as f64 * mean) as f32;
            for (((o, &xv), &dyv), &wv) in dxr.iter_mut().zip(xr).zip(dyr).zip(w) {
                *o = inv * I::fma(-xv, k, wv * dyv);
            }
            for ((acc, &xv), &dyv) in self.dw.iter_mut().zip(xr).zip(dyr) {
                *acc = I::fma(dyv, xv * inv, *acc);
            }
        }
    }
}

/// dx_ij = inv_i * (w_j dy_ij - x_ij * inv_i^2 * mean_k(w_k dy_ik x_ik)); dw_j = sum_i dy_ij x_ij inv_i.
/// dw must be reduced deterministically (fixed chunking, then a fixed-order sum of the
/// per-chunk partials), so results are bitwise reproducible run to run.
///
/// Returns (dx [n, d], dw [d]). Chunks are `max(1, 16384 / d)` rows; each chunk's dw partial is
/// accumulated in f32 and the partials are summed in chunk order in f64. Panics on length
/// mismatches (`x`, `dy`: n * d; `w`: d; `inv_rms`: n).
pub fn rms_norm_backward(
    x: &[f32],
    w: &[f32],
    inv_rms: &[f32],
    dy: &[f32],
    n: usize,
    d: usize,
) -> (Vec<f32>, Vec<f32>) {
    backward_at(level(), x, w, inv_rms, dy, n, d)
}

fn backward_at(
    level: Level,
    x: &[f32],
    w: &[f32],
    inv_rms: &[f32],
    dy: &[f32],
    n: usize,
    d: usize,
) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), n * d, "rms_norm_backward: x.len() != n * d");
    assert_eq!(dy.len(), n * d, "rms_norm_backward: dy.len() != n * d");
    assert_eq!(w.len(), d, "rms_norm_backward: w.len() != d");
    assert_eq!(inv_rms.len(), n, "rms_norm_backward: inv_rms.len() != n");
    let mut dx = vec![0f32; n * d];
    if n == 0 || d == 0 {
        return (dx, vec![0f32; d]);
    }
    let r = rows_per_task(d);
    type Chunk<'a> = ((&'a mut [f32], &'a [f32]), (&'a [f32], &'a [f32]));
    let chunk = |((dx, x), (dy, inv_rms)): Chunk| {
        let mut dw = vec![0f32; d];
        dispatch(
            level,
            Bwd {
                x,
                w,
                inv_rms,
                dy,
                d,
                dx,
                dw: &mut dw,
            },
        );
        dw
    };
    // Same chunks either way, so the two paths give identical bits.
    let partials: Vec<Vec<f32>> = if n * d < PAR_MIN_ELEMS {
        dx.chunks_mut(r * d)
            .zip(x.chunks(r * d))
            .zip(dy.chunks(r * d).zip(inv_rms.chunks(r)))
            .map(chunk)
            .collect()
    } else {
        dx.par_chunks_mut(r * d)
            .zip(x.par_chunks(r * d))
            .zip(dy.par_chunks(r * d).zip(inv_rms.par_chunks(r)))
            .map(chunk)
            .collect()
    };
    let mut acc = vec![0f64; d];
    for p in &partials {
        for (a, &v) in acc.iter_mut().zip(p) {
            *a += v as f64;
        }
    }
    let dw = acc.iter().map(|&a| a as f32).collect();
    (dx, dw)
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::super::fast_math::available_levels;
    use super::super::test_util::{rel_err, XorShift};
    use super::*;

    fn ref_inv(x: &[f32], n: usize, d: usize, eps: f32) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let ms = x[i * d..(i + 1) * d]
                    .iter()
                    .map(|&v| (v as f64).powi(2))
                    .sum::<f64>()
                    / d as f64;
                1.0 / (ms + eps as f64).sqrt()
            })
            .collect()
    }

    fn ref_forward(x: &[f32], w: &[f32], n: usize, d: usize, eps: f32) -> (Vec<f64>, Vec<f64>) {
        let inv = ref_inv(x, n, d, eps);
        let mut y = vec![0f64; n * d];
        for i in 0..n {
            for j in 0..d {
                y[i * d + j] = x[i * d + j] as f64 * inv[i] * w[j] as f64;
            }
        }
        (y, inv)
    }

    fn ref_backward(
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        n: usize,
        d: usize,
        eps: f32,
    ) -> (Vec<f64>, Vec<f64>) {
        let inv = ref_inv(x, n, d, eps);
        let mut dx = vec![0f64; n * d];
        let mut dw = vec![0f64; d];
        for i in 0..n {
            let row = i * d;
            let mean = (0..d)
                .map(|k| w[k] as f64 * dy[row + k] as f64 * x[row + k] as f64)
                .sum::<f64>()
                / d as f64;
            for j in 0..d {
                let (xv, dyv) = (x[row + j] as f64, dy[row + j] as f64);
                dx[row + j] = inv[i] * (w[j] as f64 * dyv - xv * inv[i] * inv[i] * mean);
                dw[j] += dyv * xv * inv[i];
            }
        }
        (dx, dw)
    }

    type Case = (Vec<f32>, Vec<f32>, Vec<f32>);
    fn case(rng: &mut XorShift, n: usize, d: usize, scale: f32) -> Case {
        let x = (0..n * d).map(|_| rng.unif() * scale).collect();
        let w = (0..d).map(|_| 1.0 + 0.5 * rng.unif()).collect();
        let dy = (0..n * d).map(|_| rng.unif()).collect();
        (x, w, dy)
    }

    #[test]
    fn matches_f64_reference() {
        let mut rng = XorShift(0x0123_4567_89AB_CDEF);
        let eps = 1e-5;
        let levels = available_levels();
        let mut worst = vec![[0f64; 4]; levels.len()];
        for &n in &[1usize, 3, 37, 200] {
            for &d in &[1usize, 5, 61, 257, 2048, 8192] {
                for &scale in &[1.0f32, 0.01, 30.0] {
                    let (x, w, dy) = case(&mut rng, n, d, scale);
                    let (ry, rinv) = ref_forward(&x, &w, n, d, eps);
                    let (rdx, rdw) = ref_backward(&x, &w, &dy, n, d, eps);
                    let mut fused: Option<Vec<u32>> = None;
                    for (li, &l) in levels.iter().enumerate() {
                        let (y, inv) = forward_at(l, &x, &w, n, d, eps);
                        let (dx, dw) = backward_at(l, &x, &w, &inv, &dy, n, d);
                        // For d = 1, dx = inv * w * dy * eps / (x^2 + eps) is pure cancellation
                        // of two O(inv * |w dy|) terms; measure it against that scale instead.
                        let e_dx = if d == 1 {
                            let s = (0..n)
                                .map(|i| (rinv[i] * (w[0] * dy[i]) as f64).abs())
                                .fold(0f64, f64::max);
                            let err = dx
                                .iter()
                                .zip(&rdx)
                                .fold(0f64, |a, (&g, &r)| a.max((g as f64 - r).abs()));
                            err / s
                        } else {
                            rel_err(&dx, &rdx)
                        };
                        let e = [
                            rel_err(&y, &ry),
                            rel_err(&inv, &rinv),
                            e_dx,
                            rel_err(&dw, &rdw),
                        ];
                        for k in 0..4 {
                            worst[li][k] = worst[li][k].max(e[k]);
                        }
                        assert!(
                            e.iter().all(|&v| v < 1e-5),
                            "{l:?} n={n} d={d} scale={scale}: {e:?}"
                        );
                        if l != Level::Portable {
                            let b: Vec<u32> = y
                                .iter()
                                .chain(&inv)
                                .chain(&dx)
                                .chain(&dw)
                                .map(|f| f.to_bits())
                                .collect();
                            match &fused {
                                Some(f) => assert!(*f == b, "AVX2 and AVX-512 results differ"),
                                None => fused = Some(b),
                            }
                        }
                    }
                }
            }
        }
        for (l, w) in levels.iter().zip(&worst) {
            eprintln!(
                "rms_norm max rel err, {l:?}: y {:e}, inv_rms {:e}, dx {:e}, dw {:e}",
                w[0], w[1], w[2], w[3]
            );
        }
    }

    #[test]
    fn finite_difference_gradient() {
        // L = sum dy * y, in f64, w.r.t. a few x and w entries.
        let mut rng = XorShift(31337);
        let (n, d, eps) = (3usize, 61usize, 1e-5f32);
        let (x, w, dy) = case(&mut rng, n, d, 1.0);
        let (_, inv) = rms_norm_forward(&x, &w, n, d, eps);
        let (dx, dw) = rms_norm_backward(&x, &w, &inv, &dy, n, d);
        let loss = |x: &[f64], w: &[f64]| -> f64 {
            let mut s = 0.0;
            for i in 0..n {
                let row = &x[i * d..(i + 1) * d];
                let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
                let inv = 1.0 / (ms + eps as f64).sqrt();
                for j in 0..d {
                    s += dy[i * d + j] as f64 * row[j] * inv * w[j];
                }
            }
            s
        };
        let xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let ws: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        let h = 1e-6;
        let mut max_err = 0f64;
        for &k in &[0usize, 5, d - 1, d + 30, 2 * d + 60] {
            let (mut p, mut m) = (xs.clone(), xs.clone());
            p[k] += h;
            m[k] -= h;
            let fd = (loss(&p, &ws) - loss(&m, &ws)) / (2.0 * h);
            max_err = max_err.max((fd - dx[k] as f64).abs());
        }
        for &j in &[0usize, 7, d - 1] {
            let (mut p, mut m) = (ws.clone(), ws.clone());
            p[j] += h;
            m[j] -= h;
            let fd = (loss(&xs, &p) - loss(&xs, &m)) / (2.0 * h);
            max_err = max_err.max((fd - dw[j] as f64).abs());
        }
        eprintln!("rms_norm finite-difference max abs err {max_err:e}");
        assert!(max_err < 1e-5);
    }

    #[test]
    fn deterministic_across_thread_counts() {
        let mut rng = XorShift(2024);
        let (n, d) = (333, 257);
        let (x, w, dy) = case(&mut rng, n, d, 2.0);
        let run = || {
            let (y, inv) = rms_norm_forward(&x, &w, n, d, 1e-6);
            let (dx, dw) = rms_norm_backward(&x, &w, &inv, &dy, n, d);
            (y, inv, dx, dw)
        };
        let a = run();
        let b = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(run);
        let c = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap()
            .install(run);
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for other in [&b, &c] {
            assert_eq!(bits(&a.0), bits(&other.0));
            assert_eq!(bits(&a.1), bits(&other.1));
            assert_eq!(bits(&a.2), bits(&other.2));
            assert_eq!(bits(&a.3), bits(&other.3));
        }
    }

    fn best_of_5<F: FnMut()>(mut f: F) -> f64 {
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            f();
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        best
    }

    #[test]
    #[ignore]
    fn bench_rms_norm() {
        for &d in &[256usize, 2048] {
            let n = 2048;
            let mut rng = XorShift(42);
            let (x, w, dy) = case(&mut rng, n, d, 1.0);
            let mut inv = Vec::new();
            let fwd = best_of_5(|| {
                let (y, i) = rms_norm_forward(&x, &w, n, d, 1e-5);
                std::hint::black_box(&y);
                inv = i;
            });
            let bwd = best_of_5(|| {
                std::hint::black_box(rms_norm_backward(&x, &w, &inv, &dy, n, d));
            });
            eprintln!(
                "rms_norm [{n}, {d}] ({}, {} threads): fwd {fwd:.3} ms, bwd {bwd:.3} ms",
                super::super::fast_math::simd_level_name(),
                rayon::current_num_threads()
            );
        }
    }
}
