//! FineWeb's extra rules (Penedo et al. 2024, arXiv 2406.17557), as
//! datatrove's `FineWebQualityFilter` applies them: lines ending in
//! punctuation, short lines, duplicated line characters, newlines per word.

use serde::{Deserialize, Serialize};

use super::punctuation::is_terminal;
use super::text::{find_duplicates, py_len, py_split, py_strip};
use super::words::split_into_words;
use super::Decision;

/// `FineWebQualityFilter`'s parameters. `stop_chars` `None` means datatrove's
/// `TERMINAL_PUNCTUATION`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FineWebQuality {
    pub line_punct_thr: f64,
    pub line_punct_exclude_zero: bool,
    pub stop_chars: Option<Vec<String>>,
    pub short_line_thr: f64,
    pub short_line_length: usize,
    pub char_duplicates_ratio: f64,
    pub new_line_ratio: f64,
}

impl Default for FineWebQuality {
    fn default() -> Self {
        Self {
            line_punct_thr: 0.12,
            line_punct_exclude_zero: false,
            stop_chars: None,
            short_line_thr: 0.67,
            short_line_length: 30,
            char_duplicates_ratio: 0.01,
            new_line_ratio: 0.3,
        }
    }
}

impl FineWebQuality {
    fn ends_with_stop(&self, line: &str) -> bool {
        match &self.stop_chars {
            None => line.chars().next_back().is_some_and(is_terminal),
            Some(stops) => stops.iter().any(|s| line.ends_with(s.as_str())),
        }
    }

    pub fn filter(&self, text: &str) -> Decision {
        let lines: Vec<&str> = text
            .split('\n')
            .filter(|l| !py_strip(l).is_empty())
            .collect();
        if lines.is_empty() {
            return Decision::drop("empty");
        }
        let n = lines.len() as f64;

        let ratio = lines.iter().filter(|l| self.ends_with_stop(l)).count() as f64 / n;
        if ratio < self.line_punct_thr && !(ratio == 0.0 && self.line_punct_exclude_zero) {
            return Decision::drop("line_punct_ratio");
        }

        let short = lines
            .iter()
            .filter(|l| py_len(l) <= self.short_line_length)
            .count();
        if short as f64 / n > self.short_line_thr {
            return Decision::drop("short_line_ratio");
        }

        // Non-empty lines exist, so the text has a character besides "\n".
        let chars = py_len(text) - text.matches('\n').count();
        let dup_chars = find_duplicates(lines.iter().copied()).1;
        if dup_chars as f64 / chars as f64 > self.char_duplicates_ratio {
            return Decision::drop("char_dup_ratio");
        }

        // datatrove raises ZeroDivisionError on a document without words
        // (only punctuation-free whitespace-like tokens); the float division
        // drops it when it has a newline and keeps it otherwise.
        let newlines = text.matches('\n').count();
        // Every whitespace-separated chunk is at least one spaCy token, so
        // a ratio already under the bar with chunks in place of words
        // keeps the document without running the tokenizer.
        let chunks = py_split(text).count();
        if chunks > 0 && newlines as f64 / chunks as f64 <= self.new_line_ratio {
            return Decision::Keep;
        }
        let words = split_into_words(text).len();
        if newlines as f64 / words as f64 > self.new_line_ratio {
            return Decision::drop("list_ratio");
        }
        Decision::Keep
    }
}
