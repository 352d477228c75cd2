//! Distillation losses (forward / reverse KL, generalised JSD, skew KL) at
//! temperatures 1 and 2 with masked positions: values and the student's
//! gradients against tests/reference/distill_losses.py (PyTorch, float64),
//! to 1e-6, through the composed ops and the fused kernel.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use kiln_trainer::distill_loss::{distill_loss, DistillLoss};

use crate::common::{raw_f32s as f32s, raw_fixture};

type AB = Autodiff<Flex>;

#[test]
fn distillation_losses_match_pytorch() {
    let t = raw_fixture("distill/losses.safetensors");
    let (student, teacher) = (f32s(&t["student"]), f32s(&t["teacher"]));
    let labels: Vec<i64> = t["labels"]
        .1
        .chunks(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    let [n, v] = [t["student"].0[0], t["student"].0[1]];
    let keep: Vec<f32> = labels
        .iter()
        .map(|&l| if l == -100 { 0.0 } else { 1.0 })
        .collect();
    let scored = keep.iter().filter(|&&k| k == 1.0).count();
    let dev = Default::default();
    let cases = [
        ("forward_kl", DistillLoss::ForwardKl),
        ("reverse_kl", DistillLoss::ReverseKl),
        ("jsd", DistillLoss::Jsd { beta: 0.5 }),
        ("jsd_b01", DistillLoss::Jsd { beta: 0.1 }),
        ("skew_kl", DistillLoss::SkewKl { alpha: 0.1 }),
    ];
    for (name, loss) in cases {
        for ((suffix, temp), fused) in [("t1", 1.0), ("t2", 2.0)]
            .into_iter()
            .flat_map(|c| [(c, false), (c, true)])
        {
            let key = format!("{name}_{suffix}{}", if fused { " fused" } else { "" });
            let fixture = format!("{name}_{suffix}");
            let s = Tensor::<AB, 2>::from_data(TensorData::new(student.clone(), [n, v]), &dev)
                .require_grad();
            let te = Tensor::<AB, 2>::from_data(TensorData::new(teacher.clone(), [n, v]), &dev);
            let k = Tensor::<AB, 1>::from_data(TensorData::new(keep.clone(), [n]), &dev);
            let value = distill_loss(s.clone(), te, k, scored, loss, temp, fused);
            let got: f32 = value.clone().into_scalar().elem();
            let want = f32s(&t[&format!("value.{fixture}")])[0];
            assert!(
                ((got - want) / want.abs().max(1e-6)).abs() < 1e-5,
                "{key}: {got} vs {want}"
            );
            let grads = value.backward();
            let g: Vec<f32> = s
                .grad(&grads)
                .expect("grad")
                .into_data()
                .into_vec()
                .expect("f32");
            let want_g = f32s(&t[&format!("grad.{fixture}")]);
            let worst = g
                .iter()
                .zip(&want_g)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-6, "{key}: gradient differs by {worst}");
            for (row, &kp) in g.chunks(v).zip(&keep) {
                if kp == 0.0 {
                    assert!(
                        row.iter().all(|&x| x == 0.0),
                        "{key}: masked row has gradient"
                    );
                }
            }
        }
    }
}

/// `[distill]` end to end: with `alpha = 0` the run is bitwise the run
/// without a teacher (the objective adds exactly nothing); with `alpha =
/// 0.5` it trains; a teacher with another tokenizer is refused.
#[test]
fn distillation_runs_from_a_teacher_checkpoint() {
    use crate::common::{ckpt, fails_with, kiln, run, stderr, train_tiny, write_config, TINY};
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    train_tiny(tmp, 8); // the teacher: tmp/run
    let student = TINY
        .replace("max_steps = 24", "max_steps = 6")
        .replace("dim = 32", "dim = 16")
        .replace("ffn_dim = 64", "ffn_dim = 32");
    let train = |name: &str, extra: &str| {
        let cfg = write_config(
            tmp,
            &format!("{name}.toml"),
            &format!("{student}\n{extra}\n"),
        );
        let o = run(kiln()
            .arg("train")
            .arg(&cfg)
            .arg("--run-dir")
            .arg(name)
            .current_dir(tmp));
        assert!(o.status.success(), "{name}: {}", stderr(&o));
    };
    train("plain", "");
    train("zero", "[distill]\nteacher = \"run\"\nalpha = 0.0\n");
    train(
        "kd",
        "[distill]\nteacher = \"run\"\nloss = \"jsd\"\ntemperature = 2.0\n",
    );
    let file =
        |run: &str| std::fs::read(ckpt(&tmp.join(run), 6).join("model.safetensors")).expect("w");
    assert!(
        file("plain") == file("zero"),
        "alpha = 0 must add exactly nothing"
    );
    assert!(
        file("plain") != file("kd"),
        "the teacher must change the student"
    );

    // A bf16 teacher: the same objective to bf16 rounding of its logits.
    train("kd32", "[distill]\nteacher = \"run\"\n");
    train(
        "kd16",
        "[distill]\nteacher = \"run\"\nteacher_precision = \"bf16\"\n",
    );
    let losses = |run: &str| -> Vec<f64> {
        crate::common::metric(&tmp.join(run), "train/loss")
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    };
    let (full, half) = (losses("kd32"), losses("kd16"));
    assert!(!full.is_empty() && full.len() == half.len());
    for (a, b) in full.iter().zip(&half) {
        assert!(
            (a - b).abs() < 2e-2 * a.abs(),
            "bf16 teacher: {half:?} vs f32 {full:?}"
        );
    }
    assert!(full != half, "the bf16 teacher must actually run in bf16");
    write_config(
        tmp,
        "badprec.toml",
        &format!("{student}\n[distill]\nteacher = \"run\"\nteacher_precision = \"int8\"\n"),
    );
    fails_with(
        &["train", "badprec.toml", "--run-dir", "b3"],
        tmp,
        &["distill.teacher_precision", "int8"],
    );

    // A teacher whose char vocabulary differs (trained on other text).
    std::fs::write(tmp.join("other.txt"), "zzz qqq xxx 123 456\n".repeat(200)).expect("write");
    let other = TINY
        .replace("max_steps = 24", "max_steps = 4")
        .replace("stories_docs = 300", "train = \"other.txt\"");
    let cfg = write_config(tmp, "other.toml", &other);
    let o = run(kiln()
        .arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg("other")
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    write_config(
        tmp,
        "bad.toml",
        &format!("{student}\n[distill]\nteacher = \"other\"\n"),
    );
    fails_with(
        &["train", "bad.toml", "--run-dir", "b"],
        tmp,
        &["distill.teacher", "tokenizer"],
    );
    write_config(
        tmp,
        "badloss.toml",
        &format!("{student}\n[distill]\nteacher = \"run\"\nloss = \"l2\"\n"),
    );
    fails_with(
        &["train", "badloss.toml", "--run-dir", "b2"],
        tmp,
        &["distill.loss", "l2"],
    );
}

/// Across architectures: a Mamba student learns a Llama teacher's
/// distribution (pure distillation, `alpha = 1`: the logged loss is the
/// forward KL to the teacher, which must fall well below where it starts).
#[test]
fn a_mamba_student_learns_from_a_llama_teacher() {
    use crate::common::{kiln, metric, run, stderr, train_tiny, write_config, TINY};
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    train_tiny(tmp, 24); // the Llama teacher: tmp/run
    let model_end = TINY.find("[data]").expect("TINY has [data]");
    let student = format!(
        "[model]\narch = \"mamba\"\ndim = 32\nn_layers = 2\nd_state = 8\nmax_seq_len = 32\n\n{}\n\
         [distill]\nteacher = \"run\"\nalpha = 1.0\n",
        &TINY[model_end..]
    );
    let cfg = write_config(tmp, "mamba.toml", &student);
    let o = run(kiln()
        .arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg("student")
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let kl: Vec<f64> = metric(&tmp.join("student"), "train/loss")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let (first, last) = (kl[0], kl[kl.len() - 1]);
    assert!(
        last < 0.5 * first,
        "KL to the teacher should fall by more than half: {kl:?}"
    );
}

/// A distillation run killed with SIGKILL resumes bitwise: the teacher is
/// rebuilt from its checkpoint and sees the same batches.
#[test]
fn distillation_resume_after_kill_9_is_bitwise_exact() {
    use crate::common::{
        ckpt, kill_after_checkpoint, kiln, metric, run, stderr, train_tiny, write_config, TINY,
    };
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    train_tiny(tmp, 8); // the teacher: tmp/run
    let student = TINY
        .replace("dim = 32", "dim = 16")
        .replace("ffn_dim = 64", "ffn_dim = 32");
    let cfg = write_config(
        tmp,
        "s.toml",
        &format!(
            "{student}\n[distill]\nteacher = \"run\"\nloss = \"forward-kl\"\ntemperature = 2.0\n"
        ),
    );
    let o = run(kiln()
        .arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg("full")
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut cmd = kiln();
    cmd.arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg("cut")
        .current_dir(tmp);
    kill_after_checkpoint(&mut cmd, &tmp.join("cut"), 8);
    assert!(
        !ckpt(&tmp.join("cut"), 24).exists(),
        "finished before the kill"
    );
    let o = run(kiln().args(["train", "--resume", "cut"]).current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(ckpt(&tmp.join("full"), 24).join(file)).expect("full");
        let b = std::fs::read(ckpt(&tmp.join("cut"), 24).join(file)).expect("cut");
        assert!(a == b, "{file} differs after resume");
    }
    assert_eq!(
        metric(&tmp.join("full"), "train/loss"),
        metric(&tmp.join("cut"), "train/loss")
    );
}
