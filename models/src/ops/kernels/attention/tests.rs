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
