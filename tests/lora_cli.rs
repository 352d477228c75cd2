//! LoRA and instruction tuning end to end through `kiln`: exact resume of an
//! adapter run after kill -9 (dropout on, instruction data), adapter-only
//! checkpoints over a base named by hash, merge and peft export, the masked
//! loss's zero gradient, and every bad input as one line with exit 2.

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use kiln_models::ops::IGNORE_INDEX;
use kiln_trainer::loss::{masked_mean, token_nll};

use crate::common::{
    ckpt, fails_with, kill_after_checkpoint, kiln, metric, run, stderr, train_tiny, write_config,
};

const LORA: &str = r#"
[model]
dim = 32
n_layers = 2
n_heads = 4
n_kv_heads = 2
ffn_dim = 64
max_seq_len = 32

[init]
from = "run"

[data]
train = "inst.jsonl"
seq_len = 32

[data.instruct]
template = "plain"
overflow = "truncate"

[adapter]
r = 4
alpha = 8
dropout = 0.1
targets = ["q", "v", "gate", "down"]

[optimizer]
lr = 3e-3

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
"#;

const NAMES: [&str; 6] = ["tom", "lily", "max", "anna", "ben", "mia"];
const ANIMALS: [&str; 4] = ["cat", "dog", "bird", "fish"];

/// 48 short examples in the three layouts, in the tiny base's characters.
fn instruction_file(dir: &Path) {
    let mut lines = Vec::new();
    for i in 0..48 {
        let (n, a) = (NAMES[i % 6], ANIMALS[(i / 6) % 4]);
        lines.push(match i % 3 {
            0 => serde_json::json!({"prompt": format!("what has {n}?"), "response": format!("a {a}.")}),
            1 => serde_json::json!({"instruction": format!("name the pet of {n}."), "input": "", "output": format!("the {a}.")}),
            _ => serde_json::json!({"messages": [
                {"role": "user", "content": format!("who has a {a}?")},
                {"role": "assistant", "content": format!("{n} does.")}
            ]}),
        });
    }
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(dir.join("inst.jsonl"), text.join("\n") + "\n").expect("write");
}

/// A base run (`tmp/run`), the instruction file and the LoRA config.
fn setup(tmp: &Path, lora: &str) -> std::path::PathBuf {
    train_tiny(tmp, 4);
    instruction_file(tmp);
    write_config(tmp, "lora.toml", lora)
}

fn train_in(tmp: &Path, cfg: &Path, run_dir: &str) {
    let o = run(kiln()
        .arg("train")
        .arg(cfg)
        .arg("--run-dir")
        .arg(run_dir)
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn lora_instruct_resume_after_kill_9_is_bitwise_exact() {
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    let cfg = setup(tmp, LORA);
    train_in(tmp, &cfg, "full");
    let full = tmp.join("full");

    let cut = tmp.join("cut");
    let mut cmd = kiln();
    cmd.arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg(&cut)
        .current_dir(tmp);
    kill_after_checkpoint(&mut cmd, &cut, 8);
    assert!(!ckpt(&cut, 24).exists(), "finished before the kill");
    let o = run(kiln()
        .arg("train")
        .arg("--resume")
        .arg(&cut)
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(ckpt(&full, 24).join(file)).expect("full");
        let b = std::fs::read(ckpt(&cut, 24).join(file)).expect("resumed");
        assert!(a == b, "{file} after resume differs");
    }
    let (la, lb) = (metric(&full, "train/loss"), metric(&cut, "train/loss"));
    assert_eq!(la.len(), 24);
    assert_eq!(la, lb, "logged losses differ after resume");
    assert_eq!(metric(&full, "val/loss"), metric(&cut, "val/loss"));

    // The checkpoint holds adapters only, over the base named by hash.
    let saved =
        kiln_trainer::weights::load(&ckpt(&full, 24).join("model.safetensors")).expect("adapters");
    assert!(!saved.is_empty());
    assert!(
        saved.keys().all(|k| kiln_models::is_adapter_name(k)),
        "{:?}",
        saved.keys()
    );
    let manifest = std::fs::read_to_string(ckpt(&full, 24).join("manifest.json")).expect("m");
    assert!(manifest.contains("\"adapters\"") && manifest.contains("base_sha256"));

    // `kiln eval` of an instruction run scores its held-out answers, as
    // the run's own validation did.
    let o = run(kiln().args(["eval", "full"]).current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(crate::common::stdout(&o).trim()).expect("eval json");
    let logged = metric(&full, "val/loss").last().expect("val").1;
    let got = v["loss"].as_f64().expect("loss");
    assert!((got - logged).abs() < 1e-6, "eval {got} vs logged {logged}");

    merge_and_export(tmp);
}

/// Merged logits equal the adapter model's; the peft export has peft's names
/// and shapes; loading over a different base names both hashes.
fn merge_and_export(tmp: &Path) {
    let logits = |ckpt: &str, out: &str| -> Vec<f32> {
        let o = run(kiln()
            .args(["eval", ckpt, "--text", "what has tom?", "--logits-out", out])
            .current_dir(tmp));
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(tmp.join(out)).expect("logits")).expect("json");
        let rows: Vec<Vec<Vec<f32>>> = serde_json::from_value(v["logits"].clone()).expect("rows");
        rows.concat().concat()
    };
    let o = run(kiln()
        .args(["merge", "full", "--out", "merged"])
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let (a, m) = (logits("full", "a.json"), logits("merged", "m.json"));
    let worst = a
        .iter()
        .zip(&m)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "merged vs adapters: {worst}");
    fails_with(
        &["merge", "merged", "--out", "again"],
        tmp,
        &["no adapters"],
    );

    let o = run(kiln()
        .args(["export", "full", "--format", "peft", "--out", "peft"])
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let t = kiln_trainer::weights::load(&tmp.join("peft/adapter_model.safetensors")).expect("peft");
    let a = &t["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"];
    let b = &t["base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"];
    assert_eq!(
        (a.shape.clone(), b.shape.clone()),
        (vec![4, 32], vec![32, 4])
    );
    let cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.join("peft/adapter_config.json")).expect("config"),
    )
    .expect("json");
    assert_eq!(
        (cfg["r"].as_u64(), cfg["peft_type"].as_str()),
        (Some(4), Some("LORA"))
    );

    // Another base at the same path: the adapters refuse it, naming both hashes.
    std::fs::rename(tmp.join("run"), tmp.join("run-orig")).expect("move");
    let other = write_config(
        tmp,
        "other.toml",
        &crate::common::TINY
            .replace("max_steps = 24", "max_steps = 4")
            .replace("seed = 7", "seed = 8"),
    );
    train_in(tmp, &other, "run");
    let line = fails_with(
        &["eval", "full", "--text", "a", "--logits-out", "x.json"],
        tmp,
        &["SHA-256"],
    );
    assert_eq!(line.matches("SHA-256").count(), 1, "{line}");
    assert!(
        line.split_whitespace().filter(|w| w.len() >= 64).count() >= 2,
        "{line}"
    );
}

#[test]
fn bad_adapter_and_instruction_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    setup(tmp, LORA);
    let case = |name: &str, cfg: String, expect: &[&str]| {
        write_config(tmp, name, &cfg);
        fails_with(
            &["train", name, "--run-dir", &format!("r-{name}")],
            tmp,
            expect,
        );
    };
    case("r0.toml", LORA.replace("r = 4", "r = 0"), &["adapter.r"]);
    case(
        "alpha.toml",
        LORA.replace("alpha = 8", "alpha = 0"),
        &["adapter.alpha"],
    );
    case(
        "target.toml",
        LORA.replace(
            r#"targets = ["q", "v", "gate", "down"]"#,
            r#"targets = ["q", "nope"]"#,
        ),
        &["adapter.targets[1]", "nope"],
    );
    case(
        "noinit.toml",
        LORA.replace("[init]\nfrom = \"run\"\n", ""),
        &["adapter", "[init]"],
    );
    fails_with(&["merge", "run", "--out", "m"], tmp, &["no adapters"]);

    // Instruction files.
    let data_case = |name: &str, line: &str, cfg: &str, expect: &[&str]| {
        // Three copies, so that one can be held out for validation.
        std::fs::write(tmp.join(name), format!("{line}\n{line}\n{line}\n")).expect("write");
        let text = cfg.replace("train = \"inst.jsonl\"", &format!("train = \"{name}\""));
        write_config(tmp, "d.toml", &text);
        fails_with(
            &["train", "d.toml", "--run-dir", &format!("r-{name}")],
            tmp,
            expect,
        );
    };
    data_case(
        "noresp.jsonl",
        r#"{"prompt": "what has tom?"}"#,
        LORA,
        &["noresp.jsonl:1", "response"],
    );
    data_case(
        "role.jsonl",
        r#"{"messages": [{"role": "tool", "content": "a"}, {"role": "assistant", "content": "b"}]}"#,
        LORA,
        &["tool"],
    );
    let long = format!(
        r#"{{"prompt": "{}", "response": "a cat."}}"#,
        "a ".repeat(40)
    );
    data_case(
        "long.jsonl",
        &long,
        &LORA.replace("overflow = \"truncate\"", "overflow = \"drop\""),
        &["all 2 examples", "seq_len"],
    );
}

/// Ignored targets (prompt tokens, padding) get a gradient of exactly zero
/// through the fused kernel and the composed ops alike, and the loss is the
/// mean over the others.
#[test]
fn masked_targets_have_exactly_zero_gradient() {
    type AB = Autodiff<Flex>;
    let dev = Default::default();
    for fused in [true, false] {
        let logits =
            Tensor::<AB, 3>::random([2, 5, 7], Distribution::Normal(0.0, 2.0), &dev).require_grad();
        let t: Vec<i64> = vec![
            3,
            IGNORE_INDEX,
            1,
            IGNORE_INDEX,
            6,
            IGNORE_INDEX,
            2,
            0,
            5,
            IGNORE_INDEX,
        ];
        let targets = Tensor::<AB, 2, Int>::from_data(TensorData::new(t.clone(), [2, 5]), &dev);
        let loss = masked_mean(token_nll(logits.clone(), targets, fused), 6);
        let grads = loss.backward();
        let g: Vec<f32> = logits
            .grad(&grads)
            .expect("grad")
            .into_data()
            .into_vec()
            .expect("f32");
        for (row, &target) in g.chunks(7).zip(&t) {
            if target == IGNORE_INDEX {
                assert!(row.iter().all(|&x| x == 0.0), "fused={fused}: {row:?}");
            } else {
                assert!(
                    row.iter().any(|&x| x != 0.0),
                    "fused={fused}: scored row is zero"
                );
                let sum: f32 = row.iter().sum();
                assert!(sum.abs() < 1e-6, "softmax - onehot sums to 0: {sum}");
            }
        }
    }
}

/// `[model]` of TINY for another architecture.
fn base_of(tmp: &Path, name: &str, model: &str) {
    let text = crate::common::TINY.replace("max_steps = 24", "max_steps = 4");
    let start = text.find("[model]").expect("model");
    let end = text.find("[data]").expect("data");
    let text = format!("{}{model}\n\n{}", &text[..start], &text[end..]);
    let cfg = write_config(tmp, &format!("{name}.toml"), &text);
    train_in(tmp, &cfg, name);
}

/// A LoRA run of 3 steps over `base` with `sets`; its final val loss.
fn lora_run(tmp: &Path, base: &str, model: &str, targets: &str, sets: &[&str]) -> f64 {
    let text = LORA
        .replace("from = \"run\"", &format!("from = \"{base}\""))
        .replace(
            r#"targets = ["q", "v", "gate", "down"]"#,
            &format!("targets = {targets}"),
        )
        .replace("max_steps = 24", "max_steps = 3");
    let start = text.find("[model]").expect("model");
    let end = text.find("[init]").expect("init");
    let text = format!("{}{model}\n\n{}", &text[..start], &text[end..]);
    let tag: String = sets
        .concat()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let name = format!("lora-{base}-{tag}");
    let cfg = write_config(tmp, &format!("{name}.toml"), &text);
    let mut cmd = kiln();
    cmd.arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg(&name)
        .current_dir(tmp);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    let o = run(&mut cmd);
    assert!(o.status.success(), "{base} {sets:?}: {}", stderr(&o));
    let saved = kiln_trainer::weights::load(&ckpt(&tmp.join(&name), 3).join("model.safetensors"))
        .expect("adapters");
    assert!(
        saved.keys().all(|k| kiln_models::is_adapter_name(k)),
        "{base}: {:?}",
        saved.keys()
    );
    let val = metric(&tmp.join(&name), "val/loss");
    let last = val.last().expect("val loss").1;
    assert!(last.is_finite(), "{base} {sets:?}: val loss {last}");
    last
}

/// LoRA on Mamba and RWKV-7 blocks, and on a Llama in every precision mode.
#[test]
fn lora_trains_every_architecture_and_precision() {
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    setup(tmp, LORA);
    let llama = "[model]\ndim = 32\nn_layers = 2\nn_heads = 4\nn_kv_heads = 2\nffn_dim = 64\nmax_seq_len = 32";
    let mamba = "[model]\narch = \"mamba\"\ndim = 32\nn_layers = 2\nd_state = 4\nmax_seq_len = 32";
    let rwkv = "[model]\narch = \"rwkv7\"\ndim = 32\nn_layers = 2\nhead_size = 8\nmax_seq_len = 32";
    base_of(tmp, "mamba", mamba);
    base_of(tmp, "rwkv", rwkv);
    lora_run(
        tmp,
        "mamba",
        mamba,
        r#"["in_proj", "x_proj", "dt_proj", "out_proj"]"#,
        &[],
    );
    lora_run(
        tmp,
        "rwkv",
        rwkv,
        r#"["receptance", "key", "value", "output"]"#,
        &[],
    );
    for p in ["bf16-mixed", "fp16-mixed", "bf16-pure"] {
        let set = format!("training.precision=\"{p}\"");
        lora_run(tmp, "run", llama, r#"["q", "v"]"#, &[&set]);
    }
}

/// bf16-pure LoRA: the frozen base is stored in bf16, the adapters in f32.
#[test]
fn bf16_pure_keeps_f32_adapters_over_a_bf16_base() {
    use burn::tensor::DType;
    let text = LORA
        .replace("max_seq_len = 32", "max_seq_len = 32\nvocab_size = 40")
        .replace("seed = 7", "seed = 7\nprecision = \"bf16-pure\"");
    let cfg: kiln_trainer::config::RunConfig = toml::from_str(&text).expect("config");
    let dev = Default::default();
    let (mut model, stepper) = kiln_trainer::run::setup::build_parts::<Autodiff<Flex>>(
        &cfg,
        &dev,
        None,
        kiln_trainer::run::setup::single_process(),
    )
    .expect("parts");
    assert!(stepper
        .table
        .infos
        .iter()
        .all(|p| kiln_models::is_adapter_name(&p.name)));
    let mut adapted = 0;
    for (path, l) in model.linears_mut() {
        assert_eq!(l.weight.val().dtype(), DType::BF16, "{path} base");
        if let Some(lora) = &l.lora {
            assert_eq!(lora.a.val().dtype(), DType::F32, "{path} A");
            assert_eq!(lora.b.val().dtype(), DType::F32, "{path} B");
            adapted += 1;
        }
    }
    assert_eq!(adapted, 8, "q, v, gate, down in 2 layers");
}

/// Prepared instruction data (`kiln data prepare-instruct`) trains exactly as
/// the instruction file it was prepared from; a different tokenizer or
/// `seq_len` is refused, and a corrupted file is caught by its hash.
#[test]
fn prepared_instruction_data_trains_as_its_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    let cfg = setup(tmp, &LORA.replace("max_steps = 24", "max_steps = 6"));
    let o = run(kiln()
        .args(["data", "prepare-instruct", "lora.toml", "--out", "prep"])
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let prepared = LORA
        .replace("max_steps = 24", "max_steps = 6")
        .replace("train = \"inst.jsonl\"", "datasets = [\"prep\"]");
    let pcfg = write_config(tmp, "prep.toml", &prepared);
    train_in(tmp, &cfg, "files");
    train_in(tmp, &pcfg, "prepared");
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(ckpt(&tmp.join("files"), 6).join(file)).expect("files");
        let b = std::fs::read(ckpt(&tmp.join("prepared"), 6).join(file)).expect("prepared");
        assert!(a == b, "{file}: prepared data trained differently");
    }
    let seq = prepared.replace("seq_len = 32", "seq_len = 16");
    write_config(tmp, "seq.toml", &seq);
    fails_with(
        &["train", "seq.toml", "--run-dir", "s"],
        tmp,
        &["data.seq_len", "prepared for 32"],
    );
    let bin = tmp.join("prep/train.bin");
    let mut bytes = std::fs::read(&bin).expect("bin");
    bytes[10] ^= 1;
    std::fs::write(&bin, bytes).expect("write");
    fails_with(
        &["train", "prep.toml", "--run-dir", "c"],
        tmp,
        &["train.bin", "SHA-256"],
    );
}

/// `kiln eval --qa`: each greedy answer is what `kiln generate` (greedy)
/// continues the template-rendered prompt with, up to the assistant's
/// suffix; the summary counts the predictions that equal the answers.
#[test]
fn qa_exact_match_agrees_with_greedy_generation() {
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    let cfg = setup(tmp, &LORA.replace("max_steps = 24", "max_steps = 8"));
    train_in(tmp, &cfg, "lr");
    let o = run(kiln()
        .args(["eval", "lr", "--qa", "inst.jsonl", "--max-new-tokens", "12"])
        .args(["--predictions-out", "p.jsonl"])
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value =
        serde_json::from_str(crate::common::stdout(&o).trim()).expect("json");
    let preds: Vec<serde_json::Value> = std::fs::read_to_string(tmp.join("p.jsonl"))
        .expect("predictions")
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    assert_eq!(preds.len(), 48);
    let correct = preds.iter().filter(|p| p["correct"] == true).count();
    assert_eq!(summary["correct"].as_u64(), Some(correct as u64));
    // The first example of each layout, through `kiln generate`.
    let questions = ["what has tom?", "name the pet of lily.", "who has a cat?"];
    for (i, q) in questions.iter().enumerate() {
        let prompt = format!("Ask\n{q}\nAnswer\n");
        let o = run(kiln()
            .args([
                "generate",
                "lr",
                "--temperature",
                "0",
                "--max-new-tokens",
                "12",
            ])
            .args(["--prompt", &prompt])
            .current_dir(tmp));
        assert!(o.status.success(), "{}", stderr(&o));
        let text = crate::common::stdout(&o);
        let cont = text.strip_prefix(&prompt).expect("prompt echoed");
        let got = preds[i]["got"].as_str().expect("got");
        assert!(
            cont.starts_with(got),
            "example {i}: qa {got:?} vs generate {cont:?}"
        );
        let rest = &cont[got.len()..];
        assert!(
            rest.starts_with('\n') || got.chars().count() >= 12 || rest.trim().is_empty(),
            "{rest:?}"
        );
    }
}

/// Instruction data with full fine-tuning (no `[adapter]`): a full
/// checkpoint, and the answers' loss falls.
#[test]
fn instruction_data_full_fine_tuning() {
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    let text = LORA
        .replace("[adapter]\nr = 4\nalpha = 8\ndropout = 0.1\ntargets = [\"q\", \"v\", \"gate\", \"down\"]\n", "")
        .replace("eval_every = 8", "eval_every = 12");
    assert!(!text.contains("[adapter]"));
    let cfg = setup(tmp, &text);
    train_in(tmp, &cfg, "full");
    let manifest =
        std::fs::read_to_string(ckpt(&tmp.join("full"), 24).join("manifest.json")).expect("m");
    assert!(manifest.contains("\"full\""), "{manifest}");
    let val = metric(&tmp.join("full"), "val/loss");
    assert_eq!(val.len(), 2);
    assert!(val[1].1 < val[0].1, "answer loss should fall: {val:?}");
}
