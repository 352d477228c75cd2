//! Forward pass: query blocks, online softmax over key chunks.

#[allow(unused_imports)]
use super::*;

pub(super) struct FwdScratch {
    s: Vec<f32>,
    acc: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

impl FwdScratch {
    fn new(t: usize, dp: usize, w: usize) -> Self {
        let rows = BQ.min(t);
        FwdScratch {
            s: vec![0.0; rows * KC.min(round_up(t, w))],
            acc: vec![0.0; rows * dp],
            m: vec![0.0; rows],
            l: vec![0.0; rows],
        }
    }
}

/// Read-only inputs of one (batch, head) for the forward pass. `k_t` is K^T [d, tp] and
/// `v_p` is V [t, dp] (SIMD path) or the plain K [t, d] and V [t, d] (portable path).
pub(super) struct FwdHead<'a> {
    q: &'a [f32],
    k_t: &'a [f32],
    v_p: &'a [f32],
    d: usize,
    dp: usize,
    tp: usize,
    scale: f32,
}

pub(crate) fn attention_forward_isa(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: AttnDims,
    isa: Isa,
) -> (Vec<f32>, Vec<f32>) {
    dims.validate();
    assert_eq!(
        q.len(),
        dims.q_len(),
        "attention_forward: q has the wrong length"
    );
    assert_eq!(
        k.len(),
        dims.kv_len(),
        "attention_forward: k has the wrong length"
    );
    assert_eq!(
        v.len(),
        dims.kv_len(),
        "attention_forward: v has the wrong length"
    );
    let AttnDims {
        heads: h,
        kv_heads: kvh,
        seq: t,
        head_dim: d,
        scale,
        ..
    } = dims;
    let mut o = zeros(dims.q_len());
    let mut lse = zeros(dims.lse_len());
    if dims.lse_len() == 0 {
        return (o, lse);
    }
    if d == 0 {
        // All scores are 0: uniform attention over i + 1 keys, empty outputs.
        for row in lse.chunks_mut(t) {
            for (i, x) in row.iter_mut().enumerate() {
                *x = ((i + 1) as f32).ln();
            }
        }
        return (o, lse);
    }
    let group = h / kvh;
    let w = lanes(isa);
    let (dp, tp) = (round_up(d, w), round_up(t, w));

    // SIMD path: K^T [d, tp] and row-padded V [t, dp] per kv head, built once in parallel.
    let mut k_t = Vec::new();
    let mut v_p = Vec::new();
    if w > 1 {
        k_t = zeros(dims.batch * kvh * d * tp);
        k_t.par_chunks_mut(d * tp)
            .zip(k.par_chunks(t * d))
            .for_each(|(dst, src)| transpose_pad(src, t, d, tp, dst));
        if dp != d {
            v_p = zeros(dims.batch * kvh * t * dp);
            v_p.par_chunks_mut(t * dp)
                .zip(v.par_chunks(t * d))
                .for_each(|(dst, src)| pad_rows(src, d, dp, dst));
        }
    }
    let (k_all, kt_stride): (&[f32], usize) = if w > 1 { (&k_t, d * tp) } else { (k, t * d) };
    let v_all: &[f32] = if w > 1 && dp != d { &v_p } else { v };

    struct Task<'a> {
        bh: usize,
        r0: usize,
        o: &'a mut [f32],
        lse: &'a mut [f32],
    }
    let mut tasks: Vec<Task> = Vec::with_capacity(dims.batch * h * t.div_ceil(BQ));
    for (bh, (o_head, lse_head)) in o.chunks_mut(t * d).zip(lse.chunks_mut(t)).enumerate() {
        for (qb, (o_blk, lse_blk)) in o_head
            .chunks_mut(BQ * d)
            .zip(lse_head.chunks_mut(BQ))
            .enumerate()
        {
            tasks.push(Task {
                bh,
                r0: qb * BQ,
                o: o_blk,
                lse: lse_blk,
            });
        }
    }
    // Heaviest (last) query blocks first for better load balance.
    tasks.sort_by_key(|task| std::cmp::Reverse(task.r0));

    tasks.into_par_iter().for_each_init(
        || FwdScratch::new(t, dp, w),
        |scr, task| {
            let (b_, hh) = (task.bh / h, task.bh % h);
            let kv = b_ * kvh + hh / group;
            let q_off = task.bh * t * d;
            let head = FwdHead {
                q: &q[q_off..q_off + t * d],
                k_t: &k_all[kv * kt_stride..(kv + 1) * kt_stride],
                v_p: &v_all[kv * t * dp..(kv + 1) * t * dp],
                d,
                dp,
                tp,
                scale,
            };
            match isa {
                Isa::Scalar => fwd_block_gemm(&head, task.r0, isa, scr, task.o, task.lse),
                // SAFETY: the Isa variant was produced by runtime feature detection.
                #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
                Isa::Avx2 => unsafe {
                    fwd_block_simd::<kern::Avx2>(&head, task.r0, isa, scr, task.o, task.lse)
                },
                #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
                Isa::Avx512 => unsafe {
                    fwd_block_simd::<kern::Avx512>(&head, task.r0, isa, scr, task.o, task.lse)
                },
            }
        },
    );
    (o, lse)
}

/// Online-softmax update of one query block for the score chunk in `s` (`nr` rows, row
/// stride `ld`, `nc` real keys starting at key `c0`): turns the scores into unnormalised
/// probabilities (masked entries and padding set to 0) and rescales `acc` rows (stride `acc_rs`).
#[allow(clippy::too_many_arguments)]
pub(super) fn online_softmax_chunk(
    s: &mut [f32],
    ld: usize,
    r0: usize,
    c0: usize,
    nc: usize,
    isa: Isa,
    m: &mut [f32],
    l: &mut [f32],
    acc: &mut [f32],
    acc_rs: usize,
) {
    for (i, row) in s.chunks_exact_mut(ld).enumerate().take(m.len()) {
        let vis = visible(r0 + i, c0, nc);
        let (live, masked) = row.split_at_mut(vis);
        masked.fill(0.0);
        if vis == 0 {
            continue;
        }
        let m_new = m[i].max(fast_exp::row_max(isa, live));
        let sum = fast_exp::exp_sub_sum(isa, live, m_new);
        if m[i] != f32::NEG_INFINITY && m[i] != m_new {
            let corr = fast_exp::exp_scalar(m[i] - m_new);
            l[i] *= corr;
            fast_exp::scale_row(&mut acc[i * acc_rs..(i + 1) * acc_rs], corr);
        }
        l[i] += sum;
        m[i] = m_new;
    }
}

/// Writes `o = acc / l` and `lse = m + ln l` for one block.
pub(super) fn finish_block(
    acc: &[f32],
    acc_rs: usize,
    d: usize,
    m: &[f32],
    l: &[f32],
    o_blk: &mut [f32],
    lse_blk: &mut [f32],
) {
    for i in 0..lse_blk.len() {
        let inv = 1.0 / l[i];
        let src = &acc[i * acc_rs..i * acc_rs + d];
        for (dst, &a) in o_blk[i * d..(i + 1) * d].iter_mut().zip(src) {
            *dst = a * inv;
        }
        lse_blk[i] = m[i] + l[i].ln();
    }
}

/// One query block of one head, SIMD kernels (`o_blk`/`lse_blk` hold the block's rows).
///
/// # Safety
/// The CPU supports `S`'s instruction set; `head` uses `S::W` padding.
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
pub(super) unsafe fn fwd_block_simd<S: kern::Simd>(
    x: &FwdHead,
    r0: usize,
    isa: Isa,
    scr: &mut FwdScratch,
    o_blk: &mut [f32],
    lse_blk: &mut [f32],
) {
    unsafe {
        let (d, dp, tp, w) = (x.d, x.dp, x.tp, S::W);
        let nr = lse_blk.len();
        let end = r0 + nr;
        let q_blk = &x.q[r0 * d..end * d];
        let acc = &mut scr.acc[..nr * dp];
        let m = &mut scr.m[..nr];
        let l = &mut scr.l[..nr];
        acc.fill(0.0);
        m.fill(f32::NEG_INFINITY);
        l.fill(0.0);

        let mut c0 = 0;
        while c0 < end {
            let nc = KC.min(end - c0);
            let ncp = round_up(nc, w);
            let s = &mut scr.s[..nr * ncp];
            // S = scale * Q K^T, skipping tiles entirely above the diagonal.
            kern::mm::<S, false>(
                nr,
                ncp / w,
                d,
                q_blk,
                d,
                1,
                &x.k_t[c0..],
                tp,
                s,
                ncp,
                x.scale,
                |i0, ri, v0, _| {
                    if c0 + v0 * w > r0 + i0 + ri - 1 {
                        (0, 0)
                    } else {
                        (0, d)
                    }
                },
            );
            online_softmax_chunk(s, ncp, r0, c0, nc, isa, m, l, acc, dp);
            // acc += P V, only over the keys visible to the tile's last row.
            kern::mm::<S, true>(
                nr,
                dp / w,
                nc,
                s,
                ncp,
                1,
                &x.v_p[c0 * dp..],
                dp,
                acc,
                dp,
                1.0,
                |i0, ri, _, _| (0, visible(r0 + i0 + ri - 1, c0, nc)),
            );
            c0 += nc;
        }
        finish_block(acc, dp, d, m, l, o_blk, lse_blk);
    }
}

/// `dst[m, n] (+)= beta * lhs[m, k] * rhs[k, n]` through `gemm`, unit column stride for `dst`.
///
/// # Safety
/// All pointers must be valid for the strided extents described.
#[inline]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_mm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_cs: usize,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_cs: usize,
    rhs_rs: usize,
    beta: f32,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `s[nr, nc] = scale * q_blk[nr, d] * k_chunk[nc, d]^T` (row stride `nc`) through `gemm`.
#[inline]
pub(super) fn gemm_scores(
    s: &mut [f32],
    q_blk: &[f32],
    k_chunk: &[f32],
    nr: usize,
    nc: usize,
    d: usize,
    scale: f32,
) {
    assert!(s.len() >= nr * nc && q_blk.len() >= nr * d && k_chunk.len() >= nc * d);
    // SAFETY: extents checked above.
    unsafe {
        gemm_mm(
            nr,
            nc,
            d,
            s.as_mut_ptr(),
            nc,
            false,
            q_blk.as_ptr(),
            1,
            d,
            k_chunk.as_ptr(),
            d,
            1,
            scale,
        );
    }
}

/// Portable version of [`fwd_block_simd`] (`x.k_t`/`x.v_p` are plain K and V, `dp == d`).
pub(super) fn fwd_block_gemm(
    x: &FwdHead,
    r0: usize,
    isa: Isa,
    scr: &mut FwdScratch,
    o_blk: &mut [f32],
    lse_blk: &mut [f32],
) {
    let d = x.d;
    let nr = lse_blk.len();
    let end = r0 + nr;
    let q_blk = &x.q[r0 * d..end * d];
    let acc = &mut scr.acc[..nr * d];
    let m = &mut scr.m[..nr];
    let l = &mut scr.l[..nr];
    acc.fill(0.0);
    m.fill(f32::NEG_INFINITY);
    l.fill(0.0);

    let mut c0 = 0;
    while c0 < end {
        let nc = KC.min(end - c0);
        let s = &mut scr.s[..nr * nc];
        gemm_scores(s, q_blk, &x.k_t[c0 * d..(c0 + nc) * d], nr, nc, d, x.scale);
        online_softmax_chunk(s, nc, r0, c0, nc, isa, m, l, acc, d);
        let v_chunk = &x.v_p[c0 * d..(c0 + nc) * d];
        // SAFETY: acc is nr x d, s is nr x nc, v_chunk is nc x d.
        unsafe {
            gemm_mm(
                nr,
                d,
                nc,
                acc.as_mut_ptr(),
                d,
                true,
                s.as_ptr(),
                1,
                nc,
                v_chunk.as_ptr(),
                1,
                d,
                1.0,
            );
        }
        c0 += nc;
    }
    finish_block(acc, d, d, m, l, o_blk, lse_blk);
}
