//! Backward pass: probabilities recomputed from `lse`, one task per kv-head group.

#[allow(unused_imports)]
use super::forward::*;
#[allow(unused_imports)]
use super::*;

/// Per-task scratch of the backward pass, allocated once per (batch, kv head) task.
pub(super) struct BwdScratch {
    s: Vec<f32>,
    dp: Vec<f32>,
    di: Vec<f32>,
    // SIMD path only (empty otherwise); the padded ones only when d is not a multiple of W.
    k_t: Vec<f32>,
    v_t: Vec<f32>,
    k_p: Vec<f32>,
    dk_p: Vec<f32>,
    dv_p: Vec<f32>,
    q_p: Vec<f32>,
    do_p: Vec<f32>,
    dq_p: Vec<f32>,
}

impl BwdScratch {
    fn new(t: usize, d: usize, w: usize) -> Self {
        let rows = BQ.min(t);
        let (dp, tp) = (round_up(d, w), round_up(t, w));
        let simd = w > 1;
        let padded = simd && dp != d;
        let sz = |on: bool, n: usize| if on { vec![0.0f32; n] } else { Vec::new() };
        BwdScratch {
            s: vec![0.0; rows * KC.min(tp)],
            dp: vec![0.0; rows * KC.min(tp)],
            di: vec![0.0; rows],
            k_t: sz(simd, d * tp),
            v_t: sz(simd, d * tp),
            k_p: sz(padded, t * dp),
            dk_p: sz(padded, t * dp),
            dv_p: sz(padded, t * dp),
            q_p: sz(padded, rows * dp),
            do_p: sz(padded, rows * dp),
            dq_p: sz(padded, rows * dp),
        }
    }
}

/// How the backward pass is parallelised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum BwdSplit {
    /// `PerKvHead` unless there are few (batch, kv head) tasks per thread and `h > kvh`.
    Auto,
    /// One task per (batch, kv head), accumulating dk/dv in place.
    PerKvHead,
    /// One task per (batch, query head) with private dk/dv partials, summed afterwards.
    PerHead,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward_isa(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    lse: &[f32],
    d_o: &[f32],
    dims: AttnDims,
    isa: Isa,
    split: BwdSplit,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    dims.validate();
    assert_eq!(
        q.len(),
        dims.q_len(),
        "attention_backward: q has the wrong length"
    );
    assert_eq!(
        k.len(),
        dims.kv_len(),
        "attention_backward: k has the wrong length"
    );
    assert_eq!(
        v.len(),
        dims.kv_len(),
        "attention_backward: v has the wrong length"
    );
    assert_eq!(
        o.len(),
        dims.q_len(),
        "attention_backward: o has the wrong length"
    );
    assert_eq!(
        d_o.len(),
        dims.q_len(),
        "attention_backward: d_o has the wrong length"
    );
    assert_eq!(
        lse.len(),
        dims.lse_len(),
        "attention_backward: lse has the wrong length"
    );
    let AttnDims {
        batch: b,
        heads: h,
        kv_heads: kvh,
        seq: t,
        head_dim: d,
        scale,
    } = dims;
    let mut dq = zeros(dims.q_len());
    let mut dk = zeros(dims.kv_len());
    let mut dv = zeros(dims.kv_len());
    if dims.lse_len() == 0 || d == 0 {
        return (dq, dk, dv);
    }
    let group = h / kvh;
    let hd = t * d;
    let w = lanes(isa);
    let per_head = match split {
        BwdSplit::PerKvHead => false,
        BwdSplit::PerHead => true,
        // With fewer than ~4 equal tasks per thread the tail imbalance is significant.
        BwdSplit::Auto => group > 1 && b * kvh < 4 * rayon::current_num_threads(),
    };

    // Backward of `n` query heads starting at head index `h0` (in [b*h] order) that all use
    // kv head `kv`, accumulating into dq_g [n, t, d] and dk_h, dv_h [t, d].
    let run = |scr: &mut BwdScratch,
               kv: usize,
               h0: usize,
               n: usize,
               dq_g: &mut [f32],
               dk_h: &mut [f32],
               dv_h: &mut [f32]| {
        let x = KvGroup {
            q: &q[h0 * hd..(h0 + n) * hd],
            o: &o[h0 * hd..(h0 + n) * hd],
            d_o: &d_o[h0 * hd..(h0 + n) * hd],
            lse: &lse[h0 * t..(h0 + n) * t],
            k: &k[kv * hd..(kv + 1) * hd],
            v: &v[kv * hd..(kv + 1) * hd],
            t,
            d,
            scale,
        };
        match isa {
            Isa::Scalar => bwd_group_gemm(&x, isa, scr, dq_g, dk_h, dv_h),
            // SAFETY: the Isa variant was produced by runtime feature detection.
            #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
            Isa::Avx2 => unsafe { bwd_group_simd::<kern::Avx2>(&x, isa, scr, dq_g, dk_h, dv_h) },
            #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
            Isa::Avx512 => unsafe {
                bwd_group_simd::<kern::Avx512>(&x, isa, scr, dq_g, dk_h, dv_h)
            },
        }
    };

    if !per_head {
        // Heads of kv group `bk` = b_*kvh + kh are the contiguous heads bk*group.. in [b, h] order.
        dq.par_chunks_mut(group * hd)
            .zip(dk.par_chunks_mut(hd))
            .zip(dv.par_chunks_mut(hd))
            .enumerate()
            .with_max_len(1)
            .for_each_init(
                || BwdScratch::new(t, d, w),
                |scr, (bk, ((dq_g, dk_h), dv_h))| run(scr, bk, bk * group, group, dq_g, dk_h, dv_h),
            );
    } else {
        let mut dk_part = zeros(dims.q_len());
        let mut dv_part = zeros(dims.q_len());
        dq.par_chunks_mut(hd)
            .zip(dk_part.par_chunks_mut(hd))
            .zip(dv_part.par_chunks_mut(hd))
            .enumerate()
            .with_max_len(1)
            .for_each_init(
                || BwdScratch::new(t, d, w),
                |scr, (bh, ((dq_h, dk_h), dv_h))| run(scr, bh / group, bh, 1, dq_h, dk_h, dv_h),
            );
        dk.par_chunks_mut(hd)
            .zip(dv.par_chunks_mut(hd))
            .enumerate()
            .for_each(|(bk, (dk_h, dv_h))| {
                for gi in 0..group {
                    let src = (bk * group + gi) * hd..(bk * group + gi + 1) * hd;
                    for (a, &x) in dk_h.iter_mut().zip(&dk_part[src.clone()]) {
                        *a += x;
                    }
                    for (a, &x) in dv_h.iter_mut().zip(&dv_part[src]) {
                        *a += x;
                    }
                }
            });
    }
    (dq, dk, dv)
}

/// Inputs of one backward task: `n` query heads sharing one kv head (q, o, d_o as
/// [n, t, d], lse as [n, t]) and that kv head's k, v [t, d].
pub(super) struct KvGroup<'a> {
    q: &'a [f32],
    o: &'a [f32],
    d_o: &'a [f32],
    lse: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    t: usize,
    d: usize,
    scale: f32,
}

/// `di[i] = dO_i . O_i` for the block's rows.
pub(super) fn row_dots(isa: Isa, d_o: &[f32], o: &[f32], d: usize, di: &mut [f32]) {
    for (i, x) in di.iter_mut().enumerate() {
        *x = fast_exp::dot(isa, &d_o[i * d..(i + 1) * d], &o[i * d..(i + 1) * d]);
    }
}

/// Recomputes P (in `s`) and turns `dp` into `dS * scale` for a score chunk: `nr` rows of
/// stride `ld`, `nc` real keys from key `c0`; masked entries and padding set to 0.
#[allow(clippy::too_many_arguments)]
pub(super) fn probs_and_ds(
    s: &mut [f32],
    dp: &mut [f32],
    ld: usize,
    r0: usize,
    c0: usize,
    nc: usize,
    lse: &[f32],
    di: &[f32],
    scale: f32,
    isa: Isa,
) {
    for (i, (p_row, g_row)) in s
        .chunks_exact_mut(ld)
        .zip(dp.chunks_exact_mut(ld))
        .enumerate()
        .take(lse.len())
    {
        let vis = visible(r0 + i, c0, nc);
        let (p_live, p_masked) = p_row.split_at_mut(vis);
        let (g_live, g_masked) = g_row.split_at_mut(vis);
        p_masked.fill(0.0);
        g_masked.fill(0.0);
        fast_exp::exp_sub(isa, p_live, lse[i]);
        fast_exp::softmax_bwd_row(isa, p_live, g_live, di[i], scale);
    }
}

/// Backward of one (batch, kv head) group with the SIMD kernels.
///
/// # Safety
/// The CPU supports `S`'s instruction set.
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
pub(super) unsafe fn bwd_group_simd<S: kern::Simd>(
    x: &KvGroup,
    isa: Isa,
    scr: &mut BwdScratch,
    dq_g: &mut [f32],
    dk_h: &mut [f32],
    dv_h: &mut [f32],
) {
    unsafe {
        let (t, d, w, scale) = (x.t, x.d, S::W, x.scale);
        let (dp, tp) = (round_up(d, w), round_up(t, w));
        let nvd = dp / w;
        let padded = dp != d;
        let hd = t * d;
        let BwdScratch {
            s,
            dp: g,
            di,
            k_t,
            v_t,
            k_p,
            dk_p,
            dv_p,
            q_p,
            do_p,
            dq_p,
        } = scr;
        transpose_pad(x.k, t, d, tp, k_t);
        transpose_pad(x.v, t, d, tp, v_t);
        let (kp, dkp, dvp): (&[f32], &mut [f32], &mut [f32]) = if padded {
            pad_rows(x.k, d, dp, k_p);
            dk_p.fill(0.0);
            dv_p.fill(0.0);
            (&k_p[..], &mut dk_p[..], &mut dv_p[..])
        } else {
            (x.k, &mut *dk_h, &mut *dv_h)
        };

        for (gi, dq_head) in dq_g.chunks_mut(hd).enumerate() {
            let q_head = &x.q[gi * hd..(gi + 1) * hd];
            let o_head = &x.o[gi * hd..(gi + 1) * hd];
            let do_head = &x.d_o[gi * hd..(gi + 1) * hd];
            let lse_head = &x.lse[gi * t..(gi + 1) * t];
            let mut r0 = 0;
            while r0 < t {
                let nr = BQ.min(t - r0);
                let end = r0 + nr;
                let rows = r0 * d..end * d;
                let q_blk = &q_head[rows.clone()];
                let do_blk = &do_head[rows.clone()];
                let lse_blk = &lse_head[r0..end];
                let di = &mut di[..nr];
                row_dots(isa, do_blk, &o_head[rows.clone()], d, di);
                let (qp, dop, dqp): (&[f32], &[f32], &mut [f32]) = if padded {
                    pad_rows(q_blk, d, dp, q_p);
                    pad_rows(do_blk, d, dp, do_p);
                    dq_p[..nr * dp].fill(0.0);
                    (&q_p[..nr * dp], &do_p[..nr * dp], &mut dq_p[..nr * dp])
                } else {
                    (q_blk, do_blk, &mut dq_head[rows.clone()])
                };

                let mut c0 = 0;
                while c0 < end {
                    let nc = KC.min(end - c0);
                    let ncp = round_up(nc, w);
                    let s = &mut s[..nr * ncp];
                    let g = &mut g[..nr * ncp];
                    let above = |i0: usize, ri: usize, v0: usize, _: usize| {
                        if c0 + v0 * w > r0 + i0 + ri - 1 {
                            (0, 0)
                        } else {
                            (0, d)
                        }
                    };
                    // S = scale * Q K^T ; dP = dO V^T
                    kern::mm::<S, false>(
                        nr,
                        ncp / w,
                        d,
                        q_blk,
                        d,
                        1,
                        &k_t[c0..],
                        tp,
                        s,
                        ncp,
                        scale,
                        above,
                    );
                    kern::mm::<S, false>(
                        nr,
                        ncp / w,
                        d,
                        do_blk,
                        d,
                        1,
                        &v_t[c0..],
                        tp,
                        g,
                        ncp,
                        1.0,
                        above,
                    );
                    probs_and_ds(s, g, ncp, r0, c0, nc, lse_blk, di, scale, isa);
                    // Key rows j only receive from queries i >= c0 + j - r0.
                    let from_queries = |j0: usize, _: usize, _: usize, _: usize| {
                        ((c0 + j0).saturating_sub(r0).min(nr), nr)
                    };
                    // dV += P^T dO ; dK += (scale dS)^T Q
                    kern::mm::<S, true>(
                        nc,
                        nvd,
                        nr,
                        s,
                        1,
                        ncp,
                        dop,
                        dp,
                        &mut dvp[c0 * dp..],
                        dp,
                        1.0,
                        from_queries,
                    );
                    kern::mm::<S, true>(
                        nc,
                        nvd,
                        nr,
                        g,
                        1,
                        ncp,
                        qp,
                        dp,
                        &mut dkp[c0 * dp..],
                        dp,
                        1.0,
                        from_queries,
                    );
                    // dQ += (scale dS) K, over the keys visible to the tile's last row.
                    kern::mm::<S, true>(
                        nr,
                        nvd,
                        nc,
                        g,
                        ncp,
                        1,
                        &kp[c0 * dp..],
                        dp,
                        dqp,
                        dp,
                        1.0,
                        |i0, ri, _, _| (0, visible(r0 + i0 + ri - 1, c0, nc)),
                    );
                    c0 += nc;
                }
                if padded {
                    unpad_rows(&dq_p[..nr * dp], d, dp, &mut dq_head[rows]);
                }
                r0 += nr;
            }
        }
        if padded {
            unpad_rows(dk_p, d, dp, dk_h);
            unpad_rows(dv_p, d, dp, dv_h);
        }
    }
}

/// Portable backward of one (batch, kv head) group through `gemm`.
pub(super) fn bwd_group_gemm(
    x: &KvGroup,
    isa: Isa,
    scr: &mut BwdScratch,
    dq_g: &mut [f32],
    dk_h: &mut [f32],
    dv_h: &mut [f32],
) {
    let (t, d, scale) = (x.t, x.d, x.scale);
    let hd = t * d;
    for (gi, dq_head) in dq_g.chunks_mut(hd).enumerate() {
        let q_head = &x.q[gi * hd..(gi + 1) * hd];
        let o_head = &x.o[gi * hd..(gi + 1) * hd];
        let do_head = &x.d_o[gi * hd..(gi + 1) * hd];
        let lse_head = &x.lse[gi * t..(gi + 1) * t];
        let mut r0 = 0;
        while r0 < t {
            let nr = BQ.min(t - r0);
            let end = r0 + nr;
            let rows = r0 * d..end * d;
            let q_blk = &q_head[rows.clone()];
            let do_blk = &do_head[rows.clone()];
            let dq_blk = &mut dq_head[rows.clone()];
            let lse_blk = &lse_head[r0..end];
            let di = &mut scr.di[..nr];
            row_dots(isa, do_blk, &o_head[rows], d, di);
            let mut c0 = 0;
            while c0 < end {
                let nc = KC.min(end - c0);
                let kc = c0 * d..(c0 + nc) * d;
                let k_chunk = &x.k[kc.clone()];
                let v_chunk = &x.v[kc.clone()];
                let s = &mut scr.s[..nr * nc];
                let g = &mut scr.dp[..nr * nc];
                gemm_scores(s, q_blk, k_chunk, nr, nc, d, scale);
                // SAFETY: g is nr x nc, do_blk is nr x d, v_chunk is nc x d (read transposed).
                unsafe {
                    gemm_mm(
                        nr,
                        nc,
                        d,
                        g.as_mut_ptr(),
                        nc,
                        false,
                        do_blk.as_ptr(),
                        1,
                        d,
                        v_chunk.as_ptr(),
                        d,
                        1,
                        1.0,
                    );
                }
                probs_and_ds(s, g, nc, r0, c0, nc, lse_blk, di, scale, isa);
                let dk_c = &mut dk_h[kc.clone()];
                let dv_c = &mut dv_h[kc];
                // SAFETY: s/g are nr x nc (row stride nc); dk_c/dv_c/k_chunk are nc x d;
                // q_blk/do_blk/dq_blk are nr x d.
                unsafe {
                    // dV += P^T dO
                    gemm_mm(
                        nc,
                        d,
                        nr,
                        dv_c.as_mut_ptr(),
                        d,
                        true,
                        s.as_ptr(),
                        nc,
                        1,
                        do_blk.as_ptr(),
                        1,
                        d,
                        1.0,
                    );
                    // dK += (scale dS)^T Q
                    gemm_mm(
                        nc,
                        d,
                        nr,
                        dk_c.as_mut_ptr(),
                        d,
                        true,
                        g.as_ptr(),
                        nc,
                        1,
                        q_blk.as_ptr(),
                        1,
                        d,
                        1.0,
                    );
                    // dQ += (scale dS) K
                    gemm_mm(
                        nr,
                        d,
                        nc,
                        dq_blk.as_mut_ptr(),
                        d,
                        true,
                        g.as_ptr(),
                        1,
                        nc,
                        k_chunk.as_ptr(),
                        1,
                        d,
                        1.0,
                    );
                }
                c0 += nc;
            }
            r0 += nr;
        }
    }
}
