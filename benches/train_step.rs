//! Criterion benchmarks of the training hot path on CPU: one full train step
//! (forward, backward, global-norm clip, AdamW) of a small decoder, and the
//! forward pass alone. `kiln bench` reports the same for whole configs.
//!   cargo bench -p kiln-trainer --bench train_step

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Int, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use kiln_models::{Decoder, LanguageModel, ModelConfig};
use kiln_trainer::config::OptimizerConfig;
use kiln_trainer::grads::{GradStore, ParamTable};
use kiln_trainer::loss::cross_entropy;
use kiln_trainer::optim::{Optimizer, ParamGroups};

type AB = Autodiff<Flex>;

// The same allocator and tuning as the `kiln` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn config() -> ModelConfig {
    let text = "dim = 128\nn_layers = 4\nn_heads = 4\nn_kv_heads = 2\nffn_dim = 344\nmax_seq_len = 64\nvocab_size = 256\n";
    toml::from_str(text).expect("bench model config")
}

fn train_step(c: &mut Criterion) {
    kiln_trainer::allocator::tune_for_training();
    let cfg = config();
    let dev = Default::default();
    let mut model = Decoder::<AB>::new(&cfg, &dev).expect("model");
    let table = ParamTable::new::<AB, _>(&model);
    let ocfg = OptimizerConfig::default();
    let groups = ParamGroups::build(&ocfg, &table, |_, rank| rank >= 2).expect("groups");
    let mut opt = Optimizer::new(&ocfg, groups, 12 * 64);
    let tokens = Tensor::<AB, 2>::random([12, 65], Distribution::Uniform(0.0, 256.0), &dev).int();
    let x: Tensor<AB, 2, Int> = tokens.clone().slice([0..12, 0..64]);
    let y: Tensor<AB, 2, Int> = tokens.slice([0..12, 1..65]);
    c.bench_function("train_step_0.8M_b12_t64", |b| {
        b.iter(|| {
            let loss = cross_entropy(model.forward(x.clone()), y.clone(), true);
            let mut grads = GradStore::default();
            grads.accumulate::<AB, _>(&model, &table, loss.backward());
            grads.clip_global_norm(1.0);
            model = opt.step::<AB, _>(model.clone(), &table, grads, 1e-3);
        })
    });
    c.bench_function("forward_0.8M_b12_t64", |b| {
        b.iter(|| {
            let logits = model.forward(x.clone());
            let _: Vec<f32> = logits
                .slice([0..1, 0..1, 0..1])
                .into_data()
                .into_vec()
                .unwrap_or_default();
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = train_step
}
criterion_main!(benches);
