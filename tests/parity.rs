//! Logit and gradient parity with `transformers.LlamaForCausalLM` on tiny
//! random configs of each decoder variant (fixtures from
//! tests/reference/llama_parity.py), and the HF export round trip.

use std::collections::BTreeMap;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use kiln_models::hf::{export_llama, import_llama};
use kiln_models::{load_named_tensors, Arch, Decoder, LanguageModel, ModelConfig};
use kiln_trainer::grads::{GradStore, ParamTable};
use kiln_trainer::loss::cross_entropy;
use kiln_trainer::weights;

use crate::common::fixtures;

type AB = Autodiff<Flex>;

pub fn config_from_hf(hf: &serde_json::Value, golden: &serde_json::Value) -> ModelConfig {
    let get = |k: &str| {
        hf[k]
            .as_u64()
            .unwrap_or_else(|| panic!("config.json lacks {k}")) as usize
    };
    let repeat = golden["share_repeat"].as_u64().unwrap_or(1) as usize;
    let theta = hf["rope_parameters"]["rope_theta"]
        .as_f64()
        .or(hf["rope_theta"].as_f64())
        .unwrap_or(10000.0);
    ModelConfig {
        arch: Arch::Llama,
        vocab_size: get("vocab_size"),
        dim: get("hidden_size"),
        n_layers: get("num_hidden_layers") / repeat,
        n_heads: get("num_attention_heads"),
        n_kv_heads: Some(get("num_key_value_heads")),
        ffn_dim: get("intermediate_size"),
        max_seq_len: get("max_position_embeddings"),
        rope_theta: theta,
        norm_eps: hf["rms_norm_eps"].as_f64().unwrap_or(1e-5),
        tie_embeddings: hf["tie_word_embeddings"].as_bool().unwrap_or(false),
        share_repeat: repeat,
        shared_ffn: golden["shared_ffn"].as_bool().unwrap_or(false),
        init_std: 0.02,
        ..toml::from_str("dim = 8\nn_layers = 1\nmax_seq_len = 8\n").expect("defaults")
    }
}

/// The HF tensor whose gradient golden.json reports for our parameter.
fn representative(name: &str, repeat: usize) -> String {
    if let Some(tail) = name.strip_prefix("model.shared_mlp.") {
        return format!("model.layers.0.mlp.{tail}");
    }
    if let Some(rest) = name.strip_prefix("model.layers.") {
        let (i, tail) = rest.split_once('.').expect("layer name");
        let i: usize = i.parse().expect("layer index");
        return format!("model.layers.{}.{tail}", i * repeat);
    }
    name.to_string()
}

fn check_variant(variant: &str) {
    check_variant_with(variant, true);
    check_variant_with(variant, false);
}

fn check_variant_with(variant: &str, fused: bool) {
    let dir = fixtures().join("llama").join(variant);
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("golden.json")).expect("golden"))
            .expect("json");
    let hf_cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config"))
            .expect("json");
    let cfg = config_from_hf(&hf_cfg, &golden);
    let hf = weights::load(&dir.join("model.safetensors")).expect("fixture weights");
    let ckpt = import_llama(&cfg, &hf, variant).expect("import");

    // Export is the exact inverse of import: renaming-free, expanded copies.
    let exported = export_llama(&cfg, &ckpt);
    assert_eq!(
        exported.keys().collect::<Vec<_>>(),
        hf.keys().collect::<Vec<_>>(),
        "{variant}: exported names"
    );
    for (k, t) in &hf {
        assert_eq!(&exported[k], t, "{variant}: exported {k}");
    }

    let dev = Default::default();
    let model = load_named_tensors(
        Decoder::<AB>::new(&cfg, &dev)
            .expect("model")
            .with_fused(fused),
        &ckpt,
        variant,
    )
    .expect("load");
    let rows: Vec<Vec<i64>> = serde_json::from_value(golden["tokens"].clone()).expect("tokens");
    let (b, t) = (rows.len(), rows[0].len());
    let ids: Vec<i64> = rows.concat();
    let tokens = Tensor::<AB, 2, Int>::from_data(TensorData::new(ids, [b, t]), &dev);
    let logits = model.forward(tokens.clone());
    let ours: Vec<f32> = logits
        .clone()
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("logits");
    let want: Vec<f64> = golden["logits"]
        .as_array()
        .expect("logits")
        .iter()
        .flat_map(|r| {
            r.as_array().expect("row").iter().flat_map(|c| {
                c.as_array()
                    .expect("col")
                    .iter()
                    .map(|x| x.as_f64().expect("f"))
            })
        })
        .collect();
    assert_eq!(ours.len(), want.len());
    let max_diff = ours
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    println!("{variant}: max |logit diff| = {max_diff:.3e}");
    assert!(max_diff < 1e-4, "{variant}: logits differ by {max_diff}");

    let v = cfg.vocab_size;
    let loss = cross_entropy(
        logits.slice([0..b, 0..t - 1, 0..v]),
        tokens.slice([0..b, 1..t]),
        fused,
    );
    let loss_val: f32 = loss.clone().into_scalar().elem();
    let want_loss = golden["loss"].as_f64().expect("loss");
    println!("{variant}: loss {loss_val} vs {want_loss}");
    assert!((loss_val as f64 - want_loss).abs() < 1e-5);

    let table = ParamTable::new::<AB, _>(&model);
    let mut grads = GradStore::default();
    grads.accumulate::<AB, _>(&model, &table, loss.backward());
    let mut worst = (0.0f64, String::new());
    let mut seen = BTreeMap::new();
    for (name, g) in &grads.grads {
        let norm: f32 = g.clone().powi_scalar(2).sum().sqrt().into_scalar().elem();
        let rep = representative(name, cfg.share_repeat);
        let want = golden["grad_norms_summed"][&rep]
            .as_f64()
            .unwrap_or_else(|| panic!("{variant}: no golden grad for {rep}"));
        let rel = (norm as f64 - want).abs() / want.abs().max(1e-8);
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
        seen.insert(rep, ());
    }
    println!(
        "{variant}: worst relative grad-norm diff {:.3e} ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 < 1e-4,
        "{variant}: gradient of {} differs by {:.3e} relative",
        worst.1,
        worst.0
    );
    assert_eq!(
        seen.len(),
        golden["grad_norms_summed"].as_object().expect("map").len(),
        "{variant}: every parameter has a gradient"
    );
}

#[test]
fn llama_tied_matches_transformers() {
    check_variant("tied");
}

#[test]
fn llama_gqa_untied_matches_transformers() {
    check_variant("gqa");
}

#[test]
fn mobilellm_ls_shared_blocks_match_transformers() {
    check_variant("shared_blocks");
}

#[test]
fn mobillama_shared_ffn_matches_transformers() {
    check_variant("shared_ffn");
}

#[test]
fn kv_cache_generation_equals_full_forward() {
    let dev = Default::default();
    let cfg = ModelConfig {
        share_repeat: 2,
        ..config_from_hf(
            &serde_json::json!({"vocab_size": 61, "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48, "max_position_embeddings": 64, "tie_word_embeddings": true}),
            &serde_json::json!({"share_repeat": 2}),
        )
    };
    let model = Decoder::<Flex>::new(&cfg, &dev).expect("model");
    let ids: Vec<i64> = (0..12).map(|i| (i * 7 % 61) as i64).collect();
    let full = model.forward(Tensor::<Flex, 2, Int>::from_data(
        TensorData::new(ids.clone(), [1, 12]),
        &dev,
    ));
    let mut cache = model.new_cache();
    let mut pieces = vec![model.forward_cached(
        Tensor::from_data(TensorData::new(ids[..5].to_vec(), [1, 5]), &dev),
        &mut cache,
    )];
    for &id in &ids[5..12] {
        pieces.push(model.forward_cached(
            Tensor::from_data(TensorData::new(vec![id], [1, 1]), &dev),
            &mut cache,
        ));
    }
    let inc = Tensor::cat(pieces, 1);
    let diff: f32 = (full - inc).abs().max().into_scalar().elem();
    println!("cached vs full max diff {diff:.3e}");
    assert!(diff < 1e-5);
}
