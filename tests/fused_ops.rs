//! Every fused op against its composed burn version: values and gradients on
//! random shapes (odd sizes included), through `Autodiff<Flex>`.

use burn::backend::{Autodiff, Flex};
use burn::tensor::activation::{log_softmax, silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Distribution, ElementConversion, Int, Tensor, TensorData};
use kiln_models::layers::Rope;
use kiln_models::ops::{causal_attention, cross_entropy_rows, matmul, rms_norm, silu_mul};

type AB = Autodiff<Flex>;

fn rand<const D: usize>(shape: [usize; D], scale: f64) -> Tensor<AB, D> {
    Tensor::random(shape, Distribution::Normal(0.0, scale), &Default::default()).require_grad()
}

fn max_rel_diff<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
    let scale: f32 = b.clone().abs().max().into_scalar().elem();
    let diff: f32 = (a - b).abs().max().into_scalar().elem();
    // Relative to the reference's magnitude, absolute below 1 (gradients that are
    // exactly zero in one version are rounding noise in the other).
    diff / scale.max(1.0)
}

/// Compares forward values and the gradients of `sum(out * r)` w.r.t. the
/// inputs. Each version gets its own leaf tensors (same values), so the two
/// backward passes share no graph.
fn compare<const D: usize, const I: usize, const N: usize>(
    name: &str,
    inputs: [Tensor<AB, I>; N],
    fused: impl Fn(&[Tensor<AB, I>; N]) -> Tensor<AB, D>,
    composed: impl Fn(&[Tensor<AB, I>; N]) -> Tensor<AB, D>,
) {
    let leaves = || inputs.clone().map(|t| t.detach().require_grad());
    let (fi, ci) = (leaves(), leaves());
    let (f, c) = (fused(&fi), composed(&ci));
    let fwd = max_rel_diff(f.clone().inner(), c.clone().inner());
    let r: Tensor<AB, D> = Tensor::random(
        f.dims(),
        Distribution::Normal(0.0, 1.0),
        &Default::default(),
    );
    let gf = (f * r.clone()).sum().backward();
    let gc = (c * r).sum().backward();
    let mut worst = fwd;
    for i in 0..N {
        let a = fi[i]
            .grad(&gf)
            .unwrap_or_else(|| panic!("{name}: no fused gradient for input {i}"));
        let b = ci[i]
            .grad(&gc)
            .unwrap_or_else(|| panic!("{name}: no composed gradient for input {i}"));
        worst = worst.max(max_rel_diff(a, b));
    }
    println!("{name}: forward {fwd:.2e}, worst incl. gradients {worst:.2e}");
    assert!(
        worst < 1e-5,
        "{name}: fused differs from composed by {worst:.3e}"
    );
}

fn composed_attention(q: Tensor<AB, 4>, k: Tensor<AB, 4>, v: Tensor<AB, 4>) -> Tensor<AB, 4> {
    let [b, h, t, d] = q.dims();
    let kv = k.dims()[1];
    let rep = |x: Tensor<AB, 4>| {
        x.unsqueeze_dim::<5>(2)
            .expand([b, kv, h / kv, t, d])
            .reshape([b, h, t, d])
    };
    let mask = Tensor::<AB, 2, Bool>::tril_mask([t, t], 0, &Default::default())
        .unsqueeze::<4>()
        .expand([b, h, t, t]);
    let s = q
        .matmul(rep(k).swap_dims(2, 3))
        .div_scalar((d as f32).sqrt())
        .mask_fill(mask, f32::NEG_INFINITY);
    softmax(s, 3).matmul(rep(v))
}

#[test]
fn fused_attention_matches_composed() {
    AB::seed(&Default::default(), 11);
    for (b, h, kv, t, d) in [
        (1, 1, 1, 1, 8),
        (2, 4, 2, 37, 24),
        (1, 4, 1, 64, 16),
        (2, 2, 2, 5, 40),
        (1, 6, 3, 70, 32),
    ] {
        // The fused op takes the projections' [b, t, heads, d] layout.
        let (q, k, v) = (
            rand([b, t, h, d], 1.0),
            rand([b, t, kv, d], 1.0),
            rand([b, t, kv, d], 1.0),
        );
        let heads = |x: &Tensor<AB, 4>| x.clone().swap_dims(1, 2);
        compare(
            &format!("attention b{b} h{h} kv{kv} t{t} d{d}"),
            [q, k, v],
            |[q, k, v]| causal_attention(q.clone(), k.clone(), v.clone()),
            |[q, k, v]| composed_attention(heads(q), heads(k), heads(v)).swap_dims(1, 2),
        );
    }
}

#[test]
fn fused_cross_entropy_matches_composed() {
    AB::seed(&Default::default(), 12);
    for (n, v) in [(1, 1), (3, 5), (37, 61), (16, 257), (4, 8192)] {
        let logits = rand([n, v], 5.0);
        let ids: Vec<i64> = (0..n).map(|i| ((i * 7919 + 3) % v) as i64).collect();
        let targets =
            Tensor::<AB, 1, Int>::from_data(TensorData::new(ids, [n]), &Default::default());
        compare(
            &format!("cross-entropy n{n} v{v}"),
            [logits],
            |[l]| cross_entropy_rows(l.clone(), targets.clone()),
            |[l]| {
                log_softmax(l.clone(), 1)
                    .gather(1, targets.clone().reshape([n, 1]))
                    .reshape([n])
                    .neg()
            },
        );
    }
}

#[test]
fn fused_silu_mul_matches_composed() {
    AB::seed(&Default::default(), 13);
    for n in [1, 5, 1000, 4097] {
        let (g, u) = (rand([n], 3.0), rand([n], 1.0));
        compare(
            &format!("silu_mul n{n}"),
            [g, u],
            |[g, u]| silu_mul(g.clone(), u.clone()),
            |[g, u]| silu(g.clone()) * u.clone(),
        );
    }
}

#[test]
fn fused_rms_norm_matches_composed() {
    AB::seed(&Default::default(), 14);
    for (n, d) in [(1, 1), (3, 5), (37, 61), (8, 256)] {
        let x = rand([n, d], 2.0);
        let w = Tensor::<AB, 1>::random([d], Distribution::Normal(1.0, 0.2), &Default::default())
            .require_grad();
        let composed = |x: &Tensor<AB, 2>, w: &Tensor<AB, 1>| {
            let inv = x
                .clone()
                .powi_scalar(2)
                .mean_dim(1)
                .add_scalar(1e-5)
                .sqrt()
                .recip();
            x.clone() * inv * w.clone().unsqueeze()
        };
        compare(
            &format!("rms_norm n{n} d{d} (x)"),
            [x.clone()],
            |[x]| rms_norm(x.clone(), w.clone(), 1e-5),
            |[x]| composed(x, &w),
        );
        compare(
            &format!("rms_norm n{n} d{d} (w)"),
            [w.clone()],
            |[w]| rms_norm(x.clone(), w.clone(), 1e-5),
            |[w]| composed(&x, w),
        );
    }
}

#[test]
fn fused_rope_matches_composed() {
    AB::seed(&Default::default(), 15);
    for (b, t, h, d) in [(1, 1, 1, 2), (2, 37, 3, 24), (2, 64, 4, 64), (1, 9, 2, 6)] {
        let x = rand([b, t, h, d], 1.0);
        let rope = Rope::<AB>::new(d, 10000.0, 3, t, &Default::default());
        compare(
            &format!("rope b{b} t{t} h{h} d{d}"),
            [x],
            |[x]| rope.apply_bthd(x.clone()),
            |[x]| rope.apply(x.clone().swap_dims(1, 2)).swap_dims(1, 2),
        );
    }
}

#[test]
fn fused_matmul_matches_composed() {
    AB::seed(&Default::default(), 17);
    // Plain operands, a transposed right operand (the tied head: h @ E^T) and
    // a transposed left one (the weight gradient's x^T @ dy).
    for &(m, k, n) in &[(1, 1, 1), (7, 13, 5), (64, 48, 130), (257, 96, 191)] {
        compare(
            &format!("matmul {m}x{k}x{n}"),
            [rand([m, k], 1.0), rand([k, n], 1.0)],
            |[a, b]| matmul(a.clone(), b.clone()),
            |[a, b]| a.clone().matmul(b.clone()),
        );
        compare(
            &format!("matmul {m}x{k}x{n}, b transposed"),
            [rand([m, k], 1.0), rand([n, k], 1.0)],
            |[a, b]| matmul(a.clone(), b.clone().transpose()),
            |[a, b]| a.clone().matmul(b.clone().transpose()),
        );
        compare(
            &format!("matmul {m}x{k}x{n}, a transposed"),
            [rand([k, m], 1.0), rand([k, n], 1.0)],
            |[a, b]| matmul(a.clone().transpose(), b.clone()),
            |[a, b]| a.clone().transpose().matmul(b.clone()),
        );
    }
}
