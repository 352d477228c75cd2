//! RWKV-7 "Goose" WKV recurrence over whole sequences and its hand-written
//! backward (reference: BlinkDL/RWKV-LM `RWKV-v7/rwkv_v7_demo.py`, the
//! per-timestep `RWKV7_OP`, and the CUDA kernel of `train_temp/cuda`).
//!
//! Per head, with the state `S [N, N]` (row i = value channel, column j =
//! key channel) and the step inputs `r, w, k, v, a, b [N]` (`w` is the decay
//! factor in (0, 1), already `exp(-exp(.))`):
//! `sa = S a`, `S <- S diag(w) + sa b^T + v k^T`, `y = S r`.
//!
//! The work is split over (batch row, head): every task owns its state and
//! writes disjoint outputs. The backward keeps no state from the forward: it
//! re-runs the recurrence once, storing the state at the start of every
//! chunk of `CHUNK` steps, then walks the chunks backwards, recomputing the
//! chunk's states from its checkpoint and running the adjoint recurrence
//! `dS <- dS diag(w) + (dS b) a^T` (after `dS += dy r^T`).
//! Sums use a fixed lane layout, so results do not depend on the thread count.

use rayon::prelude::*;

use super::fast_math::{dispatch, level, Isa, SimdKernel};

/// Steps between stored states in the backward: `CHUNK + 1` states of one
/// chunk are live per task.
const CHUNK: usize = 16;

/// Sizes of one WKV call: every input is `[batch, seq, heads * head_size]`.
#[derive(Debug, Clone, Copy)]
pub struct WkvDims {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_size: usize,
}

impl WkvDims {
    fn channels(&self) -> usize {
        self.heads * self.head_size
    }
    fn len(&self) -> usize {
        self.batch * self.seq * self.channels()
    }
}

/// The six inputs, row-major `[batch, seq, channels]` f32.
#[derive(Debug, Clone, Copy)]
pub struct WkvInputs<'a> {
    pub r: &'a [f32],
    pub w: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub a: &'a [f32],
    pub b: &'a [f32],
}

/// Gradients with respect to each input (same shapes).
#[derive(Debug, Clone)]
pub struct WkvGrads {
    pub r: Vec<f32>,
    pub w: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

fn check(x: &WkvInputs, s: WkvDims) {
    for (name, t) in [
        ("r", x.r),
        ("w", x.w),
        ("k", x.k),
        ("v", x.v),
        ("a", x.a),
        ("b", x.b),
    ] {
        assert_eq!(t.len(), s.len(), "wkv7: {name} has the wrong length");
    }
}

/// `sum_j x_j y_j` in a fixed order: 16 lanes, then a pairwise tree.
#[inline(always)]
fn dot<I: Isa>(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut xs = x.chunks_exact(16);
    let mut ys = y.chunks_exact(16);
    for (cx, cy) in (&mut xs).zip(&mut ys) {
        for ((a, &p), &q) in acc.iter_mut().zip(cx).zip(cy) {
            *a = I::fma(p, q, *a);
        }
    }
    for ((a, &p), &q) in acc.iter_mut().zip(xs.remainder()).zip(ys.remainder()) {
        *a = I::fma(p, q, *a);
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

/// The step inputs of one (batch row, head) at time `t`.
struct Step<'a> {
    r: &'a [f32],
    w: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    a: &'a [f32],
    b: &'a [f32],
}

fn step<'a>(x: &WkvInputs<'a>, s: WkvDims, row: usize, head: usize, t: usize) -> Step<'a> {
    let n = s.head_size;
    let off = (row * s.seq + t) * s.channels() + head * n;
    let at = |v: &'a [f32]| &v[off..off + n];
    Step {
        r: at(x.r),
        w: at(x.w),
        k: at(x.k),
        v: at(x.v),
        a: at(x.a),
        b: at(x.b),
    }
}

/// One step of the recurrence on `state [N, N]`; writes `sa` (the `S a` of
/// the old state) and, when given, `y = S r` of the new state.
#[inline(always)]
fn advance<I: Isa>(state: &mut [f32], st: &Step, sa: &mut [f32], mut y: Option<&mut [f32]>) {
    let n = st.r.len();
    for i in 0..n {
        let row = &mut state[i * n..(i + 1) * n];
        let sai = dot::<I>(row, st.a);
        sa[i] = sai;
        let vi = st.v[i];
        for (((s, &w), &b), &k) in row.iter_mut().zip(st.w).zip(st.b).zip(st.k) {
            *s = I::fma(*s, w, I::fma(sai, b, vi * k));
        }
        if let Some(y) = y.as_deref_mut() {
            y[i] = dot::<I>(row, st.r);
        }
    }
}

struct Fwd<'a> {
    x: WkvInputs<'a>,
    s: WkvDims,
    row: usize,
    head: usize,
    /// `[seq, N]`
    out: &'a mut [f32],
}

impl SimdKernel for Fwd<'_> {
    type Output = ();
    #[inline(always)]
    fn run<I: Isa>(self) {
        let n = self.s.head_size;
        let mut state = vec![0f32; n * n];
        let mut sa = vec![0f32; n];
        for t in 0..self.s.seq {
            let st = step(&self.x, self.s, self.row, self.head, t);
            advance::<I>(
                &mut state,
                &st,
                &mut sa,
                Some(&mut self.out[t * n..(t + 1) * n]),
            );
        }
    }
}

/// Copies the `[seq, N]` block of (`row`, `head`) into `out [batch, seq, channels]`.
fn scatter(s: WkvDims, (row, head): (usize, usize), block: &[f32], out: &mut [f32]) {
    let n = s.head_size;
    for t in 0..s.seq {
        let base = (row * s.seq + t) * s.channels() + head * n;
        out[base..base + n].copy_from_slice(&block[t * n..(t + 1) * n]);
    }
}

fn tasks(s: WkvDims) -> Vec<(usize, usize)> {
    (0..s.batch)
        .flat_map(|row| (0..s.heads).map(move |head| (row, head)))
        .collect()
}

/// `y [batch, seq, channels]` of the recurrence from a zero state.
pub fn wkv7_forward(x: WkvInputs, s: WkvDims) -> Vec<f32> {
    check(&x, s);
    let lvl = level();
    let parts: Vec<((usize, usize), Vec<f32>)> = tasks(s)
        .into_par_iter()
        .map(|(row, head)| {
            let mut out = vec![0f32; s.seq * s.head_size];
            dispatch(
                lvl,
                Fwd {
                    x,
                    s,
                    row,
                    head,
                    out: &mut out,
                },
            );
            ((row, head), out)
        })
        .collect();
    let mut y = vec![0f32; s.len()];
    for (key, block) in &parts {
        scatter(s, *key, block, &mut y);
    }
    y
}

struct Bwd<'a> {
    x: WkvInputs<'a>,
    gy: &'a [f32],
    s: WkvDims,
    row: usize,
    head: usize,
}

/// One task's gradients, each `[seq, N]`.
struct TaskGrads([Vec<f32>; 6]);

impl SimdKernel for Bwd<'_> {
    type Output = TaskGrads;
    #[inline(always)]
    fn run<I: Isa>(self) -> TaskGrads {
        let (n, seq) = (self.s.head_size, self.s.seq);
        let nn = n * n;
        let chunks = seq.div_ceil(CHUNK);
        // The state at the start of every chunk.
        let mut starts = vec![0f32; chunks * nn];
        let mut state = vec![0f32; nn];
        let mut sa = vec![0f32; n];
        for t in 0..seq {
            if t % CHUNK == 0 {
                let c = t / CHUNK;
                starts[c * nn..(c + 1) * nn].copy_from_slice(&state);
            }
            let st = step(&self.x, self.s, self.row, self.head, t);
            advance::<I>(&mut state, &st, &mut sa, None);
        }
        let mut g: [Vec<f32>; 6] = std::array::from_fn(|_| vec![0f32; seq * n]);
        // states[m] = state before step t0 + m; sas[m] = its `S a`.
        let mut states = vec![0f32; (CHUNK + 1) * nn];
        let mut sas = vec![0f32; CHUNK * n];
        let mut ds = vec![0f32; nn];
        for c in (0..chunks).rev() {
            let (t0, t1) = (c * CHUNK, ((c + 1) * CHUNK).min(seq));
            states[..nn].copy_from_slice(&starts[c * nn..(c + 1) * nn]);
            for t in t0..t1 {
                let m = t - t0;
                let st = step(&self.x, self.s, self.row, self.head, t);
                let (done, rest) = states.split_at_mut((m + 1) * nn);
                rest[..nn].copy_from_slice(&done[m * nn..]);
                advance::<I>(&mut rest[..nn], &st, &mut sas[m * n..(m + 1) * n], None);
            }
            for t in (t0..t1).rev() {
                let m = t - t0;
                let st = step(&self.x, self.s, self.row, self.head, t);
                let gy_off = (self.row * seq + t) * self.s.channels() + self.head * n;
                let dy = &self.gy[gy_off..gy_off + n];
                let prev = &states[m * nn..(m + 1) * nn];
                let next = &states[(m + 1) * nn..(m + 2) * nn];
                let sa = &sas[m * n..(m + 1) * n];
                let [gr, gw, gk, gv, ga, gb] = &mut g;
                let o = t * n;
                let (gr, gw, gk) = (&mut gr[o..o + n], &mut gw[o..o + n], &mut gk[o..o + n]);
                let (gv, ga, gb) = (&mut gv[o..o + n], &mut ga[o..o + n], &mut gb[o..o + n]);
                for i in 0..n {
                    let d = &mut ds[i * n..(i + 1) * n];
                    let (p, q) = (&prev[i * n..(i + 1) * n], &next[i * n..(i + 1) * n]);
                    let (dyi, vi, sai) = (dy[i], st.v[i], sa[i]);
                    // dS += dy r^T; dr += S_t^T dy; dw, dk, db from dS.
                    for j in 0..n {
                        d[j] = I::fma(dyi, st.r[j], d[j]);
                        gr[j] = I::fma(q[j], dyi, gr[j]);
                        gw[j] = I::fma(p[j], d[j], gw[j]);
                        gk[j] = I::fma(vi, d[j], gk[j]);
                        gb[j] = I::fma(sai, d[j], gb[j]);
                    }
                    gv[i] = dot::<I>(d, st.k);
                    let dsa = dot::<I>(d, st.b);
                    // da += S_{t-1}^T dsa; dS_{t-1} = dS diag(w) + dsa a^T.
                    for j in 0..n {
                        ga[j] = I::fma(p[j], dsa, ga[j]);
                        d[j] = I::fma(d[j], st.w[j], dsa * st.a[j]);
                    }
                }
            }
        }
        TaskGrads(g)
    }
}

/// Gradients of `sum(y * gy)` with respect to the six inputs.
pub fn wkv7_backward(x: WkvInputs, gy: &[f32], s: WkvDims) -> WkvGrads {
    check(&x, s);
    assert_eq!(gy.len(), s.len(), "wkv7: gy has the wrong length");
    let lvl = level();
    let parts: Vec<((usize, usize), TaskGrads)> = tasks(s)
        .into_par_iter()
        .map(|(row, head)| {
            let g = dispatch(
                lvl,
                Bwd {
                    x,
                    gy,
                    s,
                    row,
                    head,
                },
            );
            ((row, head), g)
        })
        .collect();
    let mut out: [Vec<f32>; 6] = std::array::from_fn(|_| vec![0f32; s.len()]);
    for (key, TaskGrads(g)) in &parts {
        for (grads, block) in out.iter_mut().zip(g) {
            scatter(s, *key, block, grads);
        }
    }
    let [r, w, k, v, a, b] = out;
    WkvGrads { r, w, k, v, a, b }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{rel_err, XorShift};
    use super::*;

    /// f64 reference of the forward and of the gradients by the same adjoint
    /// recurrence, with every state kept.
    fn reference(x: &WkvInputs, gy: &[f32], s: WkvDims) -> (Vec<f64>, [Vec<f64>; 6]) {
        let (n, c) = (s.head_size, s.channels());
        let mut y = vec![0f64; s.len()];
        let mut g: [Vec<f64>; 6] = std::array::from_fn(|_| vec![0f64; s.len()]);
        let f = |v: &[f32], i: usize| v[i] as f64;
        for row in 0..s.batch {
            for h in 0..s.heads {
                let idx = |t: usize, i: usize| (row * s.seq + t) * c + h * n + i;
                let mut states = vec![vec![0f64; n * n]];
                let mut sas = vec![];
                for t in 0..s.seq {
                    let p = states.last().cloned().unwrap_or_default();
                    let sa: Vec<f64> = (0..n)
                        .map(|i| (0..n).map(|j| p[i * n + j] * f(x.a, idx(t, j))).sum())
                        .collect();
                    let mut q = vec![0f64; n * n];
                    for i in 0..n {
                        for j in 0..n {
                            q[i * n + j] = p[i * n + j] * f(x.w, idx(t, j))
                                + sa[i] * f(x.b, idx(t, j))
                                + f(x.v, idx(t, i)) * f(x.k, idx(t, j));
                        }
                        y[idx(t, i)] = (0..n).map(|j| q[i * n + j] * f(x.r, idx(t, j))).sum();
                    }
                    states.push(q);
                    sas.push(sa);
                }
                let mut ds = vec![0f64; n * n];
                for t in (0..s.seq).rev() {
                    let (p, q) = (&states[t], &states[t + 1]);
                    for i in 0..n {
                        let dyi = gy[idx(t, i)] as f64;
                        for j in 0..n {
                            ds[i * n + j] += dyi * f(x.r, idx(t, j));
                            g[0][idx(t, j)] += q[i * n + j] * dyi;
                        }
                    }
                    for i in 0..n {
                        let mut dsa = 0.0;
                        for j in 0..n {
                            let d = ds[i * n + j];
                            g[1][idx(t, j)] += p[i * n + j] * d;
                            g[2][idx(t, j)] += f(x.v, idx(t, i)) * d;
                            g[3][idx(t, i)] += d * f(x.k, idx(t, j));
                            g[5][idx(t, j)] += sas[t][i] * d;
                            dsa += d * f(x.b, idx(t, j));
                        }
                        for j in 0..n {
                            g[4][idx(t, j)] += p[i * n + j] * dsa;
                            ds[i * n + j] =
                                ds[i * n + j] * f(x.w, idx(t, j)) + dsa * f(x.a, idx(t, j));
                        }
                    }
                }
            }
        }
        (y, g)
    }

    #[test]
    fn matches_f64_reference_across_chunks() {
        // seq 37 spans three chunks with a partial last one; N = 20 is not a
        // multiple of the 16 lanes.
        let s = WkvDims {
            batch: 2,
            seq: 37,
            heads: 3,
            head_size: 20,
        };
        let mut rng = XorShift(0x5eed);
        let mut gen = |lo: f32, hi: f32| -> Vec<f32> {
            (0..s.len())
                .map(|_| lo + (hi - lo) * (rng.unif() * 0.5 + 0.5))
                .collect()
        };
        let (r, w, k, v) = (
            gen(-1.0, 1.0),
            gen(0.6, 1.0),
            gen(-0.5, 0.5),
            gen(-1.0, 1.0),
        );
        // a = -kk, b = kk * a_rate with a unit-norm kk: a contraction.
        let kk = gen(-1.0, 1.0);
        let rate = gen(0.0, 1.0);
        let n = s.head_size;
        let mut a = vec![0f32; s.len()];
        let mut b = vec![0f32; s.len()];
        for ((ab, bb), (kb, rb)) in a
            .chunks_mut(n)
            .zip(b.chunks_mut(n))
            .zip(kk.chunks(n).zip(rate.chunks(n)))
        {
            let norm = kb.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            for j in 0..n {
                ab[j] = -kb[j] / norm;
                bb[j] = kb[j] / norm * rb[j];
            }
        }
        let gy = gen(-1.0, 1.0);
        let x = WkvInputs {
            r: &r,
            w: &w,
            k: &k,
            v: &v,
            a: &a,
            b: &b,
        };
        let (want_y, want_g) = reference(&x, &gy, s);
        let y = wkv7_forward(x, s);
        assert!(rel_err(&y, &want_y) < 1e-5, "y: {}", rel_err(&y, &want_y));
        let g = wkv7_backward(x, &gy, s);
        for (name, got, want) in [
            ("r", &g.r, &want_g[0]),
            ("w", &g.w, &want_g[1]),
            ("k", &g.k, &want_g[2]),
            ("v", &g.v, &want_g[3]),
            ("a", &g.a, &want_g[4]),
            ("b", &g.b, &want_g[5]),
        ] {
            let e = rel_err(got, want);
            assert!(e < 1e-5, "d{name}: rel err {e}");
        }
    }
}
