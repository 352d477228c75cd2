//! `kiln classifier train|predict` (issue 16): trains and predicts through
//! the binary, reads pip fastText's `.bin` with its probabilities, and bad
//! input (corrupt `.bin`, a label file without labels, a threshold out of
//! range) is one `error:` line with exit 2 and no model written.

use std::io::Write;
use std::process::Stdio;

use crate::common::{fails_with, fixtures, kiln, run, stderr, stdout};

fn ft(name: &str) -> String {
    fixtures().join("fasttext").join(name).display().to_string()
}

#[test]
fn classifier_train_then_predict_from_stdin_and_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = dir.path().join("m.bin").display().to_string();
    let args = [
        "classifier",
        "train",
        "--input",
        &ft("train.txt"),
        "--output",
        &model,
    ];
    let small = [
        "--dim",
        "8",
        "--bucket",
        "2000",
        "--word-ngrams",
        "2",
        "--lr",
        "0.5",
        "--seed",
        "3",
    ];
    let o = run(kiln().args(args).args(small));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("3 labels"), "{}", stdout(&o));
    let first = std::fs::read(&model).expect("model");
    let o = run(kiln().args(args).args(small));
    assert!(o.status.success());
    assert!(
        std::fs::read(&model).expect("model") == first,
        "same seed, different bytes"
    );

    let o = run(kiln().args([
        "classifier",
        "predict",
        "--model",
        &model,
        "--k",
        "2",
        "--input",
        &ft("test.txt"),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let from_file = stdout(&o);
    let n_test = std::fs::read_to_string(ft("test.txt"))
        .expect("test")
        .lines()
        .count();
    assert_eq!(from_file.lines().count(), n_test);
    assert!(
        from_file
            .lines()
            .all(|l| l.matches("__label__").count() == 2),
        "{from_file}"
    );

    let mut child = kiln()
        .args(["classifier", "predict", "--model", &model, "--k", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let input = std::fs::read(ft("test.txt")).expect("test");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success());
    assert_eq!(stdout(&o), from_file, "stdin and --input differ");
}

#[test]
fn classifier_predict_reads_pip_fasttext_bin() {
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ft("golden.json")).expect("golden"))
            .expect("json");
    let case = &golden["models"]["words"]["predictions"][0];
    let mut child = kiln()
        .args([
            "classifier",
            "predict",
            "--model",
            &ft("words.bin"),
            "--k",
            "0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let text = case["text"].as_str().expect("text");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    let out = stdout(&o);
    let fields: Vec<&str> = out.split_whitespace().collect();
    let labels = case["labels"].as_array().expect("labels");
    let probs = case["probs"].as_array().expect("probs");
    assert_eq!(fields.len(), 2 * labels.len(), "{out}");
    for (i, (label, prob)) in labels.iter().zip(probs).enumerate() {
        assert_eq!(fields[2 * i], label.as_str().expect("label"));
        let got: f64 = fields[2 * i + 1].parse().expect("prob");
        let diff = (got - prob.as_f64().expect("prob")).abs();
        assert!(diff <= 1e-5, "{label}: {got} vs {prob}");
    }
}

#[test]
fn classifier_bad_input_is_one_line_exit_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let mut bytes = std::fs::read(ft("words.bin")).expect("bin");
    bytes.truncate(bytes.len() / 2);
    std::fs::write(d.join("cut.bin"), &bytes).expect("write");
    std::fs::write(d.join("text.bin"), b"not a model at all").expect("write");
    std::fs::write(d.join("plain.txt"), "no labels here\nnor here\n").expect("write");
    let predict = |model: &str, expect: &[&str]| {
        fails_with(
            &[
                "classifier",
                "predict",
                "--model",
                model,
                "--input",
                &ft("test.txt"),
            ],
            d,
            expect,
        )
    };
    predict(
        "cut.bin",
        &[
            "cut.bin",
            "truncated at byte",
            "input matrix",
            "download it again",
        ],
    );
    predict("text.bin", &["text.bin", "not a fastText model", "byte 0"]);
    predict("missing.bin", &["missing.bin"]);
    fails_with(
        &[
            "classifier",
            "predict",
            "--model",
            &ft("words.bin"),
            "--threshold",
            "1.5",
        ],
        d,
        &["--threshold 1.5", "[0, 1]"],
    );
    fails_with(
        &[
            "classifier",
            "train",
            "--input",
            "plain.txt",
            "--output",
            "out.bin",
        ],
        d,
        &["plain.txt", "no line has a label", "__label__NAME text"],
    );
    fails_with(
        &[
            "classifier",
            "train",
            "--input",
            &ft("train.txt"),
            "--output",
            "out.bin",
            "--dim",
            "0",
        ],
        d,
        &["classifier dim = 0"],
    );
    assert!(
        !d.join("out.bin").exists() && !d.join("out.bin.tmp").exists(),
        "wrote a model"
    );
}
