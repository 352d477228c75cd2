//! bf16-mixed autocast reaches every projection: Mamba's in/x/dt/out,
//! RWKV-7's r/k/v/o, low-rank factors and channel mix, attention and SwiGLU,
//! and the output head tied or not (all multiply in `Linear::project`).
//!
//! The in-model check reads each projection's weight gradient: a matmul run
//! in bf16 gives a gradient `x^T g` made in bf16, every element on the bf16
//! grid, where one run in f32 (as Mamba's in/x/dt and RWKV-7's factors once
//! were, outside autocast) gives a gradient off it.

use std::collections::BTreeMap;
use std::ops::Range;

use std::collections::HashMap;

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, FloatDType, Int, Tensor, TensorData};
use kiln_models::decoder::Block;
use kiln_models::layers::Linear;
use kiln_models::ops::precision::autocast;
use kiln_models::{
    load_named_tensors, named_tensors, param_infos, Decoder, FusedOps, LanguageModel, ModelConfig,
    NamedTensor,
};

type AB = Autodiff<Flex>;

const BF16: Option<FloatDType> = Some(FloatDType::BF16);
/// Max error relative to the largest magnitude allowed for bf16 matmuls.
const BF16_TOL: f32 = 1e-2;

const MAMBA: &str = "arch = \"mamba\"\nvocab_size = 32\ndim = 16\nn_layers = 2\nd_state = 4\nmax_seq_len = 16\ntie_embeddings = false\n";
const RWKV: &str = "arch = \"rwkv7\"\nvocab_size = 32\ndim = 16\nn_layers = 2\nhead_size = 8\ndecay_lora = 4\naaa_lora = 4\nmv_lora = 4\ngate_lora = 4\nmax_seq_len = 16\ntie_embeddings = false\n";
const LLAMA: &str = "vocab_size = 32\ndim = 16\nn_layers = 1\nn_heads = 2\nffn_dim = 24\nmax_seq_len = 16\ntie_embeddings = false\n";

fn config(text: &str, tied: bool) -> ModelConfig {
    let text = text.replace(
        "tie_embeddings = false",
        &format!("tie_embeddings = {tied}"),
    );
    toml::from_str(&text).expect("model config")
}

/// Every parameter moved off its init (RWKV-7 zero-initialises its output
/// projections and first factors, whose gradients would then be zero).
fn randomised_tensors(cfg: &ModelConfig) -> BTreeMap<String, NamedTensor> {
    let model = Decoder::<Flex>::new(cfg, &Default::default()).expect("model");
    // Random inits come from the backend's global RNG, which tests running
    // alongside also draw from: a tensor that differs between two builds is
    // random, and is replaced by the seeded noise alone, so the weights (and
    // the bf16 error) never depend on the other threads.
    let again = named_tensors(&Decoder::<Flex>::new(cfg, &Default::default()).expect("model"));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.4
    };
    named_tensors(&model)
        .into_iter()
        .map(|(name, mut t)| {
            let random = again.get(&name).is_some_and(|b| b.data != t.data);
            t.data.iter_mut().for_each(|x| {
                *x = if random { noise() } else { *x + noise() };
            });
            (name, t)
        })
        .collect()
}

fn load<B: FusedOps>(cfg: &ModelConfig, tensors: &BTreeMap<String, NamedTensor>) -> Decoder<B> {
    let model = Decoder::<B>::new(cfg, &Default::default()).expect("model");
    load_named_tensors(model, tensors, "test").expect("load")
}

/// `[2, 8]` token ids drawn from `0..used` (the other embedding rows are only
/// read by a tied head).
fn tokens<B: FusedOps>(used: usize) -> Tensor<B, 2, Int> {
    let ids: Vec<i64> = (0..16).map(|i| (i * 7 % used) as i64).collect();
    Tensor::from_data(TensorData::new(ids, [2, 8]), &Default::default())
}

fn to_vec<B: FusedOps, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().expect("f32 data")
}

fn logits(model: &Decoder<Flex>, used: usize, dtype: Option<FloatDType>) -> Vec<f32> {
    let _scope = autocast(dtype);
    to_vec(model.forward(tokens(used)))
}

/// (max |a - b|, that over max |b|).
fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let scale = b.iter().fold(0f32, |m, y| m.max(y.abs()));
    (d, d / scale.max(f32::MIN_POSITIVE))
}

/// `cast` is `plain` computed in bf16: different, within bf16 error.
fn assert_cast_close(cast: &[f32], plain: &[f32], label: &str) {
    let (d, rel) = diff(cast, plain);
    println!("{label}: bf16 autocast vs f32 max diff {d:.3e} (relative {rel:.3e})");
    assert!(
        d > 0.0,
        "{label}: autocast left the output bitwise unchanged"
    );
    assert!(
        rel < BF16_TOL,
        "{label}: autocast error {rel:.3e} is beyond bf16's"
    );
}

/// bf16-representable: its low 16 bits are zero.
fn is_bf16(x: f32) -> bool {
    x.to_bits() & 0xffff == 0
}

/// Host copies of the parameters' gradients, by burn id.
struct Grads<'a> {
    grads: &'a <AB as AutodiffBackend>::Gradients,
    out: HashMap<ParamId, Vec<f32>>,
}

impl ModuleVisitor<AB> for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            self.out.insert(param.id, to_vec(g));
        }
    }
}

/// Every parameter's gradient of a weighted sum of the logits (the weights
/// vary, so no gradient has a special structure), by checkpoint name.
fn grads(cfg: &ModelConfig, used: usize, dtype: Option<FloatDType>) -> HashMap<String, Vec<f32>> {
    let model = load::<AB>(cfg, &randomised_tensors(cfg));
    let _scope = autocast(dtype);
    let logits = model.forward(tokens(used)); // [2, 8, V]
    let v = logits.dims()[2];
    let mix: Vec<f32> = (0..16 * v)
        .map(|i| (i * 37 % 11) as f32 / 5.0 - 1.0)
        .collect();
    let mix = Tensor::<AB, 3>::from_data(TensorData::new(mix, [2, 8, v]), &Default::default());
    let grads = (logits * mix).sum().backward();
    let mut visit = Grads {
        grads: &grads,
        out: HashMap::new(),
    };
    model.visit(&mut visit);
    param_infos::<AB, _>(&model)
        .into_iter()
        .filter_map(|p| Some((p.name, visit.out.remove(&p.id)?)))
        .collect()
}

/// Under bf16 autocast a projection's weight gradient is `x^T g` computed
/// in bf16, so every element is bf16-representable; computed in f32 (a
/// matmul outside autocast, or no autocast) it is not. `rows` limits the
/// check to those rows (a tied table's rows of tokens absent from the input,
/// which only the head reads).
fn assert_reaches(cfg: &ModelConfig, names: &[String], rows: Option<Range<usize>>, used: usize) {
    let (cast, plain) = (grads(cfg, used, BF16), grads(cfg, used, None));
    for name in names {
        let pick = |g: &HashMap<String, Vec<f32>>| -> Vec<f32> {
            let g = g
                .get(name)
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            match &rows {
                Some(r) => {
                    let width = g.len() / cfg.vocab_size;
                    g[r.start * width..r.end * width].to_vec()
                }
                None => g.clone(),
            }
        };
        let (cast, plain) = (pick(&cast), pick(&plain));
        let off = cast.iter().filter(|x| !is_bf16(**x)).count();
        let plain_off = plain.iter().filter(|x| !is_bf16(**x)).count();
        println!(
            "{name}: gradient elements off the bf16 grid: {off} of {} under autocast, {plain_off} in f32",
            cast.len()
        );
        assert!(
            plain_off > 0,
            "{name}: the f32 gradient is bf16 already: the check cannot tell"
        );
        assert_eq!(
            off, 0,
            "{name}: {off} weight-gradient elements are off the bf16 grid under autocast: its matmul ran outside autocast"
        );
    }
}

fn names(prefix: &str, items: &[&str], suffix: &str) -> Vec<String> {
    items
        .iter()
        .map(|p| format!("{prefix}{p}{suffix}"))
        .collect()
}

#[test]
fn autocast_reaches_mamba_projections_and_head() {
    let mut all = vec!["lm_head.weight".to_string()];
    for l in 0..2 {
        let mixer = format!("backbone.layers.{l}.mixer.");
        all.extend(names(
            &mixer,
            &["in_proj", "x_proj", "dt_proj", "out_proj"],
            ".weight",
        ));
    }
    assert_reaches(&config(MAMBA, false), &all, None, 32);
}

#[test]
fn autocast_reaches_rwkv7_projections_factors_and_head() {
    let mut all = vec!["head.weight".to_string()];
    for l in 0..2 {
        let att = ["receptance", "key", "value", "output"];
        all.extend(names(&format!("blocks.{l}.att."), &att, ".weight"));
        all.extend(names(
            &format!("blocks.{l}.ffn."),
            &["key", "value"],
            ".weight",
        ));
        let factors = ["w1", "w2", "a1", "a2", "g1", "g2"];
        all.extend(names(&format!("blocks.{l}.att."), &factors, ""));
    }
    // The value-residual gate exists after the first block only.
    all.extend(names("blocks.1.att.", &["v1", "v2"], ""));
    assert_reaches(&config(RWKV, false), &all, None, 32);
}

#[test]
fn autocast_reaches_attention_swiglu_and_head() {
    let mut all = vec!["lm_head.weight".to_string()];
    let attn = ["q_proj", "k_proj", "v_proj", "o_proj"];
    all.extend(names("model.layers.0.self_attn.", &attn, ".weight"));
    let mlp = ["gate_proj", "up_proj", "down_proj"];
    all.extend(names("model.layers.0.mlp.", &mlp, ".weight"));
    assert_reaches(&config(LLAMA, false), &all, None, 32);
}

/// Tied heads: the rows of tokens absent from the input get a gradient from
/// the head only (the embedding lookup, never autocast, adds to the others).
#[test]
fn autocast_reaches_tied_heads() {
    for (text, table) in [
        (LLAMA, "model.embed_tokens.weight"),
        (MAMBA, "backbone.embeddings.weight"),
        (RWKV, "emb.weight"),
    ] {
        assert_reaches(&config(text, true), &[table.to_string()], Some(16..32), 16);
    }
}

/// Each projection layer itself (whole and by column range, with and without
/// bias, the tied head view): autocast acts, within bf16 error; the column
/// range is the matching columns of the whole output.
#[test]
fn projection_layers_cast_within_bf16_error() {
    let mut layers: Vec<(String, Linear<Flex>)> = Vec::new();
    for text in [MAMBA, RWKV] {
        let cfg = config(text, false);
        let model = load::<Flex>(&cfg, &randomised_tensors(&cfg));
        for (l, block) in model.layers.iter().enumerate() {
            let found: Vec<(&str, &Linear<Flex>)> = match block {
                Block::Mamba(b) => {
                    let m = &b.mixer;
                    vec![
                        ("in_proj", &m.in_proj),
                        ("x_proj", &m.x_proj),
                        ("dt_proj", &m.dt_proj),
                        ("out_proj", &m.out_proj),
                    ]
                }
                Block::Rwkv(b) => {
                    let a = &b.att;
                    let mut v = vec![
                        ("att.receptance", &a.receptance),
                        ("att.key", &a.key),
                        ("att.value", &a.value),
                        ("att.output", &a.output),
                        ("att.w1", &a.w1),
                        ("att.w2", &a.w2),
                        ("att.a1", &a.a1),
                        ("att.a2", &a.a2),
                        ("att.g1", &a.g1),
                        ("att.g2", &a.g2),
                        ("ffn.key", &b.ffn.key),
                        ("ffn.value", &b.ffn.value),
                    ];
                    v.extend(a.v1.as_ref().map(|p| ("att.v1", p)));
                    v.extend(a.v2.as_ref().map(|p| ("att.v2", p)));
                    v
                }
                Block::Attention(_) => Vec::new(),
            };
            for (n, p) in found {
                layers.push((format!("{:?} layer {l} {n}", cfg.arch), p.clone()));
            }
        }
        layers.push((
            format!("{:?} tied head", cfg.arch),
            model.embed_tokens.head(),
        ));
    }
    assert!(
        layers.iter().any(|(_, p)| p.bias.is_some()),
        "dt_proj has a bias"
    );
    let dev = Default::default();
    for (label, p) in &layers {
        let x = Tensor::<Flex, 3>::random([2, 5, p.d_in()], Distribution::Normal(0.0, 1.0), &dev);
        let (start, len) = (p.d_out() / 3, p.d_out() - p.d_out() / 3);
        let run = |dtype| {
            let _scope = autocast(dtype);
            let whole = to_vec(p.forward(x.clone())); // [2, 5, d_out]
            let cols = to_vec(p.forward_cols(x.clone(), start, len)); // [2, 5, len]
            (whole, cols)
        };
        let ((whole, cols), (whole16, cols16)) = (run(None), run(BF16));
        assert_cast_close(&whole16, &whole, label);
        assert_cast_close(&cols16, &cols, &format!("{label} columns {start}..+{len}"));
        let picked: Vec<f32> = whole
            .chunks(p.d_out())
            .flat_map(|r| r[start..start + len].to_vec())
            .collect();
        let (d, _) = diff(&cols, &picked);
        assert!(
            d < 1e-5,
            "{label}: columns {start}..+{len} differ from the whole by {d}"
        );
    }
}

/// Whole models: the logits change under autocast and stay within bf16 error.
#[test]
fn model_logits_change_under_autocast_within_bf16_error() {
    for (text, tied, label) in [
        (MAMBA, false, "mamba"),
        (RWKV, false, "rwkv7"),
        (LLAMA, true, "tied llama"),
    ] {
        let cfg = config(text, tied);
        let model = load::<Flex>(&cfg, &randomised_tensors(&cfg));
        let (plain, cast) = (logits(&model, 32, None), logits(&model, 32, BF16));
        assert_cast_close(&cast, &plain, label);
    }
}
