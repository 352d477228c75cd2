//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Shakespeare configs' corpus, to pass as `--set data.train=...`: the
/// fetched copy in `data/corpora/` (README: "Data for the Shakespeare
/// configs") if there is one, else the development copy beside the repo.
pub fn tinyshakespeare() -> PathBuf {
    let fetched = repo_root().join("data/corpora/tinyshakespeare.txt");
    let path = if fetched.exists() {
        fetched
    } else {
        repo_root().join("../shared/data/tinyshakespeare.txt")
    };
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// `data.train=<tinyshakespeare()>` for `--set`.
pub fn shakespeare_set() -> String {
    format!("data.train={}", tinyshakespeare().display())
}

pub fn fixtures() -> PathBuf {
    repo_root().join("tests").join("fixtures")
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawning kiln")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A ~20k-parameter model on 300 generated stories: seconds per run.
pub const TINY: &str = r#"
[model]
dim = 32
n_layers = 2
n_heads = 4
n_kv_heads = 2
ffn_dim = 64
max_seq_len = 32

[data]
stories_docs = 300

[tokenizer]
kind = "char"

[optimizer]
lr = 3e-3

[schedule]
kind = "cosine"
warmup_steps = 3
min_lr = 3e-4

[training]
max_steps = 24
batch_size = 4
eval_every = 8
eval_batches = 2
log_every = 1
seed = 7

[checkpoint]
every = 8
keep_last = 10

[logging]
sample_tokens = 20
"#;

/// TINY trained for `steps` steps in `tmp/run`; returns the run directory.
pub fn train_tiny(tmp: &Path, steps: u64) -> PathBuf {
    let text = TINY.replace("max_steps = 24", &format!("max_steps = {steps}"));
    let cfg = write_config(tmp, "tiny.toml", &text);
    let dir = tmp.join("run");
    let o = run(kiln().arg("train").arg(&cfg).arg("--run-dir").arg(&dir));
    assert!(o.status.success(), "{}", stderr(&o));
    dir
}

pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

/// (step, value) of a tag in metrics.jsonl, keeping the last value per step
/// (a resumed run re-logs the steps after its checkpoint).
pub fn metric(run_dir: &Path, tag: &str) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap_or_default();
    let mut map = std::collections::BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("metrics line is JSON");
        if v["tag"] == tag {
            map.insert(
                v["step"].as_u64().expect("step"),
                v["value"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    map.into_iter().collect()
}

/// A Python with `tensorboard` importable: $KILN_PYTHON, python3, or a venv
/// made on first use under the target dir (needs PyPI once).
pub fn python_with_tensorboard() -> PathBuf {
    let ok = |py: &Path| {
        Command::new(py)
            .args(["-c", "import tensorboard"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if let Ok(p) = std::env::var("KILN_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join("target").join("test-venv");
    let vpy = venv.join("bin").join("python");
    if ok(&vpy) {
        return vpy;
    }
    if ok(Path::new("python3")) {
        return PathBuf::from("python3");
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv");
    assert!(made.success(), "could not create {}", venv.display());
    let pip = Command::new(&vpy)
        .args(["-m", "pip", "install", "-q", "tensorboard==2.21.0"])
        .status()
        .expect("pip");
    assert!(
        pip.success(),
        "pip install tensorboard failed: the TensorBoard check needs PyPI once"
    );
    vpy
}

/// The checkpoint directory of `step` in a run directory.
pub fn ckpt(run_dir: &Path, step: u64) -> PathBuf {
    run_dir.join("checkpoints").join(format!("step-{step:08}"))
}

/// Polls for `path` to exist, up to `limit`.
pub fn wait_for(path: &Path, limit: std::time::Duration) -> bool {
    let t = std::time::Instant::now();
    while t.elapsed() < limit {
        if path.exists() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// Runs kiln with `args` in `cwd` and checks that it fails the way a user
/// error must: exit code 2, no panic, one `error:` line containing every
/// string of `expect`. Returns that line.
pub fn fails_with(args: &[&str], cwd: &Path, expect: &[&str]) -> String {
    let o = run(kiln().args(args).current_dir(cwd));
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} should fail; stderr: {err}");
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{args:?} panicked: {err}"
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{args:?}: no `error:` line in {err}"));
    for e in expect {
        assert!(line.contains(e), "{args:?}: error line lacks `{e}`: {line}");
    }
    println!("{args:?} -> {line}");
    line.to_string()
}

/// `max |ours - want|` over logits, asserted below 1e-4 and printed.
pub fn assert_logits_close(ours: &[f32], want: &[f64], label: &str) {
    assert_eq!(ours.len(), want.len(), "{label}: logit count");
    let max_diff = ours
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    println!("{label}: max |logit diff| = {max_diff:.3e}");
    assert!(max_diff < 1e-4, "{label}: logits differ by {max_diff}");
}

/// Every parameter's gradient against the reference's, element by element:
/// the same names, max |diff| / max(max |want|, 1) < 1e-4, and a relative
/// L2 error < 1e-4 (which also holds small gradients to account).
pub fn assert_grads_match(
    grads: &std::collections::BTreeMap<String, burn::tensor::Tensor<burn::backend::Flex, 1>>,
    want: &std::collections::BTreeMap<String, kiln_models::NamedTensor>,
    label: &str,
) {
    assert_eq!(
        grads.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{label}: every parameter has a gradient"
    );
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let mut worst = (0.0f64, String::new());
    for (name, g) in grads {
        let want = &want[name].data;
        let ours: Vec<f32> = g
            .clone()
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32 data");
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1.0) as f64;
        let diff = ours
            .iter()
            .zip(want)
            .map(|(a, b)| ((a - b).abs() as f64) / scale)
            .fold(0.0, f64::max);
        let err: Vec<f32> = ours.iter().zip(want).map(|(a, b)| a - b).collect();
        let rel = norm(&err) / norm(want).max(1e-30);
        assert!(
            rel < 1e-4,
            "{label}: {name}: relative gradient error {rel:.3e}"
        );
        if diff > worst.0 {
            worst = (diff, name.clone());
        }
    }
    println!("{label}: worst gradient {} {:.3e}", worst.1, worst.0);
    assert!(
        worst.0 < 1e-4,
        "{label}: gradient of {} differs by {:.3e}",
        worst.1,
        worst.0
    );
}

/// Runs `cmd` (output discarded) and kills it with SIGKILL once the
/// checkpoint of `step` in `run_dir` is complete (its manifest exists).
pub fn kill_after_checkpoint(cmd: &mut Command, run_dir: &Path, step: u64) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(
        wait_for(
            &ckpt(run_dir, step).join("manifest.json"),
            std::time::Duration::from_secs(120)
        ),
        "no step-{step} checkpoint"
    );
    child.kill().expect("kill -9");
    let _ = child.wait();
}

/// One tensor of a safetensors fixture: shape, raw little-endian bytes, dtype name.
pub type RawTensor = (Vec<usize>, Vec<u8>, String);

/// Every tensor of `fixtures()/rel` (any dtype), by name.
pub fn raw_fixture(rel: &str) -> std::collections::BTreeMap<String, RawTensor> {
    let bytes = std::fs::read(fixtures().join(rel)).expect("fixture");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let t = (
                v.shape().to_vec(),
                v.data().to_vec(),
                format!("{:?}", v.dtype()),
            );
            (k, t)
        })
        .collect()
}

/// An F32 raw tensor's values.
pub fn raw_f32s(t: &RawTensor) -> Vec<f32> {
    assert_eq!(t.2, "F32");
    t.1.chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// `extra`'s sections merged key by key into `doc` (a config's tables).
pub fn merge_toml(doc: &mut toml::Table, extra: &str) {
    let extra: toml::Table = toml::from_str(extra).expect("extra TOML");
    for (section, values) in extra {
        let t = doc
            .entry(section)
            .or_insert_with(|| toml::Value::Table(Default::default()));
        for (k, v) in values.as_table().expect("a section").clone() {
            t.as_table_mut().expect("section").insert(k, v);
        }
    }
}
