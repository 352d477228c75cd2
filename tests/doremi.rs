//! DoReMi (issue 16): the domain-weight arithmetic against the reference
//! implementation's update rule (tests/reference/doremi_reference.py), a
//! proxy run on three domains (one of them noise) that logs its weights,
//! writes the mixture and resumes exactly after kill -9, a resume that
//! takes new weights, a proxy on 2 and 3 ranks that matches one process,
//! and bad input.

use std::path::{Path, PathBuf};

use kiln_data::{Batch, RowOrigin};
use kiln_trainer::doremi::{token_weights, DomainWeights, StepExcess};

use crate::common::{
    ckpt, fails_with, fixtures, kill_after_checkpoint, kiln, metric, run, stderr, train_tiny,
    write_config,
};

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol * want.abs().max(1e-12),
        "{what}: {got} vs {want}"
    );
}

#[test]
fn domain_weights_follow_the_reference_update_rule() {
    let text = std::fs::read_to_string(fixtures().join("doremi/updates.json")).expect("fixture");
    let f: serde_json::Value = serde_json::from_str(&text).expect("json");
    let k = f["k"].as_u64().expect("k") as usize;
    let seq_len = f["seq_len"].as_u64().expect("seq_len") as usize;
    let names = (0..k).map(|d| format!("d{d}")).collect();
    let mut w = DomainWeights::new(
        names,
        &floats(&f["initial"]),
        f["vocab_size"].as_u64().expect("vocab") as usize,
    );
    let (eta, eps) = (
        f["eta"].as_f64().expect("eta"),
        f["eps"].as_f64().expect("eps"),
    );
    let (mut worst_w, mut worst_loss) = (0.0f64, 0.0f64);
    for (s, step) in f["steps"].as_array().expect("steps").iter().enumerate() {
        let micro = step["micro"].as_array().expect("micro");
        let mut excess = StepExcess::new(k);
        for (i, m) in micro.iter().enumerate() {
            let proxy: Vec<f32> = floats(&m["proxy"]).iter().map(|&x| x as f32).collect();
            let reference: Vec<f32> = floats(&m["reference"]).iter().map(|&x| x as f32).collect();
            let mask = floats(&m["mask"]);
            let origins: Vec<RowOrigin> = floats(&m["domains"])
                .iter()
                .map(|&d| RowOrigin {
                    domain: d as usize,
                    start: 0,
                })
                .collect();
            // A masked token is an ignored target, as instruction data marks it.
            let targets = mask
                .iter()
                .map(|&on| {
                    if on > 0.0 {
                        1
                    } else {
                        kiln_data::instruct::IGNORE
                    }
                })
                .collect();
            let batch = Batch {
                inputs: vec![0; mask.len()],
                targets,
                batch_size: origins.len(),
                seq_len,
                origins,
            };
            excess.add(&proxy, &reference, &batch);
            if i + 1 == micro.len() {
                w.update(&excess.means(), eta, eps);
            }
            let tw = token_weights(&batch, &w.current);
            let num: f64 = tw
                .iter()
                .zip(&proxy)
                .map(|(&a, &p)| a as f64 * p as f64)
                .sum();
            let den: f64 = tw.iter().map(|&a| a as f64).sum();
            let want = m["loss"].as_f64().expect("loss");
            close(num / den, want, 1e-6, &format!("step {s} micro {i} loss"));
            worst_loss = worst_loss.max(((num / den) - want).abs() / want);
        }
        for (field, ours) in [
            ("train", &w.current),
            ("avg", &w.average),
            ("scores", &w.scores),
        ] {
            for (d, (&got, &want)) in ours.iter().zip(&floats(&step[field])).enumerate() {
                close(got, want, 1e-12, &format!("step {s} {field}[{d}]"));
                worst_w = worst_w.max((got - want).abs() / want.abs());
            }
        }
    }
    println!(
        "DoReMi vs reference over 6 steps: weights, averages, scores within {worst_w:.1e} \
         relative; per-micro-batch loss within {worst_loss:.1e}"
    );
}

/// A seeded stream of characters over the letters' and digits' alphabet.
fn noise_text(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefgh12345678 ";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

/// Letters and digits (as tests/data.rs builds them) plus a domain of
/// random characters, prepared into `tmp/mix` with a char tokenizer.
fn three_domain_dataset(tmp: &Path) -> PathBuf {
    crate::data::two_domain_dataset(tmp);
    let mut noise = String::new();
    for i in 0..400 {
        noise.push_str(&noise_text(i, 40 + (i as usize % 30)));
        noise.push_str("\n\n");
    }
    std::fs::write(tmp.join("c.txt"), noise).expect("write");
    let spec = write_config(
        tmp,
        "mix3.toml",
        "out = \"mix3\"\ntokenizer = \"tok.json\"\nval_fraction = 0.05\nshard_tokens = 5000\n\
         [[source]]\ndomain = \"letters\"\npaths = [\"a.jsonl\"]\n\
         [[source]]\ndomain = \"digits\"\npaths = [\"b.txt\"]\nformat = \"text-blocks\"\n\
         [[source]]\ndomain = \"noise\"\npaths = [\"c.txt\"]\nformat = \"text-blocks\"\n",
    );
    let o = run(kiln().args(["data", "prepare"]).arg(&spec));
    assert!(o.status.success(), "{}", stderr(&o));
    tmp.join("mix3")
}

const RUN: &str = r#"
[model]
dim = 32
n_layers = 2
n_heads = 4
n_kv_heads = 2
ffn_dim = 64
max_seq_len = 32

[data]
datasets = ["mix3"]

[data.mixture]
letters = 1.0
digits = 1.0
noise = 1.0

[optimizer]
lr = 3e-3

[training]
max_steps = 24
batch_size = 6
eval_every = 0
log_every = 1
seed = 7

[checkpoint]
every = 8
keep_last = 10

[logging]
sample_tokens = 0
"#;

const PROXY: &str = "\n[doremi]\nreference = \"ref\"\n";

fn mixture_of(run_dir: &Path) -> toml::Table {
    let text = std::fs::read_to_string(run_dir.join("doremi.toml")).expect("doremi.toml");
    let doc: toml::Table = toml::from_str(&text).expect("doremi.toml is TOML");
    doc["data"]["mixture"]
        .as_table()
        .expect("[data.mixture]")
        .clone()
}

fn train(tmp: &Path, cfg: &Path, dir: &str) {
    let o = run(kiln()
        .arg("train")
        .arg(cfg)
        .arg("--run-dir")
        .arg(tmp.join(dir))
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The three-domain data in `t/mix3` and a 40-step reference model in `t/ref`.
fn data_and_reference(t: &Path) {
    three_domain_dataset(t);
    let reference = write_config(
        t,
        "ref.toml",
        &RUN.replace("max_steps = 24", "max_steps = 40"),
    );
    train(t, &reference, "ref");
}

#[test]
fn proxy_run_downweights_noise_writes_the_mixture_and_resumes_exactly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    data_and_reference(t);
    let proxy = write_config(t, "proxy.toml", &format!("{RUN}{PROXY}"));
    train(t, &proxy, "full");

    let full = t.join("full");
    let mix = mixture_of(&full);
    let w = |d: &str| mix[d].as_float().expect("weight");
    let sum = w("letters") + w("digits") + w("noise");
    println!(
        "DoReMi average weights after 24 steps: letters {:.4} digits {:.4} noise {:.4} (sampled 1/3 each)",
        w("letters"),
        w("digits"),
        w("noise")
    );
    assert!((sum - 1.0).abs() < 1e-9, "weights sum to {sum}");
    assert!(w("noise") < 0.2, "noise keeps {} of the weight", w("noise"));
    let logged = metric(&full, "doremi/weight/noise");
    assert_eq!(logged.len(), 24, "doremi/weight/noise logged every step");
    assert!(logged[23].1 < logged[0].1, "{logged:?}");
    assert_eq!(metric(&full, "doremi/average/letters").len(), 24);

    // kill -9 after the step-8 checkpoint, resume: the same weights and model.
    let cut = t.join("cut");
    kill_after_checkpoint(
        kiln()
            .arg("train")
            .arg(&proxy)
            .arg("--run-dir")
            .arg(&cut)
            .current_dir(t),
        &cut,
        8,
    );
    assert!(!ckpt(&cut, 24).exists(), "finished before the kill");
    let o = run(kiln().arg("train").arg("--resume").arg(&cut).current_dir(t));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mixture_of(&cut), mix, "averaged weights after resume");
    let state = |dir: &Path| -> serde_json::Value {
        let b = std::fs::read(ckpt(dir, 24).join("trainer_state.json")).expect("state");
        serde_json::from_slice::<serde_json::Value>(&b).expect("json")["objective"].clone()
    };
    assert_eq!(state(&full), state(&cut));
    let model = |dir: &Path| std::fs::read(ckpt(dir, 24).join("model.safetensors")).expect("model");
    assert!(model(&full) == model(&cut), "model after resume differs");
    assert_eq!(
        metric(&full, "doremi/weight/digits"),
        metric(&cut, "doremi/weight/digits")
    );

    // New mixture weights on resume: refused unless the run asks for them.
    let set = |extra: &[&str]| {
        let mut cmd = kiln();
        cmd.arg("train").arg("--resume").arg(&cut).current_dir(t);
        for s in ["training.max_steps=30", "data.mixture.noise=0.2"]
            .iter()
            .chain(extra)
        {
            cmd.arg("--set").arg(s);
        }
        run(&mut cmd)
    };
    let o = set(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("data.reweight_on_resume"),
        "{}",
        stderr(&o)
    );
    let o = set(&["data.reweight_on_resume=true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let share = metric(&cut, "data/share/noise");
    let tail = &share[share.len() - 7..];
    println!("noise share after the reweighted resume: {tail:?}");
    assert!(
        tail[6].1 < tail[0].1,
        "the noise share follows 0.2: {tail:?}"
    );
}

/// The proxy on 2 and 3 ranks (threads of one process, the collectives MPI
/// runs) against one rank on the same global batch: the same domain weights
/// (the excess summed over ranks) and the same losses and model within 1e-5.
#[test]
fn proxy_on_several_ranks_matches_one_process() {
    use crate::distributed::{final_model, losses, max_rel, run_ranks};
    use kiln_trainer::config::from_table;
    use kiln_trainer::run::Start;

    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    data_and_reference(t);
    let text = format!("{RUN}{PROXY}")
        .replace("max_steps = 24", "max_steps = 12")
        .replace("batch_size = 6", "batch_size = 6\ngrad_accum = 2")
        .replace("\"mix3\"", &format!("{:?}", t.join("mix3")))
        .replace("\"ref\"", &format!("{:?}", t.join("ref")));
    let doc: toml::Table = toml::from_str(&text).expect("config");
    let cfg = from_table(doc, &t.join("proxy.toml")).expect("config");
    let weights = |dir: &Path| -> Vec<f64> {
        let mix = mixture_of(dir);
        ["letters", "digits", "noise"]
            .iter()
            .map(|d| mix[*d].as_float().expect("weight"))
            .collect()
    };
    let one = t.join("one");
    run_ranks(1, || Start::Fresh(cfg.clone()), &one);
    for n in [2, 3] {
        let mut c = cfg.clone();
        c.distributed =
            toml::from_str("strategy = \"ddp\"\ncheck_replicas = true").expect("[distributed]");
        let dir = t.join(format!("n{n}"));
        run_ranks(n, || Start::Fresh(c.clone()), &dir);
        let (a, b) = (weights(&dir), weights(&one));
        let w_rel = a
            .iter()
            .zip(&b)
            .map(|(x, y)| ((x - y) / y).abs())
            .fold(0.0, f64::max);
        let (la, lb) = (losses(&dir), losses(&one));
        assert_eq!(la.len(), 12);
        let l_rel = la
            .iter()
            .zip(&lb)
            .map(|(x, y)| ((x - y) / y).abs())
            .fold(0.0, f64::max);
        let p_rel = max_rel(&final_model(&dir), &final_model(&one));
        println!("DoReMi on {n} ranks vs 1: weights {w_rel:.2e}, losses {l_rel:.2e}, params {p_rel:.2e} (relative)");
        // The excess comes from the proxy, whose parameters drift by ~1e-6.
        assert!(w_rel < 1e-6, "{n} ranks: weights {a:?} vs {b:?}");
        assert!(l_rel < 1e-5, "{n} ranks: losses {la:?} vs {lb:?}");
        assert!(p_rel < 1e-5, "{n} ranks: parameters {p_rel:.3e}");
        assert_eq!(
            metric(&dir, "doremi/weight/noise").len(),
            12,
            "rank 0 logs the weights"
        );
    }
}

#[test]
fn doremi_bad_input_is_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    three_domain_dataset(t);
    let other = train_tiny(t, 5); // the built-in corpus: another tokenizer
    let cfg = write_config(
        t,
        "other.toml",
        &format!(
            "{RUN}\n[doremi]\nreference = {:?}\n",
            other.display().to_string()
        ),
    );
    fails_with(
        &["train", cfg.to_str().expect("utf8")],
        t,
        &["doremi.reference", "another tokenizer"],
    );
    let cfg = write_config(t, "eta.toml", &format!("{RUN}{PROXY}eta = 0.0\n"));
    fails_with(&["train", cfg.to_str().expect("utf8")], t, &["doremi.eta"]);
    let plain = crate::common::TINY.to_string();
    let cfg = write_config(t, "plain.toml", &format!("{plain}{PROXY}"));
    fails_with(
        &["train", cfg.to_str().expect("utf8")],
        t,
        &["doremi", "prepared data"],
    );
}
