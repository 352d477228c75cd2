//! Precision modes: fp16 loss scaling (overflow skips the step and leaves
//! everything untouched, the scale halves, then grows after the interval),
//! bf16-pure weights stay bf16 through updates, and every mode trains.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use burn::tensor::{DType, FloatDType, Int, Tensor, TensorData};
use kiln_models::{named_tensors, Decoder, LanguageModel, ModelConfig};
use kiln_trainer::config::OptimizerConfig;
use kiln_trainer::config::Precision;
use kiln_trainer::grads::{GradStore, ParamTable};
use kiln_trainer::loss::cross_entropy;
use kiln_trainer::optim::{Optimizer, ParamGroups};
use kiln_trainer::precision::{cast_trainable, LossScaler, PrecisionPolicy};
use kiln_trainer::step::{apply_update, StepOutcome};

use crate::common::{kiln, metric, run, stderr, write_config, TINY};

type AB = Autodiff<Flex>;

fn tiny() -> (Decoder<AB>, ParamTable, Optimizer<Flex>) {
    let cfg: ModelConfig = toml::from_str(
        "vocab_size = 16\ndim = 8\nn_layers = 1\nn_heads = 2\nffn_dim = 16\nmax_seq_len = 8\n",
    )
    .expect("config");
    let dev = Default::default();
    let model = Decoder::<AB>::new(&cfg, &dev).expect("model");
    let table = ParamTable::new::<AB, _>(&model);
    let ocfg = OptimizerConfig::default();
    let groups = ParamGroups::build(&ocfg, &table, |_, r| r >= 2).expect("groups");
    (model, table, Optimizer::new(&ocfg, groups, 16))
}

fn grads_of(model: &Decoder<AB>, table: &ParamTable, scale: f64) -> (GradStore<Flex>, f64) {
    let dev = Default::default();
    let ids: Vec<i64> = (0..16).map(|i| (i * 7 % 16) as i64).collect();
    let x = Tensor::<AB, 2, Int>::from_data(TensorData::new(ids.clone(), [2, 8]), &dev);
    let y = Tensor::<AB, 2, Int>::from_data(
        TensorData::new(ids.iter().map(|i| (i + 1) % 16).collect::<Vec<_>>(), [2, 8]),
        &dev,
    );
    let loss = cross_entropy(model.forward(x), y, true);
    let value: f32 = loss.clone().into_scalar();
    let mut g = GradStore::default();
    g.accumulate::<AB, _>(model, table, loss.mul_scalar(scale).backward());
    (g, value as f64)
}

/// One fp16 step at lr 1e-3, clip 1.0.
fn scaled_step(
    model: Decoder<AB>,
    opt: &mut Optimizer<Flex>,
    table: &ParamTable,
    g: GradStore<Flex>,
    loss: f64,
    scaler: &mut LossScaler,
) -> (Decoder<AB>, StepOutcome, f64) {
    let policy = PrecisionPolicy::new(Precision::Fp16Mixed, 0);
    apply_update::<AB>(model, opt, table, g, loss, 1e-3, 1.0, &policy, Some(scaler))
}

#[test]
fn fp16_overflow_skips_the_step_and_halves_the_scale() {
    let (model, table, mut opt) = tiny();
    let mut scaler = LossScaler {
        scale: 1024.0,
        good_steps: 0,
        growth_interval: 3,
    };
    // One good step first, so the optimizer has state to leave untouched.
    let (g, loss) = grads_of(&model, &table, scaler.scale);
    let (model, outcome, _) = scaled_step(model, &mut opt, &table, g, loss, &mut scaler);
    assert_eq!(outcome, StepOutcome::Applied);
    let (weights, state, updates) = (
        named_tensors::<Flex, _>(&model.valid()),
        opt.export_state(),
        opt.updates(),
    );

    // Inject an inf into one gradient.
    let (mut g, loss) = grads_of(&model, &table, scaler.scale);
    let name = table.infos[0].name.clone();
    let bad = g.grads[&name].clone();
    let n = bad.dims()[0];
    let mut v: Vec<f32> = bad.into_data().into_vec().expect("grad");
    v[n / 2] = f32::INFINITY;
    g.grads.insert(
        name,
        Tensor::from_data(TensorData::new(v, [n]), &Default::default()),
    );
    let (model, outcome, norm) = scaled_step(model, &mut opt, &table, g, loss, &mut scaler);
    assert_eq!(outcome, StepOutcome::Overflow);
    assert!(!norm.is_finite());
    assert_eq!(scaler.scale, 512.0, "scale halves on overflow");
    assert_eq!(
        named_tensors::<Flex, _>(&model.valid()),
        weights,
        "weights changed on a skipped step"
    );
    assert_eq!(
        opt.export_state(),
        state,
        "optimizer state changed on a skipped step"
    );
    assert_eq!(
        opt.updates(),
        updates,
        "update count changed on a skipped step"
    );

    // Growth after `growth_interval` good steps in a row.
    let mut model = model;
    for i in 0..3 {
        assert_eq!(
            scaler.scale, 512.0,
            "no growth before the interval (step {i})"
        );
        let (g, loss) = grads_of(&model, &table, scaler.scale);
        let (m, outcome, _) = scaled_step(model, &mut opt, &table, g, loss, &mut scaler);
        assert_eq!(outcome, StepOutcome::Applied);
        model = m;
    }
    assert_eq!(scaler.scale, 1024.0, "scale doubles after the interval");
    assert_eq!(opt.updates(), updates + 3);
}

#[test]
fn bf16_pure_weights_stay_bf16_and_move() {
    let (model, table, mut opt) = tiny();
    let model = cast_trainable(model, FloatDType::BF16, false);
    let before = named_tensors::<Flex, _>(&model.valid());
    let (g, loss) = grads_of(&model, &table, 1.0);
    let policy = PrecisionPolicy::new(Precision::Bf16Pure, 0);
    let (model, outcome, _) =
        apply_update::<AB>(model, &mut opt, &table, g, loss, 1e-2, 1.0, &policy, None);
    assert_eq!(outcome, StepOutcome::Applied);
    let mut dtypes = Vec::new();
    model.visit(&mut DtypeVisitor(&mut dtypes));
    assert!(
        !dtypes.is_empty() && dtypes.iter().all(|d| *d == DType::BF16),
        "{dtypes:?}"
    );
    assert_ne!(
        named_tensors::<Flex, _>(&model.valid()),
        before,
        "no parameter moved"
    );
}

struct DtypeVisitor<'a>(&'a mut Vec<DType>);

impl burn::module::ModuleVisitor<AB> for DtypeVisitor<'_> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<AB, D>>) {
        self.0.push(param.val().dtype());
    }
}

/// Every mode trains TINY to within 0.05 of fp32's final val loss; fp16
/// logs its loss scale.
#[test]
fn every_precision_trains_tiny() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = write_config(tmp.path(), "tiny.toml", TINY);
    let mut finals = Vec::new();
    for p in ["fp32", "bf16-mixed", "fp16-mixed", "bf16-pure"] {
        let dir = tmp.path().join(p);
        let o = run(kiln()
            .arg("train")
            .arg(&cfg)
            .arg("--run-dir")
            .arg(&dir)
            .arg("--set")
            .arg(format!("training.precision=\"{p}\"")));
        assert!(o.status.success(), "{p}: {}", stderr(&o));
        let val = metric(&dir, "val/loss");
        let first = metric(&dir, "train/loss")[0].1;
        let last = val.last().expect("val loss").1;
        assert!(
            last < first - 0.3,
            "{p}: val loss {last} did not drop below the first train loss {first}"
        );
        finals.push((p, last));
        if p == "fp16-mixed" {
            assert!(
                !metric(&dir, "train/loss_scale").is_empty(),
                "fp16 logs train/loss_scale"
            );
        }
    }
    println!("final val losses: {finals:?}");
    for (p, v) in &finals[1..] {
        assert!(
            (v - finals[0].1).abs() < 0.05,
            "{p}: {v} vs fp32 {}",
            finals[0].1
        );
    }
}
