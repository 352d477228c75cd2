//! `FusedOps` for burn's Flex CPU backend: the SIMD + rayon kernels of
//! `kernels/` on contiguous f32 data; other dtypes fall back to the composed
//! versions.

use burn::backend::flex::{Flex, FlexTensor};
use burn::tensor::{DType, TensorData, TensorMetadata};

use super::kernels::distill::{self, Divergence};
use super::kernels::fake_quant::{self as fq, FakeQuantTarget};
use super::kernels::selective_scan::{self as scan, ScanDims, ScanInputs};
use super::kernels::wkv7::{self, WkvDims, WkvInputs};
use super::kernels::{attention, cross_entropy, layout, matmul, rms_norm, swiglu};
use super::{composed, FusedOps};

/// A contiguous f32 view of `t` (copying only strided views), or None for other dtypes.
fn f32_tensor(t: FlexTensor) -> Option<FlexTensor> {
    if t.dtype() != DType::F32 {
        return None;
    }
    Some(if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    })
}

fn data(t: &FlexTensor) -> &[f32] {
    // f32_tensor guarantees a contiguous f32 layout.
    t.as_slice::<f32>().unwrap_or(&[])
}

fn new(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn dims(t: &FlexTensor) -> Vec<usize> {
    t.shape().to_vec()
}

/// Kernel dims from `q [b, t, h, d]` and `k [b, t, kv, d]`.
fn attn_dims(qd: &[usize], kd: &[usize], scale: f32) -> attention::AttnDims {
    attention::AttnDims {
        batch: qd[0],
        heads: qd[2],
        kv_heads: kd[2],
        seq: qd[1],
        head_dim: qd[3],
        scale,
    }
}

fn targets_i64(t: FlexTensor) -> Vec<i64> {
    t.into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .unwrap_or_default()
}

/// A strided 2-D f32 view of `t` for the GEMM kernel, or None otherwise.
fn operand(t: &FlexTensor) -> Option<matmul::Operand<'_>> {
    let layout = t.layout();
    let (shape, strides) = (layout.shape(), layout.strides());
    if t.dtype() != DType::F32 || shape.num_dims() != 2 {
        return None;
    }
    Some(matmul::Operand {
        data: t.storage::<f32>(),
        offset: layout.start_offset(),
        rows: shape[0],
        cols: shape[1],
        row_stride: strides[0],
        col_stride: strides[1],
    })
}

impl FusedOps for Flex {
    fn matmul(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        let out = match (operand(&a), operand(&b)) {
            (Some(x), Some(y)) => matmul::matmul(x, y).map(|c| (c, vec![x.rows, y.cols])),
            _ => None,
        };
        match out {
            Some((c, shape)) => new(c, shape),
            None => <Self as burn::tensor::ops::FloatTensorOps<Self>>::float_matmul(a, b),
        }
    }

    fn distill_fwd(
        student: FlexTensor,
        teacher: FlexTensor,
        div: Divergence,
        temperature: f64,
    ) -> FlexTensor {
        let (Some(s), Some(t)) = (f32_tensor(student.clone()), f32_tensor(teacher.clone())) else {
            return composed::distill_fwd::<Self>(student, teacher, div, temperature);
        };
        let d = dims(&s);
        new(
            distill::forward(data(&s), data(&t), d[1], div, temperature),
            vec![d[0]],
        )
    }

    fn distill_bwd(
        student: FlexTensor,
        teacher: FlexTensor,
        gy: FlexTensor,
        div: Divergence,
        temperature: f64,
    ) -> FlexTensor {
        let (Some(s), Some(t), Some(g)) = (
            f32_tensor(student.clone()),
            f32_tensor(teacher.clone()),
            f32_tensor(gy.clone()),
        ) else {
            return composed::distill_bwd::<Self>(student, teacher, gy, div, temperature);
        };
        let d = dims(&s);
        new(
            distill::backward(data(&s), data(&t), data(&g), d[1], div, temperature),
            d,
        )
    }

    fn fake_quant_fwd(x: FlexTensor, target: FakeQuantTarget) -> (FlexTensor, Option<FlexTensor>) {
        // Any non-negative strides (the tied head is a transposed view).
        let view = operand(&x).and_then(|v| {
            Some(fq::View {
                data: v.data,
                offset: v.offset,
                rows: v.rows,
                cols: v.cols,
                row_stride: usize::try_from(v.row_stride).ok()?,
                col_stride: usize::try_from(v.col_stride).ok()?,
            })
        });
        let Some(view) = view else {
            return composed::fake_quant_fwd::<Self>(x, target);
        };
        let shape = vec![view.rows, view.cols];
        let (values, mask) = fq::fake_quant(view, target);
        (new(values, shape.clone()), mask.map(|m| new(m, shape)))
    }

    fn rope(x: FlexTensor, cos: FlexTensor, sin: FlexTensor, inverse: bool) -> FlexTensor {
        let (Some(x32), Some(c32), Some(s32)) = (
            f32_tensor(x.clone()),
            f32_tensor(cos.clone()),
            f32_tensor(sin.clone()),
        ) else {
            return composed::rope::<Self>(x, cos, sin, inverse);
        };
        let xd = dims(&x32);
        new(
            layout::rope(
                data(&x32),
                data(&c32),
                data(&s32),
                xd[0],
                xd[1],
                xd[2],
                xd[3],
                inverse,
            ),
            xd,
        )
    }

    fn attention_fwd(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        scale: f32,
    ) -> (FlexTensor, FlexTensor) {
        let (Some(q32), Some(k32), Some(v32)) = (
            f32_tensor(q.clone()),
            f32_tensor(k.clone()),
            f32_tensor(v.clone()),
        ) else {
            return composed::attention_fwd::<Self>(q, k, v, scale);
        };
        // [b, t, heads, d] in and out; the kernel works in [b, heads, t, d].
        let (qd, kd) = (dims(&q32), dims(&k32));
        let d = attn_dims(&qd, &kd, scale);
        let (b, t, h, kvh, hd) = (d.batch, d.seq, d.heads, d.kv_heads, d.head_dim);
        let to_heads = |x: &FlexTensor, heads| layout::swap_middle(data(x), [b, t, heads, hd]);
        let (o, lse) = attention::attention_forward(
            &to_heads(&q32, h),
            &to_heads(&k32, kvh),
            &to_heads(&v32, kvh),
            d,
        );
        (
            new(layout::swap_middle(&o, [b, h, t, hd]), qd),
            new(lse, vec![b, h, t]),
        )
    }

    fn attention_bwd(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        o: FlexTensor,
        lse: FlexTensor,
        d_o: FlexTensor,
        scale: f32,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let all = [&q, &k, &v, &o, &lse, &d_o].map(|t| f32_tensor((*t).clone()));
        let [Some(q32), Some(k32), Some(v32), Some(o32), Some(l32), Some(g32)] = all else {
            return composed::attention_bwd::<Self>(q, k, v, o, lse, d_o, scale);
        };
        let (qd, kd) = (dims(&q32), dims(&k32));
        let d = attn_dims(&qd, &kd, scale);
        let (b, t, h, kvh, hd) = (d.batch, d.seq, d.heads, d.kv_heads, d.head_dim);
        let to_heads = |x: &FlexTensor, heads| layout::swap_middle(data(x), [b, t, heads, hd]);
        let (dq, dk, dv) = attention::attention_backward(
            &to_heads(&q32, h),
            &to_heads(&k32, kvh),
            &to_heads(&v32, kvh),
            &to_heads(&o32, h),
            data(&l32),
            &to_heads(&g32, h),
            d,
        );
        let back = |x: Vec<f32>, heads| layout::swap_middle(&x, [b, heads, t, hd]);
        (
            new(back(dq, h), qd),
            new(back(dk, kvh), kd.clone()),
            new(back(dv, kvh), kd),
        )
    }

    fn cross_entropy_fwd(logits: FlexTensor, targets: FlexTensor) -> (FlexTensor, FlexTensor) {
        let Some(l32) = f32_tensor(logits.clone()) else {
            return composed::cross_entropy_fwd::<Self>(logits, targets);
        };
        let ld = dims(&l32);
        let ids = targets_i64(targets.clone());
        match cross_entropy::cross_entropy_forward(data(&l32), &ids, ld[0], ld[1]) {
            Ok((loss, lse)) => (new(loss, vec![ld[0]]), new(lse, vec![ld[0]])),
            // An out-of-range target: let the composed path report it as burn does.
            Err(_) => composed::cross_entropy_fwd::<Self>(logits, targets),
        }
    }

    fn cross_entropy_bwd(
        logits: FlexTensor,
        targets: FlexTensor,
        lse: FlexTensor,
        grad: FlexTensor,
    ) -> FlexTensor {
        // Not in place: the logits buffer is still shared when backward runs
        // (checked: `try_storage_mut` finds it shared), so that would copy anyway.
        let (Some(l32), Some(s32), Some(g32)) = (
            f32_tensor(logits.clone()),
            f32_tensor(lse.clone()),
            f32_tensor(grad.clone()),
        ) else {
            return composed::cross_entropy_bwd::<Self>(logits, targets, lse, grad);
        };
        let ld = dims(&l32);
        let ids = targets_i64(targets);
        new(
            cross_entropy::cross_entropy_backward(
                data(&l32),
                &ids,
                data(&s32),
                data(&g32),
                ld[0],
                ld[1],
            ),
            ld,
        )
    }

    fn silu_mul_fwd(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        let (Some(g), Some(u)) = (f32_tensor(gate.clone()), f32_tensor(up.clone())) else {
            return composed::silu_mul_fwd::<Self>(gate, up);
        };
        new(swiglu::silu_mul_forward(data(&g), data(&u)), dims(&g))
    }

    fn silu_mul_bwd(
        gate: FlexTensor,
        up: FlexTensor,
        grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor) {
        let (Some(g), Some(u), Some(d)) = (
            f32_tensor(gate.clone()),
            f32_tensor(up.clone()),
            f32_tensor(grad.clone()),
        ) else {
            return composed::silu_mul_bwd::<Self>(gate, up, grad);
        };
        let (dg, du) = swiglu::silu_mul_backward(data(&g), data(&u), data(&d));
        (new(dg, dims(&g)), new(du, dims(&g)))
    }

    fn rms_norm_fwd(x: FlexTensor, w: FlexTensor, eps: f32) -> (FlexTensor, FlexTensor) {
        let (Some(x32), Some(w32)) = (f32_tensor(x.clone()), f32_tensor(w.clone())) else {
            return composed::rms_norm_fwd::<Self>(x, w, eps);
        };
        let xd = dims(&x32);
        let (y, inv) = rms_norm::rms_norm_forward(data(&x32), data(&w32), xd[0], xd[1], eps);
        (new(y, xd.clone()), new(inv, vec![xd[0]]))
    }

    fn rms_norm_bwd(
        x: FlexTensor,
        w: FlexTensor,
        inv: FlexTensor,
        dy: FlexTensor,
    ) -> (FlexTensor, FlexTensor) {
        let all = [&x, &w, &inv, &dy].map(|t| f32_tensor((*t).clone()));
        let [Some(x32), Some(w32), Some(i32_), Some(d32)] = all else {
            return composed::rms_norm_bwd::<Self>(x, w, inv, dy);
        };
        let xd = dims(&x32);
        let (dx, dw) = rms_norm::rms_norm_backward(
            data(&x32),
            data(&w32),
            data(&i32_),
            data(&d32),
            xd[0],
            xd[1],
        );
        (new(dx, xd.clone()), new(dw, vec![xd[1]]))
    }

    fn selective_scan_fwd(
        u: FlexTensor,
        dt: FlexTensor,
        a: FlexTensor,
        bm: FlexTensor,
        cm: FlexTensor,
        dd: FlexTensor,
    ) -> FlexTensor {
        let all = [&u, &dt, &a, &bm, &cm, &dd].map(|t| f32_tensor((*t).clone()));
        let [Some(u32_), Some(dt32), Some(a32), Some(b32), Some(c32), Some(d32)] = all else {
            return composed::selective_scan_fwd::<Self>(u, dt, a, bm, cm, dd);
        };
        let s = scan_dims(&u32_, &a32);
        let x = ScanInputs {
            u: data(&u32_),
            dt: data(&dt32),
            a: data(&a32),
            b: data(&b32),
            c: data(&c32),
            d: data(&d32),
        };
        new(scan::selective_scan_forward(x, s), dims(&u32_))
    }

    fn selective_scan_bwd(
        u: FlexTensor,
        dt: FlexTensor,
        a: FlexTensor,
        bm: FlexTensor,
        cm: FlexTensor,
        dd: FlexTensor,
        gy: FlexTensor,
    ) -> [FlexTensor; 6] {
        let all = [&u, &dt, &a, &bm, &cm, &dd, &gy].map(|t| f32_tensor((*t).clone()));
        let [Some(u32_), Some(dt32), Some(a32), Some(b32), Some(c32), Some(d32), Some(g32)] = all
        else {
            return composed::selective_scan_bwd::<Self>(u, dt, a, bm, cm, dd, gy);
        };
        let s = scan_dims(&u32_, &a32);
        let x = ScanInputs {
            u: data(&u32_),
            dt: data(&dt32),
            a: data(&a32),
            b: data(&b32),
            c: data(&c32),
            d: data(&d32),
        };
        let g = scan::selective_scan_backward(x, data(&g32), s);
        [
            new(g.u, dims(&u32_)),
            new(g.dt, dims(&u32_)),
            new(g.a, dims(&a32)),
            new(g.b, dims(&b32)),
            new(g.c, dims(&c32)),
            new(g.d, dims(&d32)),
        ]
    }

    fn wkv7_fwd(
        r: FlexTensor,
        w: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        a: FlexTensor,
        b: FlexTensor,
        head_size: usize,
    ) -> FlexTensor {
        let all = [&r, &w, &k, &v, &a, &b].map(|t| f32_tensor((*t).clone()));
        let [Some(r32), Some(w32), Some(k32), Some(v32), Some(a32), Some(b32)] = all else {
            return composed::wkv7_fwd::<Self>(r, w, k, v, a, b, head_size);
        };
        let x = WkvInputs {
            r: data(&r32),
            w: data(&w32),
            k: data(&k32),
            v: data(&v32),
            a: data(&a32),
            b: data(&b32),
        };
        new(wkv7::wkv7_forward(x, wkv_dims(&r32, head_size)), dims(&r32))
    }

    fn wkv7_bwd(
        r: FlexTensor,
        w: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        a: FlexTensor,
        b: FlexTensor,
        gy: FlexTensor,
        head_size: usize,
    ) -> [FlexTensor; 6] {
        let all = [&r, &w, &k, &v, &a, &b, &gy].map(|t| f32_tensor((*t).clone()));
        let [Some(r32), Some(w32), Some(k32), Some(v32), Some(a32), Some(b32), Some(g32)] = all
        else {
            return composed::wkv7_bwd::<Self>(r, w, k, v, a, b, gy, head_size);
        };
        let x = WkvInputs {
            r: data(&r32),
            w: data(&w32),
            k: data(&k32),
            v: data(&v32),
            a: data(&a32),
            b: data(&b32),
        };
        let g = wkv7::wkv7_backward(x, data(&g32), wkv_dims(&r32, head_size));
        let shape = dims(&r32);
        [g.r, g.w, g.k, g.v, g.a, g.b].map(|t| new(t, shape.clone()))
    }
}

/// WKV sizes from `r [b, t, c]` and the head size.
fn wkv_dims(r: &FlexTensor, head_size: usize) -> WkvDims {
    let d = dims(r);
    WkvDims {
        batch: d[0],
        seq: d[1],
        heads: d[2] / head_size,
        head_size,
    }
}

/// Scan sizes from `u [b, t, d]` and `a [d, n]`.
fn scan_dims(u: &FlexTensor, a: &FlexTensor) -> ScanDims {
    let (ud, ad) = (dims(u), dims(a));
    ScanDims {
        batch: ud[0],
        seq: ud[1],
        channels: ud[2],
        state: ad[1],
    }
}
