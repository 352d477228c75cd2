//! Models trained by pip fastText 0.9.2 (tests/reference/fasttext_reference.py)
//! load and predict the same labels and probabilities; Kiln saves them back
//! byte for byte and trains deterministically.

use super::fixture;
use crate::curate::fasttext::{Args, FastText};

fn golden() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("golden.json"))
        .expect("run tests/reference/fasttext_reference.py");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn fasttext_bin_predictions_match_pip_fasttext() {
    let golden = golden();
    for (name, g) in golden["models"].as_object().unwrap() {
        let model = FastText::load(&fixture(&format!("{name}.bin"))).unwrap();
        assert_eq!(
            model.dict.nwords as u64,
            g["nwords"].as_u64().unwrap(),
            "{name}"
        );
        let labels: Vec<String> = serde_json::from_value(g["labels"].clone()).unwrap();
        assert_eq!(model.labels(), labels, "{name}");
        let mut max_diff = 0.0f64;
        let cases = g["predictions"].as_array().unwrap();
        for case in cases {
            let text = case["text"].as_str().unwrap();
            let want: Vec<String> = serde_json::from_value(case["labels"].clone()).unwrap();
            let probs: Vec<f64> = serde_json::from_value(case["probs"].clone()).unwrap();
            let got = model.predict(text, 0, 0.0);
            let got_labels: Vec<String> = got.iter().map(|p| p.label.clone()).collect();
            assert_eq!(got_labels, want, "{name}: {text:?}");
            for (p, &want) in got.iter().zip(&probs) {
                max_diff = max_diff.max((f64::from(p.prob) - want).abs());
            }
        }
        println!(
            "{name}: {} lines, max |prob - pip fastText| = {max_diff:.3e}",
            cases.len()
        );
        assert!(max_diff <= 1e-5, "{name}: max prob diff {max_diff:e}");
    }
}

#[test]
fn top_k_and_threshold_filter_like_fasttext() {
    let model = FastText::load(&fixture("words.bin")).unwrap();
    let text = "Click here to subscribe to our newsletter";
    let all = model.predict(text, 0, 0.0);
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].prob >= w[1].prob));
    assert_eq!(model.predict(text, 1, 0.0), all[..1].to_vec());
    let cut = (all[1].prob + all[2].prob) / 2.0;
    assert_eq!(model.predict(text, 0, cut), all[..2].to_vec());
    assert!(model.predict(text, 0, 1.1).is_empty());
    let score = model.score(text, &all[0].label).unwrap();
    assert_eq!(score, all[0].prob);
    assert!(model.score(text, "__label__nope").is_none());
}

#[test]
fn saving_a_pip_fasttext_bin_reproduces_its_bytes() {
    for name in ["words.bin", "chars.bin"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let model = FastText::from_bytes(&fixture(name), &bytes).unwrap();
        assert!(model.to_bytes() == bytes, "{name}: re-saved bytes differ");
    }
}

fn reference_args() -> Args {
    Args {
        dim: 8,
        word_ngrams: 2,
        bucket: 2000,
        lr: 0.5,
        epoch: 5,
        min_count: 2,
        seed: 7,
        ..Args::default()
    }
}

/// Top-1 accuracy on the labelled held-out lines of test.txt.
fn accuracy(model: &FastText) -> f64 {
    let text = std::fs::read_to_string(fixture("test.txt")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let right = lines
        .iter()
        .filter(|line| {
            let (label, body) = line.split_once(' ').unwrap();
            model.predict(body, 1, 0.0)[0].label == label
        })
        .count();
    right as f64 / lines.len() as f64
}

#[test]
fn kiln_training_matches_pip_fasttext_accuracy_and_is_deterministic() {
    let args = reference_args();
    let a = FastText::train(&fixture("train.txt"), &args).unwrap();
    let b = FastText::train(&fixture("train.txt"), &args).unwrap();
    assert!(
        a.to_bytes() == b.to_bytes(),
        "same seed, different model bytes"
    );
    let c = FastText::train(&fixture("train.txt"), &Args { seed: 8, ..args }).unwrap();
    assert!(a.to_bytes() != c.to_bytes(), "the seed changes nothing");

    // One thread and the same seed: Kiln replicates fastText's dictionary
    // order (libstdc++ std::sort), initialisation and SGD, so its model is
    // pip fastText's: the dictionary and output matrix byte for byte, the
    // input matrix to float rounding (a few values differ by one ulp; the
    // cause is not found), and the predictions to 1e-7.
    let pip = FastText::load(&fixture("words.bin")).unwrap();
    let names = |m: &FastText| {
        m.dict
            .entries
            .iter()
            .map(|e| (e.word.clone(), e.count))
            .collect::<Vec<_>>()
    };
    assert!(
        names(&a) == names(&pip),
        "dictionary differs from pip fastText's"
    );
    assert_eq!(
        (a.dict.nwords, a.dict.ntokens),
        (pip.dict.nwords, pip.dict.ntokens)
    );
    assert!(
        a.output == pip.output,
        "output matrix differs from pip fastText's"
    );
    let input_diff = a
        .input
        .data
        .iter()
        .zip(&pip.input.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let n_diff = a
        .input
        .data
        .iter()
        .zip(&pip.input.data)
        .filter(|(x, y)| x != y)
        .count();
    let mut pred_diff = 0.0f32;
    let test = std::fs::read_to_string(fixture("test.txt")).unwrap();
    for line in test.lines() {
        let (ours, theirs) = (a.predict(line, 0, 0.0), pip.predict(line, 0, 0.0));
        assert_eq!(
            ours.iter().map(|p| &p.label).collect::<Vec<_>>(),
            theirs.iter().map(|p| &p.label).collect::<Vec<_>>()
        );
        for (x, y) in ours.iter().zip(&theirs) {
            pred_diff = pred_diff.max((x.prob - y.prob).abs());
        }
    }
    println!(
        "kiln-trained vs pip-trained: input matrix {n_diff} of {} values differ, max {input_diff:.2e}; \
         held-out probs max diff {pred_diff:.2e}; accuracy {:.3} vs {:.3}",
        a.input.data.len(),
        accuracy(&a),
        accuracy(&pip)
    );
    assert!(
        input_diff <= 1e-6 && pred_diff <= 1e-5,
        "{input_diff:e} {pred_diff:e}"
    );

    // A Kiln-saved model loads back to the same predictions.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bin");
    a.save(&path).unwrap();
    let back = FastText::load(&path).unwrap();
    assert!(back.to_bytes() == a.to_bytes());
}

#[test]
fn kiln_training_with_char_ngrams_matches_pip_fasttext() {
    let args = Args {
        bucket: 1000,
        minn: 2,
        maxn: 4,
        epoch: 25,
        ..reference_args()
    };
    let ours = FastText::train(&fixture("train.txt"), &args).unwrap();
    let pip = FastText::load(&fixture("chars.bin")).unwrap();
    assert_eq!(ours.dict.entries.len(), pip.dict.entries.len());
    assert!(ours
        .dict
        .entries
        .iter()
        .zip(&pip.dict.entries)
        .all(|(a, b)| a.word == b.word));
    let max = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    };
    let (di, dout) = (
        max(&ours.input.data, &pip.input.data),
        max(&ours.output.data, &pip.output.data),
    );
    let test = std::fs::read_to_string(fixture("test.txt")).unwrap();
    let mut dp = 0.0f32;
    for line in test.lines() {
        for (x, y) in ours
            .predict(line, 0, 0.0)
            .iter()
            .zip(&pip.predict(line, 0, 0.0))
        {
            assert_eq!(x.label, y.label, "{line}");
            dp = dp.max((x.prob - y.prob).abs());
        }
    }
    println!("chars: kiln-trained vs pip-trained max diff: input {di:.2e}, output {dout:.2e}, probs {dp:.2e}");
    assert!(
        di <= 1e-5 && dout <= 1e-5 && dp <= 1e-5,
        "{di:e} {dout:e} {dp:e}"
    );
}
