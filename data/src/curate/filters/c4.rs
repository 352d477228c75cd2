//! C4's line and document rules (Raffel et al. 2020, JMLR 21-140, section
//! 2.2), as datatrove's `C4QualityFilter` applies them: lines are cleaned or
//! removed one by one, and a document is dropped for "lorem ipsum", a curly
//! bracket, or fewer than five sentences in the lines it keeps.
//! The bad-words rule of the paper is a separate filter in datatrove too.

use serde::{Deserialize, Serialize};

use super::text::{py_len, py_split, py_splitlines, py_strip};
use super::words::count_sentences;
use super::Decision;

/// `C4QualityFilter`'s parameters (line splitting only: datatrove's
/// `split_paragraph = False`, sentence splitting, is not ported).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C4Quality {
    pub remove_citations: bool,
    pub filter_no_terminal_punct: bool,
    /// -1 turns the rule off.
    pub min_num_sentences: i64,
    /// -1 turns the rule off.
    pub min_words_per_line: i64,
    /// -1 turns the rule off.
    pub max_word_length: i64,
    pub filter_lorem_ipsum: bool,
    pub filter_javascript: bool,
    pub filter_curly_bracket: bool,
    pub filter_policy: bool,
}

impl Default for C4Quality {
    fn default() -> Self {
        Self {
            remove_citations: true,
            filter_no_terminal_punct: true,
            min_num_sentences: 5,
            min_words_per_line: 3,
            max_word_length: 1000,
            filter_lorem_ipsum: true,
            filter_javascript: true,
            filter_curly_bracket: true,
            filter_policy: true,
        }
    }
}

const END_PUNCTUATION: [char; 5] = ['.', '?', '!', '"', '\''];
const POLICY_SUBSTRINGS: [&str; 6] = [
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
];

/// The decision and, for a kept document, its text after line removal.
#[derive(Debug, Clone, PartialEq)]
pub struct C4Outcome {
    pub decision: Decision,
    pub text: Option<String>,
}

/// Removes `\[\d*]|\[edit]|\[citation needed]` (ASCII digits: Python's `\d`
/// also takes other scripts' digits, which C4's citations never use).
fn remove_citations(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let digits = tail[1..].bytes().take_while(u8::is_ascii_digit).count();
        let len = if tail[1 + digits..].starts_with(']') {
            2 + digits
        } else if tail.starts_with("[edit]") {
            "[edit]".len()
        } else if tail.starts_with("[citation needed]") {
            "[citation needed]".len()
        } else {
            0
        };
        if len == 0 {
            out.push('[');
            rest = &tail[1..];
        } else {
            rest = &tail[len..];
        }
    }
    out.push_str(rest);
    out
}

/// A line as Python's `line.lower()` sees it, for ASCII needles. An ASCII
/// line is searched case-insensitively in place (no copy); any other line
/// is lowered by Unicode rules, because some non-ASCII letters lower to
/// ASCII ones (the Kelvin sign to `k`).
enum Lowered<'a> {
    Ascii(&'a str),
    Unicode(String),
}

impl<'a> Lowered<'a> {
    fn new(line: &'a str) -> Self {
        if line.is_ascii() {
            Lowered::Ascii(line)
        } else {
            Lowered::Unicode(line.to_lowercase())
        }
    }

    /// `needle` must be ASCII lower case.
    fn contains(&self, needle: &str) -> bool {
        match self {
            Lowered::Unicode(s) => s.contains(needle),
            Lowered::Ascii(s) => s
                .as_bytes()
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle.as_bytes())),
        }
    }
}

impl C4Quality {
    pub fn filter(&self, text: &str) -> Decision {
        self.run(text, false).decision
    }

    /// The decision and the cleaned text (lines joined by "\n", stripped).
    pub fn apply(&self, text: &str) -> C4Outcome {
        self.run(text, true)
    }

    /// The rules; `keep_text` also collects the kept lines (the decision
    /// alone does not need them).
    fn run(&self, text: &str, keep_text: bool) -> C4Outcome {
        let drop = |r: &'static str| C4Outcome {
            decision: Decision::drop(r),
            text: None,
        };
        let mut num_sentences: i64 = 0;
        let mut kept: Vec<String> = Vec::new();
        for line in py_splitlines(text) {
            let stripped = py_strip(line);
            let n_words = py_split(stripped).count() as i64;
            if self.max_word_length != -1
                && py_split(stripped).any(|w| py_len(w) as i64 > self.max_word_length)
            {
                continue;
            }
            let line = if self.remove_citations {
                remove_citations(stripped)
            } else {
                stripped.to_string()
            };
            if self.filter_no_terminal_punct
                && (!line.ends_with(END_PUNCTUATION) || line.ends_with("..."))
            {
                continue;
            }
            if n_words < self.min_words_per_line {
                continue;
            }
            let lower = Lowered::new(&line);
            if self.filter_lorem_ipsum && lower.contains("lorem ipsum") {
                return drop("lorem_ipsum");
            }
            if self.filter_javascript && lower.contains("javascript") {
                continue;
            }
            if self.filter_curly_bracket && line.contains('{') {
                return drop("curly_bracket");
            }
            if self.filter_policy && POLICY_SUBSTRINGS.iter().any(|p| lower.contains(p)) {
                continue;
            }
            // The count only grows, so once it reaches the bar the rest of
            // the lines cannot change the decision: the tokenizer (most of
            // this filter's time) stops there.
            if self.min_num_sentences != -1 && num_sentences < self.min_num_sentences {
                num_sentences += count_sentences(&line) as i64;
            }
            if keep_text {
                kept.push(line);
            }
        }
        if num_sentences < self.min_num_sentences {
            return drop("too_few_sentences");
        }
        C4Outcome {
            decision: Decision::Keep,
            text: keep_text.then(|| py_strip(&kept.join("\n")).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn citations() {
        assert_eq!(
            remove_citations("a[1] b[edit] c[] d[x] e[citation needed]."),
            "a b c d[x] e."
        );
        assert_eq!(remove_citations("[[12]"), "[");
    }

    #[test]
    fn lowered_like_python() {
        assert!(Lowered::new("Enable JavaScript now.").contains("javascript"));
        assert!(!Lowered::new("Java Script").contains("javascript"));
        // U+212A KELVIN SIGN lowers to ASCII k, as in Python.
        assert!(Lowered::new("our coo\u{212A}ie policy").contains("cookie policy"));
        assert!(Lowered::new("LOREM IPSUM").contains("lorem ipsum"));
    }

    #[test]
    fn sentence_bar_stops_counting_without_changing_decisions() {
        let f = C4Quality::default();
        let long = "One sentence here. Another one there.\n".repeat(50);
        assert!(f.filter(&long).is_keep());
        let short = "One sentence here. Another one there.\n".repeat(2);
        assert!(!f.filter(&short).is_keep());
        // A curly bracket after the bar is reached still drops the document.
        assert!(!f.filter(&(long + "A { bracket.\n")).is_keep());
    }
}
