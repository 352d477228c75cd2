//! Mamba, RWKV-7 and hybrid stacks through the `kiln` binary: train, exact
//! resume, eval, generate, bench, HF / RWKV export, and the published
//! parameter counts.

use std::path::Path;

use crate::common::{
    kiln, metric, repo_root, run, shakespeare_set, stderr, stdout, write_config, TINY,
};

/// TINY with a Mamba or hybrid `[model]` section.
fn tiny_with(model: &str) -> String {
    let start = TINY.find("[model]").expect("model section");
    let end = TINY.find("[data]").expect("data section");
    format!("{}{model}\n{}", &TINY[..start], &TINY[end..])
}

const MAMBA: &str =
    "[model]\narch = \"mamba\"\ndim = 32\nn_layers = 2\nd_state = 8\nmax_seq_len = 32\n";
const HYBRID: &str = "[model]\narch = \"mamba\"\ndim = 32\nn_layers = 3\nn_heads = 4\nn_kv_heads = 2\nffn_dim = 64\nmax_seq_len = 32\nblocks = [\"mamba\", \"attention\", \"mamba\"]\n";

const RWKV: &str = "[model]\narch = \"rwkv7\"\ndim = 32\nn_layers = 2\nhead_size = 16\ndecay_lora = 8\naaa_lora = 8\nmv_lora = 8\ngate_lora = 8\nmax_seq_len = 32\ntie_embeddings = false\n";
const RWKV_HYBRID: &str = "[model]\narch = \"rwkv7\"\ndim = 32\nn_layers = 3\nhead_size = 16\nn_heads = 4\nffn_dim = 64\nmax_seq_len = 32\nblocks = [\"rwkv\", \"attention\", \"mamba\"]\nd_state = 8\ntie_embeddings = false\n";

fn step_dir(run_dir: &Path, step: u64) -> std::path::PathBuf {
    run_dir.join("checkpoints").join(format!("step-{step:08}"))
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

/// Trains 24 steps, resumes a copy cut back to step 8 and checks that the
/// resumed run ends bitwise equal; then eval, greedy generation and bench.
fn train_resume_eval_generate(model: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = write_config(tmp.path(), "tiny.toml", &tiny_with(model));
    let full = tmp.path().join("full");
    let o = run(kiln().arg("train").arg(&cfg).arg("--run-dir").arg(&full));
    assert!(o.status.success(), "{}", stderr(&o));
    let loss = metric(&full, "train/loss");
    assert_eq!(loss.len(), 24);
    let (first, last) = (loss[0].1, loss[23].1);
    assert!(
        last < first - 0.5,
        "{model}: loss did not fall: {first} -> {last}"
    );

    let cut = tmp.path().join("cut");
    copy_dir(&full, &cut);
    for step in [16, 24] {
        std::fs::remove_dir_all(step_dir(&cut, step)).expect("cut checkpoints");
    }
    let o = run(kiln().arg("train").arg("--resume").arg(&cut));
    assert!(o.status.success(), "{}", stderr(&o));
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(step_dir(&full, 24).join(file)).expect("full");
        let b = std::fs::read(step_dir(&cut, 24).join(file)).expect("resumed");
        assert!(a == b, "{model}: {file} after resume differs");
    }

    let o = run(kiln().arg("eval").arg(&full));
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("eval json");
    assert!(report["loss"].as_f64().expect("loss") < first);

    let gen = || {
        stdout(&run(kiln().arg("generate").arg(&full).args([
            "--prompt",
            "The cat",
            "--max-new-tokens",
            "40",
            "--temperature",
            "0",
        ])))
    };
    let g = gen();
    assert!(g.starts_with("The cat") && g.len() > 10, "{g}");
    assert_eq!(g, gen());

    let bench_model = format!("{model}vocab_size = 64\n");
    let bench_cfg = write_config(tmp.path(), "bench.toml", &tiny_with(&bench_model));
    let o = run(kiln().arg("bench").arg(&bench_cfg).args(["--steps", "2"]));
    assert!(o.status.success(), "bench: {}", stderr(&o));
    tmp
}

#[test]
fn mamba_trains_resumes_exactly_and_exports_to_hugging_face() {
    let tmp = train_resume_eval_generate(MAMBA);
    let out = tmp.path().join("hf");
    let o = run(kiln()
        .arg("export")
        .arg(tmp.path().join("full"))
        .args(["--format", "hf", "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let hf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).expect("read"))
            .expect("json");
    assert_eq!(hf["architectures"][0], "MambaForCausalLM");
    assert_eq!(hf["state_size"], 8);
    let tensors = kiln_trainer::weights::load(&out.join("model.safetensors")).expect("export");
    assert_eq!(
        tensors["backbone.layers.1.mixer.in_proj.weight"].shape,
        vec![128, 32],
        "projections are written [out, in]"
    );
    assert_eq!(
        tensors["backbone.layers.0.mixer.conv1d.weight"].shape,
        vec![64, 1, 4]
    );
    assert!(
        !tensors.contains_key("lm_head.weight"),
        "tied head written twice"
    );
}

#[test]
fn hybrid_trains_resumes_exactly_and_refuses_hf_export() {
    let tmp = train_resume_eval_generate(HYBRID);
    let o = run(kiln()
        .arg("export")
        .arg(tmp.path().join("full"))
        .args(["--format", "hf", "--out"])
        .arg(tmp.path().join("hf")));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("error:") && err.contains("model.blocks"),
        "{err}"
    );
}

#[test]
fn rwkv7_trains_resumes_exactly_and_exports_official_pth() {
    let tmp = train_resume_eval_generate(RWKV);
    let out = tmp.path().join("rwkv");
    let o = run(kiln()
        .arg("export")
        .arg(tmp.path().join("full"))
        .args(["--format", "rwkv", "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    // A torch zip archive: the pickle, and one raw f32 storage per tensor.
    let file = std::fs::File::open(out.join("model.pth")).expect("model.pth");
    let mut zip = zip::ZipArchive::new(file).expect("a zip archive");
    let names: Vec<String> = zip.file_names().map(String::from).collect();
    assert!(names.contains(&"archive/data.pkl".to_string()), "{names:?}");
    assert!(names.contains(&"archive/version".to_string()), "{names:?}");
    let mut pickle = Vec::new();
    std::io::Read::read_to_end(
        &mut zip.by_name("archive/data.pkl").expect("pkl"),
        &mut pickle,
    )
    .expect("read");
    let text = String::from_utf8_lossy(&pickle);
    for name in [
        "emb.weight",
        "blocks.0.ln0.weight",
        "blocks.1.att.v2",
        "blocks.1.att.r_k",
        "ln_out.bias",
        "head.weight",
    ] {
        assert!(text.contains(name), "{name} missing from the state dict");
    }
    // Every checkpoint tensor is one storage.
    let storages = names
        .iter()
        .filter(|n| n.starts_with("archive/data/"))
        .count();
    let ckpt = kiln_trainer::weights::load(
        &step_dir(&tmp.path().join("full"), 24).join("model.safetensors"),
    )
    .expect("checkpoint");
    assert_eq!(storages, ckpt.len());
    assert!(out.join("tokenizer.json").exists());
}

#[test]
fn rwkv_hybrid_trains_resumes_exactly_and_refuses_rwkv_export() {
    let tmp = train_resume_eval_generate(RWKV_HYBRID);
    let o = run(kiln()
        .arg("export")
        .arg(tmp.path().join("full"))
        .args(["--format", "rwkv", "--out"])
        .arg(tmp.path().join("rwkv")));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("error:") && err.contains("pure RWKV-7"),
        "{err}"
    );
}

#[test]
fn ssm_configs_print_their_parameter_counts() {
    // Mamba-130M (state-spaces/mamba-130m: 24 x 768, vocab 50280).
    // RWKV-7 0.1B (L12-D768, vocab 65536, untied head; the official file has
    // 49,920 more: layer 0's unused value-residual LoRA).
    for (name, count) in [
        ("mamba-130m.toml", "129,135,360"),
        ("rwkv7-0.1b.toml", "191,034,624"),
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
    for name in [
        "hybrid-shakespeare.toml",
        "mamba-shakespeare.toml",
        "rwkv7-shakespeare.toml",
        "hybrid-rwkv-shakespeare.toml",
    ] {
        let o = run(kiln()
            .args(["config", "check"])
            .arg(repo_root().join("configs").join(name))
            .arg("--set")
            .arg(shakespeare_set())
            .current_dir(repo_root()));
        assert!(o.status.success(), "{name}: {}", stderr(&o));
    }
}

#[test]
fn bad_block_list_is_a_one_line_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    for (model, want) in [
        (
            HYBRID.replace("n_layers = 3", "n_layers = 4"),
            "model.blocks",
        ),
        (
            HYBRID.replace(
                "[\"mamba\", \"attention\", \"mamba\"]",
                "[\"mamba\", \"transformer\", \"mamba\"]",
            ),
            "transformer",
        ),
        (
            MAMBA.replace("d_state = 8", "d_state = 0"),
            "model.d_state = 0",
        ),
        (HYBRID.replace("n_heads = 4\n", ""), "model.n_heads = 0"),
    ] {
        let cfg = write_config(tmp.path(), "bad.toml", &tiny_with(&model));
        let o = run(kiln().args(["config", "check"]).arg(&cfg));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{model}: {err}");
        assert!(
            err.starts_with("error:") && err.contains(want),
            "{want}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
