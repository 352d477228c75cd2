//! Fused SwiGLU gate: out = silu(gate) * up, and its backward.
//!
//! Purely elementwise; parallel over fixed 16K-element chunks, so results are bitwise
//! identical for any thread count.

use super::fast_math::{dispatch, level, sigmoid_g, Isa, Level, SimdKernel, PAR_MIN_ELEMS};
use rayon::prelude::*;

/// Elements per rayon task.
const TASK_ELEMS: usize = 1 << 14;

struct Fwd<'a> {
    gate: &'a [f32],
    up: &'a [f32],
    out: &'a mut [f32],
}

impl SimdKernel for Fwd<'_> {
    type Output = ();
    #[inline(always)]
    fn run<I: Isa>(self) {
        for ((o, &g), &u) in self.out.iter_mut().zip(self.gate).zip(self.up) {
            *o = g * sigmoid_g::<I>(g) * u;
        }
    }
}

/// out = silu(gate) * up, elementwise, equal lengths.
///
/// Panics if `gate.len() != up.len()`.
pub fn silu_mul_forward(gate: &[f32], up: &[f32]) -> Vec<f32> {
    forward_at(level(), gate, up)
}

fn forward_at(level: Level, gate: &[f32], up: &[f32]) -> Vec<f32> {
    assert_eq!(gate.len(), up.len(), "silu_mul_forward: length mismatch");
    let mut out = vec![0f32; gate.len()];
    if gate.len() < PAR_MIN_ELEMS {
        dispatch(
            level,
            Fwd {
                gate,
                up,
                out: &mut out,
            },
        );
    } else {
        out.par_chunks_mut(TASK_ELEMS)
            .zip(gate.par_chunks(TASK_ELEMS))
            .zip(up.par_chunks(TASK_ELEMS))
            .for_each(|((out, gate), up)| dispatch(level, Fwd { gate, up, out }));
    }
    out
}

struct Bwd<'a> {
    gate: &'a [f32],
    up: &'a [f32],
    grad: &'a [f32],
    d_gate: &'a mut [f32],
    d_up: &'a mut [f32],
}

impl SimdKernel for Bwd<'_> {
    type Output = ();
    #[inline(always)]
    fn run<I: Isa>(self) {
        let outs = self.d_gate.iter_mut().zip(self.d_up.iter_mut());
        let ins = self.gate.iter().zip(self.up).zip(self.grad);
        for ((dg, du), ((&g, &u), &d)) in outs.zip(ins) {
            let s = sigmoid_g::<I>(g);
            *dg = d * u * s * (1.0 + g * (1.0 - s));
            *du = d * g * s;
        }
    }
}

/// s = sigmoid(g); d_gate = d * u * s * (1 + g * (1 - s)); d_up = d * g * s.
///
/// Returns (d_gate, d_up). Panics if the three lengths differ.
pub fn silu_mul_backward(gate: &[f32], up: &[f32], grad: &[f32]) -> (Vec<f32>, Vec<f32>) {
    backward_at(level(), gate, up, grad)
}

fn backward_at(level: Level, gate: &[f32], up: &[f32], grad: &[f32]) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(gate.len(), up.len(), "silu_mul_backward: length mismatch");
    assert_eq!(gate.len(), grad.len(), "silu_mul_backward: length mismatch");
    let mut d_gate = vec![0f32; gate.len()];
    let mut d_up = vec![0f32; gate.len()];
    if gate.len() < PAR_MIN_ELEMS {
        dispatch(
            level,
            Bwd {
                gate,
                up,
                grad,
                d_gate: &mut d_gate,
                d_up: &mut d_up,
            },
        );
    } else {
        d_gate
            .par_chunks_mut(TASK_ELEMS)
            .zip(d_up.par_chunks_mut(TASK_ELEMS))
            .zip(gate.par_chunks(TASK_ELEMS))
            .zip(up.par_chunks(TASK_ELEMS))
            .zip(grad.par_chunks(TASK_ELEMS))
            .for_each(|((((d_gate, d_up), gate), up), grad)| {
                dispatch(
                    level,
                    Bwd {
                        gate,
                        up,
                        grad,
                        d_gate,
                        d_up,
                    },
                )
            });
    }
    (d_gate, d_up)
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::super::fast_math::available_levels;
    use super::super::test_util::{rel_err, XorShift};
    use super::*;

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    fn case(rng: &mut XorShift, len: usize, scale: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let g = (0..len).map(|_| rng.unif() * scale).collect();
        let u = (0..len).map(|_| rng.unif() * 3.0).collect();
        let d = (0..len).map(|_| rng.unif()).collect();
        (g, u, d)
    }

    #[test]
    fn matches_f64_reference() {
        let mut rng = XorShift(0xDEAD_BEEF_1234_5678);
        let levels = available_levels();
        let mut worst = vec![[0f64; 3]; levels.len()];
        for &len in &[0usize, 1, 3, 5, 37, 61, 257, 8192, 37 * 257, 100_003] {
            for &scale in &[1.0f32, 8.0, 40.0, 120.0] {
                let (g, u, d) = case(&mut rng, len, scale);
                let mut r_out = Vec::with_capacity(len);
                let mut r_dg = Vec::with_capacity(len);
                let mut r_du = Vec::with_capacity(len);
                for i in 0..len {
                    let (g, u, d) = (g[i] as f64, u[i] as f64, d[i] as f64);
                    let s = sig(g);
                    r_out.push(g * s * u);
                    r_dg.push(d * u * s * (1.0 + g * (1.0 - s)));
                    r_du.push(d * g * s);
                }
                let mut fused: Option<Vec<u32>> = None;
                for (li, &l) in levels.iter().enumerate() {
                    let out = forward_at(l, &g, &u);
                    let (dg, du) = backward_at(l, &g, &u, &d);
                    let e = [
                        rel_err(&out, &r_out),
                        rel_err(&dg, &r_dg),
                        rel_err(&du, &r_du),
                    ];
                    for k in 0..3 {
                        worst[li][k] = worst[li][k].max(e[k]);
                    }
                    assert!(
                        e.iter().all(|&x| x < 1e-5),
                        "{l:?} len={len} scale={scale}: {e:?}"
                    );
                    if l != Level::Portable {
                        let b: Vec<u32> = out
                            .iter()
                            .chain(&dg)
                            .chain(&du)
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
        for (l, w) in levels.iter().zip(&worst) {
            eprintln!(
                "silu_mul max rel err, {l:?}: out {:e}, d_gate {:e}, d_up {:e}",
                w[0], w[1], w[2]
            );
        }
    }

    #[test]
    fn finite_difference_gradient() {
        // L = sum d * silu(g) * u, differentiated numerically in f64.
        let mut rng = XorShift(99);
        let (g, u, d) = case(&mut rng, 11, 6.0);
        let (dg, du) = silu_mul_backward(&g, &u, &d);
        let f = |gv: f64, uv: f64, dv: f64| dv * gv * sig(gv) * uv;
        let h = 1e-6;
        let mut max_err = 0f64;
        for i in 0..11 {
            let (gi, ui, di) = (g[i] as f64, u[i] as f64, d[i] as f64);
            let fd_g = (f(gi + h, ui, di) - f(gi - h, ui, di)) / (2.0 * h);
            let fd_u = (f(gi, ui + h, di) - f(gi, ui - h, di)) / (2.0 * h);
            max_err = max_err
                .max((fd_g - dg[i] as f64).abs())
                .max((fd_u - du[i] as f64).abs());
        }
        eprintln!("silu_mul finite-difference max abs err {max_err:e}");
        assert!(max_err < 1e-5);
    }

    #[test]
    fn special_values_and_determinism() {
        let g = [f32::NEG_INFINITY, -200.0, 0.0, 200.0, f32::NAN];
        let u = [1.0f32; 5];
        let out = silu_mul_forward(&g, &u);
        assert_eq!(out[1], -0.0);
        assert_eq!(out[2], 0.0);
        assert_eq!(out[3], 200.0);
        assert!(out[4].is_nan());
        let (dg, _) = silu_mul_backward(&g, &u, &[1.0; 5]);
        assert_eq!(dg[3], 1.0);
        assert!(dg[1].abs() < 1e-40);
        let mut rng = XorShift(5);
        let (g, u, d) = case(&mut rng, 200_001, 10.0);
        let a = silu_mul_backward(&g, &u, &d);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let b = pool.install(|| silu_mul_backward(&g, &u, &d));
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.0), bits(&b.0));
        assert_eq!(bits(&a.1), bits(&b.1));
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
    fn bench_silu_mul() {
        let len = 2048 * 704;
        let mut rng = XorShift(42);
        let (g, u, d) = case(&mut rng, len, 4.0);
        let fwd = best_of_5(|| {
            std::hint::black_box(silu_mul_forward(&g, &u));
        });
        let bwd = best_of_5(|| {
            std::hint::black_box(silu_mul_backward(&g, &u, &d));
        });
        eprintln!(
            "silu_mul [{len}] ({}, {} threads): fwd {fwd:.2} ms, bwd {bwd:.2} ms",
            super::super::fast_math::simd_level_name(),
            rayon::current_num_threads()
        );
    }
}
