//! MinHash LSH dedup (issue 16, "Must show" 2): planted near-duplicates at
//! known shingle Jaccard similarities are detected at the theoretical rate
//! 1 - (1 - s^8)^14; exact and normalised duplicates cluster, unrelated
//! documents do not; chains resolve into one cluster with one kept document;
//! edge-case text never panics; memory per document stays constant from N to
//! 10N documents.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use kiln_data::curate::minhash::{dedup, simplify_text, DedupIndex, MinHasher, MinhashConfig};

/// splitmix64: seeded, dependency-free, good enough to pick words.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A lowercase word of 3-8 letters (no digits: those normalise to "0").
    fn word(&mut self) -> String {
        let len = 3 + self.below(6);
        (0..len)
            .map(|_| (b'a' + self.below(26) as u8) as char)
            .collect()
    }

    fn words(&mut self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.word()).collect()
    }
}

fn hasher() -> MinHasher {
    MinHasher::new(MinhashConfig::default()).expect("default config is valid")
}

/// Exact Jaccard similarity of two documents' shingle-hash sets: the quantity
/// MinHash estimates.
fn jaccard(h: &MinHasher, a: &str, b: &str) -> f64 {
    let sa: HashSet<u64> = h.shingles(a).into_iter().collect();
    let sb: HashSet<u64> = h.shingles(b).into_iter().collect();
    let inter = sa.intersection(&sb).count();
    let union = sa.len() + sb.len() - inter;
    if union == 0 {
        return 0.0;
    }
    inter as f64 / union as f64
}

/// A base document and a copy edited to a shingle Jaccard with the base of
/// `target` or just below. Random interior word replacements (each removes up
/// to 5 shingles) while they stay above the target, then replacements from
/// the end backwards (each removes one more shingle) for the fine steps.
/// Returns (base, edited, exact Jaccard).
fn planted_pair(h: &MinHasher, rng: &mut Rng, len: usize, target: f64) -> (String, String, f64) {
    let base = rng.words(len);
    let base_text = base.join(" ");
    let mut edited = base.clone();
    loop {
        let mut trial = edited.clone();
        trial[rng.below(len)] = rng.word();
        if jaccard(h, &base_text, &trial.join(" ")) < target {
            break;
        }
        edited = trial;
    }
    for at in (0..len).rev() {
        let text = edited.join(" ");
        let j = jaccard(h, &base_text, &text);
        if j <= target {
            return (base_text, text, j);
        }
        edited[at] = rng.word();
    }
    let text = edited.join(" ");
    let j = jaccard(h, &base_text, &text);
    (base_text, text, j)
}

/// Signatures equal datatrove 0.10.1's, value for value. Reference (datatrove
/// 0.10.1, spacy 3.8, xxhash 4.1; datatrove's xxhash64 passes `str`, which
/// xxhash 4 refuses, so the hash is given UTF-8 bytes as older xxhash did):
///
/// ```text
/// s = MinhashDedupSignature(output_folder="/tmp/x", config=MinhashConfig())
/// s._hash_func = lambda t: xxhash.xxh64_intdigest(t.encode("utf-8"))
/// simple = simplify_text(text); words = s.word_tokenizer.word_tokenize(simple)
/// sh = s.get_shingles(text); sig = s.get_signature(sh)
/// print(simple, len(words), sh[:3, 0].tolist(), sig[0][:3], sig[13][-1])
/// ```
/// (text, simplified, spaCy word count, first 3 shingles, band 0's first 3
/// minimums, last minimum). datatrove shingles `word_tokenize(simplify_text(
/// text))`, spaCy's blank English tokenizer; the last four texts are ones
/// where it splits the simplified text into more words than whitespace does
/// ("cannot" -> "can" "not", "gonna" -> "gon" "na", "dont" -> "do" "nt",
/// "im" -> "i" "m", "€0" -> "€" "0", "0km" -> "0" "km", emoji split off).
/// Simplification has already removed apostrophes ("don't" -> "don t") and
/// periods ("e.g." -> "e g"), and of the emoticons only letters, digits and
/// emoji survive (":)" and "^_^" vanish, "<3" -> "0", "xD" -> "xd").
type DatatroveCase = (&'static str, &'static str, usize, [u64; 3], [u64; 3], u64);

#[test]
fn signatures_match_datatrove() {
    let h = hasher();
    let cases: [DatatroveCase; 7] = [
        (
            "The quick brown fox jumps over the lazy dog, again and again in 1999!",
            "the quick brown fox jumps over the lazy dog again and again in 0",
            14,
            [
                7797000677988824208,
                4793414983259776074,
                7369512836458661087,
            ],
            [85330943174081874, 366011346326592937, 302227827184868053],
            3963570588256049,
        ),
        (
            "Crème brûlée is a naïve café dessert; 3.14 pies cost $2,50 today — or not?",
            "creme brulee is a naive cafe dessert 0 pies cost 0 today or not",
            14,
            [6734408159510499579, 1419694879024475421, 501893207474958421],
            [117584285985231471, 184578531461894667, 238678295374050453],
            109784962180921969,
        ),
        (
            "Hello world\n\nthis   is a  TEST of the emergency broadcast system",
            "hello world this is a test of the emergency broadcast system",
            11,
            [
                5996669178479991792,
                9306432731031033663,
                12127701815761960727,
            ],
            [609658897838363815, 180163350025226086, 19639726526895597],
            231396092378927692,
        ),
        (
            "I don't think we can't go, they're gonna say it cannot be, dont worry!",
            "i don t think we can t go they re gonna say it cannot be dont worry",
            20,
            [9701055864264144449, 15449609492634484410, 2177576431801797056],
            [18291306693145962, 62512423698686520, 5653487627729253],
            56857268441901959,
        ),
        (
            "Im sure youre right: wont you come? Lemme know, e.g. by 5pm, i.e. soon :) <3",
            "im sure youre right wont you come lemme know e g by 0pm i e soon 0",
            20,
            [18108705866610420975, 1861644441516356109, 3436334800587526358],
            [93046627631456276, 75091167463761651, 261464096017003331],
            421504283024887637,
        ),
        (
            "Prices: €10 or £20, 5km away, 100% sure; hi😀there and 10kg #hashtag @user",
            "prices €0 or £0 0km away 0 sure hi😀there and 0kg hashtag user",
            19,
            [5452601554367629528, 8416580101707417052, 14031055843919964315],
            [18540422891378630, 5435350261501382, 79349575228148513],
            79341785002036617,
        ),
        (
            "Emoticons :) :-( ;) <3 xD ^_^ o.O and 😀😀 survive? Let's see: gotta wanna gimme ain't.",
            "emoticons 0 xd o o and 😀😀 survive let s see gotta wanna gimme ain t",
            18,
            [13889441702607175972, 1682609878234622393, 2309205383887401073],
            [17379952194211558, 158313900690817712, 125199998209813809],
            264310983310616736,
        ),
    ];
    for (text, simple, words, shingles, band0, last) in cases {
        assert_eq!(simplify_text(text), simple);
        // One shingle per 5-word window of the spaCy words.
        assert_eq!(h.shingles(text).len(), words - 4, "{text}");
        assert_eq!(h.shingles(text)[..3], shingles, "{text}");
        let sig = h.signature(text).expect("at least 5 words");
        assert_eq!(sig.len(), 112);
        assert_eq!((&sig[..3], sig[111]), (&band0[..], last), "{text}");
    }
    // A document of exactly 5 words is one shingle and has a signature.
    assert_eq!(
        h.shingles("one two three four five"),
        [16779001585721188446]
    );
    let sig = h.signature("one two three four five").expect("5 words");
    assert_eq!(
        (&sig[..3], sig[111]),
        (
            &[699275049159941947, 1668490093867446599, 889504911880821557][..],
            1688177567886525154
        )
    );
}

#[test]
fn planted_near_duplicates_detected_at_theoretical_rate() {
    let config = MinhashConfig::default();
    let h = hasher();
    let mut rng = Rng(16);
    let targets = [0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95];
    let pairs_per_band = 1000;
    // docs[2i], docs[2i+1] is pair i; band of pair i is targets[i / pairs_per_band].
    let mut docs = Vec::new();
    let mut sims = Vec::new();
    for &t in &targets {
        for _ in 0..pairs_per_band {
            let (a, b, j) = planted_pair(&h, &mut rng, 200, t);
            docs.push(a);
            docs.push(b);
            sims.push(j);
        }
    }
    let clusters = dedup(&config, &docs).expect("dedup runs");

    println!("band   pairs  mean_J  detected  theory   tol(4sd)");
    let mut failures = Vec::new();
    for (band, &t) in targets.iter().enumerate() {
        let range = band * pairs_per_band..(band + 1) * pairs_per_band;
        let mut detected = 0usize;
        let (mut expected, mut var, mut mean_j) = (0.0, 0.0, 0.0);
        for i in range {
            let (a, b) = (2 * i as u32, 2 * i as u32 + 1);
            if clusters.root(a) == clusters.root(b) {
                detected += 1;
            }
            let p = config.candidate_probability(sims[i]);
            expected += p;
            var += p * (1.0 - p);
            mean_j += sims[i] / pairs_per_band as f64;
        }
        // +1: at p near 0 or 1 the variance vanishes but counts are whole.
        let tol = 4.0 * f64::sqrt(var) + 1.0;
        println!(
            "{t:<6} {pairs_per_band:>5}  {mean_j:.3}   {detected:>5}   {expected:>7.1}  {tol:.1}"
        );
        if (detected as f64 - expected).abs() > tol {
            failures.push(format!(
                "band {t}: detected {detected}, theory {expected:.1} +- {tol:.1}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "detection off the theoretical curve: {failures:?}"
    );
}

#[test]
fn exact_and_normalised_duplicates_cluster_unrelated_do_not() {
    let config = MinhashConfig::default();
    let mut docs = vec![
        "The Quick brown fox, in 1999, jumped over 3.5 lazy dogs!".to_string(),
        "The Quick brown fox, in 1999, jumped over 3.5 lazy dogs!".to_string(),
        "the quick brown fox in 2024 jumped over 7 lazy dogs".to_string(),
        "THE   QUICK\nbrown fox -- in 12 -- jumped; over 0.25 lazy... dogs?".to_string(),
    ];
    let mut rng = Rng(7);
    let unrelated = 3000;
    for _ in 0..unrelated {
        docs.push(rng.words(60).join(" "));
    }
    let clusters = dedup(&config, &docs).expect("dedup runs");
    for doc in 0..4 {
        assert_eq!(
            clusters.root(doc),
            Some(0),
            "variant {doc} not clustered with doc 0"
        );
    }
    assert!(clusters.is_kept(0));
    assert!(!clusters.is_kept(1) && !clusters.is_kept(2) && !clusters.is_kept(3));
    let report = clusters.report();
    println!("{report:?}");
    assert_eq!(
        report.removed_exact, 3,
        "the variants are exact after normalisation"
    );
    assert_eq!(
        report.duplicate_clusters, 1,
        "unrelated documents were clustered"
    );
    assert_eq!(report.kept, 1 + unrelated);
    assert_eq!(report.largest_cluster, 4);
}

#[test]
fn chain_resolves_into_one_cluster_with_one_kept_doc() {
    // d_k = W[5k .. 5k+200]: neighbours share 195 of 200 words (J ~ 0.95,
    // detected with probability ~1 - 1e-7), d_0 and d_40 share none.
    let h = hasher();
    let w = Rng(3).words(400);
    let chain: Vec<String> = (0..=40).map(|k| w[5 * k..5 * k + 200].join(" ")).collect();
    assert_eq!(jaccard(&h, &chain[0], &chain[40]), 0.0);
    assert!(jaccard(&h, &chain[0], &chain[1]) > 0.9);
    // Insert out of chain order (evens, then odds backwards) so the union
    // order is not the chain order.
    let order: Vec<usize> = (0..=40)
        .step_by(2)
        .chain((1..41).step_by(2).rev())
        .collect();
    let docs: Vec<&String> = order.iter().map(|&k| &chain[k]).collect();
    let clusters = dedup(&MinhashConfig::default(), &docs).expect("dedup runs");
    for doc in 0..docs.len() as u32 {
        assert_eq!(
            clusters.root(doc),
            Some(0),
            "doc {doc} (chain link {})",
            order[doc as usize]
        );
    }
    let report = clusters.report();
    assert_eq!(
        (
            report.kept,
            report.duplicate_clusters,
            report.largest_cluster
        ),
        (1, 1, 41)
    );
    assert_eq!(report.removed_exact + report.removed_fuzzy, 40);
}

#[test]
fn edge_case_text_never_panics_and_clusters_sensibly() {
    let long_word = "x".repeat(100_000);
    let docs: Vec<String> = vec![
        "".into(),                                                              // 0: empty
        "   \n\t ".into(),       // 1: whitespace only -> ""
        "\u{301}\u{301}".into(), // 2: combining marks only -> ""
        "Hi!".into(),            // 3: short
        "hi".into(),             // 4: short, same after normalising
        "a b c d".into(),        // 5: 4 words: no signature
        "A, B; C: D.".into(),    // 6: same as 5
        "Ünïcödé téxt wïth àccents éverywhere ök".into(), // 7
        "unicode text with accents everywhere ok".into(), // 8: same as 7
        "東京は大きい。".into(), // 9: one CJK "word"
        "🎉🎉 🎉 party 🎉".into(), // 10
        "\u{0}\u{7f}control\u{9f}chars".into(), // 11
        "٣٤٥ numbers in arabic indic digits".into(), // 12
        "0 numbers in arabic indic digits".into(), // 13: same as 12
        long_word.clone(),       // 14
        format!("{long_word} {long_word} {long_word} {long_word} {long_word}"), // 15
        "\u{feff}\u{200b}".into(), // 16: BOM, zero-width space
    ];
    let h = hasher();
    assert!(
        h.signature("a b c d").is_none(),
        "datatrove gives < 5 words no signature"
    );
    assert!(h.signature(&docs[15]).is_some());
    let clusters = dedup(&MinhashConfig::default(), &docs).expect("dedup runs");
    let root = |d: u32| clusters.root(d).expect("doc id in range");
    assert_eq!(
        (root(1), root(2)),
        (0, 0),
        "texts that normalise to empty cluster together"
    );
    assert_eq!(root(4), 3);
    assert_eq!(root(6), 5);
    assert_eq!(root(8), 7);
    assert_eq!(root(13), 12);
    for d in [9, 10, 11, 14, 15, 16] {
        assert_eq!(root(d), d, "doc {d} clustered with something unrelated");
    }
    assert_eq!(clusters.root(docs.len() as u32), None);
}

/// Corpus for the memory tests: `n` documents of 60 random words, 10% of
/// them exact copies of an earlier one and every 50th a near copy of the one
/// before (one word changed), generated on the fly (the corpus itself is never
/// held). `spill`: (directory, entries per stream in memory).
fn index_corpus(n: usize, spill: Option<(&Path, usize)>) -> (DedupIndex, usize) {
    let h = hasher();
    let mut rng = Rng(42);
    let bands = h.config().num_buckets;
    let mut index = match spill {
        Some((dir, max)) => DedupIndex::with_spill(bands, dir, max),
        None => DedupIndex::new(bands),
    };
    let mut prev: Vec<String> = Vec::new();
    let mut dups = Vec::new();
    for i in 0..n {
        let text = if i % 10 == 9 {
            dups.pop().unwrap_or_default()
        } else if i % 50 == 1 && !prev.is_empty() {
            prev[59] = rng.word();
            prev.join(" ")
        } else {
            prev = rng.words(60);
            prev.join(" ")
        };
        if i % 10 == 0 {
            dups.push(text.clone());
        }
        index
            .insert(&h.sketch(&text))
            .expect("fewer than 2^32 docs");
    }
    let bytes = index.heap_bytes();
    (index, bytes)
}

#[test]
fn index_bytes_per_document_constant_from_n_to_10n() {
    let n = 2_000;
    let (_, small) = index_corpus(n, None);
    let (index, large) = index_corpus(10 * n, None);
    let (per_small, per_large) = (small as f64 / n as f64, large as f64 / (10 * n) as f64);
    println!(
        "index heap: {n} docs {per_small:.0} B/doc, {} docs {per_large:.0} B/doc",
        10 * n
    );
    // 15 entries of 12 bytes = 180 B/doc, up to 2x Vec growth slack. Both
    // sizes under one per-document bound is the linear scaling (the ratio
    // between them moves with where N falls between powers of two).
    assert!(
        per_small <= 400.0 && per_large <= 400.0,
        "{per_small} / {per_large} B/doc"
    );
    let report = index.resolve().expect("in memory").report();
    assert_eq!(report.removed_exact, 10 * n / 10, "{report:?}");
}

#[test]
fn spilled_index_resolves_like_in_memory() {
    let n = 5_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let memory = index_corpus(n, None).0.resolve().expect("in memory");
    // 333 entries per stream: 15 runs per stream plus an in-memory tail.
    let (spilled, _) = index_corpus(n, Some((dir.path(), 333)));
    let runs = std::fs::read_dir(dir.path()).expect("spill dir").count();
    assert_eq!(runs, 15 * (n / 333), "one run per full buffer per stream");
    let spilled = spilled.resolve().expect("spilled");
    let report = memory.report();
    println!("{report:?}");
    assert!(
        report.removed_fuzzy >= n / 50 - 5,
        "near copies found: {report:?}"
    );
    assert_eq!(spilled.report(), report);
    for doc in 0..n as u32 {
        assert_eq!(spilled.root(doc), memory.root(doc), "doc {doc}");
    }
    let left = std::fs::read_dir(dir.path()).expect("spill dir").count();
    assert_eq!(left, 0, "run files are removed once merged");
}

#[test]
fn spill_to_missing_directory_is_an_error_naming_it() {
    let missing = Path::new("/nonexistent/kiln-minhash-spill");
    let mut index = DedupIndex::with_spill(14, missing, 1);
    let err = index
        .insert(&hasher().sketch("one two three four five six"))
        .expect_err("cannot write a run");
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent/kiln-minhash-spill") && msg.contains("writable"),
        "{msg}"
    );
}

const CHILD_DOCS: &str = "KILN_MINHASH_MEMORY_DOCS";
const CHILD_SPILL: &str = "KILN_MINHASH_MEMORY_SPILL";

fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Run by `peak_rss_linear_from_n_to_10n` in a child process of its own, so
/// the peak RSS is this corpus's alone.
#[test]
#[ignore = "child of peak_rss_linear_from_n_to_10n"]
fn memory_child() {
    let Some(n) = std::env::var(CHILD_DOCS).ok().and_then(|v| v.parse().ok()) else {
        return;
    };
    let spill = std::env::var(CHILD_SPILL).ok();
    let spill = spill.as_deref().map(|d| (Path::new(d), 4096));
    let (index, _) = index_corpus(n, spill);
    let report = index.resolve().expect("resolve").report();
    println!(
        "MINHASH_CHILD docs={} kept={} vmhwm_kb={}",
        n,
        report.kept,
        peak_rss_kb()
    );
}

fn child_peak_kb(n: usize, spill: Option<&Path>) -> u64 {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    if let Some(dir) = spill {
        cmd.env(CHILD_SPILL, dir);
    }
    let out = cmd
        .args([
            "--ignored",
            "--exact",
            "curation_minhash::memory_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DOCS, n.to_string())
        .output()
        .expect("run the test binary as a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The line follows libtest's "test ... " prefix on the same line.
    let kb = stdout
        .lines()
        .find_map(|l| l.split("vmhwm_kb=").nth(1))
        .and_then(|v| v.trim().parse().ok());
    kb.unwrap_or_else(|| {
        panic!(
            "child printed no peak: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn peak_rss_linear_from_n_to_10n() {
    if !std::path::Path::new("/proc/self/status").exists() {
        println!("no /proc: skipped");
        return;
    }
    let n = 20_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut per_doc = Vec::new();
    for spill in [None, Some(dir.path())] {
        let small = child_peak_kb(n, spill);
        let large = child_peak_kb(10 * n, spill);
        let growth = (large.saturating_sub(small) * 1024) as f64 / (9 * n) as f64;
        println!(
            "peak RSS ({}): {n} docs {small} kB, {} docs {large} kB: {growth:.0} B/doc",
            if spill.is_some() {
                "spill, 4096 entries/stream"
            } else {
                "in memory"
            },
            10 * n
        );
        per_doc.push(growth);
    }
    // In memory: index 180 B/doc + Vec slack + union-find and report 8 B/doc;
    // a quadratic structure would be thousands of bytes per doc at 200k docs.
    assert!(
        per_doc[0] < 600.0,
        "peak memory grows {:.0} B per document",
        per_doc[0]
    );
    // Spilled: only the union-find parents and the report's sizes stay.
    assert!(
        per_doc[1] < 40.0,
        "spilled peak grows {:.0} B per document",
        per_doc[1]
    );
}
