//! Distillation divergences between a student's and a teacher's logits,
//! one row (position) at a time: the per-row loss in the forward, the
//! student's logit gradient in the backward, recomputed from the two logit
//! rows (no `[N, V]` probability tensor is ever stored). The formulas, at
//! temperature `T` with `q = softmax(s / T)` (student), `p = softmax(t / T)`
//! (teacher), every loss scaled by `T^2` and so every gradient by `T`:
//!
//! - forward KL `sum p (log p - log q)`: `d/ds_j = q_j - p_j`
//! - reverse KL `L = sum q (log q - log p)`: `q_j (log q_j - log p_j - L)`
//! - skew KL `sum p (log p - log m)`, `m = a p + (1 - a) q`:
//!   `-(1 - a) (r_j - q_j R)` with `r = p q / m`, `R = sum r`
//! - JSD `b KL(p || m) + (1 - b) KL(q || m)`, `m = b p + (1 - b) q`:
//!   `-b (1 - b) (r_j - q_j R) + (1 - b) [q_j (log q_j - log m_j - K) - (1 - b) (u_j - q_j U)]`
//!   with `K = sum q (log q - log m)`, `u = q^2 / m`, `U = sum u`
//!
//! Sums run in f64 so the fused result stays within 1e-6 of PyTorch.

use rayon::prelude::*;

/// Which divergence, with its mixing weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Divergence {
    ForwardKl,
    ReverseKl,
    /// GKD's weight of the teacher in the mixture.
    Jsd(f64),
    /// DistiLLM's weight of the teacher in the skewed mixture.
    SkewKl(f64),
}

/// `log softmax(x / T)` of one row, in f64.
fn log_softmax(x: &[f32], inv_t: f64) -> Vec<f64> {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64 * inv_t;
    let sum: f64 = x.iter().map(|&v| (v as f64 * inv_t - m).exp()).sum();
    let lse = m + sum.ln();
    x.iter().map(|&v| v as f64 * inv_t - lse).collect()
}

/// `log(w p + (1 - w) q)` from the log-probabilities, stable.
fn log_mix(lt: f64, ls: f64, w: f64) -> f64 {
    let (a, b) = (lt + w.ln(), ls + (1.0 - w).ln());
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// One row's loss (unscaled by `T^2`) and, with `grad`, `g dL/ds` into it.
fn row(s: &[f32], t: &[f32], div: Divergence, inv_t: f64, grad: Option<&mut [f32]>, g: f64) -> f64 {
    let (ls, lt) = (log_softmax(s, inv_t), log_softmax(t, inv_t));
    let q: Vec<f64> = ls.iter().map(|x| x.exp()).collect();
    let p: Vec<f64> = lt.iter().map(|x| x.exp()).collect();
    let v = s.len();
    match div {
        Divergence::ForwardKl => {
            if let Some(out) = grad {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = (g * (q[j] - p[j])) as f32;
                }
            }
            (0..v).map(|j| p[j] * (lt[j] - ls[j])).sum()
        }
        Divergence::ReverseKl => {
            let loss: f64 = (0..v).map(|j| q[j] * (ls[j] - lt[j])).sum();
            if let Some(out) = grad {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = (g * q[j] * (ls[j] - lt[j] - loss)) as f32;
                }
            }
            loss
        }
        Divergence::SkewKl(a) | Divergence::Jsd(a) => {
            let lm: Vec<f64> = (0..v).map(|j| log_mix(lt[j], ls[j], a)).collect();
            let teacher_kl: f64 = (0..v).map(|j| p[j] * (lt[j] - lm[j])).sum();
            let student_kl: f64 = (0..v).map(|j| q[j] * (ls[j] - lm[j])).sum();
            let loss = match div {
                Divergence::SkewKl(_) => teacher_kl,
                _ => a * teacher_kl + (1.0 - a) * student_kl,
            };
            let Some(out) = grad else {
                return loss;
            };
            let r: Vec<f64> = (0..v).map(|j| (lt[j] + ls[j] - lm[j]).exp()).collect(); // p q / m
            let big_r: f64 = r.iter().sum();
            if let Divergence::SkewKl(_) = div {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = (-g * (1.0 - a) * (r[j] - q[j] * big_r)) as f32;
                }
                return loss;
            }
            let u: Vec<f64> = (0..v).map(|j| (2.0 * ls[j] - lm[j]).exp()).collect(); // q^2 / m
            let big_u: f64 = u.iter().sum();
            for (j, o) in out.iter_mut().enumerate() {
                let from_teacher = -a * (1.0 - a) * (r[j] - q[j] * big_r);
                let from_student = (1.0 - a)
                    * (q[j] * (ls[j] - lm[j] - student_kl) - (1.0 - a) * (u[j] - q[j] * big_u));
                *o = (g * (from_teacher + from_student)) as f32;
            }
            loss
        }
    }
}

/// Per-row divergence `[n]` of `student` from `teacher` (`[n, v]` logits),
/// times `T^2`.
pub fn forward(student: &[f32], teacher: &[f32], v: usize, div: Divergence, temp: f64) -> Vec<f32> {
    let v = v.max(1);
    student
        .par_chunks(v)
        .zip(teacher.par_chunks(v))
        .map(|(s, t)| (row(s, t, div, 1.0 / temp, None, 0.0) * temp * temp) as f32)
        .collect()
}

/// The student's logit gradient `[n, v]` of `sum_i gy_i * forward_i`.
pub fn backward(
    student: &[f32],
    teacher: &[f32],
    gy: &[f32],
    v: usize,
    div: Divergence,
    temp: f64,
) -> Vec<f32> {
    let v = v.max(1);
    let mut out = vec![0f32; student.len()];
    out.par_chunks_mut(v)
        .zip(student.par_chunks(v).zip(teacher.par_chunks(v)))
        .zip(gy.par_iter())
        .for_each(|((o, (s, t)), &g)| {
            if g != 0.0 {
                // d(T^2 L(s / T)) / ds = T dL/d(s / T).
                row(s, t, div, 1.0 / temp, Some(o), g as f64 * temp);
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central differences of the forward agree with the backward.
    #[test]
    fn gradients_match_finite_differences() {
        let v = 7;
        let s: Vec<f32> = (0..v).map(|i| (i as f32 * 0.7).sin() * 2.0).collect();
        let t: Vec<f32> = (0..v).map(|i| (i as f32 * 1.3).cos() * 1.5).collect();
        for div in [
            Divergence::ForwardKl,
            Divergence::ReverseKl,
            Divergence::Jsd(0.3),
            Divergence::SkewKl(0.1),
        ] {
            for temp in [1.0, 2.0] {
                let g = backward(&s, &t, &[1.0], v, div, temp);
                for j in 0..v {
                    let h = 1e-3f32;
                    let (mut up, mut dn) = (s.clone(), s.clone());
                    up[j] += h;
                    dn[j] -= h;
                    let f = |x: &[f32]| forward(x, &t, v, div, temp)[0] as f64;
                    let fd = (f(&up) - f(&dn)) / (2.0 * h as f64);
                    assert!(
                        (fd - g[j] as f64).abs() < 2e-3,
                        "{div:?} T={temp} j={j}: {fd} vs {}",
                        g[j]
                    );
                }
            }
        }
    }
}
