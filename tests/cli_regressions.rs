//! Regressions a new user hit: `--set` dropped on resume, fine-tuning on new
//! text refused because the tokenizer was retrained, and `kiln ... | head`
//! ending with an internal error.

use std::io::Read;
use std::process::Stdio;

use crate::common::{ckpt, fails_with, kiln, metric, run, stderr, train_tiny, write_config, TINY};

/// Extending a finished run with `--resume RUN --set training.max_steps=N`
/// trains the extra steps and records the new length in the run's config;
/// a key that cannot change on resume is an error naming it.
#[test]
fn resume_applies_max_steps_and_refuses_other_keys() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = train_tiny(tmp.path(), 8);
    let o = run(kiln().args(["train", "--resume"]).arg(&dir).args([
        "--set",
        "training.max_steps=12",
        "--set",
        "checkpoint.every=2",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--set training.max_steps=12 applied"),
        "{}",
        stderr(&o)
    );
    assert!(
        ckpt(&dir, 12).join("manifest.json").exists(),
        "no step-12 checkpoint"
    );
    assert_eq!(metric(&dir, "train/loss").last().map(|(s, _)| *s), Some(12));
    let saved = std::fs::read_to_string(ckpt(&dir, 12).join("config.toml")).expect("config");
    assert!(saved.contains("max_steps = 12"), "{saved}");
    let run_cfg = std::fs::read_to_string(dir.join("config.toml")).expect("run config");
    assert!(run_cfg.contains("every = 2"), "{run_cfg}");

    let d = dir.to_str().expect("utf-8 path");
    fails_with(
        &["train", "--resume", d, "--set", "training.batch_size=8"],
        tmp.path(),
        &["training.batch_size", "cannot change on --resume"],
    );
    fails_with(
        &["train", "--resume", d, "--set", "training.max_steps=4"],
        tmp.path(),
        &["training.max_steps", "below the run's 12 completed steps"],
    );
}

/// `[init] from` on other text: the run takes the checkpoint's tokenizer
/// (a char vocabulary retrained on the new text would be smaller and the
/// model would not load) and says so.
#[test]
fn fine_tuning_on_new_text_takes_the_checkpoints_tokenizer() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = train_tiny(tmp.path(), 4);
    // A subset of the stories: fewer distinct characters than the base run saw.
    let text = "the cat sat on the mat. the dog ran to the cat.\n".repeat(40);
    let data = tmp.path().join("new.txt");
    std::fs::write(&data, text).expect("write");
    let base = ckpt(&dir, 4);
    let cfg = write_config(
        tmp.path(),
        "ft.toml",
        &format!(
            "{}\n[init]\nfrom = {:?}\n",
            TINY.replace("stories_docs = 300", &format!("train = {:?}", data)),
            base
        ),
    );
    let ft = tmp.path().join("ft");
    let o = run(kiln()
        .arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg(&ft)
        .args([
            "--set",
            "training.max_steps=5",
            "--set",
            "training.eval_every=0",
        ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("weights and tokenizer from"),
        "{}",
        stderr(&o)
    );
    let a = std::fs::read(base.join("tokenizer.json")).expect("base tokenizer");
    let b = std::fs::read(ckpt(&ft, 5).join("tokenizer.json")).expect("ft tokenizer");
    assert!(a == b, "the fine-tuned run has another tokenizer");

    // A real architecture change is still refused, naming the key and both values.
    fails_with(
        &[
            "train",
            cfg.to_str().expect("path"),
            "--set",
            "model.dim=48",
            "--run-dir",
            "ft2",
        ],
        tmp.path(),
        &["model.dim", "is 48 here but 32"],
    );
}

/// `kiln config check ... | head -c 1`: the reader goes away; kiln exits 0
/// without an error line.
#[test]
fn closed_stdout_exits_quietly() {
    let cfg = crate::common::repo_root()
        .join("configs")
        .join("quickstart.toml");
    let mut child = kiln()
        .args(["config", "check"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Close our end of the pipe before kiln writes.
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit {status:?}: {err}");
    assert!(!err.contains("error"), "{err}");
}
