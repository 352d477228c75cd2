//! Bad corpus inputs (issue 3): corrupt gzip/zstd/Parquet, a missing text
//! column, invalid UTF-8, bad mixtures, shards and tokenizers: each one a clear
//! error naming the file and offset/row (or a counted, reported skip).

use std::path::{Path, PathBuf};

use crate::common::{fails_with, kiln, run, stderr, stdout, write_config};
use crate::data::{data_fixtures, two_domain_dataset, write_dir, MIX_RUN};

/// A spec with one source `paths` (plus a good one) and the fixture tokenizer.
fn spec_with(tmp: &Path, source: &str) -> PathBuf {
    let d = data_fixtures();
    write_config(
        tmp,
        "data.toml",
        &format!(
            "out = \"out\"\ntokenizer = \"{}\"\n[[source]]\ndomain = \"good\"\npaths = [\"{}\"]\n\
             [[source]]\ndomain = \"bad\"\n{source}\n",
            d.join("tokenizer.json").display(),
            d.join("books.jsonl").display()
        ),
    )
}

fn corrupt_copy(tmp: &Path, from: &str, to: &str, f: impl Fn(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(data_fixtures().join(from)).expect("fixture");
    f(&mut bytes);
    std::fs::write(tmp.join(to), bytes).expect("write");
}

#[test]
fn corrupt_gzip_zstd_and_parquet_name_the_file_and_skip_bad_continues() {
    type Case = (&'static str, &'static str, fn(&mut Vec<u8>), &'static str);
    let cases: [Case; 4] = [
        (
            "books.jsonl.gz",
            "bad.jsonl.gz",
            |b| b.truncate(b.len() / 2),
            "line ",
        ),
        (
            "books.jsonl.zst",
            "bad.jsonl.zst",
            |b| b.truncate(b.len() / 2),
            "line ",
        ),
        (
            "books.jsonl.zst",
            "junk.jsonl.zst",
            |b| {
                for x in &mut b[20..200] {
                    *x ^= 0x5a;
                }
            },
            "line ",
        ),
        (
            "web.parquet",
            "bad.parquet",
            |b| b.truncate(b.len() - 100),
            "footer",
        ),
    ];
    for (from, to, f, at) in cases {
        let tmp = tempfile::tempdir().expect("tmp");
        corrupt_copy(tmp.path(), from, to, f);
        spec_with(tmp.path(), &format!("paths = [\"{to}\"]"));
        fails_with(
            &["data", "prepare", "data.toml"],
            tmp.path(),
            &[to, "corrupt", at, "--skip-bad"],
        );
        assert!(!tmp.path().join("out/manifest.json").exists());
        let o = run(kiln()
            .args(["data", "prepare", "data.toml", "--skip-bad"])
            .current_dir(tmp.path()));
        assert!(o.status.success(), "{}", stderr(&o));
        let report = stdout(&o);
        assert!(
            report.contains("skipped:") && report.contains(to),
            "{report}"
        );
        let m = kiln_data::Manifest::read(&tmp.path().join("out")).expect("manifest");
        assert_eq!(m.domains[1].stats.bad_files.len(), 1);
        assert_eq!(m.domains[0].train.docs + m.domains[0].val.docs, 11);
    }
}

#[test]
fn parquet_without_the_text_column_lists_the_columns() {
    let tmp = tempfile::tempdir().expect("tmp");
    corrupt_copy(tmp.path(), "web.parquet", "web.parquet", |_| {});
    spec_with(
        tmp.path(),
        "paths = [\"web.parquet\"]\ntext_field = \"content\"",
    );
    fails_with(
        &["data", "prepare", "data.toml"],
        tmp.path(),
        &["web.parquet", "no column \"content\"", "id, url, text"],
    );
}

#[test]
fn invalid_utf8_is_replaced_counted_and_empty_documents_skipped() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(
        tmp.path().join("x.jsonl"),
        b"{\"text\": \"caf\xe9 au lait\"}\n{\"text\": \"   \"}\n{\"text\": \"fine\"}\n{\"text\": \"\"}\n",
    )
    .expect("write");
    spec_with(tmp.path(), "paths = [\"x.jsonl\"]");
    let o = run(kiln()
        .args(["data", "prepare", "data.toml"])
        .current_dir(tmp.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let m = kiln_data::Manifest::read(&tmp.path().join("out")).expect("manifest");
    let st = &m.domains[1].stats;
    assert_eq!(
        (st.docs_read, st.invalid_utf8_docs, st.empty_docs),
        (4, 1, 2)
    );
    assert_eq!(m.domains[1].train.docs + m.domains[1].val.docs, 2);
    println!("{}", stdout(&o));
}

#[test]
fn bad_mixtures_shards_and_tokenizers_in_a_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    two_domain_dataset(tmp.path());
    let p = tmp.path();
    write_config(
        p,
        "unknown.toml",
        &MIX_RUN.replace("letters = 0.3", "letterz = 0.3"),
    );
    fails_with(
        &["train", "unknown.toml", "--run-dir", "r1"],
        p,
        &["unknown domain \"letterz\"", "\"letters\"", "\"digits\""],
    );
    write_config(
        p,
        "zero.toml",
        &MIX_RUN
            .replace("letters = 0.3", "letters = 0")
            .replace("digits = 0.7", "digits = 0.0"),
    );
    fails_with(
        &["train", "zero.toml", "--run-dir", "r2"],
        p,
        &["data.mixture", "sum to a positive"],
    );
    write_config(
        p,
        "neg.toml",
        &MIX_RUN.replace("letters = 0.3", "letters = -1"),
    );
    fails_with(
        &["train", "neg.toml", "--run-dir", "r3"],
        p,
        &["data.mixture.letters", ">= 0"],
    );

    // A run whose tokenizer is not the dataset's.
    write_config(
        p,
        "tok.toml",
        &MIX_RUN.replace(
            "[optimizer]",
            &format!(
                "[tokenizer]\npath = \"{}\"\n\n[optimizer]",
                data_fixtures().join("tokenizer.json").display()
            ),
        ),
    );
    fails_with(
        &["train", "tok.toml", "--run-dir", "r4"],
        p,
        &["mix", "tokenizer", "sha256:"],
    );

    // One flipped byte in a shard, then a torn header.
    let shard = p.join("mix/digits/train-00001.bin");
    let good = std::fs::read(&shard).expect("shard");
    let mut bad = good.clone();
    bad[100] ^= 1;
    std::fs::write(&shard, &bad).expect("write");
    fails_with(
        &["train", "run.toml", "--run-dir", "r5"],
        &write_dir(p),
        &["train-00001.bin", "checksum"],
    );
    let mut bad = good.clone();
    bad[12] = 3;
    std::fs::write(&shard, &bad).expect("write");
    fails_with(
        &["train", "run.toml", "--run-dir", "r6"],
        &write_dir(p),
        &["train-00001.bin", "header"],
    );
    std::fs::write(&shard, &good).expect("write");
    // An interrupted prepare leaves no manifest: the directory refuses to load.
    std::fs::remove_file(p.join("mix/manifest.json")).expect("rm");
    fails_with(
        &["train", "run.toml", "--run-dir", "r7"],
        &write_dir(p),
        &["manifest.json", "kiln data prepare"],
    );
}
