use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use kiln_models::layers::Rope;
use std::time::Instant;
type B = Autodiff<Flex>;
fn time<F: FnMut() -> Tensor<B, 1>>(name: &str, mut f: F) {
    let mut best = (1e9f64, 1e9f64);
    for _ in 0..3 {
        let t0 = Instant::now();
        let l = f();
        let _: f32 = l.clone().into_scalar();
        let t1 = Instant::now();
        let _g = l.backward();
        let t2 = Instant::now();
        best.0 = best.0.min((t1 - t0).as_secs_f64() * 1e3);
        best.1 = best.1.min((t2 - t1).as_secs_f64() * 1e3);
    }
    println!("{name:40} fwd {:7.1} ms  bwd {:7.1} ms", best.0, best.1);
}
fn r<const D: usize>(s: [usize; D]) -> Tensor<B, D> {
    Tensor::random(s, Distribution::Normal(0., 1.), &Default::default()).require_grad()
}
fn main() {
    let dev = Default::default();
    let x = r([8, 256, 256]);
    let wq = r([256, 256]);
    let rope = Rope::<B>::new(64, 10000.0, 0, 256, &dev);
    time("q proj only", || {
        x.clone().reshape([2048, 256]).matmul(wq.clone()).sum()
    });
    time("q proj + reshape/swap", || {
        x.clone()
            .reshape([2048, 256])
            .matmul(wq.clone())
            .reshape([8, 256, 4, 64])
            .swap_dims(1, 2)
            .sum()
    });
    time("q proj + swap + rope", || {
        rope.apply(
            x.clone()
                .reshape([2048, 256])
                .matmul(wq.clone())
                .reshape([8, 256, 4, 64])
                .swap_dims(1, 2),
        )
        .sum()
    });
    let o = r([8, 4, 256, 64]);
    time("o swap+reshape", || {
        o.clone()
            .swap_dims(1, 2)
            .reshape([8, 256, 256])
            .matmul(wq.clone().unsqueeze())
            .sum()
    });
    let e = r([8192, 256]);
    let ids = Tensor::<B, 1, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(
            (0..2048i64).map(|i| i * 37 % 8192).collect::<Vec<_>>(),
            [2048],
        ),
        &dev,
    );
    time("embedding select", || {
        e.clone().select(0, ids.clone()).sum()
    });
    let x2 = r([2048, 256]);
    time("head x@E^T", || {
        x2.clone().matmul(e.clone().transpose()).sum()
    });
    let a = r([8, 256, 256]);
    let b2 = r([8, 256, 256]);
    time("residual add", || (a.clone() + b2.clone()).sum());
}
