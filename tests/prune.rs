//! Pruning: kiln's masks against the Wanda-repo reference
//! (tests/reference/prune_reference.py), `kiln prune` end to end (sparsity of
//! the written checkpoint, `kiln eval` on it), masks kept exactly through
//! later training and its bitwise resume, and every bad input as one line
//! with exit 2.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_models::prune::{InputStats, Pattern};
use kiln_models::NamedTensor;
use kiln_trainer::prune::projection_keep_mask;

use crate::common::{
    ckpt, fails_with, kiln, raw_f32s, raw_fixture, run, stderr, stdout, train_tiny, write_config,
};

/// `[rows, cols]` row-major -> `[cols, rows]`.
fn transpose<T: Copy>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| v[r * cols + c]))
        .collect()
}

#[test]
fn masks_equal_the_wanda_reference_exactly() {
    let t = raw_fixture("prune/masks.safetensors");
    let cases = [
        ("s50", Pattern::Unstructured { sparsity: 0.5 }),
        ("s30", Pattern::Unstructured { sparsity: 0.3 }),
        ("2of4", Pattern::NOfM { n: 2, m: 4 }),
        ("1of4", Pattern::NOfM { n: 1, m: 4 }),
    ];
    for layer in ["a", "b"] {
        let (w, x) = (&t[&format!("{layer}.w")], &t[&format!("{layer}.x")]);
        let (d_out, d_in) = (w.0[0], w.0[1]); // PyTorch [out, in]
        let wk = transpose(&raw_f32s(w), d_out, d_in); // Kiln [in, out]
                                                       // The calibration path `Linear::project` records through.
        let stats = InputStats::default();
        stats.record_host(&raw_f32s(x), x.0[0], d_in);
        let (sq, rows) = stats.sums();
        assert_eq!(rows, x.0[0]);
        for method in ["magnitude", "wanda"] {
            for (case, pattern) in cases {
                let name = format!("{layer}.keep.{method}_{case}");
                let want = transpose(&raw_f32s(&t[&name]), d_out, d_in);
                let norms = (method == "wanda").then_some(sq.as_slice());
                let got = projection_keep_mask(&wk, d_in, d_out, pattern, norms);
                let differ = got
                    .iter()
                    .zip(&want)
                    .filter(|(g, w)| **g != (**w == 1.0))
                    .count();
                println!(
                    "{name}: {} of {} kept, {differ} differ",
                    got.iter().filter(|&&k| k).count(),
                    got.len()
                );
                assert_eq!(differ, 0, "{name}: {differ} mask entries differ");
            }
        }
    }
}

/// Every tensor of a safetensors file by name.
fn tensors(path: &Path) -> BTreeMap<String, NamedTensor> {
    kiln_trainer::weights::load(path).expect("safetensors")
}

/// Asserts every masked weight of `model` is exactly +-0 and returns the
/// number of masked (pruned) entries.
fn masked_zeros(
    model: &BTreeMap<String, NamedTensor>,
    masks: &BTreeMap<String, NamedTensor>,
) -> usize {
    let mut pruned = 0;
    for (name, m) in masks {
        let w = &model[name];
        assert_eq!(w.shape, m.shape, "{name}");
        for (i, (&v, &k)) in w.data.iter().zip(&m.data).enumerate() {
            if k == 0.0 {
                assert_eq!(v, 0.0, "{name}[{i}] revived: {v}");
                pruned += 1;
            }
        }
    }
    pruned
}

const FINETUNE: &str = r#"
[model]
dim = 32
n_layers = 2
n_heads = 4
n_kv_heads = 2
ffn_dim = 64
max_seq_len = 32

[init]
from = "pruned"

[data]
stories_docs = 300

[optimizer]
lr = 3e-3
weight_decay = 0.1

[training]
max_steps = 6
batch_size = 4
eval_every = 3
eval_batches = 2
log_every = 1
seed = 11

[checkpoint]
every = 3
keep_last = 10

[logging]
sample_tokens = 5
"#;

#[test]
fn prune_cli_writes_a_sparse_checkpoint_that_stays_sparse_through_training() {
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    train_tiny(tmp, 8);
    let o = run(kiln()
        .args(["prune", "run", "--out", "pruned", "--method", "wanda"])
        .args(["--sparsity", "0.5", "--calib-batches", "4"])
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("model.layers.0.self_attn.q_proj.weight: 512 of 1024 pruned (50.00%)"),
        "{out}"
    );
    assert!(
        out.contains("total: 9216 of 18432 projection weights pruned (50.00%)"),
        "{out}"
    );
    let pruned = ckpt(&tmp.join("pruned"), 8);
    let masks = tensors(&pruned.join("masks.safetensors"));
    assert_eq!(masks.len(), 14, "every projection but the tied head");
    let model = tensors(&pruned.join("model.safetensors"));
    assert_eq!(masked_zeros(&model, &masks), 9216);
    for (name, m) in &masks {
        // Wanda: exactly half of every output's inputs ([in, out] layout).
        let (d_in, d_out) = (m.shape[0], m.shape[1]);
        for o in 0..d_out {
            let kept = (0..d_in).filter(|&i| m.data[i * d_out + o] == 1.0).count();
            assert_eq!(kept, d_in - d_in / 2, "{name} output {o}");
        }
    }
    let o = run(kiln().args(["eval", "pruned"]).current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("eval JSON");
    assert!(v["loss"].as_f64().is_some_and(f64::is_finite), "{v}");

    // 2:4 magnitude: two of every four inputs of each output kept.
    let o = run(kiln()
        .args([
            "prune",
            "run",
            "--out",
            "nm",
            "--method",
            "magnitude",
            "--nm",
            "2:4",
        ])
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let nm = tensors(&ckpt(&tmp.join("nm"), 8).join("masks.safetensors"));
    for (name, m) in &nm {
        let (d_in, d_out) = (m.shape[0], m.shape[1]);
        for o in 0..d_out {
            for g in (0..d_in).step_by(4) {
                let kept = (g..g + 4).filter(|&i| m.data[i * d_out + o] == 1.0).count();
                assert_eq!(kept, 2, "{name} output {o} group {g}");
            }
        }
    }

    finetune_keeps_masks(tmp, &masks);
}

/// Six AdamW steps (weight decay on) from the pruned checkpoint: every
/// masked weight stays exactly zero, the masks travel with each checkpoint,
/// and resuming from step 3 reaches bitwise the same step 6.
fn finetune_keeps_masks(tmp: &Path, masks: &BTreeMap<String, NamedTensor>) {
    let cfg = write_config(tmp, "ft.toml", FINETUNE);
    let o = run(kiln()
        .arg("train")
        .arg(&cfg)
        .args(["--run-dir", "ft"])
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("prune: 14 masked tensors keep 9216 of 18432 weights at zero"),
        "{}",
        stderr(&o)
    );
    let ft = tmp.join("ft");
    for step in [3, 6] {
        let dir = ckpt(&ft, step);
        assert_eq!(
            &tensors(&dir.join("masks.safetensors")),
            masks,
            "step {step}"
        );
        let model = tensors(&dir.join("model.safetensors"));
        assert_eq!(masked_zeros(&model, masks), 9216, "step {step}");
        let start = tensors(&ckpt(&tmp.join("pruned"), 8).join("model.safetensors"));
        let moved = masks
            .keys()
            .filter(|n| model[*n].data != start[*n].data)
            .count();
        assert_eq!(moved, masks.len(), "step {step}: the kept weights train");
    }

    // Exact resume: the same run cut back to its step-3 checkpoint.
    let cut = tmp.join("cut");
    let o = std::process::Command::new("cp")
        .args(["-r"])
        .arg(&ft)
        .arg(&cut)
        .output()
        .expect("cp");
    assert!(o.status.success());
    std::fs::remove_dir_all(ckpt(&cut, 6)).expect("remove step 6");
    let o = run(kiln().arg("train").arg("--resume").arg(&cut));
    assert!(o.status.success(), "{}", stderr(&o));
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "masks.safetensors",
    ] {
        let a = std::fs::read(ckpt(&ft, 6).join(file)).expect("uninterrupted");
        let b = std::fs::read(ckpt(&cut, 6).join(file)).expect("resumed");
        assert!(
            a == b,
            "{file} after resume differs from the uninterrupted run"
        );
    }
}

#[test]
fn prune_bad_input_is_one_line_with_exit_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    let prune = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["prune", "run", "--out", "out"].map(String::from).to_vec();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let check = |extra: &[&str], expect: &[&str]| {
        let args = prune(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(&args, tmp, expect);
    };
    // Flags are checked before the checkpoint is read.
    check(
        &["--method", "wanda", "--sparsity", "1.0"],
        &["--sparsity", "outside (0, 1)"],
    );
    check(
        &["--method", "wanda", "--sparsity", "0"],
        &["--sparsity", "outside (0, 1)"],
    );
    check(
        &["--method", "wanda", "--sparsity", "-0.5"],
        &["--sparsity", "outside (0, 1)"],
    );
    check(&["--method", "magnitude", "--nm", "2-4"], &["--nm", "N:M"]);
    check(
        &["--method", "magnitude", "--nm", "2:x"],
        &["--nm", "positive integers"],
    );
    check(
        &["--method", "magnitude", "--nm", "4:4"],
        &["--nm", "smaller than M"],
    );
    check(
        &["--method", "magnitude", "--nm", "5:4"],
        &["--nm", "smaller than M"],
    );
    check(
        &["--method", "sparsegpt", "--sparsity", "0.5"],
        &["--method", "magnitude or wanda"],
    );
    check(
        &["--method", "magnitude"],
        &["--sparsity / --nm", "exactly one"],
    );
    check(
        &["--method", "magnitude", "--sparsity", "0.5", "--nm", "2:4"],
        &["exactly one"],
    );
    check(
        &["--method", "magnitude", "--sparsity", "0.5"],
        &["run", "does not exist"],
    );

    train_tiny(tmp, 4);
    // dim 32, ffn 64: 3 divides neither width.
    check(
        &["--method", "magnitude", "--nm", "2:3"],
        &["--nm", "does not divide the input width of any projection"],
    );
    check(
        &["--method", "wanda", "--nm", "1:3", "--targets", "q"],
        &[
            "--nm",
            "3 does not divide the 32 inputs of model.layers.0.self_attn.q_proj",
        ],
    );
    check(
        &[
            "--method",
            "magnitude",
            "--sparsity",
            "0.5",
            "--targets",
            "nope",
        ],
        &["--targets[0]", "matches no projection"],
    );
    assert!(!tmp.join("out").exists(), "a failed prune wrote nothing");
}
