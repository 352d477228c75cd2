//! Gopher quality rules (Rae et al. 2021, arXiv 2112.11446, table A1), as
//! datatrove's `GopherQualityFilter` applies them, in its order: the first
//! failing rule names the drop.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::punctuation::is_punctuation;
use super::text::py_len;
use super::words::split_into_words;
use super::Decision;

/// `GopherQualityFilter`'s parameters; `None` turns a rule off (as does 0,
/// because datatrove tests them for truthiness).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GopherQuality {
    pub min_doc_words: Option<usize>,
    pub max_doc_words: Option<usize>,
    pub min_avg_word_length: Option<f64>,
    pub max_avg_word_length: Option<f64>,
    pub max_symbol_word_ratio: Option<f64>,
    pub max_bullet_lines_ratio: Option<f64>,
    pub max_ellipsis_lines_ratio: Option<f64>,
    /// The minimum fraction of words with a letter (datatrove's name).
    pub max_non_alpha_words_ratio: Option<f64>,
    pub min_stop_words: Option<usize>,
    pub stop_words: Vec<String>,
}

impl Default for GopherQuality {
    fn default() -> Self {
        Self {
            min_doc_words: Some(50),
            max_doc_words: Some(100_000),
            min_avg_word_length: Some(3.0),
            max_avg_word_length: Some(10.0),
            max_symbol_word_ratio: Some(0.1),
            max_bullet_lines_ratio: Some(0.9),
            max_ellipsis_lines_ratio: Some(0.3),
            max_non_alpha_words_ratio: Some(0.8),
            min_stop_words: Some(2),
            stop_words: ["the", "be", "to", "of", "and", "that", "have", "with"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Python's truthiness of an optional threshold.
fn on<T: Copy + PartialEq + Default>(v: Option<T>) -> Option<T> {
    v.filter(|x| *x != T::default())
}

fn ratio(n: usize, d: usize) -> f64 {
    // A zero denominator (only reachable with min_doc_words off) gives inf or
    // NaN where Python would raise; either way no panic.
    n as f64 / d as f64
}

impl GopherQuality {
    pub fn filter(&self, text: &str) -> Decision {
        let words = split_into_words(text);
        let n_words = words.len();
        let non_symbol: Vec<&str> = words
            .iter()
            .copied()
            .filter(|w| w.chars().any(|c| !is_punctuation(c)))
            .collect();
        let n_non_symbol = non_symbol.len();

        if on(self.min_doc_words).is_some_and(|m| n_non_symbol < m) {
            return Decision::drop("gopher_short_doc");
        }
        if on(self.max_doc_words).is_some_and(|m| n_non_symbol > m) {
            return Decision::drop("gopher_long_doc");
        }

        // np.mean of no words is NaN, which fails both comparisons.
        let total: usize = non_symbol.iter().map(|w| py_len(w)).sum();
        let avg = ratio(total, n_non_symbol);
        if on(self.min_avg_word_length).is_some_and(|m| avg < m) {
            return Decision::drop("gopher_below_avg_threshold");
        }
        if on(self.max_avg_word_length).is_some_and(|m| avg > m) {
            return Decision::drop("gopher_above_avg_threshold");
        }

        if let Some(m) = on(self.max_symbol_word_ratio) {
            if ratio(text.matches('#').count(), n_words) > m {
                return Decision::drop("gopher_too_many_hashes");
            }
            let ellipses = text.matches("...").count() + text.matches('…').count();
            if ratio(ellipses, n_words) > m {
                return Decision::drop("gopher_too_many_ellipsis");
            }
        }

        let lines = super::text::py_splitlines(text);
        if let Some(m) = on(self.max_bullet_lines_ratio) {
            let bullets = lines
                .iter()
                .filter(|l| {
                    let l = l.trim_start_matches(super::words::is_py_space);
                    l.starts_with('•') || l.starts_with('-')
                })
                .count();
            if ratio(bullets, lines.len()) > m {
                return Decision::drop("gopher_too_many_bullets");
            }
        }
        if let Some(m) = on(self.max_ellipsis_lines_ratio) {
            let ending = lines
                .iter()
                .filter(|l| {
                    let l = l.trim_end_matches(super::words::is_py_space);
                    l.ends_with("...") || l.ends_with('…')
                })
                .count();
            if ratio(ending, lines.len()) > m {
                return Decision::drop("gopher_too_many_end_ellipsis");
            }
        }

        if let Some(m) = on(self.max_non_alpha_words_ratio) {
            // Python's isalpha is the L* categories; Rust's is_alphabetic also
            // counts Nl and combining vowel signs: the same on the words here.
            let alpha = words
                .iter()
                .filter(|w| w.chars().any(char::is_alphabetic))
                .count();
            if ratio(alpha, n_words) < m {
                return Decision::drop("gopher_below_alpha_threshold");
            }
        }

        if let Some(m) = on(self.min_stop_words) {
            let present: HashSet<&str> = words.iter().copied().collect();
            let mut stop: Vec<&str> = self.stop_words.iter().map(String::as_str).collect();
            stop.sort_unstable();
            stop.dedup();
            if stop.iter().filter(|s| present.contains(*s)).count() < m {
                return Decision::drop("gopher_enough_stop_words");
            }
        }
        Decision::Keep
    }
}
