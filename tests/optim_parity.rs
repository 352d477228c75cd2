//! AdamW, global-norm clipping and the warmup+cosine schedule against
//! torch.optim.AdamW / clip_grad_norm_ (fixture from tests/reference/optim_reference.py).

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use kiln_trainer::config::{DecayShape, ScheduleConfig, ScheduleKind};
use kiln_trainer::grads::GradStore;
use kiln_trainer::optim::AdamW;
use kiln_trainer::schedule::lr_at;

use crate::common::fixtures;

fn flat(v: &serde_json::Value) -> Vec<f32> {
    match v {
        serde_json::Value::Array(a) => a.iter().flat_map(flat).collect(),
        x => vec![x.as_f64().expect("number") as f32],
    }
}

#[test]
fn adamw_clip_and_schedule_match_torch() {
    let fx: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("optim/adamw_clip.json")).expect("fixture"),
    )
    .expect("json");
    let dev = Default::default();
    let sched = ScheduleConfig {
        kind: ScheduleKind::Cosine,
        warmup_steps: 2,
        min_lr: 1e-3,
        decay_fraction: 0.2,
        decay_shape: DecayShape::Linear,
    };
    let mut opt = AdamW::<Flex>::new(0.9, 0.95, 1e-8);
    let names = ["w1", "w2"];
    let decay = [0.1, 0.0];
    let mut params: Vec<Tensor<Flex, 1>> = names
        .iter()
        .map(|n| {
            let v = flat(&fx["params_init"][n]);
            Tensor::from_data(TensorData::new(v.clone(), [v.len()]), &dev)
        })
        .collect();
    let mut worst = 0.0f64;
    for step in 0..fx["n_steps"].as_u64().expect("n") as usize {
        let lr = lr_at(&sched, 1e-2, step as u64, 6);
        let want_lr = fx["lrs"][step].as_f64().expect("lr");
        assert!(
            (lr - want_lr).abs() < 1e-12,
            "step {step}: lr {lr} vs {want_lr}"
        );
        let mut grads = GradStore::<Flex>::default();
        for n in names {
            let g = flat(&fx["grads"][step][n]);
            grads.grads.insert(
                n.to_string(),
                Tensor::from_data(TensorData::new(g.clone(), [g.len()]), &dev),
            );
        }
        let norm = grads.clip_global_norm(1.0);
        let want_norm = fx["pre_clip_norms"][step].as_f64().expect("norm");
        assert!(
            (norm - want_norm).abs() / want_norm < 1e-6,
            "step {step}: norm {norm} vs {want_norm}"
        );
        opt.begin_step();
        for (i, n) in names.iter().enumerate() {
            let g = grads.grads.remove(*n).expect("grad");
            params[i] = opt.update(n, params[i].clone(), g, lr, decay[i]);
            let ours: Vec<f32> = params[i].clone().into_data().into_vec().expect("vec");
            let want = flat(&fx["params"][step][*n]);
            for (a, b) in ours.iter().zip(&want) {
                let rel = ((a - b).abs() / b.abs().max(1e-6)) as f64;
                worst = worst.max(rel);
            }
        }
    }
    println!("AdamW vs torch: worst relative parameter diff {worst:.3e}");
    assert!(
        worst < 1e-5,
        "AdamW differs from torch by {worst:.3e} relative"
    );
}
