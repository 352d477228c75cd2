//! Fused cross-entropy (log-softmax + gather) forward and backward over row-major logits.
//!
//! Forward: per row, max pass then one exp-sum pass (exp into a small stack buffer, summed in
//! 16 fixed f32 lanes per 512-column block, blocks accumulated in f64); lse is formed in f64.
//! Backward: a single streaming pass writing `grad * softmax` plus the one-hot correction.
//! Rows are independent, so results are bitwise identical for any thread count / chunking.

use super::fast_math::{
    dispatch, exp_g, level, max_g, sum_g, Isa, Level, SimdKernel, BLOCK, PAR_MIN_ELEMS,
};
use rayon::prelude::*;

/// Elements of logits per rayon task (fixed, independent of the thread count).
const TASK_ELEMS: usize = 1 << 15;

pub use crate::ops::IGNORE_INDEX;

fn rows_per_task(v: usize) -> usize {
    (TASK_ELEMS / v.max(1)).max(1)
}

/// log(sum_j exp(row_j)) in f64. An infinite max (all -inf row, or a +inf entry) is not
/// subtracted, which gives -inf / +inf like `torch.logsumexp`; NaN entries give NaN.
#[inline(always)]
fn row_lse<I: Isa>(row: &[f32]) -> f64 {
    let m = max_g(row);
    let m = if m.is_finite() { m } else { 0.0 };
    let mut buf = [0f32; BLOCK];
    let mut total = 0f64;
    for blk in row.chunks(BLOCK) {
        let b = &mut buf[..blk.len()];
        for (o, &x) in b.iter_mut().zip(blk) {
            *o = exp_g::<I>(x - m);
        }
        total += sum_g(b);
    }
    m as f64 + total.ln()
}

struct FwdRows<'a> {
    logits: &'a [f32],
    targets: &'a [i64],
    v: usize,
    loss: &'a mut [f32],
    lse: &'a mut [f32],
}

impl SimdKernel for FwdRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run<I: Isa>(self) {
        let rows = self.logits.chunks_exact(self.v);
        for (((row, &t), loss), lse) in rows
            .zip(self.targets)
            .zip(self.loss.iter_mut())
            .zip(self.lse.iter_mut())
        {
            if t == IGNORE_INDEX {
                *lse = 0.0;
                *loss = 0.0;
                continue;
            }
            let l = row_lse::<I>(row);
            // Targets were validated by the caller.
            let xt = row[t as usize];
            *lse = l as f32;
            *loss = (l - xt as f64) as f32;
        }
    }
}

/// Per-row cross-entropy: loss_i = lse_i - logits[i, target_i]. logits [n, v] row-major,
/// targets [n] (each < v, or [`IGNORE_INDEX`]: loss 0; out-of-range targets are a caller
/// bug: return Err(index)).
/// Returns (loss [n], lse [n]). Parallel over row chunks.
///
/// `Err(i)` carries the row index `i` of the first target outside `0..v`.
/// Panics if `logits.len() != n * v` or `targets.len() != n`.
pub fn cross_entropy_forward(
    logits: &[f32],
    targets: &[i64],
    n: usize,
    v: usize,
) -> Result<(Vec<f32>, Vec<f32>), usize> {
    forward_at(level(), logits, targets, n, v)
}

fn forward_at(
    level: Level,
    logits: &[f32],
    targets: &[i64],
    n: usize,
    v: usize,
) -> Result<(Vec<f32>, Vec<f32>), usize> {
    assert_eq!(
        logits.len(),
        n * v,
        "cross_entropy_forward: logits.len() != n * v"
    );
    assert_eq!(
        targets.len(),
        n,
        "cross_entropy_forward: targets.len() != n"
    );
    if let Some(i) = targets
        .iter()
        .position(|&t| t != IGNORE_INDEX && (t < 0 || t as u64 >= v as u64))
    {
        return Err(i);
    }
    let mut loss = vec![0f32; n];
    let mut lse = vec![0f32; n];
    if n == 0 {
        return Ok((loss, lse));
    }
    if n * v < PAR_MIN_ELEMS {
        dispatch(
            level,
            FwdRows {
                logits,
                targets,
                v,
                loss: &mut loss,
                lse: &mut lse,
            },
        );
    } else {
        let r = rows_per_task(v);
        logits
            .par_chunks(r * v)
            .zip(targets.par_chunks(r))
            .zip(loss.par_chunks_mut(r))
            .zip(lse.par_chunks_mut(r))
            .for_each(|(((logits, targets), loss), lse)| {
                dispatch(
                    level,
                    FwdRows {
                        logits,
                        targets,
                        v,
                        loss,
                        lse,
                    },
                )
            });
    }
    Ok((loss, lse))
}

struct BwdRows<'a> {
    logits: &'a [f32],
    targets: &'a [i64],
    lse: &'a [f32],
    grad: &'a [f32],
    v: usize,
    out: &'a mut [f32],
}

impl SimdKernel for BwdRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run<I: Isa>(self) {
        let v = self.v;
        let rows = self
            .logits
            .chunks_exact(v)
            .zip(self.out.chunks_exact_mut(v));
        for ((((row, out), &t), &l), &g) in rows.zip(self.targets).zip(self.lse).zip(self.grad) {
            if t == IGNORE_INDEX {
                out.fill(0.0);
                continue;
            }
            for (o, &x) in out.iter_mut().zip(row) {
                *o = g * exp_g::<I>(x - l);
            }
            let t = t as usize;
            out[t] = g * (exp_g::<I>(row[t] - l) - 1.0);
        }
    }
}

struct BwdRowsInplace<'a> {
    /// Logits on entry, dlogits on return.
    buf: &'a mut [f32],
    targets: &'a [i64],
    lse: &'a [f32],
    grad: &'a [f32],
    v: usize,
}

impl SimdKernel for BwdRowsInplace<'_> {
    type Output = ();
    #[inline(always)]
    fn run<I: Isa>(self) {
        let v = self.v;
        let rows = self.buf.chunks_exact_mut(v);
        for (((row, &t), &l), &g) in rows.zip(self.targets).zip(self.lse).zip(self.grad) {
            if t == IGNORE_INDEX {
                row.fill(0.0);
                continue;
            }
            let t = t as usize;
            let xt = row[t];
            for x in row.iter_mut() {
                *x = g * exp_g::<I>(*x - l);
            }
            row[t] = g * (exp_g::<I>(xt - l) - 1.0);
        }
    }
}

fn check_backward_args(
    logits_len: usize,
    targets: &[i64],
    lse: &[f32],
    grad: &[f32],
    n: usize,
    v: usize,
) {
    assert_eq!(
        logits_len,
        n * v,
        "cross_entropy_backward: logits.len() != n * v"
    );
    assert_eq!(
        targets.len(),
        n,
        "cross_entropy_backward: targets.len() != n"
    );
    assert_eq!(lse.len(), n, "cross_entropy_backward: lse.len() != n");
    assert_eq!(grad.len(), n, "cross_entropy_backward: grad.len() != n");
    assert!(
        targets
            .iter()
            .all(|&t| t == IGNORE_INDEX || (t >= 0 && (t as u64) < v as u64)),
        "cross_entropy_backward: target out of range 0..{v}"
    );
}

/// dlogits[i, j] = grad[i] * (exp(logits[i, j] - lse[i]) - [j == target_i]). One pass, no
/// second [n, v] temporary besides the output.
///
/// Panics if a target is outside `0..v` (the forward pass reports those as `Err`) or on
/// length mismatches (`logits`: n * v; `targets`, `lse`, `grad`: n).
///
/// Most of the time of this function on large inputs is the kernel faulting in the fresh
/// output pages; use [`cross_entropy_backward_into`] with a reused buffer or
/// [`cross_entropy_backward_inplace`] on an owned logits buffer to avoid it.
pub fn cross_entropy_backward(
    logits: &[f32],
    targets: &[i64],
    lse: &[f32],
    grad: &[f32],
    n: usize,
    v: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; n * v];
    backward_into_at(level(), logits, targets, lse, grad, n, v, &mut out);
    out
}

/// As [`cross_entropy_backward`], writing into `out` (length n * v, contents ignored).
pub fn cross_entropy_backward_into(
    logits: &[f32],
    targets: &[i64],
    lse: &[f32],
    grad: &[f32],
    n: usize,
    v: usize,
    out: &mut [f32],
) {
    backward_into_at(level(), logits, targets, lse, grad, n, v, out)
}

#[allow(clippy::too_many_arguments)]
fn backward_into_at(
    level: Level,
    logits: &[f32],
    targets: &[i64],
    lse: &[f32],
    grad: &[f32],
    n: usize,
    v: usize,
    out: &mut [f32],
) {
    check_backward_args(logits.len(), targets, lse, grad, n, v);
    assert_eq!(
        out.len(),
        n * v,
        "cross_entropy_backward: out.len() != n * v"
    );
    if n == 0 || v == 0 {
        return;
    }
    if n * v < PAR_MIN_ELEMS {
        dispatch(
            level,
            BwdRows {
                logits,
                targets,
                lse,
                grad,
                v,
                out,
            },
        );
    } else {
        let r = rows_per_task(v);
        out.par_chunks_mut(r * v)
            .zip(logits.par_chunks(r * v))
            .zip(targets.par_chunks(r))
            .zip(lse.par_chunks(r))
            .zip(grad.par_chunks(r))
            .for_each(|((((out, logits), targets), lse), grad)| {
                dispatch(
                    level,
                    BwdRows {
                        logits,
                        targets,
                        lse,
                        grad,
                        v,
                        out,
                    },
                )
            });
    }
}

/// As [`cross_entropy_backward`], overwriting the logits buffer with dlogits (for when the
/// saved logits are uniquely owned by the backward step). Bitwise identical results.
pub fn cross_entropy_backward_inplace(
    logits: &mut [f32],
    targets: &[i64],
    lse: &[f32],
    grad: &[f32],
    n: usize,
    v: usize,
) {
    backward_inplace_at(level(), logits, targets, lse, grad, n, v)
}

fn backward_inplace_at(
    level: Level,
    logits: &mut [f32],
    targets: &[i64],
    lse: &[f32],
    grad: &[f32],
    n: usize,
    v: usize,
) {
    check_backward_args(logits.len(), targets, lse, grad, n, v);
    if n == 0 || v == 0 {
        return;
    }
    if n * v < PAR_MIN_ELEMS {
        dispatch(
            level,
            BwdRowsInplace {
                buf: logits,
                targets,
                lse,
                grad,
                v,
            },
        );
    } else {
        let r = rows_per_task(v);
        logits
            .par_chunks_mut(r * v)
            .zip(targets.par_chunks(r))
            .zip(lse.par_chunks(r))
            .zip(grad.par_chunks(r))
            .for_each(|(((buf, targets), lse), grad)| {
                dispatch(
                    level,
                    BwdRowsInplace {
                        buf,
                        targets,
                        lse,
                        grad,
                        v,
                    },
                )
            });
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::super::fast_math::available_levels;
    use super::super::test_util::{rel_err, XorShift};
    use super::*;

    fn ref_forward(logits: &[f32], targets: &[i64], n: usize, v: usize) -> (Vec<f64>, Vec<f64>) {
        let mut loss = vec![0f64; n];
        let mut lse = vec![0f64; n];
        for i in 0..n {
            let row = &logits[i * v..(i + 1) * v];
            let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let s: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
            lse[i] = m + s.ln();
            loss[i] = lse[i] - row[targets[i] as usize] as f64;
        }
        (loss, lse)
    }

    fn ref_backward(logits: &[f32], targets: &[i64], grad: &[f32], n: usize, v: usize) -> Vec<f64> {
        let (_, lse) = ref_forward(logits, targets, n, v);
        let mut out = vec![0f64; n * v];
        for i in 0..n {
            for j in 0..v {
                let p = (logits[i * v + j] as f64 - lse[i]).exp();
                let oh = if j == targets[i] as usize { 1.0 } else { 0.0 };
                out[i * v + j] = grad[i] as f64 * (p - oh);
            }
        }
        out
    }

    fn make_case(
        rng: &mut XorShift,
        n: usize,
        v: usize,
        scale: f32,
    ) -> (Vec<f32>, Vec<i64>, Vec<f32>) {
        let logits: Vec<f32> = (0..n * v).map(|_| rng.unif() * scale).collect();
        let mut targets: Vec<i64> = (0..n).map(|_| rng.below(v) as i64).collect();
        // Exercise both ends of the row.
        targets[0] = 0;
        if n > 1 {
            targets[n - 1] = v as i64 - 1;
        }
        let grad: Vec<f32> = (0..n).map(|_| rng.unif() * 2.0).collect();
        (logits, targets, grad)
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|f| f.to_bits()).collect()
    }

    #[test]
    fn matches_f64_reference() {
        // Every code path the CPU supports; the FMA paths (AVX2, AVX-512) must agree bitwise.
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let levels = available_levels();
        let mut worst = vec![(0f64, 0f64, 0f64); levels.len()];
        for &n in &[1usize, 3, 37] {
            for &v in &[1usize, 5, 61, 257, 8192] {
                for &scale in &[1.0f32, 10.0, 80.0] {
                    let (logits, targets, grad) = make_case(&mut rng, n, v, scale);
                    let (rloss, rlse) = ref_forward(&logits, &targets, n, v);
                    let rdl = ref_backward(&logits, &targets, &grad, n, v);
                    let mut fused: Option<(Vec<u32>, Vec<u32>, Vec<u32>)> = None;
                    for (li, &l) in levels.iter().enumerate() {
                        let (loss, lse) = forward_at(l, &logits, &targets, n, v).unwrap();
                        let mut dl = vec![f32::NAN; n * v];
                        backward_into_at(l, &logits, &targets, &lse, &grad, n, v, &mut dl);
                        let mut dl2 = logits.clone();
                        backward_inplace_at(l, &mut dl2, &targets, &lse, &grad, n, v);
                        assert_eq!(bits(&dl), bits(&dl2));
                        let e_loss = rel_err(&loss, &rloss);
                        let e_lse = rel_err(&lse, &rlse);
                        let e_dl = rel_err(&dl, &rdl);
                        let w = &mut worst[li];
                        *w = (w.0.max(e_loss), w.1.max(e_lse), w.2.max(e_dl));
                        assert!(
                            e_loss < 1e-5 && e_lse < 1e-5 && e_dl < 1e-5,
                            "{l:?} n={n} v={v} scale={scale}: loss {e_loss:e} lse {e_lse:e} dlogits {e_dl:e}"
                        );
                        if l != Level::Portable {
                            let b = (bits(&loss), bits(&lse), bits(&dl));
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
                "cross_entropy max rel err, {l:?}: loss {:e}, lse {:e}, dlogits {:e}",
                w.0, w.1, w.2
            );
        }
    }

    #[test]
    fn large_parallel_case_and_determinism() {
        // Big enough to take the rayon path; compare to the reference and across thread counts.
        let mut rng = XorShift(12345);
        let (n, v) = (67, 3001);
        let (logits, targets, grad) = make_case(&mut rng, n, v, 80.0);
        let (loss, lse) = cross_entropy_forward(&logits, &targets, n, v).unwrap();
        let (rloss, _) = ref_forward(&logits, &targets, n, v);
        assert!(rel_err(&loss, &rloss) < 1e-5);
        let dl = cross_entropy_backward(&logits, &targets, &lse, &grad, n, v);
        assert!(rel_err(&dl, &ref_backward(&logits, &targets, &grad, n, v)) < 1e-5);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (loss1, lse1, dl1) = pool.install(|| {
            let (a, b) = cross_entropy_forward(&logits, &targets, n, v).unwrap();
            let c = cross_entropy_backward(&logits, &targets, &b, &grad, n, v);
            (a, b, c)
        });
        assert_eq!(bits(&loss), bits(&loss1));
        assert_eq!(bits(&lse), bits(&lse1));
        assert_eq!(bits(&dl), bits(&dl1));
    }

    #[test]
    fn extreme_and_invalid_inputs() {
        // Rows dominated by one huge logit; a row with -inf entries (masked logits).
        let v = 7;
        let logits = vec![
            80.0,
            -80.0,
            -80.0,
            -80.0,
            -80.0,
            -80.0,
            -80.0, //
            -80.0,
            -80.0,
            -80.0,
            -80.0,
            -80.0,
            -80.0,
            80.0, //
            f32::NEG_INFINITY,
            0.0,
            0.0,
            f32::NEG_INFINITY,
            0.0,
            0.0,
            0.0,
        ];
        let targets = vec![0, 0, 1];
        let (loss, lse) = cross_entropy_forward(&logits, &targets, 3, v).unwrap();
        assert!((loss[0] - 0.0).abs() < 1e-6, "{}", loss[0]);
        assert!((loss[1] - 160.0).abs() < 1e-4, "{}", loss[1]);
        assert!((loss[2] - 5f32.ln()).abs() < 1e-6);
        assert!((lse[0] - 80.0).abs() < 1e-5);
        let dl = cross_entropy_backward(&logits, &targets, &lse, &[1.0, 1.0, 1.0], 3, v);
        assert_eq!(dl[1], 0.0);
        assert_eq!(dl[7], -1.0);
        assert_eq!(dl[13], 1.0);
        assert_eq!(dl[14], 0.0);
        assert!((dl[15] - 0.2 + 1.0).abs() < 1e-6);
        assert!(dl.iter().all(|x| x.is_finite()));
        // NaN propagates to its row only.
        let mut l2 = logits.clone();
        l2[3] = f32::NAN;
        let (loss2, _) = cross_entropy_forward(&l2, &targets, 3, v).unwrap();
        assert!(loss2[0].is_nan() && loss2[1].is_finite());
        // Out-of-range targets.
        assert_eq!(cross_entropy_forward(&logits, &[0, 7, 0], 3, v), Err(1));
        assert_eq!(cross_entropy_forward(&logits, &[0, 0, -1], 3, v), Err(2));
        // Empty batch.
        let (a, b) = cross_entropy_forward(&[], &[], 0, 10).unwrap();
        assert!(a.is_empty() && b.is_empty());
    }

    #[test]
    fn finite_difference_gradient() {
        // d(sum_i grad_i * loss_i)/d logits[i, j] by central differences of the f64 reference.
        let mut rng = XorShift(777);
        let (n, v) = (3, 61);
        let (logits, targets, grad) = make_case(&mut rng, n, v, 3.0);
        let (_, lse) = cross_entropy_forward(&logits, &targets, n, v).unwrap();
        let dl = cross_entropy_backward(&logits, &targets, &lse, &grad, n, v);
        let objective = |l: &[f64]| -> f64 {
            let mut s = 0.0;
            for i in 0..n {
                let row = &l[i * v..(i + 1) * v];
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + row.iter().map(|&x| (x - m).exp()).sum::<f64>().ln();
                s += grad[i] as f64 * (lse - row[targets[i] as usize]);
            }
            s
        };
        let base: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
        let h = 1e-5;
        let mut max_err = 0f64;
        let mut idx = vec![0usize, (v - 1), v + targets[1] as usize, 2 * v + 17];
        idx.push(targets[0] as usize);
        for &k in &idx {
            let mut p = base.clone();
            p[k] += h;
            let mut m = base.clone();
            m[k] -= h;
            let fd = (objective(&p) - objective(&m)) / (2.0 * h);
            max_err = max_err.max((fd - dl[k] as f64).abs());
        }
        eprintln!("cross_entropy finite-difference max abs err {max_err:e}");
        assert!(max_err < 1e-5);
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
    fn bench_cross_entropy() {
        let (n, v) = (2048, 8192);
        let mut rng = XorShift(42);
        let (logits, targets, grad) = make_case(&mut rng, n, v, 5.0);
        let mut lse = Vec::new();
        let fwd = best_of_5(|| {
            let (l, s) = cross_entropy_forward(&logits, &targets, n, v).unwrap();
            std::hint::black_box(&l);
            lse = s;
        });
        let bwd = best_of_5(|| {
            let d = cross_entropy_backward(&logits, &targets, &lse, &grad, n, v);
            std::hint::black_box(&d);
        });
        let mut out = vec![0f32; n * v];
        let bwd_into = best_of_5(|| {
            cross_entropy_backward_into(&logits, &targets, &lse, &grad, n, v, &mut out);
            std::hint::black_box(&out);
        });
        let mut buf = logits.clone();
        let bwd_inplace = best_of_5(|| {
            // Result is garbage after the first round; only the timing matters here.
            cross_entropy_backward_inplace(&mut buf, &targets, &lse, &grad, n, v);
            std::hint::black_box(&buf);
        });
        eprintln!(
            "cross_entropy [{n}, {v}] ({}, {} threads): fwd {fwd:.2} ms, bwd {bwd:.2} ms \
             (bwd_into reused buffer {bwd_into:.2} ms, bwd_inplace {bwd_inplace:.2} ms)",
            super::super::fast_math::simd_level_name(),
            rayon::current_num_threads()
        );
    }
}
