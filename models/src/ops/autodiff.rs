//! `FusedOps` for `Autodiff<B>`: each fused forward becomes one graph node
//! whose backward calls the inner backend's hand-written backward kernel.
//! The `*_bwd` methods run on the inner backend (no double backward).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, IntTensor};

use super::{Divergence, FakeQuantTarget, FusedOps};

type Inner<B> = FloatTensor<B>;

#[derive(Debug)]
struct AttentionBackward;

impl<B: FusedOps> Backward<B, 3> for AttentionBackward {
    type State = (Inner<B>, Inner<B>, Inner<B>, Inner<B>, Inner<B>, f32);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [nq, nk, nv] = ops.parents;
        let d_o = grads.consume::<B>(&ops.node);
        let (q, k, v, o, lse, scale) = ops.state;
        let (dq, dk, dv) = B::attention_bwd(q, k, v, o, lse, d_o, scale);
        for (node, g) in [(nq, dq), (nk, dk), (nv, dv)] {
            if let Some(n) = node {
                grads.register::<B>(n.id, g);
            }
        }
    }
}

#[derive(Debug)]
struct CrossEntropyBackward;

impl<B: FusedOps> Backward<B, 1> for CrossEntropyBackward {
    type State = (Inner<B>, IntTensor<B>, Inner<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (logits, targets, lse) = ops.state;
        if let Some(n) = node {
            grads.register::<B>(n.id, B::cross_entropy_bwd(logits, targets, lse, grad));
        }
    }
}

#[derive(Debug)]
struct DistillBackward {
    div: Divergence,
    temperature: f64,
}

impl<B: FusedOps> Backward<B, 1> for DistillBackward {
    type State = (Inner<B>, Inner<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let gy = grads.consume::<B>(&ops.node);
        let (student, teacher) = ops.state;
        if let Some(n) = node {
            let g = B::distill_bwd(student, teacher, gy, self.div, self.temperature);
            grads.register::<B>(n.id, g);
        }
    }
}

#[derive(Debug)]
struct SiluMulBackward;

impl<B: FusedOps> Backward<B, 2> for SiluMulBackward {
    type State = (Inner<B>, Inner<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [ng, nu] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (g, u) = ops.state;
        let (dg, du) = B::silu_mul_bwd(g, u, grad);
        for (node, g) in [(ng, dg), (nu, du)] {
            if let Some(n) = node {
                grads.register::<B>(n.id, g);
            }
        }
    }
}

#[derive(Debug)]
struct RmsNormBackward;

impl<B: FusedOps> Backward<B, 2> for RmsNormBackward {
    type State = (Inner<B>, Inner<B>, Inner<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [nx, nw] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, w, inv) = ops.state;
        let (dx, dw) = B::rms_norm_bwd(x, w, inv, dy);
        for (node, g) in [(nx, dx), (nw, dw)] {
            if let Some(n) = node {
                grads.register::<B>(n.id, g);
            }
        }
    }
}

#[derive(Debug)]
struct StraightThroughBackward;

impl<B: FusedOps> Backward<B, 1> for StraightThroughBackward {
    type State = Option<Inner<B>>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(n) = node {
            let g = match ops.state {
                Some(mask) => B::float_mul(dy, mask),
                None => dy,
            };
            grads.register::<B>(n.id, g);
        }
    }
}

#[derive(Debug)]
struct RopeBackward;

impl<B: FusedOps> Backward<B, 1> for RopeBackward {
    type State = (Inner<B>, Inner<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (cos, sin) = ops.state;
        if let Some(n) = node {
            // A rotation's gradient is the inverse rotation.
            grads.register::<B>(n.id, B::rope(dy, cos, sin, true));
        }
    }
}

#[derive(Debug)]
struct SelectiveScanBackward;

impl<B: FusedOps> Backward<B, 6> for SelectiveScanBackward {
    /// The six inputs: the backward recomputes the states from them.
    type State = [Inner<B>; 6];

    fn backward(self, ops: Ops<Self::State, 6>, grads: &mut Gradients, _: &mut Checkpointer) {
        let gy = grads.consume::<B>(&ops.node);
        let [u, dt, a, bm, cm, dd] = ops.state;
        let gs = B::selective_scan_bwd(u, dt, a, bm, cm, dd, gy);
        for (node, g) in ops.parents.into_iter().zip(gs) {
            if let Some(n) = node {
                grads.register::<B>(n.id, g);
            }
        }
    }
}

#[derive(Debug)]
struct Wkv7Backward;

impl<B: FusedOps> Backward<B, 6> for Wkv7Backward {
    /// The six inputs and the head size: the backward recomputes the states.
    type State = ([Inner<B>; 6], usize);

    fn backward(self, ops: Ops<Self::State, 6>, grads: &mut Gradients, _: &mut Checkpointer) {
        let gy = grads.consume::<B>(&ops.node);
        let ([r, w, k, v, a, b], head_size) = ops.state;
        let gs = B::wkv7_bwd(r, w, k, v, a, b, gy, head_size);
        for (node, g) in ops.parents.into_iter().zip(gs) {
            if let Some(n) = node {
                grads.register::<B>(n.id, g);
            }
        }
    }
}

#[derive(Debug)]
struct MatmulBackward;

impl<B: FusedOps> Backward<B, 2> for MatmulBackward {
    type State = (Inner<B>, Inner<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [na, nb] = ops.parents;
        let g = grads.consume::<B>(&ops.node); // [m, n]
        let (a, b) = ops.state; // [m, k], [k, n]
                                // Transposes are stride swaps: no copies before the GEMMs.
        if let Some(n) = na {
            grads.register::<B>(n.id, B::matmul(g.clone(), B::float_transpose(b)));
            // [m, k]
        }
        if let Some(n) = nb {
            grads.register::<B>(n.id, B::matmul(B::float_transpose(a), g)); // [k, n]
        }
    }
}

impl<B: FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn with_backward(
        input: FloatTensor<Self>,
        output: FloatTensor<Self>,
        hook: std::sync::Arc<dyn super::BackwardHook>,
    ) -> FloatTensor<Self> {
        super::hook::with_backward::<B, C>(input, output, hook)
    }

    fn matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [a.node.clone(), b.node.clone()];
        let (a, b) = (a.primitive, b.primitive);
        let out = B::matmul(a.clone(), b.clone());
        match MatmulBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((a, b), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn selective_scan_fwd(
        u: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        a: FloatTensor<Self>,
        bm: FloatTensor<Self>,
        cm: FloatTensor<Self>,
        dd: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let nodes = [&u, &dt, &a, &bm, &cm, &dd].map(|t| t.node.clone());
        let inner = [u, dt, a, bm, cm, dd].map(|t| t.primitive);
        let [iu, idt, ia, ib, ic, id] = inner.clone();
        let y = B::selective_scan_fwd(iu, idt, ia, ib, ic, id);
        match SelectiveScanBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(inner, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn wkv7_fwd(
        r: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        head_size: usize,
    ) -> FloatTensor<Self> {
        let nodes = [&r, &w, &k, &v, &a, &b].map(|t| t.node.clone());
        let inner = [r, w, k, v, a, b].map(|t| t.primitive);
        let [ir, iw, ik, iv, ia, ib] = inner.clone();
        let y = B::wkv7_fwd(ir, iw, ik, iv, ia, ib, head_size);
        match Wkv7Backward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((inner, head_size), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn wkv7_bwd(
        r: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        gy: FloatTensor<Self>,
        head_size: usize,
    ) -> [FloatTensor<Self>; 6] {
        let i = Self::inner;
        B::wkv7_bwd(i(r), i(w), i(k), i(v), i(a), i(b), i(gy), head_size).map(Self::from_inner)
    }

    fn selective_scan_bwd(
        u: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        a: FloatTensor<Self>,
        bm: FloatTensor<Self>,
        cm: FloatTensor<Self>,
        dd: FloatTensor<Self>,
        gy: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 6] {
        let i = Self::inner;
        B::selective_scan_bwd(i(u), i(dt), i(a), i(bm), i(cm), i(dd), i(gy)).map(Self::from_inner)
    }

    fn straight_through(
        x: FloatTensor<Self>,
        value: FloatTensor<Self>,
        mask: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        let node = x.node.clone();
        let (value, mask) = (Self::inner(value), mask.map(Self::inner));
        match StraightThroughBackward
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(mask, value),
            OpsKind::UnTracked(prep) => prep.finish(value),
        }
    }

    fn distill_fwd(
        student: FloatTensor<Self>,
        teacher: FloatTensor<Self>,
        div: Divergence,
        temperature: f64,
    ) -> FloatTensor<Self> {
        let node = student.node.clone();
        let (s, t) = (student.primitive, Self::inner(teacher));
        let out = B::distill_fwd(s.clone(), t.clone(), div, temperature);
        match (DistillBackward { div, temperature })
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((s, t), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn fake_quant(x: FloatTensor<Self>, target: FakeQuantTarget) -> FloatTensor<Self> {
        // The inner backend's kernel computes the values; the graph gets
        // one straight-through node.
        let (value, mask) = B::fake_quant_fwd(x.primitive.clone(), target);
        Self::straight_through(x, Self::from_inner(value), mask.map(Self::from_inner))
    }

    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        inverse: bool,
    ) -> FloatTensor<Self> {
        let node = x.node.clone();
        let (cos, sin) = (Self::inner(cos), Self::inner(sin));
        let out = B::rope(x.primitive, cos.clone(), sin.clone(), inverse);
        let sin_back = if inverse { B::float_neg(sin) } else { sin };
        match RopeBackward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((cos, sin_back), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn attention_fwd(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let nodes = [q.node.clone(), k.node.clone(), v.node.clone()];
        let (q, k, v) = (q.primitive, k.primitive, v.primitive);
        let (o, lse) = B::attention_fwd(q.clone(), k.clone(), v.clone(), scale);
        let lse_out = Self::from_inner(lse.clone());
        let out = match AttentionBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((q, k, v, o.clone(), lse, scale), o),
            OpsKind::UnTracked(prep) => prep.finish(o),
        };
        (out, lse_out)
    }

    fn attention_bwd(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        o: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let i = Self::inner;
        let (dq, dk, dv) = B::attention_bwd(i(q), i(k), i(v), i(o), i(lse), i(d_o), scale);
        (
            Self::from_inner(dq),
            Self::from_inner(dk),
            Self::from_inner(dv),
        )
    }

    fn cross_entropy_fwd(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let node = logits.node.clone();
        let logits = logits.primitive;
        let (loss, lse) = B::cross_entropy_fwd(logits.clone(), targets.clone());
        let lse_out = Self::from_inner(lse.clone());
        let out = match CrossEntropyBackward
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((logits, targets, lse), loss),
            OpsKind::UnTracked(prep) => prep.finish(loss),
        };
        (out, lse_out)
    }

    fn cross_entropy_bwd(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::cross_entropy_bwd(
            Self::inner(logits),
            targets,
            Self::inner(lse),
            Self::inner(grad),
        ))
    }

    fn silu_mul_fwd(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [gate.node.clone(), up.node.clone()];
        let (g, u) = (gate.primitive, up.primitive);
        let out = B::silu_mul_fwd(g.clone(), u.clone());
        match SiluMulBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((g, u), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn silu_mul_bwd(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (dg, du) = B::silu_mul_bwd(Self::inner(gate), Self::inner(up), Self::inner(grad));
        (Self::from_inner(dg), Self::from_inner(du))
    }

    fn rms_norm_fwd(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let nodes = [x.node.clone(), w.node.clone()];
        let (x, w) = (x.primitive, w.primitive);
        let (y, inv) = B::rms_norm_fwd(x.clone(), w.clone(), eps);
        let inv_out = Self::from_inner(inv.clone());
        let out = match RmsNormBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x, w, inv), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (out, inv_out)
    }

    fn rms_norm_bwd(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        inv: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (dx, dw) = B::rms_norm_bwd(
            Self::inner(x),
            Self::inner(w),
            Self::inner(inv),
            Self::inner(dy),
        );
        (Self::from_inner(dx), Self::from_inner(dw))
    }
}
