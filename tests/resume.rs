//! Exact resume (also after `kill -9`) and crash-safe checkpoints.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{
    ckpt, kill_after_checkpoint, kiln, metric, run, stderr, train_tiny, wait_for, write_config,
    TINY,
};

#[test]
fn resume_after_kill_9_is_bitwise_exact() {
    check_kill_9_resume(&[], |_| {});
}

/// Sophia's moments, Hessian estimate (refreshed every 3 updates, with labels
/// sampled from the model) and its refresh count survive a kill -9.
#[test]
fn sophia_resume_after_kill_9_is_bitwise_exact() {
    let sets = ["optimizer.kind=\"sophia\"", "optimizer.hessian_every=3"];
    check_kill_9_resume(&sets, |full| {
        let win = metric(full, "train/sophia_win_rate");
        assert!(
            !win.is_empty() && win.iter().all(|(_, w)| (0.0..=1.0).contains(w)),
            "{win:?}"
        );
        let hess = metric(full, "train/hessian_steps");
        assert_eq!(
            hess.last().map(|(_, h)| *h),
            Some(8.0),
            "24 updates, a refresh every 3"
        );
    });
}

/// bf16-pure: stochastic rounding draws from per-(seed, update, parameter)
/// streams, so a resumed run rounds exactly as the uninterrupted one.
#[test]
fn bf16_pure_resume_after_kill_9_is_bitwise_exact() {
    check_kill_9_resume(&["training.precision=\"bf16-pure\""], |_| {});
}

/// fp16-mixed: the loss scale and its good-step count are in the state.
#[test]
fn fp16_resume_after_kill_9_is_bitwise_exact() {
    check_kill_9_resume(&["training.precision=\"fp16-mixed\""], |full| {
        assert!(!metric(full, "train/loss_scale").is_empty());
    });
}

/// A frozen set (the embedding and every MLP): resume stays bitwise exact,
/// and the frozen tensors have no optimizer state.
#[test]
fn frozen_resume_after_kill_9_is_bitwise_exact() {
    let freeze = r#"training.freeze=["model.embed_tokens.weight", "*.mlp.*"]"#;
    check_kill_9_resume(&[freeze], |full| {
        let opt = kiln_trainer::weights::load(&ckpt(full, 24).join("optimizer.safetensors"))
            .expect("optimizer state");
        assert!(!opt.is_empty());
        let frozen: Vec<&String> = opt
            .keys()
            .filter(|k| k.contains("embed_tokens") || k.contains(".mlp."))
            .collect();
        assert!(
            frozen.is_empty(),
            "frozen tensors in optimizer state: {frozen:?}"
        );
    });
}

/// QAT: fake q4_0 (with q8_0 activations) switches on at step 4, before the
/// kill; the resumed run quantises from its first step as the uninterrupted
/// one did.
#[test]
fn qat_resume_after_kill_9_is_bitwise_exact() {
    let sets = [
        "quantize.weights=\"q4_0\"",
        "quantize.activations=\"q8_0\"",
        "quantize.start_step=4",
    ];
    check_kill_9_resume(&sets, |full| {
        let cfg = std::fs::read_to_string(full.join("config.toml")).expect("config");
        assert!(cfg.contains("[quantize]"), "{cfg}");
    });
}

/// Trains TINY (with `sets`) twice, killing the second run after its step-8
/// checkpoint and resuming it; then runs `more` on the uninterrupted run's directory.
fn check_kill_9_resume(sets: &[&str], more: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    let cfg = write_config(tmp, "tiny.toml", TINY);
    let with_sets = |cmd: &mut std::process::Command| {
        for s in sets {
            cmd.arg("--set").arg(s);
        }
    };
    let full = tmp.join("full");
    let mut cmd = kiln();
    cmd.arg("train").arg(&cfg).arg("--run-dir").arg(&full);
    with_sets(&mut cmd);
    let o = run(&mut cmd);
    assert!(o.status.success(), "{}", stderr(&o));

    // Same run, killed with SIGKILL once its step-8 checkpoint exists.
    let cut = tmp.join("cut");
    let mut cmd = kiln();
    with_sets(cmd.arg("train").arg(&cfg));
    cmd.arg("--run-dir").arg(&cut);
    kill_after_checkpoint(&mut cmd, &cut, 8);
    assert!(
        !ckpt(&cut, 24).exists(),
        "the run finished before it was killed: make TINY longer"
    );

    let o = run(kiln().arg("train").arg("--resume").arg(&cut));
    assert!(o.status.success(), "{}", stderr(&o));
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(ckpt(&full, 24).join(file)).expect("full");
        let b = std::fs::read(ckpt(&cut, 24).join(file)).expect("resumed");
        assert!(
            a == b,
            "{file} after resume differs from the uninterrupted run"
        );
    }
    let (la, lb) = (metric(&full, "train/loss"), metric(&cut, "train/loss"));
    assert_eq!(la.len(), 24);
    assert_eq!(la, lb, "logged losses differ after resume");
    assert_eq!(metric(&full, "val/loss"), metric(&cut, "val/loss"));
    more(&full);
}

#[test]
fn sigterm_saves_a_checkpoint_and_exits_cleanly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        tmp.path(),
        "tiny.toml",
        &TINY.replace("max_steps = 24", "max_steps = 100000"),
    );
    let dir = tmp.path().join("run");
    let child = kiln()
        .arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    assert!(wait_for(
        &ckpt(&dir, 8).join("manifest.json"),
        Duration::from_secs(120)
    ));
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "SIGTERM should exit 0: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--resume"), "{}", stderr(&out));
    let steps: Vec<u64> = kiln_trainer::checkpoint::list(&dir)
        .iter()
        .map(|(s, _)| *s)
        .collect();
    let last = *steps.last().expect("a checkpoint");
    // The interrupt checkpoint is the step where the run stopped, not the
    // last periodic one.
    assert!(last > 8, "no checkpoint after the signal: {steps:?}");
    assert!(
        stderr(&out).contains(&format!("stopped at step {last};")),
        "the last checkpoint ({last}) is not the stopping step: {}",
        stderr(&out)
    );
}

#[test]
fn kill_9_during_saves_leaves_the_last_checkpoint_loadable() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A checkpoint every step, so kills land inside saves often.
    let text = TINY
        .replace("every = 8", "every = 1")
        .replace("max_steps = 24", "max_steps = 100000");
    let cfg = write_config(tmp.path(), "tiny.toml", &text);
    for (i, delay_ms) in [150u64, 410, 777].into_iter().enumerate() {
        let dir = tmp.path().join(format!("run{i}"));
        let mut child = kiln()
            .arg("train")
            .arg(&cfg)
            .arg("--run-dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        assert!(wait_for(
            &ckpt(&dir, 2).join("manifest.json"),
            Duration::from_secs(120)
        ));
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("kill -9");
        let _ = child.wait();
        for (step, path) in kiln_trainer::checkpoint::list(&dir) {
            kiln_trainer::session::load_checkpoint(&path)
                .unwrap_or_else(|e| panic!("checkpoint {step} unreadable after kill -9: {e}"));
        }
        let o = run(kiln()
            .arg("generate")
            .arg(&dir)
            .args(["--max-new-tokens", "5"]));
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

#[test]
fn an_interrupted_save_is_ignored_and_a_corrupt_file_is_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = train_tiny(tmp.path(), 8);
    // What a crash mid-save leaves: a temp dir with a torn file.
    let torn = dir.join("checkpoints").join(".tmp-step-00000016-999");
    std::fs::create_dir_all(&torn).expect("mkdir");
    std::fs::write(torn.join("model.safetensors"), b"torn").expect("write");
    let resolved = kiln_trainer::checkpoint::resolve(&dir).expect("resolve");
    assert!(resolved.ends_with("step-00000008"));
    // Truncating the model file of the real checkpoint is caught by name.
    let model = resolved.join("model.safetensors");
    let bytes = std::fs::read(&model).expect("read");
    std::fs::write(&model, &bytes[..bytes.len() / 2]).expect("truncate");
    let o = run(kiln().arg("eval").arg(&dir));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
