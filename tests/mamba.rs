//! Mamba-1 and hybrid stacks: logit and element-wise gradient parity with
//! `transformers.MambaForCausalLM` (fixtures from
//! tests/reference/mamba_parity.py), the fused selective scan against the
//! per-timestep version, and recurrent generation against the full forward.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, ElementConversion, Int, Tensor, TensorData};
use kiln_models::decoder::BlockCache;
use kiln_models::hf::{export_mamba, import_mamba};
use kiln_models::mamba::scan_steps;
use kiln_models::ops::{composed, selective_scan};
use kiln_models::{load_named_tensors, Arch, BlockKind, Decoder, LanguageModel, ModelConfig};
use kiln_trainer::grads::{GradStore, ParamTable};
use kiln_trainer::loss::cross_entropy;
use kiln_trainer::weights;

use crate::common::{assert_grads_match, assert_logits_close, fixtures};

type AB = Autodiff<Flex>;

/// A `[model]` section as a user would write it.
fn model_config(toml_text: &str) -> ModelConfig {
    toml::from_str(toml_text).expect("model config")
}

pub(crate) fn config_from_hf(hf: &serde_json::Value) -> ModelConfig {
    let get = |k: &str| {
        hf[k]
            .as_u64()
            .unwrap_or_else(|| panic!("config.json lacks {k}")) as usize
    };
    ModelConfig {
        arch: Arch::Mamba,
        vocab_size: get("vocab_size"),
        dim: get("hidden_size"),
        n_layers: get("num_hidden_layers"),
        d_state: get("state_size"),
        expand: get("expand"),
        d_conv: get("conv_kernel"),
        dt_rank: Some(get("time_step_rank")),
        norm_eps: hf["layer_norm_epsilon"].as_f64().expect("eps"),
        tie_embeddings: hf["tie_word_embeddings"].as_bool().unwrap_or(true),
        ..model_config(
            "arch = \"mamba\"\ndim = 8\nn_layers = 1\nmax_seq_len = 64\nvocab_size = 1\n",
        )
    }
}

fn to_vec<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().expect("f32 data")
}

fn check_parity(fused: bool) {
    let dir = fixtures().join("mamba").join("tiny");
    let read_json = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(f)).expect(f)).expect("json")
    };
    let (golden, hf_cfg) = (read_json("golden.json"), read_json("config.json"));
    let cfg = config_from_hf(&hf_cfg);
    let hf = weights::load(&dir.join("model.safetensors")).expect("fixture weights");
    let ckpt = import_mamba(&hf);
    assert_eq!(
        export_mamba(&ckpt),
        hf,
        "export is the exact inverse of import"
    );

    let dev = Default::default();
    let model = Decoder::<AB>::new(&cfg, &dev)
        .expect("model")
        .with_fused(fused);
    let model = load_named_tensors(model, &ckpt, "mamba fixture").expect("load");
    let rows: Vec<Vec<i64>> = serde_json::from_value(golden["tokens"].clone()).expect("tokens");
    let (b, t) = (rows.len(), rows[0].len());
    let tokens = Tensor::<AB, 2, Int>::from_data(TensorData::new(rows.concat(), [b, t]), &dev);
    let logits = model.forward(tokens.clone());
    let want: Vec<f64> = golden["logits"]
        .as_array()
        .expect("logits")
        .iter()
        .flat_map(|r| r.as_array().expect("row").iter())
        .flat_map(|c| {
            c.as_array()
                .expect("col")
                .iter()
                .map(|x| x.as_f64().expect("f"))
        })
        .collect();
    let label = format!("mamba (fused {fused})");
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

    // Every gradient, element by element (HF layout -> ours as for weights).
    let hf_grads = import_mamba(&weights::load(&dir.join("grads.safetensors")).expect("grads"));
    let table = ParamTable::new::<AB, _>(&model);
    let mut grads = GradStore::default();
    grads.accumulate::<AB, _>(&model, &table, loss.backward());
    assert_grads_match(&grads.grads, &hf_grads, &label);
}

#[test]
fn mamba_matches_transformers_fused() {
    check_parity(true);
}

#[test]
fn mamba_matches_transformers_unfused() {
    check_parity(false);
}

fn rand_t<const D: usize>(shape: [usize; D], lo: f64, hi: f64) -> Tensor<AB, D> {
    Tensor::random(shape, Distribution::Uniform(lo, hi), &Default::default())
}

fn max_rel<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
    let scale: f32 = b.clone().abs().max().into_scalar().elem();
    let diff: f32 = (a - b).abs().max().into_scalar().elem();
    diff / scale.max(1.0)
}

/// The fused scan (Flex kernel + hand-written backward) and the composed
/// fallback backward against burn's autodiff through the per-timestep scan,
/// on shapes that do not divide the kernel's channel chunk, with dt values
/// on both sides of softplus' threshold.
#[test]
fn fused_selective_scan_matches_per_timestep_scan() {
    for (case, &(b, t, d, n)) in [(1, 1, 1, 1), (2, 7, 37, 5), (3, 16, 64, 16), (1, 33, 70, 3)]
        .iter()
        .enumerate()
    {
        let u = rand_t([b, t, d], -2.0, 2.0);
        let dt = rand_t([b, t, d], -6.0, 3.0);
        // A few dt above 20 take softplus' identity branch.
        let dt = if case == 2 {
            dt.clone().mask_fill(dt.greater_elem(2.5), 21.0)
        } else {
            dt
        };
        let a = rand_t([d, n], -2.0, -0.05);
        let bm = rand_t([b, t, n], -1.0, 1.0);
        let cm = rand_t([b, t, n], -1.0, 1.0);
        let dd = rand_t([d], 0.5, 1.5);
        let inputs = (u, dt, a, bm, cm, dd);
        let leaves = || {
            let (u, dt, a, bm, cm, dd) = inputs.clone();
            (
                u.detach().require_grad(),
                dt.detach().require_grad(),
                a.detach().require_grad(),
                bm.detach().require_grad(),
                cm.detach().require_grad(),
                dd.detach().require_grad(),
            )
        };
        let f = leaves();
        let c = leaves();
        let yf = selective_scan(
            f.0.clone(),
            f.1.clone(),
            f.2.clone(),
            f.3.clone(),
            f.4.clone(),
            f.5.clone(),
        );
        let (yc, _) = scan_steps(
            c.0.clone(),
            c.1.clone(),
            c.2.clone(),
            c.3.clone(),
            c.4.clone(),
            c.5.clone(),
            None,
        );
        let mut worst = max_rel(yf.clone().inner(), yc.clone().inner());
        let r = rand_t([b, t, d], -1.0, 1.0);
        let gf = (yf * r.clone()).sum().backward();
        let gc = (yc * r.clone()).sum().backward();
        let pairs: Vec<(Tensor<Flex, 1>, Tensor<Flex, 1>)> = vec![
            (
                f.0.grad(&gf).expect("du").flatten(0, 2),
                c.0.grad(&gc).expect("du").flatten(0, 2),
            ),
            (
                f.1.grad(&gf).expect("ddt").flatten(0, 2),
                c.1.grad(&gc).expect("ddt").flatten(0, 2),
            ),
            (
                f.2.grad(&gf).expect("da").flatten(0, 1),
                c.2.grad(&gc).expect("da").flatten(0, 1),
            ),
            (
                f.3.grad(&gf).expect("db").flatten(0, 2),
                c.3.grad(&gc).expect("db").flatten(0, 2),
            ),
            (
                f.4.grad(&gf).expect("dc").flatten(0, 2),
                c.4.grad(&gc).expect("dc").flatten(0, 2),
            ),
            (f.5.grad(&gf).expect("dd"), c.5.grad(&gc).expect("dd")),
        ];
        // The composed backward (what GPU backends run) from the same inputs.
        let inner = |x: &Tensor<AB, 3>| x.clone().inner().into_primitive().tensor();
        let gcomp = composed::selective_scan_bwd::<Flex>(
            inner(&inputs.0),
            inner(&inputs.1),
            inputs.2.clone().inner().into_primitive().tensor(),
            inner(&inputs.3),
            inner(&inputs.4),
            inputs.5.clone().inner().into_primitive().tensor(),
            r.inner().into_primitive().tensor(),
        );
        for (i, ((fg, cg), comp)) in pairs.into_iter().zip(gcomp).enumerate() {
            let comp: Tensor<Flex, 1> =
                Tensor::<Flex, 1>::from_primitive(burn::tensor::TensorPrimitive::Float(comp));
            let _ = i;
            worst = worst.max(max_rel(fg, cg.clone()));
            let n = cg.dims()[0];
            worst = worst.max(max_rel(comp.reshape([n]), cg));
        }
        println!("scan case {case} [b {b}, t {t}, d {d}, n {n}]: worst {worst:.2e}");
        assert!(
            worst < 1e-5,
            "case {case}: fused scan differs by {worst:.3e}"
        );
    }
}

fn step_by_step_equals_full(cfg: &ModelConfig) {
    let dev = Default::default();
    let model = Decoder::<Flex>::new(cfg, &dev).expect("model");
    let len = 12;
    let ids: Vec<i64> = (0..2 * len)
        .map(|i| (i * 7 % cfg.vocab_size) as i64)
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
    // A 3-token prefill, then one token at a time.
    let mut pieces = vec![model.forward_cached(col(0, 3), &mut cache)];
    for i in 3..len {
        pieces.push(model.forward_cached(col(i, i + 1), &mut cache));
    }
    assert_eq!(cache.len(), len);
    // Recurrent state: fixed size whatever the length (attention slots grow).
    for slot in &cache.slots {
        if let BlockCache::Mamba(state) = slot {
            let di = cfg.d_inner();
            let conv = state.conv.as_ref().expect("conv state").dims();
            let ssm = state.ssm.as_ref().expect("ssm state").dims();
            assert_eq!(conv, [2, cfg.d_conv - 1, di]);
            assert_eq!(ssm, [2, di, cfg.d_state]);
        }
    }
    let diff: f32 = (full - Tensor::cat(pieces, 1))
        .abs()
        .max()
        .into_scalar()
        .elem();
    println!(
        "{:?}: step-by-step vs full max diff {diff:.3e}",
        cfg.block_kinds()
    );
    assert!(diff < 1e-5, "recurrent logits differ by {diff}");
}

#[test]
fn mamba_recurrent_generation_equals_full_forward() {
    step_by_step_equals_full(&model_config(
        "arch = \"mamba\"\nvocab_size = 41\ndim = 24\nn_layers = 3\nd_state = 6\nmax_seq_len = 64\n",
    ));
}

#[test]
fn hybrid_recurrent_generation_equals_full_forward() {
    let cfg = model_config(
        "arch = \"mamba\"\nvocab_size = 41\ndim = 32\nn_layers = 4\nn_heads = 4\nn_kv_heads = 2\nffn_dim = 48\nmax_seq_len = 64\nblocks = [\"mamba\", \"attention\"]\n",
    );
    assert_eq!(
        cfg.block_kinds(),
        [
            BlockKind::Mamba,
            BlockKind::Attention,
            BlockKind::Mamba,
            BlockKind::Attention
        ]
    );
    step_by_step_equals_full(&cfg);
}

/// The config's parameter count is the model's, for pure and hybrid stacks,
/// and A_log / D / dt bias are exempt from weight decay.
#[test]
fn mamba_parameter_count_and_weight_decay() {
    for text in [
        "arch = \"mamba\"\nvocab_size = 50\ndim = 40\nn_layers = 2\nmax_seq_len = 16\n",
        "arch = \"mamba\"\nvocab_size = 50\ndim = 32\nn_layers = 3\nn_heads = 4\nffn_dim = 40\nmax_seq_len = 16\nblocks = [\"attention\", \"mamba\", \"mamba\"]\ntie_embeddings = false\n",
        "vocab_size = 50\ndim = 32\nn_layers = 2\nn_heads = 2\nffn_dim = 40\nmax_seq_len = 16\nblocks = [\"mamba\", \"attention\"]\n",
    ] {
        let cfg = model_config(text);
        let model = Decoder::<Flex>::new(&cfg, &Default::default()).expect("model");
        let infos = kiln_models::param_infos::<Flex, _>(&model);
        let n: usize = infos.iter().map(|p| p.shape.iter().product::<usize>()).sum();
        assert_eq!(n, cfg.num_params(), "{text}");
        for p in &infos {
            let decay = kiln_trainer::optim::default_decay(&p.name, p.shape.len());
            let exempt = ["A_log", ".D", "bias", "norm", "embed"]
                .iter()
                .any(|s| p.name.contains(s));
            assert_eq!(decay, !exempt, "{}", p.name);
        }
    }
}
