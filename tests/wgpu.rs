//! The wgpu backend against Flex (CPU), on whatever adapter wgpu finds:
//! lavapipe (Mesa's CPU Vulkan driver) in CI, installed by `tests/run.sh`.
//! Its own test binary, built only with `--features wgpu`
//! (`cargo test --release -p kiln-trainer --features wgpu --test kiln-wgpu`).
//!
//! Shapes are tiny: on lavapipe almost all the time goes to compiling
//! shaders. Every test is bounded (`within`, `kiln_within`): a Vulkan driver
//! that hangs must fail the test, never hang CI.

#[allow(dead_code)]
#[path = "common.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, Flex, Wgpu};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use kiln_models::{
    load_named_tensors, named_tensors, Decoder, LanguageModel, ModelConfig, NamedTensor,
    TrainBackend,
};
use kiln_trainer::grads::{GradStore, ParamTable};
use kiln_trainer::loss::cross_entropy;

use common::{assert_grads_match, ckpt, kiln, metric, stderr, stdout, write_config, TINY};

/// How long one test (or one `kiln` process) may take. Cold runs on two
/// loaded cores compile every shader in well under this; a hung driver
/// fails here. `KILN_WGPU_TIMEOUT_S` overrides it for slower machines.
fn limit() -> Duration {
    let secs = std::env::var("KILN_WGPU_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(secs)
}

/// Runs `f` on its own thread and fails if it takes longer than `limit()`.
/// A hung thread is left behind: the test binary exits when the harness
/// has reported every test, which ends it.
fn within<T: Send + 'static>(label: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit()) {
        Ok(v) => v,
        // The closure panicked (the sender dropped): re-raise its panic.
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("{label}: worker ended without a result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!(
            "{label}: no result after {:?} (a hung Vulkan driver?)",
            limit()
        ),
    }
}

/// Runs a `kiln` command, killing it if it outlives `limit()`.
fn kiln_within(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning kiln");
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit() {
            let _ = child.kill();
            let _ = child.wait();
            let err = String::from_utf8_lossy(&err.join().unwrap_or_default()).to_string();
            panic!(
                "{cmd:?}: killed after {:?} (a hung Vulkan driver?): {err}",
                limit()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

type Cpu = Autodiff<Flex>;
type Gpu = Autodiff<Wgpu>;

const LLAMA: &str = "arch = \"llama\"\nvocab_size = 48\ndim = 32\nn_layers = 2\nn_heads = 4\nn_kv_heads = 2\nffn_dim = 64\nmax_seq_len = 16\ntie_embeddings = true\n";
const MAMBA: &str =
    "arch = \"mamba\"\nvocab_size = 48\ndim = 32\nn_layers = 2\nd_state = 8\nmax_seq_len = 16\n";
const RWKV: &str = "arch = \"rwkv7\"\nvocab_size = 48\ndim = 32\nn_layers = 2\nhead_size = 16\ndecay_lora = 8\naaa_lora = 8\nmv_lora = 8\ngate_lora = 8\nmax_seq_len = 16\ntie_embeddings = false\n";

/// Fixed pseudo-random token ids `[2, 16]` below the vocabulary (48).
fn tokens<B: burn::tensor::backend::Backend>(device: &B::Device) -> Tensor<B, 2, Int> {
    let ids: Vec<i64> = (0..32u64)
        .map(|i| ((i * 2_654_435_761) % 48) as i64)
        .collect();
    Tensor::from_data(TensorData::new(ids, [2, 16]), device)
}

/// Next-token loss and every parameter's gradient (flattened, f32) of
/// `model` on `tokens()`, through the trainer's own loss and gradient store.
fn loss_and_grads<B: TrainBackend>(
    model: &Decoder<B>,
    device: &B::Device,
) -> (f32, BTreeMap<String, Vec<f32>>) {
    let tokens = tokens::<B>(device);
    let [b, t] = tokens.dims();
    let logits = model.forward(tokens.clone()); // [b, t, vocab]
    let v = logits.dims()[2];
    let loss = cross_entropy(
        logits.slice([0..b, 0..t - 1, 0..v]),
        tokens.slice([0..b, 1..t]),
        true,
    );
    let value: f32 = loss.clone().into_scalar().elem();
    let table = ParamTable::new::<B, _>(model);
    let mut store = GradStore::default();
    store.accumulate::<B, _>(model, &table, loss.backward());
    let grads = store
        .grads
        .into_iter()
        .map(|(k, g)| (k, g.into_data().convert::<f32>().into_vec().expect("f32")))
        .collect();
    (value, grads)
}

/// The same weights on Flex and on wgpu: loss within 1e-5 relative, every
/// gradient within 1e-4 (`assert_grads_match`: max |diff| over
/// max(max |flex|, 1), and relative L2). Both sides are f32 and differ only
/// in summation order (wgpu's tiled matmuls and tree reductions against
/// Flex's SIMD kernels). Measured on lavapipe: losses 0 / 6e-8 / 2e-7
/// relative (Llama / Mamba / RWKV-7), worst gradients 4e-8 / 1e-7 / 5e-7,
/// so the bounds leave ~100x headroom for other adapters' reduction orders.
fn grads_match_flex(label: &'static str, model_toml: &'static str) {
    within(label, move || {
        let cfg: ModelConfig = toml::from_str(model_toml).expect("model config");
        let cpu_dev = Default::default();
        <Cpu as burn::tensor::backend::Backend>::seed(&cpu_dev, 7);
        let cpu = Decoder::<Cpu>::new(&cfg, &cpu_dev).expect("cpu model");
        let weights = named_tensors(&cpu);
        let gpu_dev = Default::default();
        let gpu = load_named_tensors(
            Decoder::<Gpu>::new(&cfg, &gpu_dev).expect("wgpu model"),
            &weights,
            "flex",
        )
        .expect("load into wgpu");
        let (cpu_loss, cpu_grads) = loss_and_grads::<Cpu>(&cpu, &cpu_dev);
        let (gpu_loss, gpu_grads) = loss_and_grads::<Gpu>(&gpu, &gpu_dev);
        let rel = ((gpu_loss - cpu_loss) / cpu_loss).abs();
        println!("{label}: loss flex {cpu_loss} wgpu {gpu_loss} (rel {rel:.2e})");
        assert!(rel < 1e-5, "{label}: loss differs by {rel:.3e} relative");
        let want: BTreeMap<String, NamedTensor> = cpu_grads
            .into_iter()
            .map(|(k, data)| {
                let shape = vec![data.len()];
                (k, NamedTensor { shape, data })
            })
            .collect();
        let ours: BTreeMap<String, Tensor<Flex, 1>> = gpu_grads
            .into_iter()
            .map(|(k, g)| {
                let n = g.len();
                (
                    k,
                    Tensor::from_data(TensorData::new(g, [n]), &Default::default()),
                )
            })
            .collect();
        assert_grads_match(&ours, &want, label);
    });
}

#[test]
fn llama_loss_and_gradients_on_wgpu_match_flex() {
    grads_match_flex("llama", LLAMA);
}

#[test]
fn mamba_loss_and_gradients_on_wgpu_match_flex() {
    grads_match_flex("mamba", MAMBA);
}

#[test]
fn rwkv7_loss_and_gradients_on_wgpu_match_flex() {
    grads_match_flex("rwkv7", RWKV);
}

/// TINY for 5 steps on `device`, a checkpoint at step 3 and at the end.
fn tiny_on(device: &str) -> String {
    TINY.replace("max_steps = 24", "max_steps = 5")
        .replace("eval_every = 8", "eval_every = 0")
        .replace("every = 8", "every = 3")
        .replace("seed = 7", &format!("seed = 7\ndevice = \"{device}\""))
}

fn train(cfg: &Path, dir: &Path) {
    let o = kiln_within(kiln().arg("train").arg(cfg).arg("--run-dir").arg(dir));
    assert!(
        o.status.success(),
        "train {}: {}",
        dir.display(),
        stderr(&o)
    );
}

fn losses(run_dir: &Path) -> Vec<f64> {
    metric(run_dir, "train/loss")
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// max |a - b| / max |b| over two checkpoints' weights.
fn weights_diff(a: &Path, b: &Path) -> f64 {
    let load =
        |p: &Path| kiln_trainer::weights::load(&p.join("model.safetensors")).expect("weights");
    let (a, b) = (load(a), load(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let (mut diff, mut scale) = (0f64, 0f64);
    for (k, ta) in &a {
        for (x, y) in ta.data.iter().zip(&b[k].data) {
            diff = diff.max((x - y).abs() as f64);
            scale = scale.max(y.abs() as f64);
        }
    }
    diff / scale.max(1e-30)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).expect("copy");
        }
    }
}

fn generate(run_dir: &Path, device: &str) -> String {
    let o = kiln_within(kiln().arg("generate").arg(run_dir).args([
        "--prompt",
        "The cat",
        "--max-new-tokens",
        "20",
        "--temperature",
        "0",
        "--device",
        device,
    ]));
    assert!(o.status.success(), "generate on {device}: {}", stderr(&o));
    stdout(&o)
}

/// `kiln train` on wgpu: 5 steps whose losses track the CPU run's, a resume
/// from the step-3 checkpoint that ends where the uninterrupted run ended,
/// and greedy `kiln generate` from the wgpu checkpoint.
///
/// Measured on lavapipe: both runs start from the same weights (the seeded
/// init is drawn on Flex for every device) and their losses differ by
/// 1.2e-7 relative over 5 steps, the step-5 weights by 2.3e-6 of the
/// largest; hence 1e-5. The resume is bitwise (0 difference) because wgpu
/// runs the same kernels in the same order in both processes; 1e-6 leaves
/// room for autotune choosing another kernel in a later burn, not for a
/// resume bug (a wrong step or lost optimizer state moves weights ~1e-3).
#[test]
fn kiln_trains_resumes_and_generates_on_wgpu() {
    within("kiln on wgpu", || {
        let tmp = tempfile::tempdir().expect("tmp");
        let (gpu, cpu, cut) = (
            tmp.path().join("gpu"),
            tmp.path().join("cpu"),
            tmp.path().join("cut"),
        );
        train(
            &write_config(tmp.path(), "gpu.toml", &tiny_on("wgpu")),
            &gpu,
        );
        train(&write_config(tmp.path(), "cpu.toml", &tiny_on("cpu")), &cpu);
        let (g, c) = (losses(&gpu), losses(&cpu));
        println!("losses wgpu {g:?}\nlosses cpu  {c:?}");
        assert_eq!(g.len(), 5, "wgpu logged every step");
        let worst = g
            .iter()
            .zip(&c)
            .map(|(a, b)| ((a - b) / b).abs())
            .fold(0.0, f64::max);
        println!("worst relative loss difference wgpu vs cpu over 5 steps: {worst:.2e}");
        assert!(
            worst < 1e-5,
            "wgpu losses drift from the CPU run: {worst:.3e}"
        );
        let cross = weights_diff(&ckpt(&gpu, 5), &ckpt(&cpu, 5));
        println!("step-5 weights wgpu vs cpu: {cross:.2e} of the largest weight");

        copy_dir(&gpu, &cut);
        std::fs::remove_dir_all(ckpt(&cut, 5)).expect("cut the last checkpoint");
        let o = kiln_within(kiln().arg("train").arg("--resume").arg(&cut));
        assert!(o.status.success(), "resume: {}", stderr(&o));
        let resumed = weights_diff(&ckpt(&cut, 5), &ckpt(&gpu, 5));
        let (r, g) = (losses(&cut), losses(&gpu));
        println!("resumed step-5 weights vs uninterrupted: {resumed:.2e}; losses {r:?}");
        assert!(resumed < 1e-6, "resume on wgpu differs by {resumed:.3e}");
        assert_eq!(r.len(), 5);
        for (a, b) in r.iter().zip(&g) {
            assert!(((a - b) / b).abs() < 1e-6, "resumed loss {a} vs {b}");
        }

        let text = generate(&gpu, "wgpu");
        println!("generate on wgpu: {text:?}");
        assert!(text.starts_with("The cat") && text.len() > 10, "{text}");
        // Greedy decoding of the same checkpoint on the CPU: the logits agree
        // to ~1e-6, far below the gaps between the top tokens here.
        let on_cpu = generate(&gpu, "cpu");
        println!("the same checkpoint on cpu: {on_cpu:?}");
        assert_eq!(text, on_cpu, "greedy text on wgpu vs cpu");
    });
}

/// Runs `kiln` with `args` in `cwd` under the time limit and checks the
/// user-error contract: exit 2, no panic, one `error:` line with `expect`.
fn refused(args: &[&str], cwd: &Path, expect: &[&str]) {
    let o = kiln_within(kiln().args(args).current_dir(cwd));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{args:?}: no `error:` line in {err}"));
    for e in expect {
        assert!(line.contains(e), "{args:?}: error line lacks `{e}`: {line}");
    }
    println!("{args:?} -> {line}");
}

/// WebGPU has no bf16 and only optional f16: the half precisions are config
/// errors naming the field and the fix, for `config check` and `train`,
/// before any device work.
#[test]
fn half_precisions_are_refused_on_wgpu() {
    within("precision refusal", || {
        let tmp = tempfile::tempdir().expect("tmp");
        write_config(tmp.path(), "c.toml", &tiny_on("wgpu"));
        for p in ["bf16-mixed", "fp16-mixed", "bf16-pure"] {
            let set = format!("training.precision=\"{p}\"");
            for cmd in [
                &["config", "check", "c.toml"][..],
                &["train", "c.toml", "--run-dir", "r"],
            ] {
                let mut args = cmd.to_vec();
                args.extend(["--set", set.as_str()]);
                refused(
                    &args,
                    tmp.path(),
                    &["training.precision", "wgpu", "\"fp32\""],
                );
            }
        }
        assert!(!PathBuf::from(tmp.path())
            .join("r")
            .join("checkpoints")
            .exists());
    });
}
