//! AdamW and SophiaG on a tiny Llama against PyTorch (`torch.optim.AdamW` and
//! the reference SophiaG): 10 steps from the same weights on the same
//! batches, clipping and weight-decay groups included; final parameters
//! within 1e-5 relative (whole model), with fused and composed ops. Fixtures
//! from tests/reference/optim_model_reference.py.

use std::collections::BTreeMap;

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use kiln_models::hf::import_llama;
use kiln_models::{load_named_tensors, named_tensors, Decoder, LanguageModel, NamedTensor};
use kiln_trainer::config::{OptimizerConfig, OptimizerKind};
use kiln_trainer::grads::{GradStore, ParamTable};
use kiln_trainer::loss::cross_entropy;
use kiln_trainer::optim::hessian::label_grads;
use kiln_trainer::optim::{Optimizer, ParamGroups, Rule};
use kiln_trainer::weights;

use crate::common::fixtures;
use crate::parity::config_from_hf;

type AB = Autodiff<Flex>;

fn nested(v: &serde_json::Value) -> NamedTensor {
    let mut shape = Vec::new();
    let mut cur = v;
    while let Some(a) = cur.as_array() {
        shape.push(a.len());
        cur = &a[0];
    }
    fn flat(v: &serde_json::Value, out: &mut Vec<f32>) {
        match v.as_array() {
            Some(a) => a.iter().for_each(|x| flat(x, out)),
            None => out.push(v.as_f64().expect("number") as f32),
        }
    }
    let mut data = Vec::new();
    flat(v, &mut data);
    NamedTensor { shape, data }
}

fn ids(v: &serde_json::Value) -> (Vec<i64>, [usize; 2]) {
    let rows: Vec<Vec<i64>> = serde_json::from_value(v.clone()).expect("ids");
    let shape = [rows.len(), rows[0].len()];
    (rows.concat(), shape)
}

fn run(kind: OptimizerKind, fused: bool) {
    let dir = fixtures().join("optim/model");
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("golden.json")).expect("golden"))
            .expect("json");
    let hf_cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config"))
            .expect("json");
    let cfg = config_from_hf(&hf_cfg, &serde_json::json!({}));
    let hf = weights::load(&dir.join("model.safetensors")).expect("weights");
    let ckpt = import_llama(&cfg, &hf, "optim fixture").expect("import");
    let dev = Default::default();
    let mut model = load_named_tensors(
        Decoder::<AB>::new(&cfg, &dev)
            .expect("model")
            .with_fused(fused),
        &ckpt,
        "fixture",
    )
    .expect("load");
    let table = ParamTable::new::<AB, _>(&model);

    let (key, ocfg) = match kind {
        OptimizerKind::Adamw => (
            "adamw",
            OptimizerConfig {
                kind,
                lr: 1e-2,
                beta1: Some(0.9),
                beta2: Some(0.95),
                eps: 1e-8,
                weight_decay: 0.1,
                ..Default::default()
            },
        ),
        OptimizerKind::Sophia => (
            "sophia",
            OptimizerConfig {
                kind,
                lr: 2e-3,
                beta1: Some(0.965),
                beta2: Some(0.99),
                rho: 20.0,
                hessian_every: 3,
                weight_decay: 0.1,
                ..Default::default()
            },
        ),
    };
    let groups =
        ParamGroups::build(&ocfg, &table, kiln_trainer::optim::default_decay).expect("groups");
    let batches = golden["batches"].as_array().expect("batches");
    let b_tokens = {
        let (_, [b, t]) = ids(&batches[0]["x"]);
        b * t
    };
    let mut opt = Optimizer::<Flex>::new(&ocfg, groups, b_tokens);
    let g = &golden[key];
    let mut labels = g["hessian_labels"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter();
    let mut worst_loss = 0.0f64;
    let mut worst_win = 0.0f64;
    for (step, batch) in batches.iter().enumerate() {
        let (xv, shape) = ids(&batch["x"]);
        let (yv, _) = ids(&batch["y"]);
        let x = Tensor::<AB, 2, Int>::from_data(TensorData::new(xv, shape), &dev);
        let y = Tensor::<AB, 2, Int>::from_data(TensorData::new(yv, shape), &dev);
        let loss = cross_entropy(model.forward(x.clone()), y, fused);
        let value: f32 = loss.clone().into_scalar().elem();
        worst_loss =
            worst_loss.max((value as f64 - g["losses"][step].as_f64().expect("loss")).abs());
        let mut grads = GradStore::default();
        grads.accumulate::<AB, _>(&model, &table, loss.backward());
        grads.clip_global_norm(1.0);
        model = opt.step::<AB, _>(model, &table, grads, ocfg.lr);
        if let Rule::Sophia(s) = &opt.rule {
            let want = g["win_rates"][step].as_f64().expect("win rate");
            worst_win = worst_win.max((s.win_rate().expect("win rate") - want).abs());
        }
        if opt.wants_hessian(opt.updates()) {
            let entry = labels.next().expect("fixture has labels for this refresh");
            assert_eq!(entry["after_update"].as_u64(), Some(opt.updates()));
            let (lv, _) = ids(&entry["labels"]);
            let y_hat = Tensor::<AB, 2, Int>::from_data(TensorData::new(lv, shape), &dev);
            let g_hat = label_grads(&model, &table, model.forward(x), y_hat, fused, 1.0);
            opt.update_hessian(g_hat);
        }
    }
    assert!(
        labels.next().is_none(),
        "{key}: fewer Hessian refreshes than the reference"
    );

    let want = import_llama(
        &cfg,
        &g["params"]
            .as_object()
            .expect("params")
            .iter()
            .map(|(k, v)| (k.clone(), nested(v)))
            .collect::<BTreeMap<_, _>>(),
        "golden",
    )
    .expect("import golden");
    let ours = named_tensors::<Flex, _>(&model.valid());
    // Whole-model relative difference ||ours - torch|| / ||torch|| (the bar),
    // and the worst single tensor (looser: Sophia's sign(m) makes a coordinate
    // whose momentum cancels to ~1e-10 move by up to lr * ratio on fp32
    // rounding alone; the fixture has one such coordinate in layer 1's k_proj,
    // where the per-tensor difference reaches 2.6e-5 with fused or composed ops).
    let (mut diff_sq, mut norm_sq) = (0.0f64, 0.0f64);
    let mut worst = 0.0f64;
    for (name, w) in &want {
        let o = &ours
            .get(name)
            .unwrap_or_else(|| panic!("{key}: no parameter {name}"))
            .data;
        let diff: f64 = o
            .iter()
            .zip(&w.data)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = w
            .data
            .iter()
            .map(|b| (*b as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        diff_sq += diff * diff;
        norm_sq += norm * norm;
        let rel = diff / norm.max(1e-12);
        if rel > 1e-6 {
            let (i, d) = o
                .iter()
                .zip(&w.data)
                .map(|(a, b)| (a - b).abs())
                .enumerate()
                .fold(
                    (0, 0.0f32),
                    |acc, (i, d)| if d > acc.1 { (i, d) } else { acc },
                );
            println!(
                "{key}: {name}: relative {rel:.2e}, max |diff| {d:.3e} at {i} (ours {}, want {})",
                o[i], w.data[i]
            );
        }
        worst = worst.max(rel);
    }
    let global = (diff_sq / norm_sq).sqrt();
    println!("{key} (fused {fused}): relative parameter diff {global:.2e} (worst tensor {worst:.2e}), loss diff {worst_loss:.2e}, win-rate diff {worst_win:.3}");
    assert!(
        worst_loss < 1e-5,
        "{key}: losses differ by {worst_loss:.3e}"
    );
    assert!(
        global < 1e-5,
        "{key}: parameters differ by {global:.3e} relative after 10 steps"
    );
    assert!(
        worst < 1e-4,
        "{key}: a tensor differs by {worst:.3e} relative after 10 steps"
    );
    assert!(
        worst_win < 0.01,
        "{key}: win rate differs by {worst_win:.3}"
    );
}

#[test]
fn adamw_ten_steps_match_torch_on_a_tiny_llama() {
    run(OptimizerKind::Adamw, true);
    run(OptimizerKind::Adamw, false);
}

#[test]
fn sophia_ten_steps_match_the_reference_on_a_tiny_llama() {
    run(OptimizerKind::Sophia, true);
    run(OptimizerKind::Sophia, false);
}
