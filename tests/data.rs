//! Corpus scale data (issue 3): Python-written Parquet/JSONL read and
//! tokenized exactly like Python `tokenizers`, prepared shards, weighted
//! mixtures with exact resume, and every bad input with a clear error.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use kiln_data::mixture::MixtureDomain;
use kiln_data::sources::{open_file, resolve_files};
use kiln_data::{Dataset, MixtureSampler, SourceSpec, Tokenizer};

use crate::common::{ckpt, fixtures, kiln, metric, run, stderr, stdout, wait_for, write_config};

pub fn data_fixtures() -> PathBuf {
    fixtures().join("data")
}

struct RefDoc {
    id: String,
    text: String,
    ids: Vec<u32>,
}

fn expected(domain: &str) -> Vec<RefDoc> {
    let text =
        std::fs::read_to_string(data_fixtures().join("expected.json")).expect("expected.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v[domain]
        .as_array()
        .expect("array")
        .iter()
        .map(|d| RefDoc {
            id: d["id"].as_str().expect("id").to_string(),
            text: d["text"].as_str().expect("text").to_string(),
            ids: d["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|x| x.as_u64().expect("u64") as u32)
                .collect(),
        })
        .collect()
}

/// Reads `spec` and checks text, id and token ids against the reference.
fn check_against_reference(spec: &SourceSpec, tok: &Tokenizer, reference: &[RefDoc]) {
    let mut docs = Vec::new();
    for f in resolve_files(spec).expect("resolve") {
        for d in open_file(&f, spec, Arc::default()).expect("open") {
            docs.push(d.expect("doc"));
        }
    }
    assert_eq!(docs.len(), reference.len(), "{:?}", spec.paths);
    let mut mismatched = 0;
    let mut n_tokens = 0;
    for (d, r) in docs.iter().zip(reference) {
        assert_eq!(d.text, r.text, "text of {}", r.id);
        assert_eq!(d.id.as_deref(), Some(r.id.as_str()));
        let ids = tok.encode(&d.text).expect("encode");
        n_tokens += ids.len();
        if ids != r.ids {
            mismatched += 1;
            let first = ids.iter().zip(&r.ids).position(|(a, b)| a != b);
            println!("doc {}: first differing token at {first:?}", r.id);
        }
    }
    println!(
        "{:?}: {} docs, {n_tokens} tokens, {mismatched} documents differ from Python tokenizers",
        spec.paths,
        docs.len()
    );
    assert_eq!(mismatched, 0);
}

#[test]
fn pyarrow_parquet_and_python_jsonl_tokenize_like_python_tokenizers() {
    let dir = data_fixtures();
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).expect("tokenizer");
    for name in ["web.parquet", "web-zstd.parquet"] {
        let mut web = SourceSpec::new("web", &[dir.join(name).to_str().expect("utf8")]);
        web.id_field = Some("id".into());
        check_against_reference(&web, &tok, &expected("web"));
    }
    for name in ["books.jsonl", "books.jsonl.gz", "books.jsonl.zst"] {
        let mut books = SourceSpec::new("books", &[dir.join(name).to_str().expect("utf8")]);
        books.id_field = Some("id".into());
        check_against_reference(&books, &tok, &expected("books"));
    }
}

/// A data spec over the reference fixtures, all documents in train.
fn reference_spec(tmp: &Path) -> PathBuf {
    let d = data_fixtures();
    write_config(
        tmp,
        "data.toml",
        &format!(
            "out = \"prepared\"\ntokenizer = \"{tok}\"\nval_fraction = 0.0\n\
             [[source]]\ndomain = \"web\"\npaths = [\"{web}\"]\n\
             [[source]]\ndomain = \"books\"\npaths = [\"{books}\"]\n",
            tok = d.join("tokenizer.json").display(),
            web = d.join("web.parquet").display(),
            books = d.join("books.jsonl.zst").display(),
        ),
    )
}

#[test]
fn prepared_shards_hold_python_ids_with_eot_and_rerun_is_idempotent() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = reference_spec(tmp.path());
    let o = run(kiln().args(["data", "prepare"]).arg(&spec));
    assert!(o.status.success(), "{}", stderr(&o));
    let report = stdout(&o);
    println!("{report}");
    assert!(
        report.contains("web") && report.contains("books"),
        "{report}"
    );
    let out = tmp.path().join("prepared");
    let tok = Tokenizer::from_file(&data_fixtures().join("tokenizer.json")).expect("tok");
    let hash = kiln_data::tokenizer_hash(&tok).expect("hash");
    let ds = Dataset::open(&out, Some(&hash)).expect("open dataset");
    for dom in &ds.domains {
        let want: Vec<u32> = expected(&dom.name)
            .iter()
            .flat_map(|d| d.ids.iter().copied().chain([0]))
            .collect();
        let mut got = Vec::new();
        dom.train.extend_into(0, dom.train.len(), &mut got);
        assert_eq!(got, want, "shard tokens of {}", dom.name);
        let shard = &dom.train.shards()[0];
        assert_eq!(shard.n_docs() as usize, expected(&dom.name).len());
        assert_eq!(
            shard.doc_start(1) as usize,
            expected(&dom.name)[0].ids.len() + 1
        );
    }
    let bytes_before = std::fs::read(out.join("web/train-00000.bin")).expect("shard");
    let o = run(kiln().args(["data", "prepare"]).arg(&spec));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("up to date"), "{}", stdout(&o));
    // A forced rebuild writes the same bytes.
    let o = run(kiln().args(["data", "prepare", "--force"]).arg(&spec));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(out.join("web/train-00000.bin")).expect("shard"),
        bytes_before
    );
}

#[test]
fn tokenizer_train_streams_sources_and_python_loads_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = reference_spec(tmp.path());
    let out = tmp.path().join("tok.json");
    let o = run(kiln()
        .args(["tokenizer", "train"])
        .arg(&spec)
        .args(["--vocab-size", "400", "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let tok = Tokenizer::from_file(&out).expect("load");
    assert_eq!(tok.vocab_size(), 400);
    assert_eq!(tok.eot_id(), 0);
    let text = &expected("books")[0].text;
    assert_eq!(
        &tok.decode(&tok.encode(text).expect("enc")).expect("dec"),
        text
    );
}

/// Two domains whose documents use disjoint characters, so every sampled
/// token tells which domain it came from.
pub fn two_domain_dataset(tmp: &Path) -> PathBuf {
    let mut a = String::new();
    let mut b = String::new();
    // Base-8 spellings of the index keep every document distinct (identical
    // documents hash to the same split).
    let spell = |mut i: usize, alphabet: &[u8]| {
        let mut w = String::new();
        loop {
            w.push(alphabet[i % 8] as char);
            i /= 8;
            if i == 0 {
                return w;
            }
        }
    };
    for i in 0..400 {
        let tail = spell(i, b"abcdefgh");
        a.push_str(&format!(
            "{{\"text\": \"{}{tail}\"}}\n",
            "abcde fgh ".repeat(2 + i % 7)
        ));
        let tail = spell(i, b"12345678");
        b.push_str(&format!("{}{tail}\n\n", "12345 678 ".repeat(3 + i % 5)));
    }
    std::fs::write(tmp.join("a.jsonl"), a).expect("write");
    std::fs::write(tmp.join("b.txt"), b).expect("write");
    let spec = write_config(
        tmp,
        "mix.toml",
        "out = \"mix\"\ntokenizer = \"tok.json\"\nval_fraction = 0.05\nshard_tokens = 5000\n\
         [[source]]\ndomain = \"letters\"\npaths = [\"a.jsonl\"]\n\
         [[source]]\ndomain = \"digits\"\npaths = [\"b.txt\"]\nformat = \"text-blocks\"\n",
    );
    let o = run(kiln()
        .args(["tokenizer", "train"])
        .arg(&spec)
        .args(["--kind", "char", "--vocab-size", "0", "--out"])
        .arg(tmp.join("tok.json")));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(kiln().args(["data", "prepare"]).arg(&spec));
    assert!(o.status.success(), "{}", stderr(&o));
    tmp.join("mix")
}

#[test]
fn mixture_token_proportions_match_the_weights() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = two_domain_dataset(tmp.path());
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).expect("tok");
    let ds = Dataset::open(&dir, None).expect("dataset");
    assert!(
        ds.domains.iter().all(|d| d.train.shards().len() > 1),
        "want several shards"
    );
    let letters: Vec<u32> = "abcdefgh"
        .chars()
        .map(|c| tok.token_to_id(&c.to_string()).expect("id"))
        .collect();
    let digits: Vec<u32> = "12345678"
        .chars()
        .map(|c| tok.token_to_id(&c.to_string()).expect("id"))
        .collect();
    for (w_letters, w_digits) in [(0.3, 0.7), (0.9, 0.1), (2.0, 2.0)] {
        let domains: Vec<MixtureDomain> = ds
            .domains
            .iter()
            .map(|d| MixtureDomain {
                name: d.name.clone(),
                tokens: Arc::new(kiln_data::ShardStream::new(
                    d.train
                        .shards()
                        .iter()
                        .map(|s| kiln_data::Shard::open(s.path()).expect("shard"))
                        .collect(),
                )),
                weight: if d.name == "letters" {
                    w_letters
                } else {
                    w_digits
                },
            })
            .collect();
        let mut s = MixtureSampler::new(domains, 32, 8, 11, 0, 1).expect("sampler");
        let names = s.domain_names();
        // Tokens per domain, telling each row's domain by its content.
        let (mut t_letters, mut t_digits) = (0usize, 0usize);
        for _ in 0..500 {
            let (b, labels) = s.next_batch_with_domains();
            for (row, label) in b.inputs.chunks(32).zip(labels) {
                let has_l = row.iter().any(|t| letters.contains(t));
                let has_d = row.iter().any(|t| digits.contains(t));
                assert!(has_l != has_d, "a row mixes or lacks domains: {row:?}");
                assert_eq!(
                    names[label] == "letters",
                    has_l,
                    "row labelled {}",
                    names[label]
                );
                if has_l {
                    t_letters += row.len();
                } else {
                    t_digits += row.len();
                }
            }
        }
        let w = w_letters / (w_letters + w_digits);
        let share = t_letters as f64 / (t_letters + t_digits) as f64;
        println!(
            "weights {w_letters}:{w_digits}: {} tokens sampled, letters share {share:.4} (target {w:.4})",
            t_letters + t_digits
        );
        assert!((share - w).abs() < 0.01, "{share} vs {w}");
    }
}

pub const MIX_RUN: &str = r#"
[model]
dim = 32
n_layers = 2
n_heads = 4
n_kv_heads = 2
ffn_dim = 64
max_seq_len = 32

[data]
datasets = ["mix"]

[data.mixture]
letters = 0.3
digits = 0.7

[optimizer]
lr = 3e-3

[training]
max_steps = 24
batch_size = 4
eval_every = 8
eval_batches = 2
log_every = 1
seed = 7

[checkpoint]
every = 8
keep_last = 10

[logging]
sample_tokens = 0
"#;

#[test]
fn mixture_run_logs_shares_and_resumes_exactly_after_kill_9() {
    let tmp = tempfile::tempdir().expect("tmp");
    two_domain_dataset(tmp.path());
    let cfg = write_config(tmp.path(), "run.toml", MIX_RUN);
    let full = tmp.path().join("full");
    let o = run(kiln()
        .arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg(&full)
        .current_dir(tmp.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let share = metric(&full, "data/share/letters");
    let last = share.last().expect("share logged").1;
    println!("letters share after 24 steps: {last:.4} (weight 0.3)");
    assert!((last - 0.3).abs() < 0.01, "{last}");
    for d in ["letters", "digits"] {
        assert_eq!(
            metric(&full, &format!("val/loss/{d}")).len(),
            3,
            "val/loss/{d}"
        );
    }

    // 24 steps x 4 rows = 96 samples; the smaller domain has more windows
    // than that, so the kill at step 8 lands mid-epoch of both domains.
    let cut = tmp.path().join("cut");
    let mut child = kiln()
        .arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg(&cut)
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(wait_for(
        &ckpt(&cut, 8).join("manifest.json"),
        Duration::from_secs(120)
    ));
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(!ckpt(&cut, 24).exists(), "finished before the kill");
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ckpt(&cut, 8).join("trainer_state.json")).expect("state"),
    )
    .expect("json");
    assert_eq!(state["mixture"]["samples"], 32, "{state}");

    let o = run(kiln()
        .arg("train")
        .arg("--resume")
        .arg(&cut)
        .current_dir("/"));
    assert!(o.status.success(), "{}", stderr(&o));
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    ] {
        let a = std::fs::read(ckpt(&full, 24).join(file)).expect("full");
        let b = std::fs::read(ckpt(&cut, 24).join(file)).expect("resumed");
        if file == "trainer_state.json" {
            let strip = |b: &[u8]| {
                let mut v: serde_json::Value = serde_json::from_slice(b).expect("json");
                v["elapsed_s"] = 0.into();
                v
            };
            assert_eq!(strip(&a), strip(&b));
        } else {
            assert!(a == b, "{file} after resume differs");
        }
    }
    assert_eq!(metric(&full, "train/loss"), metric(&cut, "train/loss"));
    assert_eq!(
        metric(&full, "val/loss/digits"),
        metric(&cut, "val/loss/digits")
    );
}

pub fn write_dir(p: &Path) -> PathBuf {
    write_config(p, "run.toml", MIX_RUN);
    p.to_path_buf()
}

#[test]
fn raw_sources_are_prepared_into_the_run_dir_and_eval_reads_them_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    two_domain_dataset(tmp.path());
    let text = MIX_RUN
        .replace("datasets = [\"mix\"]", "spec = \"mix.toml\"")
        .replace("max_steps = 24", "max_steps = 4")
        .replace("every = 8", "every = 2")
        // The run then evaluates every window, as `kiln eval` does.
        .replace("eval_batches = 2", "eval_batches = 100000");
    write_config(tmp.path(), "spec.toml", &text);
    let o = run(kiln()
        .args(["train", "spec.toml", "--run-dir", "run"])
        .current_dir(tmp.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let run_dir = tmp.path().join("run");
    assert!(run_dir.join("data/manifest.json").exists());
    let saved = std::fs::read_to_string(run_dir.join("config.toml")).expect("config");
    let data_dir = std::fs::canonicalize(run_dir.join("data")).expect("abs");
    assert!(
        saved.contains(&format!("datasets = [\"{}\"]", data_dir.display()))
            && !saved.contains("spec ="),
        "{saved}"
    );
    let o = run(kiln().arg("eval").arg(&run_dir).current_dir("/"));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    // The whole split of each domain, as the run's last evaluation.
    let domains = v["domains"].as_object().expect("per-domain losses");
    assert_eq!(domains.len(), 2, "{v}");
    for (name, d) in domains {
        let logged = metric(&run_dir, &format!("val/loss/{name}"));
        assert!(
            (d["loss"].as_f64().expect("loss") - logged[logged.len() - 1].1).abs() < 1e-6,
            "{name}: {v} vs {logged:?}"
        );
    }
}

#[test]
fn a_prepare_killed_mid_way_leaves_nothing_that_loads_and_reruns_cleanly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = tmp.path();
    let o = run(kiln()
        .args(["data", "stories", "--docs", "8000", "--out"])
        .arg(p.join("s.jsonl")));
    assert!(o.status.success(), "{}", stderr(&o));
    let spec = write_config(
        p,
        "s.toml",
        &format!(
            "out = \"out\"\ntokenizer = \"{}\"\nshard_tokens = 20000\n\
             [[source]]\ndomain = \"stories\"\npaths = [\"s.jsonl\"]\n",
            data_fixtures().join("tokenizer.json").display()
        ),
    );
    let mut child = kiln()
        .args(["data", "prepare"])
        .arg(&spec)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let first = p.join("out/stories/train-00000.bin");
    assert!(
        wait_for(&first, Duration::from_secs(120)),
        "no shard written"
    );
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(
        !p.join("out/manifest.json").exists(),
        "the prepare finished before the kill"
    );
    let err = Dataset::open(&p.join("out"), None).expect_err("a torn dataset must not load");
    assert!(err.to_string().contains("kiln data prepare"), "{err}");
    // Files under shard names are complete shards (a shard is renamed into
    // place only once whole); the one being written has a temp name.
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    for name in names(&p.join("out/stories")) {
        if !name.starts_with('.') {
            let opened = kiln_data::Shard::open(&p.join("out/stories").join(&name));
            assert!(opened.is_ok(), "{name}: {opened:?}");
        }
    }
    let o = run(kiln().args(["data", "prepare"]).arg(&spec));
    assert!(o.status.success(), "{}", stderr(&o));
    let left: Vec<String> = names(&p.join("out/stories"))
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        left.is_empty(),
        "temp files left after the re-run: {left:?}"
    );
    let ds = Dataset::open(&p.join("out"), None).expect("loads after a re-run");
    assert_eq!(ds.manifest.domains[0].stats.docs_read, 8_000);
}
