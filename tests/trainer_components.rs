//! The trainer's seams: frozen parameters in every precision mode, the step
//! that `kiln bench` times being the training step, and a rank other than 0
//! of a data-parallel world writing nothing into the run directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use kiln_data::Batch;
use kiln_models::named_tensors;
use kiln_trainer::config::{from_table, RunConfig};
use kiln_trainer::run::setup::{build_parts, single_process};
use kiln_trainer::run::{Start, TrainRequest};
use kiln_trainer::step::StepOutcome;
use kiln_trainer::train::train;
use kiln_trainer::world::local::LocalGroup;
use kiln_trainer::world::Collective;

use crate::common::{kiln, metric, run, stderr, stdout, write_config, TINY};

type AB = Autodiff<Flex>;

const FROZEN: [&str; 2] = ["model.embed_tokens.weight", "*.mlp.*"];

fn tiny_config(sets: &str) -> RunConfig {
    let mut doc: toml::Table = toml::from_str(TINY).expect("TINY");
    doc.get_mut("model")
        .and_then(|m| m.as_table_mut())
        .expect("[model]")
        .insert("vocab_size".into(), toml::Value::Integer(128));
    crate::common::merge_toml(&mut doc, sets);
    let cfg = from_table(doc, Path::new("tiny.toml")).expect("config");
    cfg.validate().expect("valid");
    cfg
}

fn batch(step: u64) -> Batch {
    let (b, t) = (4, 32);
    let ids: Vec<u32> = (0..b * (t + 1))
        .map(|i| ((i as u64 * 7 + step * 13) % 40) as u32)
        .collect();
    Batch {
        inputs: ids.chunks(t + 1).flat_map(|r| r[..t].to_vec()).collect(),
        targets: ids.chunks(t + 1).flat_map(|r| r[1..].to_vec()).collect(),
        batch_size: b,
        seq_len: t,
        origins: Vec::new(),
    }
}

fn is_frozen(name: &str) -> bool {
    name == FROZEN[0] || name.contains(".mlp.")
}

/// Frozen parameters in fp32, bf16-mixed, fp16-mixed and bf16-pure: bitwise
/// unchanged after 5 steps, no optimizer state, and no share of the clipping
/// norm (the step's norm equals the norm of the trainable gradients of an
/// unfrozen model at the same weights).
#[test]
fn frozen_parameters_stay_frozen_in_every_precision() {
    for precision in ["fp32", "bf16-mixed", "fp16-mixed", "bf16-pure"] {
        let freeze = format!("[training]\nprecision = \"{precision}\"\nfreeze = {FROZEN:?}\n");
        let cfg = tiny_config(&freeze);
        let dev = Default::default();
        let (mut model, mut stepper) =
            build_parts::<AB>(&cfg, &dev, None, single_process()).expect("parts");
        assert_eq!(
            stepper.table.frozen.len(),
            1 + 2 * 3,
            "{precision}: embedding + 2 MLPs"
        );
        let before = named_tensors::<Flex, _>(&model.valid());
        let mut scaler = stepper.precision.initial_loss_scaler();
        let mut applied = 0;
        for step in 0..5 {
            let (m, report) = stepper
                .step(model, &[batch(step)], 1e-2, scaler.as_mut())
                .expect("step");
            model = m;
            applied += usize::from(report.outcome == StepOutcome::Applied);
        }
        assert!(
            applied >= 3,
            "{precision}: only {applied} of 5 steps applied"
        );
        let after = named_tensors::<Flex, _>(&model.valid());
        let (mut frozen, mut moved) = (0, 0);
        for (name, t) in &after {
            if is_frozen(name) {
                assert!(t == &before[name], "{precision}: frozen {name} changed");
                frozen += 1;
            } else if t != &before[name] {
                moved += 1;
            }
        }
        assert_eq!(frozen, 7);
        assert!(
            moved > 5,
            "{precision}: only {moved} trainable tensors moved"
        );
        let state = stepper.opt.export_state();
        assert!(!state.is_empty());
        for key in state.keys() {
            assert!(
                !is_frozen(key.split_once('.').map_or("", |(_, n)| n)),
                "{precision}: state for {key}"
            );
        }
        check_clip_norm_excludes_frozen(&cfg, precision);
    }
}

/// The first step's pre-clip norm with a frozen set equals the norm over the
/// same (trainable) parameters' gradients of an unfrozen model.
fn check_clip_norm_excludes_frozen(frozen_cfg: &RunConfig, precision: &str) {
    let mut open_cfg = frozen_cfg.clone();
    open_cfg.training.freeze.clear();
    let dev = Default::default();
    let (model, mut frozen_step) =
        build_parts::<AB>(frozen_cfg, &dev, None, single_process()).expect("parts");
    let (_, report) = frozen_step
        .step(model, &[batch(0)], 0.0, None)
        .expect("step");
    let (model, open_step) =
        build_parts::<AB>(&open_cfg, &dev, None, single_process()).expect("parts");
    let _autocast = open_step.precision.autocast_scope();
    let x = batch(0);
    let loss = open_step.objective.loss(&model, &x, &dev);
    let mut grads = kiln_trainer::grads::GradStore::<Flex>::default();
    grads.accumulate::<AB, _>(&model, &open_step.table, loss.backward());
    let all = grads.global_norm();
    grads.grads.retain(|name, _| !is_frozen(name));
    let trainable = grads.global_norm();
    let rel = (report.grad_norm - trainable).abs() / trainable;
    assert!(
        rel < 1e-5,
        "{precision}: norm {} vs trainable-only {trainable}",
        report.grad_norm
    );
    assert!(
        all > trainable * (1.0 + 1e-3),
        "{precision}: the frozen gradients carry no norm?"
    );
}

/// `kiln bench --data run` runs the training step itself: its per-step
/// losses are `kiln train`'s logged losses, bitwise, with fp16 loss scaling
/// (the scale changes the half-precision backward, so a bench that skipped
/// it would diverge from the second step on).
#[test]
fn bench_times_the_training_step() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = write_config(tmp.path(), "tiny.toml", TINY);
    let sets = [
        "training.precision=\"fp16-mixed\"",
        "training.max_steps=6",
        "training.log_every=1",
        "training.grad_accum=2",
    ];
    let mut b = kiln();
    b.arg("bench")
        .arg(&cfg)
        .args(["--steps", "4", "--warmup", "2", "--data", "run"]);
    let mut t = kiln();
    t.arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg(tmp.path().join("run"));
    for s in sets {
        b.arg("--set").arg(s);
        t.arg("--set").arg(s);
    }
    let o = run(&mut b);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(report["precision"], "fp16-mixed");
    let bench_losses: Vec<f64> = report["losses"]
        .as_array()
        .expect("losses")
        .iter()
        .map(|v| v.as_f64().expect("loss"))
        .collect();
    let o = run(&mut t);
    assert!(o.status.success(), "{}", stderr(&o));
    let train_losses: Vec<f64> = metric(&tmp.path().join("run"), "train/loss")
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    assert_eq!(bench_losses.len(), 6);
    assert_eq!(
        bench_losses, train_losses,
        "bench's step diverged from train's"
    );
}

/// Two ranks train TINY as a 2-rank world: rank 1 writes nothing into its
/// run directory, rank 0 writes the run; both end at the same validation
/// loss (the reduced gradients keep the replicas identical).
#[test]
fn rank_one_of_two_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = tiny_config("[training]\nmax_steps = 6\neval_every = 3\n[checkpoint]\nevery = 3\n");
    let ranks = LocalGroup::new(2, Duration::from_secs(120));
    let handles: Vec<_> = ranks
        .into_iter()
        .map(|rank| {
            let dir = tmp.path().join(format!("rank{}", rank.world().rank));
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let req = TrainRequest {
                    start: Start::Fresh(cfg),
                    run_dir: dir,
                    stop: Default::default(),
                    collective: Arc::new(rank),
                };
                train::<AB>(req, Default::default())
            })
        })
        .collect();
    let outcomes: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("rank thread").expect("train"))
        .collect();
    let leader = tmp.path().join("rank0");
    for f in [
        "train.log",
        "config.toml",
        "tokenizer.json",
        "tb",
        "checkpoints/step-00000006",
    ] {
        assert!(leader.join(f).exists(), "rank 0 wrote no {f}");
    }
    let other = tmp.path().join("rank1");
    let written: Vec<_> = std::fs::read_dir(&other)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(written.is_empty(), "rank 1 wrote {written:?}");
    assert_eq!(outcomes[0].step, 6);
    assert!(outcomes[0].final_val_loss.is_some());
    assert_eq!(outcomes[0].final_val_loss, outcomes[1].final_val_loss);
}

/// Loads can take a subset of names: selected tensors are replaced, the
/// others keep their values; a selected tensor missing, or a tensor no
/// selected parameter takes, is an error naming it.
#[test]
fn loads_take_a_subset_of_names() {
    use kiln_models::{load_named_tensors_where, Decoder};
    let cfg = tiny_config("");
    let dev = Default::default();
    let model = Decoder::<Flex>::new(&cfg.model, &dev).expect("model");
    let before = named_tensors::<Flex, _>(&model);
    let attn = |n: &str| n.contains(".self_attn.");
    let mut source = before.clone();
    for (name, t) in source.iter_mut() {
        t.data.iter_mut().for_each(|v| *v += 1.0);
        assert!(name.contains('.'));
    }
    let only: std::collections::BTreeMap<_, _> = source
        .iter()
        .filter(|(n, _)| attn(n))
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    assert!(only.len() >= 8);
    let loaded = load_named_tensors_where(model.clone(), &only, "subset", &attn).expect("subset");
    let after = named_tensors::<Flex, _>(&loaded);
    for (name, t) in &after {
        let want = if attn(name) {
            &source[name]
        } else {
            &before[name]
        };
        assert!(t == want, "{name}");
    }
    // The whole source under the same selection: the other tensors are extra.
    let err = load_named_tensors_where(model.clone(), &source, "subset", &attn)
        .expect_err("extra tensors");
    assert!(
        err.to_string().contains("model.embed_tokens.weight"),
        "{err}"
    );
    let mut missing = only.clone();
    let gone = missing.keys().next().cloned().expect("a name");
    missing.remove(&gone);
    let err = load_named_tensors_where(model, &missing, "subset", &attn).expect_err("missing");
    assert!(err.to_string().contains(&gone), "{err}");
}
