//! `kiln curate` end to end (issue 16): a recipe of every stage over two
//! domains built from the committed filter fixture (with planted exact and
//! near duplicates); its attributes equal the library's decisions (which
//! tests/curation_filters.rs holds equal to datatrove's); the kept JSONL is
//! what the keep expression selects and `kiln data prepare` reads it; a
//! killed run resumes to byte-identical output; changing only `keep`
//! re-scores nothing; bad recipes fail with one line, exit 2, nothing written.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_data::curate::files::{gzip, read_gz_lines};
use kiln_data::curate::filters::{
    BadWords, C4Quality, FineWebQuality, GopherQuality, GopherRepetition, LanguageFilter,
};
use kiln_data::curate::minhash::{self, simplify_text, MinhashConfig};
use kiln_data::sources::{open_file, resolve_files};
use kiln_data::{Dataset, SourceSpec};
use serde_json::Value;

use crate::common::{fails_with, fixtures, kiln, run, stderr, stdout};

/// Documents per domain taken from the filter fixture.
const WEB_DOCS: usize = 220;
const BOOK_DOCS: usize = 60;
const BAD_WORD: &str = "government";
const KEEP: &str = "gopher_quality.keep && (gopher_repetition.keep || c4.keep) \
                    && lang.score >= 0.5 && !minhash.duplicate && bad_words.keep";

/// The fixture's texts (real and corrupted English of every filter case).
fn fixture_texts() -> Vec<String> {
    let path = fixtures().join("curation").join("filters.jsonl.gz");
    let mut spec = SourceSpec::new("f", &[path.to_str().expect("utf8 path")]);
    spec.metadata_field = Some("case".into());
    let mut out = Vec::new();
    for f in resolve_files(&spec).expect("fixture") {
        for doc in open_file(&f, &spec, Arc::default()).expect("open fixture") {
            let case = doc.expect("fixture line").metadata.expect("case");
            out.push(case["text"].as_str().expect("text").to_string());
        }
    }
    out
}

/// (id, text) of each domain, in the order kiln reads them.
struct Corpus {
    web: Vec<(String, String)>,
    books: Vec<(String, String)>,
}

impl Corpus {
    fn all(&self) -> Vec<(&str, &str)> {
        self.web
            .iter()
            .chain(&self.books)
            .map(|(i, t)| (i.as_str(), t.as_str()))
            .collect()
    }
}

/// Writes web.jsonl and books.jsonl.gz with planted duplicates: an exact
/// copy across domains, a copy differing only in case and punctuation
/// (equal after normalisation) and a near copy (one word changed).
fn write_corpus(dir: &Path) -> Corpus {
    let texts = fixture_texts();
    let mut web: Vec<(String, String)> = texts[..WEB_DOCS]
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("web-{i}"), t.clone()))
        .collect();
    let long: Vec<usize> = (0..WEB_DOCS)
        .filter(|&i| texts[i].split_whitespace().count() > 200)
        .take(3)
        .collect();
    assert_eq!(long.len(), 3, "the fixture has long documents");
    web.push((
        "web-upper".into(),
        texts[long[0]].to_uppercase().replace('.', " !"),
    ));
    let mut words: Vec<&str> = texts[long[1]].split(' ').collect();
    let mid = words.len() / 2;
    words[mid] = "zebra";
    web.push(("web-near".into(), words.join(" ")));
    let mut books: Vec<(String, String)> = texts[WEB_DOCS..WEB_DOCS + BOOK_DOCS]
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("book-{i}"), t.clone()))
        .collect();
    books.push(("book-copy".into(), texts[long[2]].clone()));
    let jsonl = |docs: &[(String, String)]| -> String {
        docs.iter()
            .map(|(id, t)| format!("{}\n", serde_json::json!({"id": id, "text": t})))
            .collect()
    };
    std::fs::write(dir.join("web.jsonl"), jsonl(&web)).expect("write web");
    std::fs::write(dir.join("books.jsonl.gz"), gzip(jsonl(&books).as_bytes()))
        .expect("write books");
    std::fs::write(dir.join("bad_words.txt"), format!("{BAD_WORD}\n")).expect("write list");
    Corpus { web, books }
}

fn recipe_text(keep: &str, gopher_min_words: usize) -> String {
    format!(
        r#"out = "out"
part_docs = 40
keep = "{keep}"

[[source]]
domain = "web"
paths = ["web.jsonl"]
id_field = "id"

[[source]]
domain = "books"
paths = ["books.jsonl.gz"]
id_field = "id"

[[stage]]
kind = "gopher_quality"
min_doc_words = {gopher_min_words}

[[stage]]
kind = "gopher_repetition"

[[stage]]
kind = "c4"

[[stage]]
kind = "fineweb"

[[stage]]
kind = "language"
name = "lang"

[[stage]]
kind = "bad_words"
path = "bad_words.txt"

[[stage]]
kind = "exact_dedup"

[[stage]]
kind = "minhash"
"#
    )
}

fn curate(dir: &Path, recipe: &str, env: Option<(&str, &str)>) -> std::process::Output {
    let path = dir.join("recipe.toml");
    std::fs::write(&path, recipe).expect("write recipe");
    let mut cmd = kiln();
    cmd.arg("curate").arg(&path);
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

fn curate_ok(dir: &Path, recipe: &str) -> String {
    let o = curate(dir, recipe, None);
    assert!(o.status.success(), "kiln curate failed: {}", stderr(&o));
    stdout(&o)
}

/// One stage's attributes of every document, in corpus order.
fn attributes(out: &Path, stage: &str) -> Vec<(String, Value)> {
    let mut rows = Vec::new();
    for domain in ["web", "books"] {
        let dir = out.join("attributes").join(stage).join(domain);
        let mut parts: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("attribute dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
            .collect();
        parts.sort();
        for p in parts {
            for line in read_gz_lines(&p).expect("attribute file") {
                let v: Value = serde_json::from_str(&line).expect("json line");
                rows.push((
                    v["id"].as_str().expect("id").to_string(),
                    v["attributes"].clone(),
                ));
            }
        }
    }
    rows
}

/// Ids in the kept JSONL, in order.
fn kept_ids(out: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for domain in ["web", "books"] {
        let mut parts: Vec<PathBuf> = std::fs::read_dir(out.join("kept").join(domain))
            .expect("kept dir")
            .map(|e| e.expect("entry").path())
            .collect();
        parts.sort();
        for p in parts {
            for line in std::fs::read_to_string(&p).expect("kept part").lines() {
                let v: Value = serde_json::from_str(line).expect("json");
                ids.push(v["id"].as_str().expect("id").to_string());
            }
        }
    }
    ids
}

/// A library filter as (keep, reason) of a text.
type FilterFn<'a> = &'a dyn Fn(&str) -> (bool, String);

fn filter_attr(d: kiln_data::curate::filters::Decision) -> (bool, String) {
    let reason = if d.is_keep() {
        String::new()
    } else {
        d.as_str().to_string()
    };
    (d.is_keep(), reason)
}

fn as_pair(a: &Value) -> (bool, String) {
    (
        a["keep"].as_bool().expect("keep"),
        a["reason"].as_str().expect("reason").to_string(),
    )
}

/// Every stage's attribute equals the library's decision on the same text,
/// and the kept set is exactly what KEEP selects from those decisions.
#[test]
fn curate_attributes_equal_library_decisions_and_keep_selects() {
    let tmp = tempfile::tempdir().expect("tmp");
    let corpus = write_corpus(tmp.path());
    let report = curate_ok(tmp.path(), &recipe_text(KEEP, 50));
    println!("{report}");
    let out = tmp.path().join("out");
    let docs = corpus.all();

    let (gq, gr, c4, fw) = (
        GopherQuality::default(),
        GopherRepetition::default(),
        C4Quality::default(),
        FineWebQuality::default(),
    );
    let lang = LanguageFilter::default();
    let bad = BadWords::from_words([BAD_WORD]);
    let filters: [(&str, FilterFn); 4] = [
        ("gopher_quality", &|t| filter_attr(gq.filter(t))),
        ("gopher_repetition", &|t| filter_attr(gr.filter(t))),
        ("c4", &|t| filter_attr(c4.filter(t))),
        ("fineweb", &|t| filter_attr(fw.filter(t))),
    ];
    let mut decisions: BTreeMap<&str, Vec<bool>> = BTreeMap::new();
    for (stage, f) in filters {
        let rows = attributes(&out, stage);
        assert_eq!(
            rows.len(),
            docs.len(),
            "{stage}: one attribute line per document"
        );
        let mut dropped = 0;
        for ((id, a), (doc_id, text)) in rows.iter().zip(&docs) {
            assert_eq!(id, doc_id, "{stage}: attribute lines follow the documents");
            let want = f(text);
            assert_eq!(as_pair(a), want, "{stage} on {id}");
            dropped += !want.0 as usize;
        }
        // A stage that dropped nothing would not test the comparison.
        assert!(dropped > 0, "{stage} dropped nothing");
        decisions.insert(stage, rows.iter().map(|(_, a)| as_pair(a).0).collect());
    }

    let mut lang_scores = Vec::new();
    for ((id, a), (_, text)) in attributes(&out, "lang").iter().zip(&docs) {
        let o = lang.apply(text);
        assert_eq!(as_pair(a), filter_attr(o.decision.clone()), "lang on {id}");
        assert_eq!(
            a["language"].as_str(),
            Some(o.language.unwrap_or("")),
            "{id}"
        );
        assert_eq!(
            a["score"].as_f64(),
            Some(o.confidence),
            "lang score of {id}"
        );
        lang_scores.push(o.confidence);
    }
    let mut bad_keep = Vec::new();
    for ((id, a), (_, text)) in attributes(&out, "bad_words").iter().zip(&docs) {
        assert_eq!(
            a["word"].as_str(),
            Some(bad.first_match(text).unwrap_or("")),
            "{id}"
        );
        bad_keep.push(a["keep"] == Value::Bool(true));
    }
    assert!(
        bad_keep.iter().any(|k| !k),
        "the bad word occurs in the fixture"
    );

    // Dedup: MinHash clusters as the library computes them over the whole
    // corpus; exact dedup by equal normalised text; the first is kept.
    let texts: Vec<&str> = docs.iter().map(|d| d.1).collect();
    let clusters = minhash::dedup(&MinhashConfig::default(), &texts).expect("dedup");
    let mh = attributes(&out, "minhash");
    for (g, (id, a)) in mh.iter().enumerate() {
        let root = clusters.root(g as u32).expect("root");
        assert_eq!(a["cluster"].as_u64(), Some(root as u64), "{id}");
        assert_eq!(a["duplicate"].as_bool(), Some(root != g as u32), "{id}");
    }
    let mut seen = HashSet::new();
    for ((id, a), (_, text)) in attributes(&out, "exact_dedup").iter().zip(&docs) {
        let first = seen.insert(simplify_text(text));
        assert_eq!(a["keep"].as_bool(), Some(first), "exact_dedup on {id}");
    }
    let dup = |id: &str| {
        mh.iter()
            .find(|r| r.0 == id)
            .map(|r| r.1["duplicate"] == Value::Bool(true))
    };
    for planted in ["web-upper", "web-near", "book-copy"] {
        assert_eq!(
            dup(planted),
            Some(true),
            "{planted} is found as a duplicate"
        );
    }

    let want: Vec<String> = (0..docs.len())
        .filter(|&i| {
            decisions["gopher_quality"][i]
                && (decisions["gopher_repetition"][i] || decisions["c4"][i])
                && lang_scores[i] >= 0.5
                && mh[i].1["duplicate"] == Value::Bool(false)
                && bad_keep[i]
        })
        .map(|i| docs[i].0.to_string())
        .collect();
    assert!(
        !want.is_empty() && want.len() < docs.len() / 2,
        "kept {} of {}",
        want.len(),
        docs.len()
    );
    assert_eq!(kept_ids(&out), want);

    let md = std::fs::read_to_string(out.join("REPORT.md")).expect("REPORT.md");
    // Per-stage drop counts in the report are the library's.
    for (stage, keeps) in &decisions {
        let dropped = keeps.iter().filter(|k| !**k).count();
        let row = format!("| {stage} | {stage} | {dropped} |");
        assert!(md.contains(&row), "REPORT.md lacks {row}");
    }
    let mh_dups = mh
        .iter()
        .filter(|r| r.1["duplicate"] == Value::Bool(true))
        .count();
    assert!(
        md.contains(&format!("| minhash | minhash | {mh_dups} |")),
        "{md}"
    );
    assert!(
        md.contains(&format!("Kept {} of {} documents", want.len(), docs.len())),
        "{md}"
    );
    for section in [
        "## Domains",
        "### Rules",
        "## Dedup clusters: minhash",
        "| cluster size | clusters |",
        "### gopher_quality / gopher_short_doc",
    ] {
        assert!(md.contains(section), "REPORT.md lacks {section}");
    }
}

/// The kept JSONL prepares: `kiln data prepare` reads every kept document.
#[test]
fn curate_output_prepares_with_kiln_data_prepare() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_corpus(tmp.path());
    curate_ok(tmp.path(), &recipe_text(KEEP, 50));
    let out = tmp.path().join("out");
    let kept = kept_ids(&out);
    let spec = tmp.path().join("data.toml");
    std::fs::write(
        &spec,
        format!(
            "out = \"prepared\"\ntokenizer = \"{}\"\nval_fraction = 0.0\n\
             [[source]]\ndomain = \"web\"\npaths = [\"out/kept/web\"]\n\
             [[source]]\ndomain = \"books\"\npaths = [\"out/kept/books\"]\n",
            fixtures().join("data/tokenizer.json").display()
        ),
    )
    .expect("spec");
    let o = run(kiln().args(["data", "prepare"]).arg(&spec));
    assert!(o.status.success(), "{}", stderr(&o));
    let ds = Dataset::open(&tmp.path().join("prepared"), None).expect("prepared dataset");
    let docs: u64 = ds.manifest.domains.iter().map(|d| d.train.docs).sum();
    assert_eq!(docs as usize, kept.len());
}

/// All files under `dir`, relative path -> bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A run killed twice mid-part (half-written temporary files left behind)
/// and run again ends with exactly the bytes of an uninterrupted run.
#[test]
fn curate_resumes_after_kill_byte_identical() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_corpus(tmp.path());
    let recipe = recipe_text(KEEP, 50);
    curate_ok(tmp.path(), &recipe);
    let whole = tree(&tmp.path().join("out"));
    std::fs::rename(tmp.path().join("out"), tmp.path().join("whole")).expect("move");

    let hook = Some(("KILN_CURATE_ABORT_AFTER_DOCS", "90"));
    let o = curate(tmp.path(), &recipe, hook);
    assert!(!o.status.success(), "the hook kills the run");
    let killed = tree(&tmp.path().join("out"));
    assert!(
        killed.keys().any(|k| k.contains(".tmp-")),
        "a half-written temporary file is left: {:?}",
        killed.keys()
    );
    assert!(!killed.contains_key("REPORT.md"));
    assert!(
        !killed.keys().any(|k| k.starts_with("kept")),
        "nothing kept yet"
    );
    let parts_after_first = killed
        .keys()
        .filter(|k| k.ends_with(".jsonl.gz") || k.ends_with(".sketch"))
        .count();
    assert!(parts_after_first > 0, "the killed run finished some parts");

    let o = curate(tmp.path(), &recipe, hook);
    assert!(!o.status.success(), "killed again");
    let parts_after_second = tree(&tmp.path().join("out"))
        .keys()
        .filter(|k| (k.ends_with(".jsonl.gz") || k.ends_with(".sketch")) && !k.contains(".tmp-"))
        .count();
    assert!(
        parts_after_second > parts_after_first,
        "the second run went on from the first"
    );

    let report = curate_ok(tmp.path(), &recipe);
    println!("{report}");
    assert!(report.contains("reused from an earlier run"), "{report}");
    assert!(
        !report.contains(" 0 reused"),
        "finished parts were reused: {report}"
    );
    let resumed = tree(&tmp.path().join("out"));
    assert_eq!(
        resumed.keys().collect::<Vec<_>>(),
        whole.keys().collect::<Vec<_>>()
    );
    for (k, v) in &whole {
        assert!(resumed[k] == *v, "{k} differs after resume");
    }
}

/// Changing only `keep` re-scores nothing and changes the kept set;
/// changing one stage's threshold re-scores that stage alone.
#[test]
fn curate_reuses_attributes_when_keep_or_one_stage_changes() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_corpus(tmp.path());
    curate_ok(tmp.path(), &recipe_text(KEEP, 50));
    let out = tmp.path().join("out");
    let first = kept_ids(&out);
    let gr_before = tree(&out.join("attributes/gopher_repetition"));

    let loose = "gopher_quality.keep && !minhash.duplicate";
    let report = curate_ok(tmp.path(), &recipe_text(loose, 50));
    assert!(report.contains(" 0 parts scored"), "{report}");
    let second = kept_ids(&out);
    assert!(
        second.len() > first.len(),
        "{} vs {}",
        second.len(),
        first.len()
    );

    let report = curate_ok(tmp.path(), &recipe_text(loose, 120));
    println!("{report}");
    let line = |stage: &str| {
        report
            .lines()
            .find(|l| l.trim_start().starts_with(stage))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        line("gopher_quality").contains("docs/s per core"),
        "{report}"
    );
    assert!(line("gopher_repetition").contains("reused"), "{report}");
    assert!(line("minhash").contains("reused"), "{report}");
    assert_eq!(tree(&out.join("attributes/gopher_repetition")), gr_before);
    assert!(
        kept_ids(&out).len() < second.len(),
        "a higher word minimum keeps fewer"
    );
}

/// Each bad recipe: one `error:` line naming the field and the fix, exit 2,
/// and no output directory.
#[test]
fn curate_bad_recipes_fail_with_one_line_and_write_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_corpus(tmp.path());
    let good = recipe_text(KEEP, 50);
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            good.replace("part_docs = 40", "part_docs = [40"),
            vec!["bad-0.toml", "line 3", "fix the recipe's TOML"],
        ),
        (
            good.replace("kind = \"c4\"", "kind = \"c5\""),
            vec!["stage[2].kind", "unknown stage \"c5\"", "gopher_quality"],
        ),
        (
            good.replace("kind = \"c4\"", "kind = \"c4\"\nmin_sentences = 3"),
            vec!["stage[2] (c4)", "min_sentences", "min_num_sentences"],
        ),
        (
            good.replace(
                "min_doc_words = 50",
                "min_doc_words = 50\nmax_bullet_lines_ratio = 1.5",
            ),
            vec!["stage[0].max_bullet_lines_ratio", "1.5", "[0, 1]"],
        ),
        (
            good.replace("name = \"lang\"", "name = \"lang\"\nmin_confidence = 2.0"),
            vec!["stage[4].min_confidence", "[0, 1]"],
        ),
        (
            good.replace("kind = \"minhash\"", "kind = \"minhash\"\nnum_buckets = 0"),
            vec!["stage[7]", "num_buckets", "14"],
        ),
        (
            good.replace(
                "[[stage]]\nkind = \"gopher_repetition\"",
                "[[stage]]\nname = \"x\"",
            ),
            vec!["stage[1]", "no `kind`"],
        ),
        (
            good.replace("path = \"bad_words.txt\"", "path = \"missing.txt\""),
            vec!["stage[5] (bad_words)", "missing.txt"],
        ),
        (
            good.replace("name = \"lang\"", "name = \"gopher_quality\""),
            vec!["stage[4].name", "two stages"],
        ),
        (
            good.replace("web.jsonl\"", "nowhere.jsonl\""),
            vec!["source \"web\".paths", "nowhere.jsonl", "fix the path"],
        ),
        (
            good.replace(KEEP, "gopher_quality.keep &&"),
            vec!["keep", "ends early"],
        ),
        (
            good.replace(KEEP, "gopher_quality.keep & lang.keep"),
            vec!["keep", "use `&&`"],
        ),
        (
            good.replace(KEEP, "language.score >= 0.5"),
            vec!["keep", "no stage is named `language`", "lang"],
        ),
        (
            good.replace(KEEP, "lang.confidence >= 0.5"),
            vec!["keep", "no attribute `confidence`", "score"],
        ),
        (
            good.replace(KEEP, "lang.score >= \\\"high\\\""),
            vec!["keep", "cannot compare a number with a string"],
        ),
        (
            good.replace(KEEP, "lang.score"),
            vec!["keep", "must be true or false"],
        ),
        (
            good.replace(KEEP, "0 < lang.score < 1"),
            vec!["keep", "do not chain"],
        ),
    ];
    for (i, (recipe, expect)) in cases.iter().enumerate() {
        let path = tmp.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, recipe).expect("write");
        let args = ["curate", path.to_str().expect("utf8")];
        fails_with(&args, tmp.path(), expect);
        assert!(!tmp.path().join("out").exists(), "case {i} wrote output");
    }
    fails_with(
        &["curate", "no-such-recipe.toml"],
        tmp.path(),
        &["no-such-recipe.toml", "check the path"],
    );
}
