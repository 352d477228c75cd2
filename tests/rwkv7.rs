//! RWKV-7: logit and element-wise gradient parity with the reference
//! implementation of RWKV-v7 (fixtures from tests/reference/rwkv7_parity.py,
//! whose self-checks tie that reference to the `rwkv` pip package), the fused
//! WKV kernel and its composed fallback against the reference's WKV, the
//! official-layout round trip, and recurrent generation against the full
//! forward, alone and in hybrid stacks.

use std::collections::BTreeMap;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData, TensorPrimitive};
use kiln_models::decoder::BlockCache;
use kiln_models::ops::{composed, wkv7};
use kiln_models::rwkv7::{export_rwkv7, import_rwkv7};
use kiln_models::{
    load_named_tensors, named_tensors, Decoder, LanguageModel, ModelConfig, NamedTensor,
};
use kiln_trainer::grads::{GradStore, ParamTable};
use kiln_trainer::loss::cross_entropy;
use kiln_trainer::weights;

use crate::common::{assert_grads_match, assert_logits_close, fixtures};

type AB = Autodiff<Flex>;

fn to_vec<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().expect("f32 data")
}

/// The `[model]` section of the tiny fixture, as a user would write it.
fn fixture_config() -> ModelConfig {
    let dir = fixtures().join("rwkv7").join("tiny");
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config.json"))
            .expect("json");
    let get = |k: &str| {
        c[k].as_u64()
            .unwrap_or_else(|| panic!("config.json lacks {k}"))
    };
    let text = format!(
        "arch = \"rwkv7\"\nvocab_size = {}\ndim = {}\nn_layers = {}\nhead_size = {}\n\
         rwkv_ffn_dim = {}\ndecay_lora = {}\naaa_lora = {}\nmv_lora = {}\ngate_lora = {}\n\
         max_seq_len = 64\ntie_embeddings = false\n",
        get("vocab_size"),
        get("n_embd"),
        get("n_layer"),
        get("head_size"),
        get("dim_ffn"),
        get("d_decay_lora"),
        get("d_aaa_lora"),
        get("d_mv_lora"),
        get("d_gate_lora"),
    );
    toml::from_str(&text).expect("model config")
}

fn fixture_weights() -> BTreeMap<String, NamedTensor> {
    let dir = fixtures().join("rwkv7").join("tiny");
    weights::load(&dir.join("model.safetensors")).expect("fixture weights")
}

fn check_parity(fused: bool) {
    let dir = fixtures().join("rwkv7").join("tiny");
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("golden.json")).expect("golden"))
            .expect("json");
    let cfg = fixture_config();
    let official = fixture_weights();
    let ckpt = import_rwkv7(&official);
    assert_eq!(
        export_rwkv7(&ckpt),
        official,
        "export is the exact inverse of import"
    );

    let dev = Default::default();
    let model = Decoder::<AB>::new(&cfg, &dev)
        .expect("model")
        .with_fused(fused);
    assert_eq!(
        cfg.num_params(),
        official.values().map(|t| t.data.len()).sum::<usize>(),
        "num_params counts the reference's tensors"
    );
    let model = load_named_tensors(model, &ckpt, "rwkv7 fixture").expect("load");
    let rows: Vec<Vec<i64>> = serde_json::from_value(golden["tokens"].clone()).expect("tokens");
    let (b, t) = (rows.len(), rows[0].len());
    let tokens = Tensor::<AB, 2, Int>::from_data(TensorData::new(rows.concat(), [b, t]), &dev);
    let logits = model.forward(tokens.clone());
    let want: Vec<f64> = serde_json::from_value::<Vec<Vec<Vec<f64>>>>(golden["logits"].clone())
        .expect("logits")
        .concat()
        .concat();
    let label = format!("rwkv7 (fused {fused})");
    assert_logits_close(&to_vec(logits.clone().inner()), &want, &label);

    let v = cfg.vocab_size;
    let loss = cross_entropy(
        logits.slice([0..b, 0..t - 1, 0..v]),
        tokens.slice([0..b, 1..t]),
        fused,
    );
    let loss_val: f32 = loss.clone().into_scalar().elem();
    let want_loss = golden["loss"].as_f64().expect("loss");
    assert!(
        (loss_val as f64 - want_loss).abs() < 1e-5,
        "loss {loss_val} vs {want_loss}"
    );

    let want_grads = import_rwkv7(&weights::load(&dir.join("grads.safetensors")).expect("grads"));
    let table = ParamTable::new::<AB, _>(&model);
    let mut grads = GradStore::default();
    grads.accumulate::<AB, _>(&model, &table, loss.backward());
    assert_grads_match(&grads.grads, &want_grads, &label);
}

#[test]
fn rwkv7_matches_reference_fused() {
    check_parity(true);
}

#[test]
fn rwkv7_matches_reference_unfused() {
    check_parity(false);
}

/// `max |a - b| / max(max |b|, 1)`.
fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// The fused WKV (Flex kernel + hand-written backward) and the composed
/// fallback (what GPU backends run) against the reference's WKV values and
/// gradients (`tests/fixtures/rwkv7/wkv`: B 2, T 9, H 2, N 8).
#[test]
fn wkv_kernel_and_fallback_match_reference() {
    let t = weights::load(&fixtures().join("rwkv7").join("wkv").join("wkv.safetensors"))
        .expect("wkv fixture");
    let dev = Default::default();
    let tensor = |name: &str| -> Tensor<Flex, 3> {
        let x = &t[name];
        Tensor::from_data(
            TensorData::new(x.data.clone(), [x.shape[0], x.shape[1], x.shape[2]]),
            &dev,
        )
    };
    let names = ["r", "w", "k", "v", "a", "b"];
    let inputs: Vec<Tensor<AB, 3>> = names
        .iter()
        .map(|n| Tensor::from_inner(tensor(n)).require_grad())
        .collect();
    let head_size = 8;
    let y = wkv7(
        inputs[0].clone(),
        inputs[1].clone(),
        inputs[2].clone(),
        inputs[3].clone(),
        inputs[4].clone(),
        inputs[5].clone(),
        head_size,
    );
    let gy = tensor("gy");
    let grads = (y.clone() * Tensor::from_inner(gy.clone()))
        .sum()
        .backward();
    let err = max_rel(&to_vec(y.inner()), &t["y"].data);
    assert!(err < 1e-5, "fused y differs by {err:.2e}");
    for (n, x) in names.iter().zip(&inputs) {
        let g = to_vec(x.grad(&grads).expect("grad"));
        let err = max_rel(&g, &t[&format!("d{n}")].data);
        assert!(err < 1e-5, "fused d{n} differs by {err:.2e}");
    }
    // The composed fallback, forward and backward.
    let prim = |n: &str| tensor(n).into_primitive().tensor();
    let [r, w, k, v, a, b] = names.map(prim);
    let y = composed::wkv7_fwd::<Flex>(
        r.clone(),
        w.clone(),
        k.clone(),
        v.clone(),
        a.clone(),
        b.clone(),
        head_size,
    );
    let as_vec = |p| to_vec(Tensor::<Flex, 3>::from_primitive(TensorPrimitive::Float(p)));
    let err = max_rel(&as_vec(y), &t["y"].data);
    assert!(err < 1e-5, "composed y differs by {err:.2e}");
    let gs = composed::wkv7_bwd::<Flex>(r, w, k, v, a, b, gy.into_primitive().tensor(), head_size);
    for (n, g) in names.iter().zip(gs) {
        let err = max_rel(&as_vec(g), &t[&format!("d{n}")].data);
        assert!(err < 1e-5, "composed d{n} differs by {err:.2e}");
    }
}

/// Prefill 3 tokens, then one at a time: the logits equal the full forward's
/// at every position, and every RWKV state keeps its fixed size.
fn step_by_step_equals_full(model: &Decoder<Flex>, cfg: &ModelConfig) {
    let dev = Default::default();
    let len = 20;
    let ids: Vec<i64> = (0..2 * len)
        .map(|i| ((i * 7 + 3) % cfg.vocab_size) as i64)
        .collect();
    let full = model.forward(Tensor::<Flex, 2, Int>::from_data(
        TensorData::new(ids.clone(), [2, len]),
        &dev,
    )); // [2, len, V]
    let mut cache = model.new_cache();
    let col = |lo: usize, hi: usize| {
        let v: Vec<i64> = (0..2)
            .flat_map(|r| ids[r * len + lo..r * len + hi].to_vec())
            .collect();
        Tensor::<Flex, 2, Int>::from_data(TensorData::new(v, [2, hi - lo]), &dev)
    };
    let mut pieces = vec![model.forward_cached(col(0, 3), &mut cache)];
    for i in 3..len {
        pieces.push(model.forward_cached(col(i, i + 1), &mut cache));
    }
    let (c, n) = (cfg.dim, cfg.head_size);
    let mut rwkv_slots = 0;
    for slot in &cache.slots {
        if let BlockCache::Rwkv(s) = slot {
            rwkv_slots += 1;
            assert_eq!(s.att_x.as_ref().expect("att shift").dims(), [2, c]);
            assert_eq!(s.ffn_x.as_ref().expect("ffn shift").dims(), [2, c]);
            assert_eq!(s.wkv.as_ref().expect("wkv state").dims(), [2, c / n, n, n]);
        }
    }
    assert!(rwkv_slots > 0);
    let scale: f32 = full.clone().abs().max().into_scalar().elem();
    let diff: f32 = (full - Tensor::cat(pieces, 1))
        .abs()
        .max()
        .into_scalar()
        .elem();
    println!(
        "{:?}: step-by-step vs full max diff {diff:.3e} (scale {scale:.2})",
        cfg.block_kinds()
    );
    assert!(
        diff < 1e-5 * scale.max(1.0),
        "recurrent logits differ by {diff}"
    );
}

#[test]
fn rwkv7_recurrent_generation_equals_full_forward() {
    let cfg = fixture_config();
    let model = Decoder::<Flex>::new(&cfg, &Default::default()).expect("model");
    let model =
        load_named_tensors(model, &import_rwkv7(&fixture_weights()), "fixture").expect("load");
    step_by_step_equals_full(&model, &cfg);
}

/// Every parameter moved off its init (train_temp zeroes the output
/// projections, which would make an RWKV block the identity).
fn perturbed(cfg: &ModelConfig) -> Decoder<Flex> {
    let model = Decoder::<Flex>::new(cfg, &Default::default()).expect("model");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.4
    };
    let tensors: BTreeMap<String, NamedTensor> = named_tensors(&model)
        .into_iter()
        .map(|(name, mut t)| {
            t.data.iter_mut().for_each(|x| *x += noise());
            (name, t)
        })
        .collect();
    load_named_tensors(model, &tensors, "perturbed").expect("load")
}

#[test]
fn hybrid_stacks_with_rwkv_generate_recurrently() {
    for text in [
        // RWKV first (it makes v_first and has ln0), then attention and Mamba.
        "arch = \"rwkv7\"\nvocab_size = 37\ndim = 32\nn_layers = 4\nhead_size = 8\nn_heads = 4\nffn_dim = 64\nd_state = 4\nmax_seq_len = 32\nblocks = [\"rwkv\", \"attention\", \"mamba\", \"rwkv\"]\ntie_embeddings = false\n",
        // A Llama stack with RWKV blocks in the middle: no ln0, LoRA ranks by default.
        "arch = \"llama\"\nvocab_size = 37\ndim = 32\nn_layers = 3\nhead_size = 16\nn_heads = 4\nffn_dim = 64\nmax_seq_len = 32\nblocks = [\"attention\", \"rwkv\", \"rwkv\"]\n",
    ] {
        let cfg: ModelConfig = toml::from_str(text).expect("config");
        let model = perturbed(&cfg);
        step_by_step_equals_full(&model, &cfg);
    }
}
