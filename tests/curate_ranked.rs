//! Ranked curation stages (issue 16): a fastText `classifier` stage keeping
//! the top k% by a label's probability, and a `perplexity` stage scoring
//! every document under a Kiln checkpoint into CCNet's head / middle / tail
//! buckets. Scores are checked against independent computations (the
//! classifier library, which tests/classifier_cli.rs holds to pip fastText;
//! the model run one document and one window at a time, unpadded), the
//! percentiles and buckets against a count done here; bad stages fail with
//! one line and write nothing.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use kiln_data::curate::fasttext::FastText;
use kiln_data::curate::files::read_gz_lines;
use kiln_models::LanguageModel;
use serde_json::Value;

use crate::common::{fails_with, fixtures, kiln, run, stderr, tinyshakespeare, write_config, TINY};

/// (id, label, text) of the fastText fixture's held-out lines.
fn labelled_docs() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(fixtures().join("fasttext/test.txt")).expect("fixture");
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (label, body) = l.split_once(' ')?;
            Some((format!("doc-{i:03}"), label.to_string(), body.to_string()))
        })
        .collect()
}

/// The documents as JSONL, and a char model trained on Shakespeare plus
/// their text (so every character has an id) in `tmp/ppl`.
fn setup(tmp: &Path) -> PathBuf {
    let docs = labelled_docs();
    let mut jsonl = String::new();
    for (id, _, text) in &docs {
        jsonl.push_str(&serde_json::json!({"id": id, "text": text}).to_string());
        jsonl.push('\n');
    }
    std::fs::write(tmp.join("docs.jsonl"), jsonl).expect("write");
    let train = tmp.join("train");
    std::fs::create_dir_all(&train).expect("mkdir");
    std::fs::copy(tinyshakespeare(), train.join("a.txt")).expect("copy");
    let texts: Vec<&str> = docs.iter().map(|d| d.2.as_str()).collect();
    std::fs::write(train.join("b.txt"), texts.join("\n")).expect("write");
    let cfg = write_config(
        tmp,
        "ppl.toml",
        &TINY
            .replace("max_steps = 24", "max_steps = 60")
            .replace("stories_docs = 300", "train = \"train\""),
    );
    let o = run(kiln()
        .arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg(tmp.join("ppl"))
        .current_dir(tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    tmp.join("ppl")
}

fn recipe(extra: &str) -> String {
    format!(
        "out = \"out\"\npart_docs = 16\n\n[[source]]\ndomain = \"web\"\npaths = [\"docs.jsonl\"]\nid_field = \"id\"\n\n\
         [[stage]]\nkind = \"classifier\"\nname = \"quality\"\nmodel = {:?}\nlabel = \"__label__clean\"\ntop_percent = 40\n\n\
         [[stage]]\nkind = \"perplexity\"\ncheckpoint = \"ppl\"\ntokenizer = \"ppl/tokenizer.json\"\nbatch_rows = 5\n{extra}",
        fixtures().join("fasttext/words.bin").display().to_string()
    )
}

/// Stage attributes by document id.
fn attributes(out: &Path, stage: &str) -> Vec<(String, Value)> {
    let mut v = Vec::new();
    for k in 0..3 {
        let p = out.join(format!("attributes/{stage}/web/part-{k:05}.jsonl.gz"));
        for line in read_gz_lines(&p).expect("attributes") {
            let a: Value = serde_json::from_str(&line).expect("json");
            v.push((
                a["id"].as_str().expect("id").to_string(),
                a["attributes"].clone(),
            ));
        }
    }
    v
}

/// exp(mean nll) of `<|endoftext|>` + text, one unpadded window at a time.
fn perplexity_by_hand(run_dir: &Path, text: &str) -> f64 {
    let ckpt = kiln_trainer::session::load_checkpoint(run_dir).expect("checkpoint");
    let model =
        kiln_trainer::session::build_model::<Flex>(&ckpt, &Default::default()).expect("model");
    let s = ckpt.config.model.max_seq_len;
    let mut ids = vec![ckpt.tokenizer.eot_id()];
    ids.extend(ckpt.tokenizer.encode(text).expect("encode"));
    let (mut nll, mut n) = (0.0f64, 0usize);
    let mut start = 0;
    while start + 1 < ids.len() {
        let end = (start + s).min(ids.len() - 1);
        let x: Vec<i64> = ids[start..end].iter().map(|&i| i as i64).collect();
        let len = x.len();
        let logits = model.forward(Tensor::<Flex, 2, Int>::from_data(
            TensorData::new(x, [1, len]),
            &Default::default(),
        )); // [1, len, V]
        let v = logits.dims()[2];
        let logits: Vec<f32> = logits.into_data().to_vec().expect("logits");
        for (j, row) in logits.chunks(v).enumerate() {
            let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let lse = m + row.iter().map(|&z| (z as f64 - m).exp()).sum::<f64>().ln();
            nll += lse - row[ids[start + j + 1] as usize] as f64;
            n += 1;
        }
        start = end;
    }
    (nll / n as f64).exp()
}

/// The share (0-100) of `all` strictly better than `x`.
fn percentile(all: &[f64], x: f64, higher_is_better: bool) -> f64 {
    let better = all
        .iter()
        .filter(|&&y| if higher_is_better { y > x } else { y < x })
        .count();
    100.0 * better as f64 / all.len() as f64
}

#[test]
fn classifier_and_perplexity_stages_rank_the_corpus() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let ppl_run = setup(t);
    let r = write_config(t, "recipe.toml", &recipe(""));
    let o = run(kiln().arg("curate").arg(&r).current_dir(t));
    assert!(o.status.success(), "{}", stderr(&o));
    let docs = labelled_docs();
    let out = t.join("out");

    // Classifier: the library's probability, the top 40% kept.
    let ft = FastText::load(&fixtures().join("fasttext/words.bin")).expect("bin");
    let q = attributes(&out, "quality");
    assert_eq!(q.len(), docs.len());
    let want: Vec<f64> = docs
        .iter()
        .map(|d| ft.score(&d.2, "__label__clean").expect("label") as f64)
        .collect();
    for ((id, _), (did, _, _)) in q.iter().zip(&docs) {
        assert_eq!(id, did);
    }
    let got: Vec<f64> = q
        .iter()
        .map(|(_, a)| a["score"].as_f64().expect("score"))
        .collect();
    assert_eq!(got, want, "classifier scores");
    for ((_, a), &s) in q.iter().zip(&want) {
        let p = percentile(&want, s, true);
        // JSON numbers read back within an ulp (serde_json's fast parser).
        let got = a["percentile"].as_f64().expect("percentile");
        assert!((got - p).abs() < 1e-9, "{got} vs {p}");
        assert_eq!(a["keep"].as_bool(), Some(p < 40.0), "{a}");
    }

    // Perplexity: equal to the unbatched computation; buckets by percentile.
    let p = attributes(&out, "perplexity");
    let by_hand: Vec<f64> = docs
        .iter()
        .map(|d| perplexity_by_hand(&ppl_run, &d.2))
        .collect();
    let ppl: Vec<f64> = p
        .iter()
        .map(|(_, a)| a["score"].as_f64().expect("ppl"))
        .collect();
    let worst = ppl
        .iter()
        .zip(&by_hand)
        .map(|(a, b)| (a - b).abs() / b)
        .fold(0.0, f64::max);
    println!("perplexity stage vs one-window-at-a-time: max relative difference {worst:.2e}");
    assert!(worst < 1e-5, "{worst}");
    let mut mean = std::collections::BTreeMap::<&str, (f64, usize)>::new();
    for (((_, a), &x), (_, label, _)) in p.iter().zip(&ppl).zip(&docs) {
        let pct = percentile(&ppl, x, false);
        let bucket = if pct < 30.0 {
            "head"
        } else if pct < 60.0 {
            "middle"
        } else {
            "tail"
        };
        assert_eq!(a["bucket"].as_str(), Some(bucket), "{a}");
        assert_eq!(a["keep"].as_bool(), Some(bucket != "tail"), "{a}");
        let e = mean.entry(label.as_str()).or_default();
        e.0 += x.ln();
        e.1 += 1;
    }
    let gm = |l: &str| (mean[l].0 / mean[l].1 as f64).exp();
    println!(
        "geometric-mean perplexity: clean {:.2}, word salad {:.2}, boilerplate {:.2}",
        gm("__label__clean"),
        gm("__label__salad"),
        gm("__label__boiler")
    );
    assert!(gm("__label__clean") < gm("__label__salad"));

    // The kept set is both stages' keep.
    let kept = std::fs::read_to_string(out.join("kept/web/part-00000.jsonl")).expect("kept");
    let first: Vec<&str> = kept.lines().collect();
    let want_first = q
        .iter()
        .zip(&p)
        .take(16)
        .filter(|((_, a), (_, b))| a["keep"] == true && b["keep"] == true)
        .count();
    assert_eq!(first.len(), want_first);
    let report = std::fs::read_to_string(out.join("REPORT.md")).expect("report");
    assert!(report.contains("perplexity"), "{report}");
}

#[test]
fn bad_ranked_stages_fail_with_one_line_and_write_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    setup(t);
    let check = |name: &str, text: &str, expect: &[&str]| {
        let r = write_config(t, name, text);
        fails_with(&["curate", r.to_str().expect("utf8")], t, expect);
        assert!(!t.join("out").exists(), "{name} wrote output");
    };
    // A corrupt classifier.
    std::fs::write(t.join("bad.bin"), b"not a fastText model").expect("write");
    let bin = fixtures().join("fasttext/words.bin").display().to_string();
    check(
        "corrupt.toml",
        &recipe("").replace(&format!("{bin:?}"), "\"bad.bin\""),
        &["bad.bin"],
    );
    check(
        "label.toml",
        &recipe("").replace("__label__clean", "__label__hq"),
        &["__label__hq", "labels"],
    );
    check(
        "range.toml",
        &recipe("").replace("top_percent = 40", "top_percent = 0"),
        &["top_percent", "out of range"],
    );
    check(
        "nodecision.toml",
        &recipe("").replace("top_percent = 40\n", ""),
        &["threshold", "top_percent"],
    );
    check("cuts.toml", &recipe("cuts = [60, 30]\n"), &["cuts"]);
    check(
        "bucket.toml",
        &recipe("keep = [\"best\"]\n"),
        &["best", "bucket"],
    );
    // The scorer's tokenizer is not the data's (a model of the built-in stories).
    let other = crate::common::train_tiny(t, 5);
    std::fs::copy(other.join("tokenizer.json"), t.join("other.json")).expect("copy");
    check(
        "tok.toml",
        &recipe("").replace("ppl/tokenizer.json", "other.json"),
        &["another tokenizer", "other.json"],
    );
}
