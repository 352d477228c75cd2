//! `kiln distill cache` and `[distill] cache` / `lmbda` end to end, on the
//! two-domain prepared dataset of tests/data.rs.

use std::path::Path;

use crate::common::{
    ckpt, fails_with, kill_after_checkpoint, kiln, metric, run, stderr, stdout, write_config,
};
use crate::data::{two_domain_dataset, MIX_RUN};

/// MIX_RUN as a student (smaller than the teacher) with `extra` appended.
fn student(extra: &str) -> String {
    let s = MIX_RUN
        .replace("dim = 32", "dim = 16")
        .replace("ffn_dim = 64", "ffn_dim = 32");
    format!("{s}\n{extra}\n")
}

fn train(tmp: &Path, name: &str, text: &str) {
    let cfg = write_config(tmp, &format!("{name}.toml"), text);
    let o = run(kiln()
        .arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg(name)
        .current_dir(tmp));
    assert!(o.status.success(), "{name}: {}", stderr(&o));
}

fn losses(tmp: &Path, run: &str) -> Vec<f64> {
    metric(&tmp.join(run), "train/loss")
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

fn weights(tmp: &Path, run: &str, step: u64) -> Vec<u8> {
    std::fs::read(ckpt(&tmp.join(run), step).join("model.safetensors")).expect("weights")
}

/// The teacher (MIX_RUN, 8 steps) and its cache with top-k = V.
fn teacher_and_cache(tmp: &Path) {
    two_domain_dataset(tmp);
    train(
        tmp,
        "teacher",
        &MIX_RUN.replace("max_steps = 24", "max_steps = 8"),
    );
    let o = run(kiln()
        .args([
            "distill",
            "cache",
            "teacher",
            "mix",
            "--out",
            "c",
            "--top-k",
            "100000",
            "--samples",
            "8",
        ])
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json line");
    println!("cache: {line}");
    assert!(line["bytes_per_token"].as_f64().expect("bytes") > 0.0);
}

/// A k = V cache trains the student exactly as the online teacher does (to
/// f32 rounding); the sampled cache trains too; resume from the cache is
/// bitwise; every mismatch is one line.
#[test]
fn a_full_vocabulary_cache_trains_like_the_online_teacher() {
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    teacher_and_cache(tmp);
    train(
        tmp,
        "online",
        &student("[distill]\nteacher = \"teacher\"\ntemperature = 1.0\n"),
    );
    train(
        tmp,
        "cached",
        &student("[distill]\ncache = \"c\"\ncache_targets = \"top-k\"\n"),
    );
    let (a, b) = (losses(tmp, "online"), losses(tmp, "cached"));
    assert_eq!(a.len(), b.len());
    assert!(
        (a[0] - b[0]).abs() < 1e-6 * a[0].abs(),
        "step 1: {} vs {}",
        a[0],
        b[0]
    );
    for (x, y) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() < 1e-4 * x.abs(),
            "online {a:?} vs cached {b:?}"
        );
    }
    train(
        tmp,
        "sampled",
        &student("[distill]\ncache = \"c\"\nteacher = \"teacher\"\n"),
    );
    let s = losses(tmp, "sampled");
    assert!(
        s.iter().all(|x| x.is_finite()) && s[s.len() - 1] < s[0],
        "{s:?}"
    );

    // Resume: killed after step 8, continued, equal to the whole run.
    let cfg = write_config(tmp, "cut.toml", &student("[distill]\ncache = \"c\"\n"));
    let mut cmd = kiln();
    cmd.arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg("cut")
        .current_dir(tmp);
    kill_after_checkpoint(&mut cmd, &tmp.join("cut"), 8);
    assert!(
        !ckpt(&tmp.join("cut"), 24).exists(),
        "finished before the kill"
    );
    let o = run(kiln().args(["train", "--resume", "cut"]).current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        weights(tmp, "sampled", 24) == weights(tmp, "cut", 24),
        "resume from the cache differs"
    );

    // A cache of one run's windows only: that run reads it as the whole
    // cache (same bytes), a longer run is refused up front.
    write_config(tmp, "part.toml", &student("[distill]\ncache = \"cp\"\n"));
    let o = run(kiln()
        .args([
            "distill",
            "cache",
            "teacher",
            "mix",
            "--out",
            "cp",
            "--samples",
            "8",
            "--windows-of",
            "part.toml",
        ])
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    train(tmp, "part", &student("[distill]\ncache = \"cp\"\n"));
    assert!(
        weights(tmp, "sampled", 24) == weights(tmp, "part", 24),
        "a partial cache must serve its run as the full one"
    );
    write_config(
        tmp,
        "long.toml",
        &student("[distill]\ncache = \"cp\"\n").replace("max_steps = 24", "max_steps = 400"),
    );
    fails_with(
        &["train", "long.toml", "--run-dir", "x0"],
        tmp,
        &["distill.cache", "lacks window", "--windows-of"],
    );
    bad_caches(tmp);
}

/// A cache used by a run it was not made for: one line, exit 2.
fn bad_caches(tmp: &Path) {
    // Another teacher (another seed) named beside the cache.
    train(
        tmp,
        "teacher2",
        &MIX_RUN
            .replace("max_steps = 24", "max_steps = 2")
            .replace("seed = 7", "seed = 8"),
    );
    write_config(
        tmp,
        "t2.toml",
        &student("[distill]\ncache = \"c\"\nteacher = \"teacher2\"\n"),
    );
    fails_with(
        &["train", "t2.toml", "--run-dir", "x1"],
        tmp,
        &["distill.cache", "teacher", "SHA-256"],
    );
    // A cache made with another tokenizer or from other data (its record edited).
    let edit = |name: &str, field: &str| {
        let out = tmp.join(name);
        std::fs::create_dir_all(&out).expect("mkdir");
        for entry in std::fs::read_dir(tmp.join("c")).expect("c") {
            let p = entry.expect("entry").path();
            let to = out.join(p.file_name().expect("name"));
            if p.is_dir() {
                std::fs::create_dir_all(&to).expect("mkdir");
                for f in std::fs::read_dir(&p).expect("dir") {
                    let f = f.expect("f").path();
                    std::fs::copy(&f, to.join(f.file_name().expect("n"))).expect("copy");
                }
            } else {
                std::fs::copy(&p, &to).expect("copy");
            }
        }
        let m = out.join("cache.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&m).expect("read")).expect("json");
        v[field] = serde_json::Value::String("0".repeat(64));
        std::fs::write(&m, v.to_string()).expect("write");
    };
    edit("c_tok", "tokenizer_sha256");
    write_config(tmp, "tok.toml", &student("[distill]\ncache = \"c_tok\"\n"));
    fails_with(
        &["train", "tok.toml", "--run-dir", "x2"],
        tmp,
        &["distill.cache", "tokenizer", "0000"],
    );
    edit("c_data", "data_fingerprint");
    write_config(tmp, "dat.toml", &student("[distill]\ncache = \"c_data\"\n"));
    fails_with(
        &["train", "dat.toml", "--run-dir", "x3"],
        tmp,
        &["distill.cache", "data", "fingerprint"],
    );
    // A torn shard.
    let shard = tmp.join("c_data/letters/cache-00000.bin");
    edit("c_torn", "seed_note");
    let torn = tmp.join("c_torn/letters/cache-00000.bin");
    let bytes = std::fs::read(&shard).expect("shard");
    std::fs::write(&torn, &bytes[..bytes.len() - 3]).expect("truncate");
    write_config(
        tmp,
        "torn.toml",
        &student("[distill]\ncache = \"c_torn\"\n"),
    );
    fails_with(
        &["train", "torn.toml", "--run-dir", "x4"],
        tmp,
        &["cache-00000.bin", "rebuild"],
    );
    // A divergence a sparse cache cannot give.
    write_config(
        tmp,
        "rkl.toml",
        &student("[distill]\ncache = \"c\"\nloss = \"reverse-kl\"\n"),
    );
    fails_with(
        &["train", "rkl.toml", "--run-dir", "x5"],
        tmp,
        &["distill.loss", "forward KL"],
    );
    // Not a cache; data prepared with another tokenizer than the teacher's.
    write_config(tmp, "none.toml", &student("[distill]\ncache = \"mix\"\n"));
    fails_with(
        &["train", "none.toml", "--run-dir", "x6"],
        tmp,
        &["distill.cache", "cache.json"],
    );
    crate::common::train_tiny(tmp, 4); // a char model of other text: tmp/run
    fails_with(
        &["distill", "cache", "run", "mix", "--out", "c2"],
        tmp,
        &["mix", "tokenizer", "SHA-256"],
    );
}

/// GKD's on-policy batches: with `lmbda = 0.5` about half the batches are
/// the student's own continuations scored by the teacher. Seeded (two runs
/// are bitwise equal), different from `lmbda = 0`, and resumable bitwise.
#[test]
fn on_policy_batches_are_seeded_and_resume_exactly() {
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    two_domain_dataset(tmp);
    train(
        tmp,
        "teacher",
        &MIX_RUN.replace("max_steps = 24", "max_steps = 8"),
    );
    let gkd = student(
        "[distill]\nteacher = \"teacher\"\nlmbda = 0.5\ngkd_new_tokens = 8\nloss = \"jsd\"\n",
    );
    train(tmp, "a", &gkd);
    train(tmp, "b", &gkd);
    train(
        tmp,
        "off",
        &student("[distill]\nteacher = \"teacher\"\nloss = \"jsd\"\n"),
    );
    assert!(
        weights(tmp, "a", 24) == weights(tmp, "b", 24),
        "on-policy runs must be seeded"
    );
    assert!(
        weights(tmp, "a", 24) != weights(tmp, "off", 24),
        "lmbda must change the run"
    );
    let l = losses(tmp, "a");
    assert!(l.iter().all(|x| x.is_finite()), "{l:?}");
    let cfg = write_config(tmp, "cut.toml", &gkd);
    let mut cmd = kiln();
    cmd.arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg("cut")
        .current_dir(tmp);
    kill_after_checkpoint(&mut cmd, &tmp.join("cut"), 8);
    assert!(
        !ckpt(&tmp.join("cut"), 24).exists(),
        "finished before the kill"
    );
    let o = run(kiln().args(["train", "--resume", "cut"]).current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        weights(tmp, "a", 24) == weights(tmp, "cut", 24),
        "on-policy resume differs"
    );
    write_config(
        tmp,
        "badl.toml",
        &student("[distill]\nteacher = \"teacher\"\nlmbda = 1.5\n"),
    );
    fails_with(
        &["train", "badl.toml", "--run-dir", "x"],
        tmp,
        &["distill.lmbda", "1.5"],
    );
}
