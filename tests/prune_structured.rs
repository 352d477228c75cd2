//! Structured (Minitron) pruning: slicing checked against its independent
//! reference (removing heads, channels and blocks equals zeroing them in the
//! original model), keeping everything reproducing the logits exactly, the
//! activation importance ranking on constructed dead units, `kiln prune
//! --structured` end to end (eval, generate, export, a `[distill]` healing
//! run from it), and every bad input as one line with exit 2.

use std::collections::BTreeMap;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use kiln_data::Batch;
use kiln_models::prune_structured::{select_heads, slice_llama, top_k, HeadKeep, Keep};
use kiln_models::{
    load_named_tensors, named_tensors, Decoder, LanguageModel, ModelConfig, NamedTensor,
};
use kiln_trainer::prune_structured::importance;

use crate::common::{
    ckpt, fails_with, kiln, metric, run, stderr, stdout, train_tiny, write_config, TINY,
};

fn config(text: &str) -> ModelConfig {
    toml::from_str(text).expect("model config")
}

/// A small deterministic pseudo-random stream in [-1, 1).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn model_with(cfg: &ModelConfig, w: &BTreeMap<String, NamedTensor>) -> Decoder<Flex> {
    let m = Decoder::<Flex>::new(cfg, &Default::default()).expect("model");
    load_named_tensors(m, w, "test weights").expect("load")
}

fn logits(model: &Decoder<Flex>, tokens: &[i64], b: usize, t: usize) -> Vec<f32> {
    let x = Tensor::<Flex, 2, Int>::from_data(
        TensorData::new(tokens.to_vec(), [b, t]),
        &Default::default(),
    );
    model
        .forward(x)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("logits")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Random weights for `cfg` (norm weights too, so their slicing and scaling
/// are exercised).
fn random_weights(cfg: &ModelConfig, seed: u64) -> BTreeMap<String, NamedTensor> {
    let m = Decoder::<Flex>::new(cfg, &Default::default()).expect("model");
    let mut w = named_tensors(&m);
    for (i, (name, t)) in w.iter_mut().enumerate() {
        let r = noise(seed + i as u64, t.data.len());
        for (x, n) in t.data.iter_mut().zip(r) {
            *x = if name.contains("norm") {
                1.0 + 0.5 * n
            } else {
                0.3 * n
            };
        }
    }
    w
}

/// The original weights with everything `keep` drops set to zero: dropped
/// heads' rows of `o_proj`, dropped channels' rows of `down_proj`, dropped
/// blocks' `o_proj` and `down_proj` (the block becomes the identity), and
/// dropped embedding channels in the embedding and every residual write.
fn zeroed(
    cfg: &ModelConfig,
    w: &BTreeMap<String, NamedTensor>,
    keep: &Keep,
) -> BTreeMap<String, NamedTensor> {
    let mut z = w.clone();
    let (d, hd) = (cfg.dim, cfg.head_dim());
    let zero_rows = |t: &mut NamedTensor, rows: &dyn Fn(usize) -> bool| {
        let c = t.shape[1];
        for r in 0..t.shape[0] {
            if rows(r) {
                t.data[r * c..(r + 1) * c].fill(0.0);
            }
        }
    };
    let zero_cols = |t: &mut NamedTensor, cols: &dyn Fn(usize) -> bool| {
        let c = t.shape[1];
        for (k, x) in t.data.iter_mut().enumerate() {
            if cols(k % c) {
                *x = 0.0;
            }
        }
    };
    let gone_dim = |c: usize| !keep.dim.contains(&c);
    for l in 0..cfg.n_layers {
        let o = format!("model.layers.{l}.self_attn.o_proj.weight");
        let down = format!("model.layers.{l}.mlp.down_proj.weight");
        match keep.layers.iter().position(|&k| k == l) {
            None => {
                z.get_mut(&o).expect("tensor").data.fill(0.0);
                z.get_mut(&down).expect("tensor").data.fill(0.0);
            }
            Some(j) => {
                let q = &keep.heads[j].q;
                zero_rows(z.get_mut(&o).expect("tensor"), &|r| !q.contains(&(r / hd)));
                let f = &keep.ffn[j];
                zero_rows(z.get_mut(&down).expect("tensor"), &|r| !f.contains(&r));
            }
        }
        zero_cols(z.get_mut(&o).expect("tensor"), &gone_dim);
        zero_cols(z.get_mut(&down).expect("tensor"), &gone_dim);
    }
    zero_cols(
        z.get_mut("model.embed_tokens.weight").expect("tensor"),
        &gone_dim,
    );
    assert_eq!(z["model.embed_tokens.weight"].shape[1], d);
    z
}

#[test]
fn slicing_equals_zeroing_in_the_original_and_keeping_all_is_exact() {
    let tokens: Vec<i64> = noise(99, 2 * 12)
        .iter()
        .map(|x| ((x + 1.0) * 20.0) as i64 % 40)
        .collect();
    let cases = [
        // Tied head, GQA: thin every group to one query head.
        (
            "vocab_size = 40\ndim = 32\nn_layers = 3\nn_heads = 4\nn_kv_heads = 2\nffn_dim = 48\nmax_seq_len = 16\n",
            vec![HeadKeep { kv: vec![0, 1], q: vec![0, 3] }, HeadKeep { kv: vec![0, 1], q: vec![1, 2] }],
        ),
        // Untied head, shared blocks (MobileLLM-LS), whole kv groups dropped.
        (
            "vocab_size = 40\ndim = 32\nn_layers = 3\nn_heads = 4\nn_kv_heads = 2\nffn_dim = 48\nmax_seq_len = 16\ntie_embeddings = false\nshare_repeat = 2\n",
            vec![HeadKeep { kv: vec![1], q: vec![2, 3] }, HeadKeep { kv: vec![0], q: vec![0, 1] }],
        ),
    ];
    for (case, (text, heads)) in cases.into_iter().enumerate() {
        let cfg = config(text);
        let w = random_weights(&cfg, 10 + case as u64);
        let original = logits(&model_with(&cfg, &w), &tokens, 2, 12);

        // Keeping everything: the same tensors, bitwise the same logits.
        let (same_cfg, same, _) = slice_llama(&cfg, &w, None, &Keep::all(&cfg)).expect("keep all");
        assert_eq!(same_cfg, cfg, "case {case}");
        assert_eq!(same, w, "case {case}");
        let again = logits(&model_with(&same_cfg, &same), &tokens, 2, 12);
        println!(
            "case {case}: keep all: max |diff| = {}",
            max_diff(&again, &original)
        );
        assert!(
            again == original,
            "case {case}: keeping all changed the logits"
        );

        // Block 1 dropped, heads as given, 24 of 48 channels, 24 of 32 dims.
        let ffn_a: Vec<usize> = (0..48).filter(|c| c % 2 == 0).collect();
        let ffn_b: Vec<usize> = (0..48).filter(|c| c % 4 != 1 && c % 4 != 2).collect();
        let keep = Keep {
            layers: vec![0, 2],
            heads,
            ffn: vec![ffn_a, ffn_b],
            dim: (0..32).filter(|c| c % 4 != 3).collect(),
        };
        let (pcfg, pw, _) = slice_llama(&cfg, &w, None, &keep).expect("slice");
        assert_eq!(
            (
                pcfg.dim,
                pcfg.n_layers,
                pcfg.n_heads,
                pcfg.kv_heads(),
                pcfg.ffn_dim,
                pcfg.head_dim()
            ),
            (24, 2, 2, keep.heads[0].kv.len(), 24, 8)
        );
        let pruned = logits(&model_with(&pcfg, &pw), &tokens, 2, 12);
        // The reference: the original shape, dropped parts zero, and the
        // norms' eps scaled as slice_llama's sqrt(dim / kept) weight scale implies.
        let zcfg = ModelConfig {
            norm_eps: cfg.norm_eps * 24.0 / 32.0,
            ..cfg.clone()
        };
        let reference = logits(&model_with(&zcfg, &zeroed(&cfg, &w, &keep)), &tokens, 2, 12);
        let diff = max_diff(&pruned, &reference);
        let moved = max_diff(&pruned, &original);
        println!("case {case}: pruned vs zeroed original: max |diff| = {diff:e} (vs the unpruned model: {moved:.3})");
        assert!(diff < 1e-5, "case {case}: {diff}");
        assert!(moved > 1e-2, "case {case}: pruning must change something");
    }
}

#[test]
fn importance_ranks_constructed_dead_units_lowest() {
    let cfg = config("vocab_size = 40\ndim = 32\nn_layers = 3\nn_heads = 4\nn_kv_heads = 2\nffn_dim = 48\nmax_seq_len = 16\n");
    let mut w = random_weights(&cfg, 3);
    let cols = |t: &mut NamedTensor, keep: &dyn Fn(usize) -> bool| {
        let c = t.shape[1];
        for (k, x) in t.data.iter_mut().enumerate() {
            if !keep(k % c) {
                *x = 0.0;
            }
        }
    };
    // Block 0: kv head 1's values zero (query heads 2, 3 output nothing);
    // SwiGLU channel 5's gate zero (silu(0) * up = 0).
    cols(
        w.get_mut("model.layers.0.self_attn.v_proj.weight")
            .expect("tensor"),
        &|c| c < 8,
    );
    cols(
        w.get_mut("model.layers.0.mlp.gate_proj.weight")
            .expect("tensor"),
        &|c| c != 5,
    );
    // Block 1 writes nothing: the identity (block importance 0).
    for p in ["self_attn.o_proj", "mlp.down_proj"] {
        w.get_mut(&format!("model.layers.1.{p}.weight"))
            .expect("tensor")
            .data
            .fill(0.0);
    }
    // Embedding channel 7 is never written: every norm outputs 0 there.
    cols(
        w.get_mut("model.embed_tokens.weight").expect("tensor"),
        &|c| c != 7,
    );
    for l in 0..3 {
        for p in ["self_attn.o_proj", "mlp.down_proj"] {
            cols(
                w.get_mut(&format!("model.layers.{l}.{p}.weight"))
                    .expect("tensor"),
                &|c| c != 7,
            );
        }
    }
    let mut model = model_with(&cfg, &w);
    let inputs: Vec<u32> = noise(5, 3 * 16)
        .iter()
        .map(|x| ((x + 1.0) * 20.0) as u32 % 40)
        .collect();
    let batch = Batch {
        targets: inputs.clone(),
        inputs,
        batch_size: 3,
        seq_len: 16,
        origins: Vec::new(),
    };
    let imp = importance(&mut model, &[batch]).expect("importance");
    println!("heads of block 0: {:?}", imp.heads[0]);
    println!(
        "ffn of block 0, channel 5: {} (min of the others {})",
        imp.ffn[0][5],
        imp.ffn[0]
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 5)
            .map(|(_, v)| *v)
            .fold(f64::MAX, f64::min)
    );
    println!("dim: {:?}", imp.dim);
    println!("blocks: {:?}", imp.blocks);
    assert_eq!(imp.tokens, 48);
    assert_eq!((imp.heads[0][2], imp.heads[0][3]), (0.0, 0.0));
    assert!(imp.heads[0][0] > 0.0 && imp.heads[0][1] > 0.0);
    assert_eq!(
        select_heads(&imp.heads[0], 2, 1, 2),
        HeadKeep {
            kv: vec![0],
            q: vec![0, 1]
        }
    );
    assert_eq!(imp.ffn[0][5], 0.0);
    assert_eq!(
        top_k(&imp.ffn[0], 47),
        (0..48).filter(|&c| c != 5).collect::<Vec<_>>()
    );
    assert_eq!(imp.dim[7], 0.0);
    assert_eq!(
        top_k(&imp.dim, 31),
        (0..32).filter(|&c| c != 7).collect::<Vec<_>>()
    );
    assert!(imp.blocks[1].abs() < 1e-6, "{:?}", imp.blocks);
    assert_eq!(top_k(&imp.blocks, 2), vec![0, 2]);
}

fn tensors(path: &std::path::Path) -> BTreeMap<String, NamedTensor> {
    kiln_trainer::weights::load(path).expect("safetensors")
}

#[test]
fn structured_prune_cli_halves_a_model_that_evals_and_heals_by_distillation() {
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    train_tiny(tmp, 8);
    // Keeping every block (all that --layers can ask of this model) changes nothing.
    let o = run(kiln()
        .args([
            "prune",
            "run",
            "--out",
            "same",
            "--structured",
            "--layers",
            "2",
        ])
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        tensors(&ckpt(&tmp.join("same"), 8).join("model.safetensors")),
        tensors(&ckpt(&tmp.join("run"), 8).join("model.safetensors"))
    );

    let o = run(kiln()
        .args(["prune", "run", "--out", "pruned", "--structured"])
        .args([
            "--heads",
            "2",
            "--ffn-dim",
            "32",
            "--dim",
            "24",
            "--calib-batches",
            "2",
        ])
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    println!("{out}");
    assert!(out.contains("blocks: kept [0 1] of 2"), "{out}");
    assert!(
        out.contains("(kv heads [0 1] of 2), ffn 32 of 64 channels"),
        "{out}"
    );
    assert!(out.contains("dim: 24 of 32 channels"), "{out}");
    assert!(
        out.contains("[model] dim = 24, n_layers = 2, n_heads = 2, n_kv_heads = 2, head_dim = 8, ffn_dim = 32"),
        "{out}"
    );
    let params = out
        .lines()
        .find_map(|l| l.strip_prefix("params: "))
        .expect("params line");
    let (before, after) = params.split_once(" -> ").expect("before -> after");
    let before: f64 = before.parse().expect("before");
    let after: f64 = after
        .split_whitespace()
        .next()
        .expect("after")
        .parse()
        .expect("after");
    assert!((0.4..0.6).contains(&(after / before)), "{params}");

    let pruned = ckpt(&tmp.join("pruned"), 8);
    let model = tensors(&pruned.join("model.safetensors"));
    assert_eq!(
        model["model.layers.0.self_attn.q_proj.weight"].shape,
        vec![24, 16]
    );
    assert_eq!(
        model["model.layers.1.mlp.down_proj.weight"].shape,
        vec![32, 24]
    );
    let o = run(kiln().args(["eval", "pruned"]).current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("eval JSON");
    let pruned_loss = v["loss"].as_f64().expect("eval loss");
    assert!(pruned_loss.is_finite(), "{v}");
    let o = run(kiln()
        .args([
            "generate",
            "pruned",
            "--prompt",
            "Once",
            "--max-new-tokens",
            "8",
        ])
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(kiln()
        .args(["export", "pruned", "--out", "hf"])
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let hf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.join("hf/config.json")).expect("config.json"))
            .expect("json");
    assert_eq!(
        (
            hf["hidden_size"].as_u64(),
            hf["num_attention_heads"].as_u64(),
            hf["head_dim"].as_u64()
        ),
        (Some(24), Some(2), Some(8))
    );

    // Depth and whole kv groups: one block, one group of two query heads.
    let o = run(kiln()
        .args(["prune", "run", "--out", "deep", "--structured"])
        .args(["--kv-heads", "1", "--layers", "1", "--calib-batches", "2"])
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    println!("{out}");
    assert!(
        out.contains("blocks: kept [0] of 2") || out.contains("blocks: kept [1] of 2"),
        "{out}"
    );
    assert!(
        out.contains("(kv heads [0] of 2)") || out.contains("(kv heads [1] of 2)"),
        "{out}"
    );
    assert!(
        out.contains("[model] dim = 32, n_layers = 1, n_heads = 2, n_kv_heads = 1, head_dim = 8, ffn_dim = 64"),
        "{out}"
    );
    let o = run(kiln().args(["eval", "deep"]).current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));

    // Healing: the pruned model as the student of the unpruned one.
    let student = TINY
        .replace("max_steps = 24", "max_steps = 16")
        .replace("dim = 32\n", "dim = 24\nhead_dim = 8\n")
        .replace("n_heads = 4", "n_heads = 2")
        .replace("ffn_dim = 64", "ffn_dim = 32");
    let cfg = write_config(
        tmp,
        "heal.toml",
        &format!("{student}\n[init]\nfrom = \"pruned\"\n\n[distill]\nteacher = \"run\"\n"),
    );
    let o = run(kiln()
        .arg("train")
        .arg(&cfg)
        .args(["--run-dir", "heal"])
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let loss: Vec<f64> = metric(&tmp.join("heal"), "train/loss")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    println!("healing loss: {loss:?}");
    assert_eq!(loss.len(), 16);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&loss[13..]) < mean(&loss[..3]),
        "healing must lower the loss: {loss:?}"
    );
    let o = run(kiln().args(["eval", "heal"]).current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("eval JSON");
    let healed = v["loss"].as_f64().expect("eval loss");
    println!("validation loss: pruned {pruned_loss:.4}, healed {healed:.4}");
    assert!(
        healed < pruned_loss,
        "healed {healed} vs pruned {pruned_loss}"
    );
}

#[test]
fn structured_prune_bad_input_is_one_line_with_exit_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    let check = |extra: &[&str], expect: &[&str]| {
        let mut args = vec!["prune", "run", "--out", "out"];
        args.extend_from_slice(extra);
        fails_with(&args, tmp, expect);
    };
    // Flags are checked before the checkpoint is read.
    check(
        &["--structured"],
        &["--structured", "at least one of --heads"],
    );
    check(
        &["--structured", "--heads", "0"],
        &["--heads", "keep at least one"],
    );
    check(
        &["--structured", "--heads", "2", "--method", "wanda"],
        &["--method", "unstructured"],
    );
    check(
        &["--structured", "--dim", "8", "--sparsity", "0.5"],
        &["--sparsity", "unstructured"],
    );
    check(&["--heads", "2"], &["--heads", "add --structured"]);
    check(&["--sparsity", "0.5"], &["--method", "missing"]);

    train_tiny(tmp, 4); // 2 blocks, 4 heads over 2 kv heads, ffn 64, dim 32
    check(
        &["--structured", "--heads", "1"],
        &["--heads", "zero query heads", "--kv-heads"],
    );
    check(
        &["--structured", "--heads", "3"],
        &["--heads", "does not split evenly"],
    );
    check(
        &["--structured", "--heads", "5"],
        &["--heads", "has 4 attention heads", "at most 4"],
    );
    check(
        &["--structured", "--kv-heads", "3"],
        &["--kv-heads", "at most 2"],
    );
    check(
        &["--structured", "--ffn-dim", "65"],
        &["--ffn-dim", "at most 64"],
    );
    check(&["--structured", "--dim", "33"], &["--dim", "at most 32"]);
    check(
        &["--structured", "--layers", "3"],
        &["--layers", "at most 2"],
    );

    // Architectures it refuses.
    let llama_model = "[model]\ndim = 32\nn_layers = 2\nn_heads = 4\nn_kv_heads = 2\nffn_dim = 64\nmax_seq_len = 32\n";
    for (name, model, expect) in [
        ("mamba", "[model]\narch = \"mamba\"\ndim = 32\nn_layers = 1\nd_state = 8\nmax_seq_len = 32\n", "Llama attention stacks only"),
        ("shared", "[model]\ndim = 32\nn_layers = 2\nn_heads = 4\nffn_dim = 64\nmax_seq_len = 32\nshared_ffn = true\n", "model.shared_ffn"),
    ] {
        let text = TINY.replace(llama_model, model).replace("max_steps = 24", "max_steps = 4");
        let cfg = write_config(tmp, &format!("{name}.toml"), &text);
        let o = run(kiln().arg("train").arg(&cfg).args(["--run-dir", name]).current_dir(tmp));
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        fails_with(
            &["prune", name, "--out", "out", "--structured", "--dim", "16"],
            tmp,
            &["--structured", expect],
        );
    }
    assert!(!tmp.join("out").exists(), "a failed prune wrote nothing");
}
