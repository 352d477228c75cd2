//! Bad input gives one typed error, one line, naming the file, the byte
//! offset for a damaged `.bin`, and the fix (issue 16, must-show 6).

use std::path::Path;

use super::fixture;
use crate::curate::fasttext::{Args, FastText, FastTextError};

fn load_err(bytes: &[u8]) -> (FastTextError, String) {
    let err = FastText::from_bytes(Path::new("model.bin"), bytes).unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "not one line: {msg}");
    assert!(msg.starts_with("model.bin: "), "no file name: {msg}");
    (err, msg)
}

fn words_bin() -> Vec<u8> {
    std::fs::read(fixture("words.bin")).unwrap()
}

/// Byte offset of the quant flag: what follows it is the input matrix
/// (16-byte shape + data), the qout flag and the output matrix.
fn quant_offset(model: &FastText) -> usize {
    let matrices = 16 + model.input.data.len() * 4 + 1 + 16 + model.output.data.len() * 4;
    model.to_bytes().len() - matrices - 1
}

#[test]
fn corrupt_bin_wrong_magic_names_offset_and_fix() {
    let mut bytes = words_bin();
    bytes[0] ^= 0xff;
    let (err, msg) = load_err(&bytes);
    assert!(matches!(err, FastTextError::BadMagic { .. }), "{msg}");
    assert!(
        msg.contains("at byte 0") && msg.contains("save_model"),
        "{msg}"
    );
}

#[test]
fn corrupt_bin_bad_version() {
    let mut bytes = words_bin();
    bytes[4..8].copy_from_slice(&99i32.to_le_bytes());
    let (err, msg) = load_err(&bytes);
    assert!(
        matches!(err, FastTextError::BadVersion { got: 99, .. }),
        "{msg}"
    );
    assert!(msg.contains("byte 4"), "{msg}");
}

#[test]
fn truncated_bin_names_section_and_length() {
    let bytes = words_bin();
    for (cut, section) in [
        (10, "args"),
        (bytes.len() / 2, "input matrix"),
        (bytes.len() - 3, "output matrix"),
    ] {
        let (err, msg) = load_err(&bytes[..cut]);
        assert!(matches!(err, FastTextError::Truncated { .. }), "{msg}");
        assert!(
            msg.contains(section) && msg.contains(&format!("{cut} bytes")),
            "{msg}"
        );
        assert!(msg.contains("download it again"), "{msg}");
    }
}

#[test]
fn damaged_matrix_shape_is_refused_before_allocating() {
    let model = FastText::load(&fixture("words.bin")).unwrap();
    let at = quant_offset(&model) + 1;
    let mut bytes = model.to_bytes();
    bytes[at..at + 8].copy_from_slice(&(i64::MAX / 8).to_le_bytes());
    let (err, msg) = load_err(&bytes);
    assert!(
        matches!(
            err,
            FastTextError::Corrupt { .. } | FastTextError::Truncated { .. }
        ),
        "{msg}"
    );
    let mut bytes = model.to_bytes();
    bytes[at..at + 8].copy_from_slice(&7i64.to_le_bytes());
    let (err, msg) = load_err(&bytes);
    assert!(matches!(err, FastTextError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains(&format!("byte {at}")) && msg.contains("nwords + bucket"),
        "{msg}"
    );
}

#[test]
fn quantized_and_word_vector_models_are_refused() {
    let model = FastText::load(&fixture("words.bin")).unwrap();
    let at = quant_offset(&model);
    let mut bytes = model.to_bytes();
    assert_eq!(bytes[at], 0);
    bytes[at] = 1;
    let (err, msg) = load_err(&bytes);
    assert!(matches!(err, FastTextError::Quantized { .. }), "{msg}");
    assert!(msg.contains(&format!("byte {at}")), "{msg}");

    // args: 8 header bytes, then dim ws epoch minCount neg wordNgrams loss model.
    let mut bytes = model.to_bytes();
    bytes[36..40].copy_from_slice(&2i32.to_le_bytes());
    let (err, msg) = load_err(&bytes);
    assert!(
        matches!(
            err,
            FastTextError::NotSupervised {
                kind: "skipgram",
                ..
            }
        ),
        "{msg}"
    );
    let mut bytes = model.to_bytes();
    bytes[32..36].copy_from_slice(&1i32.to_le_bytes());
    let (err, msg) = load_err(&bytes);
    assert!(
        matches!(err, FastTextError::UnsupportedLoss { loss: "hs", .. }),
        "{msg}"
    );
}

#[test]
fn label_file_without_labels_says_how_to_write_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.txt");
    std::fs::write(&path, "just some text\nand more text\n").unwrap();
    let err = FastText::train(&path, &Args::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FastTextError::NoLabels { .. }), "{msg}");
    assert!(
        msg.contains("plain.txt") && msg.contains("`__label__NAME text`"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));

    let missing = dir.path().join("missing.txt");
    let err = FastText::train(&missing, &Args::default()).unwrap_err();
    assert!(matches!(err, FastTextError::Io { .. }) && err.to_string().contains("missing.txt"));
}

#[test]
fn bad_training_args_name_the_field() {
    let path = fixture("train.txt");
    for (args, field) in [
        (
            Args {
                dim: 0,
                ..Args::default()
            },
            "dim",
        ),
        (
            Args {
                lr: -1.0,
                ..Args::default()
            },
            "lr",
        ),
        (
            Args {
                word_ngrams: 0,
                ..Args::default()
            },
            "word_ngrams",
        ),
        (
            Args {
                maxn: 4,
                minn: 5,
                ..Args::default()
            },
            "minn",
        ),
        (
            Args {
                word_ngrams: 2,
                bucket: 0,
                ..Args::default()
            },
            "bucket",
        ),
    ] {
        let err = FastText::train(&path, &args).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("classifier {field} = ")), "{msg}");
    }
}
