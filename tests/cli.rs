//! End to end through the binary: the quickstart, config check, TensorBoard
//! files read by the real TensorBoard, generation, eval, export, fine-tuning.

use std::process::Command;

use crate::common::{
    kiln, metric, python_with_tensorboard, repo_root, run, shakespeare_set, stderr, stdout,
    train_tiny, write_config, TINY,
};

#[test]
fn quickstart_trains_checkpoints_logs_and_samples() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = repo_root().join("configs/quickstart.toml");
    let dir = tmp.path().join("qs");
    // The README's config, shortened for CI.
    let o = run(kiln()
        .arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg(&dir)
        .args([
            "--set",
            "training.max_steps=120",
            "--set",
            "training.eval_every=60",
            "--set",
            "checkpoint.every=60",
        ]));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("sample:\nOnce upon a time"),
        "no sample printed: {err}"
    );
    let loss = metric(&dir, "train/loss");
    let (first, last) = (loss[0].1, loss[loss.len() - 1].1);
    println!("quickstart: train loss {first:.3} -> {last:.3}");
    assert!(last < first - 1.0, "loss did not fall: {first} -> {last}");
    let val = metric(&dir, "val/loss");
    assert_eq!(val.len(), 2);
    assert!(val[1].1 < val[0].1, "val loss did not fall: {val:?}");
    assert!(dir
        .join("checkpoints/step-00000120/model.safetensors")
        .exists());
    assert!(dir.join("config.toml").exists() && dir.join("train.log").exists());
    assert!(std::fs::read_dir(dir.join("tb")).expect("tb").count() == 1);
}

#[test]
fn tensorboard_reads_the_same_scalars_as_metrics_jsonl() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = train_tiny(tmp.path(), 8);
    let py = python_with_tensorboard();
    let script = repo_root().join("tests/reference/check_tensorboard.py");
    let out = Command::new(&py)
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "check_tensorboard.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tb: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let tags: Vec<&str> = tb["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    for tag in [
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "train/tokens_per_s",
        "train/skipped_steps",
        "val/loss",
        "val/ppl",
    ] {
        assert!(tags.contains(&tag), "TensorBoard lacks {tag}: {tags:?}");
        let ours = metric(&dir, tag);
        let theirs: Vec<(u64, f64)> = tb["scalars"][tag]
            .as_array()
            .expect("series")
            .iter()
            .map(|p| (p[0].as_u64().expect("step"), p[1].as_f64().expect("value")))
            .collect();
        assert_eq!(ours.len(), theirs.len(), "{tag}");
        for ((s1, v1), (s2, v2)) in ours.iter().zip(&theirs) {
            assert_eq!(s1, s2, "{tag}");
            assert!(
                (v1 - v2).abs() <= 1e-6 * v1.abs().max(1.0),
                "{tag} step {s1}: {v1} vs {v2}"
            );
        }
    }
}

#[test]
fn config_check_prints_published_parameter_counts() {
    for (name, count) in [
        ("mobilellm-125m.toml", "124,635,456"),
        ("mobilellm-ls-125m.toml", "124,635,456"),
        ("mobilellm-350m.toml", "345,355,200"),
        ("mobillama-0.5b.toml", "534,865,920"),
    ] {
        let o = run(kiln()
            .args(["config", "check"])
            .arg(repo_root().join("configs").join(name)));
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(
            out.contains(&format!("parameters:         {count}")),
            "{name}: {out}"
        );
    }
    for name in ["quickstart.toml", "shakespeare-char.toml", "bench-8m.toml"] {
        let mut cmd = kiln();
        cmd.args(["config", "check"])
            .arg(repo_root().join("configs").join(name))
            .current_dir(repo_root());
        if name.contains("shakespeare") {
            cmd.arg("--set").arg(shakespeare_set());
        }
        let o = run(&mut cmd);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
    }
}

/// `kiln eval` covers each token once: it used to put a window at every
/// offset of the split (stride 1), seq_len times the work (7.7M "tokens" and
/// three silent minutes on the quickstart's 120k-token validation split).
#[test]
fn eval_scores_each_token_of_the_split_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = train_tiny(tmp.path(), 8);
    let eval = |extra: &[&std::ffi::OsStr]| {
        let o = run(kiln().arg("eval").arg(&dir).args(extra));
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("eval json");
        (v, stderr(&o))
    };

    // A char-level text of known length: 1000 tokens, 999 targets; seq 32
    // gives 31 tiled windows (992 targets) and one end-aligned window that
    // scores the last 7. The stride-1 sweep ran 968 windows (30,976 targets).
    let text = tmp.path().join("cat.txt");
    std::fs::write(&text, "the cat ".repeat(125)).expect("write");
    let (v, err) = eval(&["--data".as_ref(), text.as_os_str()]);
    println!("{v}\n{err}");
    assert_eq!(v["split_tokens"], 1000, "{v}");
    assert_eq!(v["tokens"], 999, "{v}");
    assert_eq!(v["windows"], 32, "{v}");
    assert!(
        err.contains(
            "999 tokens in 32 windows of 32 (the last 7 scored by a window aligned to the end)"
        ),
        "{err}"
    );
    assert!(v["loss"].as_f64().expect("loss").is_finite());

    // The run's own validation split: every token but the first, once.
    let (v, _) = eval(&[]);
    let n = v["split_tokens"].as_u64().expect("split_tokens");
    assert!(n > 1000, "{v}");
    assert_eq!(v["tokens"].as_u64(), Some(n - 1), "{v}");
    assert_eq!(v["windows"].as_u64(), Some((n - 1).div_ceil(32)), "{v}");
}

#[test]
fn generate_eval_export_and_fine_tune() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        tmp.path(),
        "tiny.toml",
        &TINY.replace("max_steps = 24", "max_steps = 8"),
    );
    let dir = tmp.path().join("run");
    assert!(
        run(kiln().arg("train").arg(&cfg).arg("--run-dir").arg(&dir))
            .status
            .success()
    );

    // Greedy generation is deterministic; sampling depends on the seed.
    let gen = |extra: &[&str]| {
        stdout(&run(kiln()
            .arg("generate")
            .arg(&dir)
            .args(["--prompt", "The cat", "--max-new-tokens", "30"])
            .args(extra)))
    };
    let g1 = gen(&["--temperature", "0"]);
    assert_eq!(g1, gen(&["--temperature", "0"]));
    assert!(
        g1.starts_with("The cat") && g1.len() > "The cat".len(),
        "{g1}"
    );
    assert_eq!(
        gen(&["--seed", "3", "--top-k", "5"]),
        gen(&["--seed", "3", "--top-k", "5"])
    );

    let o = run(kiln().arg("eval").arg(&dir));
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("eval json");
    let loss = report["loss"].as_f64().expect("loss");
    assert!((report["ppl"].as_f64().expect("ppl") - loss.exp()).abs() < 1e-6 * loss.exp());
    let logged = metric(&dir, "val/loss").last().expect("val").1;
    println!("eval loss {loss} (logged val/loss {logged})");
    assert!(loss.is_finite() && loss > 0.0);

    let out = tmp.path().join("hf");
    let o = run(kiln()
        .arg("export")
        .arg(&dir)
        .args(["--format", "hf", "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(out.join(f).exists(), "export lacks {f}");
    }
    let hf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).expect("read"))
            .expect("json");
    assert_eq!(hf["architectures"][0], "LlamaForCausalLM");
    assert_eq!(hf["num_key_value_heads"], 2);

    // Full fine-tuning from the checkpoint: new run, same weights at step 0.
    let ft = TINY
        .replace("max_steps = 24", "max_steps = 4")
        .replace("warmup_steps = 3", "warmup_steps = 1")
        + &format!(
            "\n[init]\nfrom = \"{}\"\n",
            dir.join("checkpoints/step-00000008").display()
        );
    let ft_cfg = write_config(tmp.path(), "ft.toml", &ft);
    let o = run(kiln()
        .arg("train")
        .arg(&ft_cfg)
        .arg("--run-dir")
        .arg(tmp.path().join("ft")));
    assert!(o.status.success(), "{}", stderr(&o));
    let first_ft = metric(&tmp.path().join("ft"), "train/loss")[0].1;
    let first_scratch = metric(&dir, "train/loss")[0].1;
    assert!(
        first_ft < first_scratch - 0.3,
        "fine-tuning did not start from the trained weights: {first_ft} vs {first_scratch}"
    );
}

#[test]
fn non_finite_steps_are_skipped_counted_and_stop_the_run_with_a_checkpoint() {
    let tmp = tempfile::tempdir().expect("tmp");
    // An absurd learning rate blows the weights up after the first update, so
    // every later loss is non-finite.
    let text = TINY
        .replace("lr = 3e-3", "lr = 1e30")
        .replace("min_lr = 3e-4", "min_lr = 0.0")
        .replace("warmup_steps = 3", "warmup_steps = 0")
        + "\n";
    let text = text.replace("seed = 7", "seed = 7\nmax_nonfinite_steps = 3");
    let cfg = write_config(tmp.path(), "nan.toml", &text);
    let dir = tmp.path().join("run");
    let o = run(kiln().arg("train").arg(&cfg).arg("--run-dir").arg(&dir));
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("non-finite steps in a row") && !err.contains("panicked"),
        "{err}"
    );
    let skipped = metric(&dir, "train/skipped_steps");
    assert_eq!(skipped.last().expect("logged").1, 3.0, "{skipped:?}");
    let ckpts = kiln_trainer::checkpoint::list(&dir);
    assert_eq!(
        ckpts.last().expect("checkpoint").0,
        4,
        "stopped after step 1 + 3 skipped steps"
    );
    // The skipped steps did not touch the weights: generation still loads them.
    let state = kiln_trainer::session::load_checkpoint(&dir).expect("loadable");
    assert_eq!(state.state.skipped_steps, 3);
    assert_eq!(state.state.optimizer_updates, 1);
}

#[test]
fn a_log_sink_that_cannot_be_written_is_reported_once_and_training_goes_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        tmp.path(),
        "tiny.toml",
        &TINY.replace("max_steps = 24", "max_steps = 6"),
    );
    let dir = tmp.path().join("run");
    std::fs::create_dir_all(&dir).expect("mkdir");
    // `tb` is a file and `metrics.jsonl` a directory: neither can be opened.
    std::fs::write(dir.join("tb"), b"not a directory").expect("write");
    std::fs::create_dir_all(dir.join("metrics.jsonl")).expect("mkdir");
    let o = run(kiln().arg("train").arg(&cfg).arg("--run-dir").arg(&dir));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        err.matches("warning: cannot write TensorBoard events")
            .count(),
        1,
        "{err}"
    );
    assert_eq!(err.matches("warning: cannot write").count(), 2, "{err}");
    assert!(dir.join("checkpoints/step-00000006/manifest.json").exists());
}
