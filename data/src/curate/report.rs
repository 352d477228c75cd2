//! The per-run `REPORT.md`: documents and words kept and dropped per
//! domain, per stage and per rule, a few (truncated) examples of each drop
//! reason, and the dedup cluster sizes. It holds no timings, so a resumed
//! run writes the same bytes as an uninterrupted one.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::minhash::ClusterReport;

/// Examples kept per drop reason, and their length in characters.
const EXAMPLES: usize = 3;
const EXCERPT_CHARS: usize = 160;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Count {
    pub docs: u64,
    pub words: u64,
}

impl Count {
    fn add(&mut self, words: u64) {
        self.docs += 1;
        self.words += words;
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DomainStats {
    pub name: String,
    pub read: Count,
    pub kept: Count,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReasonStats {
    pub dropped: Count,
    /// (document id, excerpt) of the first few documents dropped so.
    pub examples: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageStats {
    pub name: String,
    pub kind: String,
    /// Documents this stage alone would drop (its `keep` is false).
    pub dropped: Count,
    /// `[domains]`: the same, per domain.
    pub dropped_by_domain: Vec<Count>,
    pub reasons: BTreeMap<String, ReasonStats>,
}

/// What a curation run kept and dropped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub keep: String,
    pub domains: Vec<DomainStats>,
    pub stages: Vec<StageStats>,
    /// (stage name, its clusters) for each dedup stage.
    pub clusters: Vec<(String, ClusterReport)>,
    /// (stage name, (percentile from the best end, score there)) for each
    /// ranked stage: where its cut points fall.
    pub score_quantiles: Vec<(String, Vec<(f64, f64)>)>,
}

fn excerpt(text: &str) -> String {
    let flat: String = text
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.replace('|', "\\|").replace('`', "'");
    if text.chars().count() > EXCERPT_CHARS {
        format!("{flat}...")
    } else {
        flat
    }
}

impl Report {
    /// Counts one document: `drops` holds `(stage, reason)` for each stage
    /// whose keep is false.
    pub fn add_doc(
        &mut self,
        domain: usize,
        id: &str,
        text: &str,
        kept: bool,
        drops: &[(usize, &str)],
    ) {
        let words = text.split_whitespace().count() as u64;
        let d = &mut self.domains[domain];
        d.read.add(words);
        if kept {
            d.kept.add(words);
        }
        for &(stage, reason) in drops {
            let s = &mut self.stages[stage];
            s.dropped.add(words);
            s.dropped_by_domain[domain].add(words);
            let r = s.reasons.entry(reason.to_string()).or_default();
            r.dropped.add(words);
            if r.examples.len() < EXAMPLES {
                r.examples.push((id.to_string(), excerpt(text)));
            }
        }
    }

    pub fn total(&self) -> (Count, Count) {
        let mut read = Count::default();
        let mut kept = Count::default();
        for d in &self.domains {
            read.docs += d.read.docs;
            read.words += d.read.words;
            kept.docs += d.kept.docs;
            kept.words += d.kept.words;
        }
        (read, kept)
    }

    /// The Markdown of `REPORT.md`.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let (read, kept) = self.total();
        let pct = |a: u64, b: u64| {
            if b == 0 {
                0.0
            } else {
                100.0 * a as f64 / b as f64
            }
        };
        let _ = writeln!(s, "# Curation report\n");
        let _ = writeln!(s, "keep = `{}`\n", self.keep.replace('`', "'"));
        let _ = writeln!(
            s,
            "Kept {} of {} documents ({:.1}%), {} of {} words ({:.1}%).\n",
            kept.docs,
            read.docs,
            pct(kept.docs, read.docs),
            kept.words,
            read.words,
            pct(kept.words, read.words)
        );
        self.domain_table(&mut s);
        self.stage_tables(&mut s);
        self.quantile_tables(&mut s);
        self.cluster_tables(&mut s);
        self.examples(&mut s);
        s
    }

    fn domain_table(&self, s: &mut String) {
        let _ = writeln!(s, "## Domains\n");
        let _ = writeln!(
            s,
            "| domain | docs | words | kept docs | kept words | dropped docs | dropped words |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        for d in &self.domains {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                d.name,
                d.read.docs,
                d.read.words,
                d.kept.docs,
                d.kept.words,
                d.read.docs - d.kept.docs,
                d.read.words - d.kept.words
            );
        }
        let _ = writeln!(s);
    }

    fn stage_tables(&self, s: &mut String) {
        let _ = writeln!(s, "## Stages\n");
        let _ = writeln!(
            s,
            "Each stage on its own (a document can fail several): documents and words whose \
             `STAGE.keep` is false.\n"
        );
        let mut head = String::from("| stage | kind | dropped docs | dropped words |");
        let mut rule = String::from("|---|---|---:|---:|");
        for d in &self.domains {
            let _ = write!(head, " {} docs |", d.name);
            rule.push_str("---:|");
        }
        let _ = writeln!(s, "{head}\n{rule}");
        for st in &self.stages {
            let _ = write!(
                s,
                "| {} | {} | {} | {} |",
                st.name, st.kind, st.dropped.docs, st.dropped.words
            );
            for c in &st.dropped_by_domain {
                let _ = write!(s, " {} |", c.docs);
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "\n### Rules\n");
        let _ = writeln!(s, "| stage | reason | dropped docs | dropped words |");
        let _ = writeln!(s, "|---|---|---:|---:|");
        for st in &self.stages {
            for (reason, r) in &st.reasons {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    st.name, reason, r.dropped.docs, r.dropped.words
                );
            }
        }
        let _ = writeln!(s);
    }

    fn quantile_tables(&self, s: &mut String) {
        for (name, q) in &self.score_quantiles {
            let _ = writeln!(s, "## Scores: {name}\n");
            let _ = writeln!(s, "| percentile from the best | score |");
            let _ = writeln!(s, "|---:|---:|");
            for (p, v) in q {
                let _ = writeln!(s, "| {p} | {v:.6} |");
            }
            let _ = writeln!(s);
        }
    }

    fn cluster_tables(&self, s: &mut String) {
        for (name, c) in &self.clusters {
            let _ = writeln!(s, "## Dedup clusters: {name}\n");
            let _ = writeln!(
                s,
                "{} documents, {} kept; removed {} as exact and {} more as near duplicates; \
                 {} clusters of 2 or more, the largest {}.\n",
                c.documents,
                c.kept,
                c.removed_exact,
                c.removed_fuzzy,
                c.duplicate_clusters,
                c.largest_cluster
            );
            if c.size_histogram.is_empty() {
                continue;
            }
            let _ = writeln!(s, "| cluster size | clusters |");
            let _ = writeln!(s, "|---:|---:|");
            for (size, n) in &c.size_histogram {
                let _ = writeln!(s, "| {size} | {n} |");
            }
            let _ = writeln!(s);
        }
    }

    fn examples(&self, s: &mut String) {
        let _ = writeln!(s, "## Examples of each drop reason\n");
        for st in &self.stages {
            for (reason, r) in &st.reasons {
                let _ = writeln!(s, "### {} / {}\n", st.name, reason);
                for (id, text) in &r.examples {
                    let _ = writeln!(s, "- `{}`: {}", id.replace('`', "'"), text);
                }
                let _ = writeln!(s);
            }
        }
    }
}
