//! Mamba-1 selective scan over whole sequences and its hand-written backward
//! (Gu & Dao 2023, arXiv 2312.00752; reference: state-spaces/mamba
//! `selective_scan_ref`, and the slow path of `transformers`' `MambaMixer`).
//!
//! Per channel `d` of batch row `b`, with `delta = softplus(dt)` (torch's:
//! identity above 20):
//! `h_t = exp(delta_t A_d) * h_{t-1} + delta_t u_t B_t`, `y_t = h_t . C_t + D_d u_t`.
//!
//! The recurrence is sequential in time, so the work is split over
//! (batch row, chunk of channels): every task owns its state `[chunk, N]` and
//! writes disjoint outputs. The backward recomputes the states of its chunk
//! (nothing but the inputs is kept between forward and backward: the full
//! `[B, T, D, N]` state would be N times the activations) and runs the adjoint
//! recurrence `gh_t = gy_t C_t + exp(delta_{t+1} A) gh_{t+1}` backwards in time.
//! Reductions over channels (dB, dC) and batch (dA, dD) are summed in a fixed
//! order, so results do not depend on the thread count.

use rayon::prelude::*;

use super::fast_math::{dispatch, exp_g, level, Isa, SimdKernel};

/// Channels per task: the recomputed states of one backward task are
/// `2 * T * CHUNK * N` floats.
const CHUNK: usize = 32;

/// Sizes of one scan: `u, dt [batch, seq, channels]`, `a [channels, state]`,
/// `b, c [batch, seq, state]`, `d [channels]`.
#[derive(Debug, Clone, Copy)]
pub struct ScanDims {
    pub batch: usize,
    pub seq: usize,
    pub channels: usize,
    pub state: usize,
}

/// The inputs of one scan, row-major f32.
#[derive(Debug, Clone, Copy)]
pub struct ScanInputs<'a> {
    pub u: &'a [f32],
    pub dt: &'a [f32],
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub c: &'a [f32],
    pub d: &'a [f32],
}

/// Gradients of a scan with respect to each input (same shapes as the inputs).
#[derive(Debug, Clone)]
pub struct ScanGrads {
    pub u: Vec<f32>,
    pub dt: Vec<f32>,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub c: Vec<f32>,
    pub d: Vec<f32>,
}

/// torch's `F.softplus` (beta 1, threshold 20).
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// d softplus / dx (1 above the threshold, where softplus is the identity).
#[inline(always)]
pub fn softplus_grad(x: f32) -> f32 {
    if x > 20.0 {
        1.0
    } else {
        1.0 / (1.0 + (-x).exp())
    }
}

fn check(x: &ScanInputs, s: ScanDims) {
    let (btd, btn) = (s.batch * s.seq * s.channels, s.batch * s.seq * s.state);
    assert_eq!(x.u.len(), btd, "selective_scan: u has the wrong length");
    assert_eq!(x.dt.len(), btd, "selective_scan: dt has the wrong length");
    assert_eq!(x.a.len(), s.channels * s.state, "selective_scan: A");
    assert_eq!(x.b.len(), btn, "selective_scan: B has the wrong length");
    assert_eq!(x.c.len(), btn, "selective_scan: C has the wrong length");
    assert_eq!(
        x.d.len(),
        s.channels,
        "selective_scan: D has the wrong length"
    );
}

/// One task: batch row `row`, channels `d0 .. d0 + nc`.
#[derive(Clone, Copy)]
struct Task {
    row: usize,
    d0: usize,
    nc: usize,
}

fn tasks(s: ScanDims) -> Vec<Task> {
    let mut v = Vec::new();
    for row in 0..s.batch {
        let mut d0 = 0;
        while d0 < s.channels {
            let nc = CHUNK.min(s.channels - d0);
            v.push(Task { row, d0, nc });
            d0 += nc;
        }
    }
    v
}

struct Fwd<'a> {
    x: ScanInputs<'a>,
    s: ScanDims,
    task: Task,
    /// `[seq, nc]` outputs of this task.
    out: &'a mut [f32],
}

impl SimdKernel for Fwd<'_> {
    type Output = ();
    #[inline(always)]
    fn run<I: Isa>(self) {
        let (x, s, task) = (self.x, self.s, self.task);
        let (n, dch) = (s.state, s.channels);
        let mut h = vec![0f32; task.nc * n]; // [nc, N]
        let mut prod = vec![0f32; n];
        for t in 0..s.seq {
            let r = task.row * s.seq + t;
            let (bt, ct) = (&x.b[r * n..(r + 1) * n], &x.c[r * n..(r + 1) * n]);
            for c in 0..task.nc {
                let d = task.d0 + c;
                let delta = softplus(x.dt[r * dch + d]);
                let u = x.u[r * dch + d];
                let du = delta * u;
                let ar = &x.a[d * n..(d + 1) * n];
                let hc = &mut h[c * n..(c + 1) * n];
                for ((((hk, pk), &ak), &bk), &ck) in
                    hc.iter_mut().zip(prod.iter_mut()).zip(ar).zip(bt).zip(ct)
                {
                    *hk = I::fma(exp_g::<I>(delta * ak), *hk, du * bk);
                    *pk = *hk * ck;
                }
                self.out[t * task.nc + c] = I::fma(x.d[d], u, lane_sum(&prod));
            }
        }
    }
}

/// Sum in a fixed order: 16 lanes (a vectorisable loop, no serial chain of
/// dependent adds), then a pairwise tree.
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for ch in &mut chunks {
        for (a, v) in acc.iter_mut().zip(ch) {
            *a += v;
        }
    }
    for (a, v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += v;
    }
    let mut w = 8;
    while w > 0 {
        for i in 0..w {
            acc[i] += acc[i + w];
        }
        w /= 2;
    }
    acc[0]
}

/// `y [batch, seq, channels]` of the scan.
pub fn selective_scan_forward(x: ScanInputs, s: ScanDims) -> Vec<f32> {
    check(&x, s);
    let lvl = level();
    let parts: Vec<(Task, Vec<f32>)> = tasks(s)
        .into_par_iter()
        .map(|task| {
            let mut out = vec![0f32; s.seq * task.nc];
            dispatch(
                lvl,
                Fwd {
                    x,
                    s,
                    task,
                    out: &mut out,
                },
            );
            (task, out)
        })
        .collect();
    let mut y = vec![0f32; s.batch * s.seq * s.channels];
    for (task, out) in parts {
        for t in 0..s.seq {
            let base = (task.row * s.seq + t) * s.channels + task.d0;
            y[base..base + task.nc].copy_from_slice(&out[t * task.nc..(t + 1) * task.nc]);
        }
    }
    y
}

/// Per-task gradients before the reductions over channels and batch.
struct TaskGrads {
    task: Task,
    /// `[seq, nc]`
    u: Vec<f32>,
    /// `[seq, nc]`
    dt: Vec<f32>,
    /// `[nc, N]` (this batch row only)
    a: Vec<f32>,
    /// `[seq, N]` (these channels only)
    b: Vec<f32>,
    /// `[seq, N]` (these channels only)
    c: Vec<f32>,
    /// `[nc]` (this batch row only)
    d: Vec<f32>,
}

struct Bwd<'a> {
    x: ScanInputs<'a>,
    gy: &'a [f32],
    s: ScanDims,
    task: Task,
}

impl SimdKernel for Bwd<'_> {
    type Output = TaskGrads;
    #[inline(always)]
    fn run<I: Isa>(self) -> TaskGrads {
        let (x, s, task) = (self.x, self.s, self.task);
        let (n, dch, nc, seq) = (s.state, s.channels, task.nc, s.seq);
        // Recompute the states h_t and decays exp(delta_t A), [seq, nc, N]
        // each, and delta with its softplus derivative, [seq, nc].
        let mut hs = vec![0f32; seq * nc * n];
        let mut decay = vec![0f32; seq * nc * n];
        let mut deltas = vec![0f32; seq * nc];
        let mut slopes = vec![0f32; seq * nc];
        let zeros = vec![0f32; n];
        for t in 0..seq {
            let r = task.row * seq + t;
            let bt = &x.b[r * n..(r + 1) * n];
            for c in 0..nc {
                let d = task.d0 + c;
                let xdt = x.dt[r * dch + d];
                let delta = softplus(xdt);
                deltas[t * nc + c] = delta;
                slopes[t * nc + c] = softplus_grad(xdt);
                let du = delta * x.u[r * dch + d];
                let ar = &x.a[d * n..(d + 1) * n];
                let at = (t * nc + c) * n;
                // h_{t-1} of this channel (zeros before the first step).
                let (done, rest) = hs.split_at_mut(at);
                let prev: &[f32] = if t > 0 {
                    &done[at - nc * n..at - nc * n + n]
                } else {
                    &zeros
                };
                let dec = &mut decay[at..at + n];
                for ((((hk, dk), &pk), &ak), &bk) in rest[..n]
                    .iter_mut()
                    .zip(dec.iter_mut())
                    .zip(prev)
                    .zip(ar)
                    .zip(bt)
                {
                    let av = exp_g::<I>(delta * ak);
                    *dk = av;
                    *hk = I::fma(av, pk, du * bk);
                }
            }
        }
        let mut g = TaskGrads {
            task,
            u: vec![0f32; seq * nc],
            dt: vec![0f32; seq * nc],
            a: vec![0f32; nc * n],
            b: vec![0f32; seq * n],
            c: vec![0f32; seq * n],
            d: vec![0f32; nc],
        };
        // carry = exp(delta_{t+1} A) * gh_{t+1}, [nc, N]
        let mut carry = vec![0f32; nc * n];
        let (mut gh, mut gu_terms, mut gdelta_terms) =
            (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        for t in (0..seq).rev() {
            let r = task.row * seq + t;
            let (bt, ct) = (&x.b[r * n..(r + 1) * n], &x.c[r * n..(r + 1) * n]);
            for c in 0..nc {
                let d = task.d0 + c;
                let delta = deltas[t * nc + c];
                let u = x.u[r * dch + d];
                let gy = self.gy[r * dch + d];
                let ar = &x.a[d * n..(d + 1) * n];
                let at = (t * nc + c) * n;
                let cc = &mut carry[c * n..(c + 1) * n];
                let hk_t = &hs[at..at + n];
                let prev: &[f32] = if t > 0 {
                    &hs[at - nc * n..at - nc * n + n]
                } else {
                    &zeros
                };
                let dec = &decay[at..at + n];
                let du = delta * u;
                // gh_t = gy_t C_t + carry; dB_t += gh du; dC_t += gy h_t
                let gbt = &mut g.b[t * n..(t + 1) * n];
                let gct = &mut g.c[t * n..(t + 1) * n];
                for (((((ghk, gbk), gck), &ck), &cck), (&hk, (&bk, guk))) in gh
                    .iter_mut()
                    .zip(gbt.iter_mut())
                    .zip(gct.iter_mut())
                    .zip(ct)
                    .zip(cc.iter())
                    .zip(hk_t.iter().zip(bt.iter().zip(gu_terms.iter_mut())))
                {
                    *ghk = I::fma(gy, ck, cck);
                    *gbk = I::fma(*ghk, du, *gbk);
                    *gck = I::fma(gy, hk, *gck);
                    *guk = *ghk * bk;
                }
                let ga = &mut g.a[c * n..(c + 1) * n];
                for (((((gak, cck), &ghk), &av), &pk), ((&ak, &bk), gdk)) in ga
                    .iter_mut()
                    .zip(cc.iter_mut())
                    .zip(gh.iter())
                    .zip(dec)
                    .zip(prev)
                    .zip(ar.iter().zip(bt).zip(gdelta_terms.iter_mut()))
                {
                    let pa = pk * av;
                    // d h_t / d delta = A exp(delta A) h_{t-1} + B u
                    *gdk = ghk * I::fma(pa, ak, bk * u);
                    *gak = I::fma(ghk, pa * delta, *gak);
                    *cck = av * ghk;
                }
                g.u[t * nc + c] = I::fma(gy, x.d[d], delta * lane_sum(&gu_terms));
                g.d[c] = I::fma(gy, u, g.d[c]);
                g.dt[t * nc + c] = lane_sum(&gdelta_terms) * slopes[t * nc + c];
            }
        }
        g
    }
}

/// Gradients of `sum(y * gy)` with respect to every input.
pub fn selective_scan_backward(x: ScanInputs, gy: &[f32], s: ScanDims) -> ScanGrads {
    check(&x, s);
    assert_eq!(gy.len(), x.u.len(), "selective_scan_backward: gy length");
    let lvl = level();
    let (n, dch, seq) = (s.state, s.channels, s.seq);
    let mut out = ScanGrads {
        u: vec![0f32; x.u.len()],
        dt: vec![0f32; x.u.len()],
        a: vec![0f32; dch * n],
        b: vec![0f32; x.b.len()],
        c: vec![0f32; x.c.len()],
        d: vec![0f32; dch],
    };
    let all = tasks(s);
    // One batch row at a time keeps the per-task partials of dB/dC bounded.
    for row in 0..s.batch {
        let parts: Vec<TaskGrads> = all
            .iter()
            .filter(|t| t.row == row)
            .copied()
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|task| dispatch(lvl, Bwd { x, gy, s, task }))
            .collect();
        for p in parts {
            let task = p.task;
            for t in 0..seq {
                let base = (row * seq + t) * dch + task.d0;
                let src = t * task.nc..(t + 1) * task.nc;
                out.u[base..base + task.nc].copy_from_slice(&p.u[src.clone()]);
                out.dt[base..base + task.nc].copy_from_slice(&p.dt[src]);
            }
            let bc = row * seq * n..(row + 1) * seq * n;
            for (o, v) in out.b[bc.clone()].iter_mut().zip(&p.b) {
                *o += v;
            }
            for (o, v) in out.c[bc].iter_mut().zip(&p.c) {
                *o += v;
            }
            let ar = task.d0 * n..(task.d0 + task.nc) * n;
            for (o, v) in out.a[ar].iter_mut().zip(&p.a) {
                *o += v;
            }
            for (o, v) in out.d[task.d0..task.d0 + task.nc].iter_mut().zip(&p.d) {
                *o += v;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain f64 version of the recurrence, written from the equations.
    #[allow(clippy::needless_range_loop)]
    fn reference(x: &ScanInputs, s: ScanDims) -> Vec<f64> {
        let mut y = vec![0f64; s.batch * s.seq * s.channels];
        for b in 0..s.batch {
            for d in 0..s.channels {
                let mut h = vec![0f64; s.state];
                for t in 0..s.seq {
                    let r = b * s.seq + t;
                    let i = r * s.channels + d;
                    let delta = (x.dt[i] as f64).exp().ln_1p();
                    let mut acc = 0.0;
                    for k in 0..s.state {
                        let a = (delta * x.a[d * s.state + k] as f64).exp();
                        h[k] = a * h[k] + delta * x.b[r * s.state + k] as f64 * x.u[i] as f64;
                        acc += h[k] * x.c[r * s.state + k] as f64;
                    }
                    y[i] = acc + x.d[d] as f64 * x.u[i] as f64;
                }
            }
        }
        y
    }

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn forward_matches_f64_recurrence() {
        let s = ScanDims {
            batch: 2,
            seq: 9,
            channels: 37,
            state: 5,
        };
        let mut seed = 3;
        let mut v = |n: usize| (0..n).map(|_| lcg(&mut seed)).collect::<Vec<f32>>();
        let (u, dt, b, c, d) = (
            v(2 * 9 * 37),
            v(2 * 9 * 37),
            v(2 * 9 * 5),
            v(2 * 9 * 5),
            v(37),
        );
        let a: Vec<f32> = v(37 * 5).iter().map(|x| -(x.abs() + 0.1)).collect();
        let x = ScanInputs {
            u: &u,
            dt: &dt,
            a: &a,
            b: &b,
            c: &c,
            d: &d,
        };
        let y = selective_scan_forward(x, s);
        let want = reference(&x, s);
        let worst = y
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-5, "scan forward differs by {worst}");
    }
}
