//! Heuristic filter parity with datatrove (issue 16, must-show 1): every
//! document of a seeded corpus of real and corrupted text gets the same keep /
//! drop-reason decision from Kiln's Gopher quality, Gopher repetition, C4 and
//! FineWeb filters as from datatrove 0.10.1's (fixture written by
//! tests/reference/curation_filters.py), and the filters never panic.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_data::curate::filters::{
    words::split_into_words, C4Quality, FineWebQuality, GopherQuality, GopherRepetition,
};
use kiln_data::sources::{open_file, resolve_files};
use kiln_data::SourceSpec;

use crate::common::fixtures;

struct Case {
    text: String,
    n_words: usize,
    expected: BTreeMap<&'static str, String>,
    c4_text: Option<String>,
}

const FILTERS: [&str; 4] = ["gopher_quality", "gopher_repetition", "c4", "fineweb"];

fn cases() -> Vec<Case> {
    let path = fixtures().join("curation").join("filters.jsonl.gz");
    let mut spec = SourceSpec::new("curation", &[path.to_str().expect("utf8 path")]);
    spec.metadata_field = Some("case".into());
    let mut out = Vec::new();
    for f in resolve_files(&spec).expect("fixture: run tests/reference/curation_filters.py") {
        for doc in open_file(&f, &spec, Arc::default()).expect("open fixture") {
            let doc = doc.expect("fixture line");
            let case = doc.metadata.expect("case field");
            let get = |k: &str| case[k].as_str().expect(k).to_string();
            out.push(Case {
                text: get("text"),
                n_words: case["n_words"].as_u64().expect("n_words") as usize,
                expected: FILTERS.iter().map(|&k| (k, get(k))).collect(),
                c4_text: case["c4_text"].as_str().map(String::from),
            });
        }
    }
    out
}

fn excerpt(text: &str) -> String {
    let s: String = text.chars().take(160).collect();
    format!(
        "{s:?}{}",
        if text.chars().count() > 160 {
            "..."
        } else {
            ""
        }
    )
}

/// Every filter agrees with datatrove on >= 99% of documents, and each rule
/// drops enough documents that a broken rule would show.
#[test]
fn curation_filters_match_datatrove() {
    let cases = cases();
    assert!(cases.len() >= 2000, "fixture has {} documents", cases.len());
    let gq = GopherQuality::default();
    let gr = GopherRepetition::default();
    let c4 = C4Quality::default();
    let fw = FineWebQuality::default();

    let mut word_count_diffs = 0;
    let mut c4_text_diffs = 0;
    let mut failures = Vec::new();
    for name in FILTERS {
        let (mut agree, mut skipped) = (0, 0);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut shown = 0;
        for (i, case) in cases.iter().enumerate() {
            let want = &case.expected[name];
            // datatrove raised (ZeroDivisionError): no decision to compare.
            if want == "error" {
                skipped += 1;
                continue;
            }
            *reasons.entry(want.clone()).or_default() += 1;
            let got = match name {
                "gopher_quality" => gq.filter(&case.text),
                "gopher_repetition" => gr.filter(&case.text),
                "c4" => {
                    let out = c4.apply(&case.text);
                    if out.decision.as_str() == want && out.text != case.c4_text {
                        c4_text_diffs += 1;
                        println!(
                            "  c4 case {i}: cleaned text differs: {}",
                            excerpt(&case.text)
                        );
                    }
                    out.decision
                }
                _ => fw.filter(&case.text),
            };
            if got.as_str() == want {
                agree += 1;
            } else {
                shown += 1;
                let ours = split_into_words(&case.text).len();
                println!(
                    "  {name} case {i}: datatrove {want}, kiln {} (words: datatrove {}, kiln {ours}) {}",
                    got.as_str(),
                    case.n_words,
                    excerpt(&case.text)
                );
            }
        }
        let compared = cases.len() - skipped;
        let rate = agree as f64 / compared as f64;
        println!(
            "{name}: {agree}/{compared} agree ({:.2}%), {skipped} skipped (datatrove raised), {shown} shown above; datatrove decisions {reasons:?}",
            100.0 * rate
        );
        // Must-show 1 asks for >= 99%; we agree on every document, and keep it
        // so: moving one threshold by one step (50 -> 49 words, 0.15 -> 0.16)
        // changes only 4-10 of these decisions, under the 1% allowance.
        if rate < 0.99 || agree != compared {
            failures.push(format!(
                "{name}: {agree}/{compared} ({:.2}%) agree",
                100.0 * rate
            ));
        }
        // A test that cannot fail is a defect: each rule must fire often.
        for (reason, &n) in &reasons {
            if reason != "keep" && reason != "error" && n < 3 {
                println!("  note: {name} reason {reason} occurs only {n} times");
            }
        }
        let drops: usize = reasons
            .iter()
            .filter(|(r, _)| *r != "keep")
            .map(|(_, n)| n)
            .sum();
        assert!(
            drops >= 50 && reasons["keep"] >= 50,
            "{name}: fixture too one-sided: {reasons:?}"
        );
    }
    for (i, case) in cases.iter().enumerate() {
        let ours = split_into_words(&case.text);
        if ours.len() != case.n_words {
            word_count_diffs += 1;
            println!(
                "  words case {i}: spaCy {}, kiln {}",
                case.n_words,
                ours.len()
            );
            if std::env::var_os("KILN_DUMP_WORDS").is_some() {
                println!("  kiln words {i}: {ours:?}");
            }
        }
    }
    println!(
        "word counts differ from spaCy's on {word_count_diffs}/{} documents; C4 cleaned text differs on {c4_text_diffs}",
        cases.len()
    );
    // The word splitter is spaCy's, so counts match on (nearly) every document.
    if (word_count_diffs as f64) > 0.01 * cases.len() as f64 {
        failures.push(format!(
            "word counts: {word_count_diffs}/{} differ",
            cases.len()
        ));
    }
    // C4's line removal: the text it keeps must match too.
    let c4_compared = cases.iter().filter(|c| c.c4_text.is_some()).count();
    if (c4_text_diffs as f64) > 0.01 * c4_compared as f64 {
        failures.push(format!(
            "c4 cleaned text: {c4_text_diffs}/{c4_compared} differ"
        ));
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// Odd inputs never panic any filter.
#[test]
fn curation_filters_never_panic_on_odd_text() {
    let long_word = "x".repeat(5000);
    let mut odd: Vec<String> = [
        "",
        " ",
        "\n",
        "\n\n\n",
        "\r\n",
        "\t\u{0b}\u{0c}",
        "\u{2028}\u{2029}\u{85}",
        ".",
        "...",
        "…",
        "#",
        "-",
        "•",
        "{",
        "[",
        "[1",
        "[]",
        "'s",
        "a.",
        "U.S.A.",
        "e.g.",
        "--",
        "—",
        "😀😀😀",
        "这是一个测试。这是一个测试！",
        "日本語の文章です",
        "привет, мир.",
        "\u{0}\u{1}\u{7f}",
        "\u{feff}text",
        "a\u{301}\u{301}\u{301}",
        "1+1=2",
        "5km 50% $3",
        "'\"“”‘’",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    odd.push(long_word.clone());
    odd.push(format!(
        "A line with {long_word} inside.\nAnother line here, fine."
    ));
    odd.push("the and of ".repeat(40_000));
    odd.push("word\n".repeat(10_000));
    odd.push(".".repeat(10_000));
    // One long chunk of affixes: spaCy peels one per step; we must stay linear.
    odd.push("!".repeat(200_000));
    odd.push("(\"".repeat(100_000));
    odd.push("a-".repeat(5_000));
    // Every char class next to every other: catches slicing at non-boundaries.
    let pieces = [
        "a", "É", ".", "..", "-", ",", "'", "\"", "😀", "字", " ", "\n", "5", "%", "$", "/", "#",
        "…", "+",
    ];
    for a in pieces {
        for b in pieces {
            for c in pieces {
                odd.push(format!("{a}{b}{c}"));
            }
        }
    }
    let gq = GopherQuality::default();
    let gr = GopherRepetition::default();
    let c4 = C4Quality::default();
    let fw = FineWebQuality::default();
    for text in &odd {
        let _ = (
            gq.filter(text),
            gr.filter(text),
            c4.apply(text),
            fw.filter(text),
        );
    }
    // Rules switched off or set to extremes must not divide by zero into a panic.
    let gq_off: GopherQuality = serde_json::from_str(r#"{"min_doc_words": null}"#).expect("config");
    let gr_zero: GopherRepetition =
        serde_json::from_str(r#"{"top_n_grams": [[0, 0.1]], "dup_n_grams": [[0, 0.1]]}"#)
            .expect("config");
    for text in &odd {
        let _ = (gq_off.filter(text), gr_zero.filter(text));
    }
}

/// The configs reject unknown fields (a typo must not silently use a default).
#[test]
fn curation_filter_configs_reject_unknown_fields() {
    let err = serde_json::from_str::<GopherQuality>(r#"{"min_doc_word": 10}"#).expect_err("typo");
    assert!(err.to_string().contains("min_doc_word"), "{err}");
    let c: FineWebQuality = serde_json::from_str(r#"{"line_punct_thr": 0.2}"#).expect("config");
    assert_eq!(c.line_punct_thr, 0.2);
    assert_eq!(c.short_line_length, 30);
    assert!(serde_json::from_str::<C4Quality>(r#"{"min_sentences": 3}"#).is_err());
    assert!(serde_json::from_str::<GopherRepetition>(r#"{"dup_line": 0.1}"#).is_err());
}
