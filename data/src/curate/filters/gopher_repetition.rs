//! Gopher repetition rules (arXiv 2112.11446, table A1), as datatrove's
//! `GopherRepetitionFilter` applies them: duplicate paragraphs, then lines,
//! then the top 2/3/4-gram, then duplicated 5..10-grams, all as fractions of
//! the document's characters.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use serde::{Deserialize, Serialize};

use super::text::{find_duplicates, py_len};
use super::words::split_into_words;
use super::Decision;

/// `GopherRepetitionFilter`'s parameters; `None` (or 0) turns a rule off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GopherRepetition {
    pub dup_line_frac: Option<f64>,
    pub dup_para_frac: Option<f64>,
    pub dup_line_char_frac: Option<f64>,
    pub dup_para_char_frac: Option<f64>,
    /// (n, max fraction of characters in the most frequent n-gram).
    pub top_n_grams: Vec<(usize, f64)>,
    /// (n, max fraction of characters in repeated n-grams).
    pub dup_n_grams: Vec<(usize, f64)>,
}

impl Default for GopherRepetition {
    fn default() -> Self {
        Self {
            dup_line_frac: Some(0.3),
            dup_para_frac: Some(0.3),
            dup_line_char_frac: Some(0.2),
            dup_para_char_frac: Some(0.2),
            top_n_grams: vec![(2, 0.2), (3, 0.18), (4, 0.16)],
            dup_n_grams: vec![
                (5, 0.15),
                (6, 0.14),
                (7, 0.13),
                (8, 0.12),
                (9, 0.11),
                (10, 0.10),
            ],
        }
    }
}

fn on(v: Option<f64>) -> Option<f64> {
    v.filter(|x| *x != 0.0)
}

/// `re.split(pattern, text)` where the pattern is a run of at least `min`
/// newlines.
fn split_newline_runs(text: &str, min: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            let run = bytes[i..].iter().take_while(|&&b| b == b'\n').count();
            if run >= min {
                out.push(&text[start..i]);
                start = i + run;
            }
            i += run;
        } else {
            i += 1;
        }
    }
    out.push(&text[start..]);
    out
}

/// The document's words as small integers, so an n-gram is a `[u32]`
/// window: no allocation per n-gram (equal ids = equal words).
fn word_ids(words: &[&str]) -> Vec<u32> {
    let mut ids: HashMap<&str, u32> =
        HashMap::with_capacity_and_hasher(words.len(), Default::default());
    words
        .iter()
        .map(|w| {
            let next = ids.len() as u32;
            *ids.entry(w).or_insert(next)
        })
        .collect()
}

/// Characters of the most frequent n-gram (words joined by spaces) times its
/// count; ties go to the n-gram seen first, as `Counter.most_common(1)` does.
fn top_duplicate_chars(words: &[&str], ids: &[u32], n: usize) -> Option<usize> {
    let mut counts: HashMap<&[u32], (usize, usize)> =
        HashMap::with_capacity_and_hasher(ids.len(), Default::default());
    for (i, gram) in ids.windows(n).enumerate() {
        counts.entry(gram).or_insert((0, i)).0 += 1;
    }
    let ((count, _), first) = counts
        .values()
        .map(|&(c, first)| ((c, std::cmp::Reverse(first)), first))
        .max_by_key(|(k, _)| *k)?;
    let gram = &words[first..first + n];
    let chars = gram.iter().map(|w| py_len(w)).sum::<usize>() + (n - 1);
    Some(chars * count)
}

/// The words joined without spaces, with each word's start in bytes and in
/// characters: the key of the n-gram of words `i..i + n` is the slice
/// `text[bytes[i]..bytes[i + n]]`, its length `chars[i + n] - chars[i]`.
struct Joined {
    text: String,
    /// `[words + 1]` byte offsets.
    bytes: Vec<usize>,
    /// `[words + 1]` character offsets.
    chars: Vec<usize>,
}

impl Joined {
    fn new(words: &[&str]) -> Self {
        let mut j = Joined {
            text: String::with_capacity(words.iter().map(|w| w.len()).sum()),
            bytes: Vec::with_capacity(words.len() + 1),
            chars: Vec::with_capacity(words.len() + 1),
        };
        let mut chars = 0;
        for w in words {
            j.bytes.push(j.text.len());
            j.chars.push(chars);
            j.text.push_str(w);
            chars += py_len(w);
        }
        j.bytes.push(j.text.len());
        j.chars.push(chars);
        j
    }

    fn words(&self) -> usize {
        self.bytes.len() - 1
    }
}

/// datatrove's `find_all_duplicate`: characters of n-grams already seen,
/// skipping past each repeat. The n-grams are keyed by their words joined
/// without spaces (so "ab c" and "a bc" are the same), as datatrove keys them.
fn all_duplicate_chars(joined: &Joined, n: usize) -> usize {
    let mut seen: HashSet<&str> =
        HashSet::with_capacity_and_hasher(joined.words(), Default::default());
    let (mut repeated, mut idx) = (0, 0);
    while n > 0 && idx + n <= joined.words() {
        let gram = &joined.text[joined.bytes[idx]..joined.bytes[idx + n]];
        if seen.contains(gram) {
            repeated += joined.chars[idx + n] - joined.chars[idx];
            idx += n;
        } else {
            seen.insert(gram);
            idx += 1;
        }
    }
    repeated
}

impl GopherRepetition {
    pub fn filter(&self, text: &str) -> Decision {
        if text.is_empty() {
            return Decision::drop("empty");
        }
        let len = py_len(text) as f64;

        let paragraphs = split_newline_runs(super::text::py_strip(text), 2);
        let (dups, chars) = find_duplicates(paragraphs.iter().copied());
        if on(self.dup_para_frac).is_some_and(|m| dups as f64 / paragraphs.len() as f64 > m) {
            return Decision::drop("dup_para_frac");
        }
        if on(self.dup_para_char_frac).is_some_and(|m| chars as f64 / len > m) {
            return Decision::drop("dup_para_char_frac");
        }

        let lines = split_newline_runs(text, 1);
        let (dups, chars) = find_duplicates(lines.iter().copied());
        if on(self.dup_line_frac).is_some_and(|m| dups as f64 / lines.len() as f64 > m) {
            return Decision::drop("dup_line_frac");
        }
        if on(self.dup_line_char_frac).is_some_and(|m| chars as f64 / len > m) {
            return Decision::drop("dup_line_char_frac");
        }

        let words = split_into_words(text);
        let ids = word_ids(&words);
        for &(n, frac) in &self.top_n_grams {
            if n == 0 {
                continue;
            }
            if let Some(top) = top_duplicate_chars(&words, &ids, n) {
                if top as f64 / len > frac {
                    return Decision::Drop(format!("top_{n}_gram").into());
                }
            }
        }
        let joined = Joined::new(&words);
        for &(n, frac) in &self.dup_n_grams {
            if all_duplicate_chars(&joined, n) as f64 / len > frac {
                return Decision::Drop(format!("duplicated_{n}_n_grams").into());
            }
        }
        Decision::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newline_runs_split_like_re() {
        assert_eq!(
            split_newline_runs("a\n\nb\nc\n\n\nd", 2),
            ["a", "b\nc", "d"]
        );
        assert_eq!(split_newline_runs("\na\n", 1), ["", "a", ""]);
        assert_eq!(split_newline_runs("", 1), [""]);
    }

    #[test]
    fn top_gram_tie_goes_to_first_seen() {
        // "aa b" and "b cccc" both occur once: the first one counts.
        let words = ["aa", "b", "cccc"];
        assert_eq!(top_duplicate_chars(&words, &word_ids(&words), 2), Some(4));
        // Counted by words, not by their concatenation.
        let words = ["ab", "c", "a", "bc", "ab", "c"];
        assert_eq!(top_duplicate_chars(&words, &word_ids(&words), 2), Some(8));
    }

    #[test]
    fn all_duplicates_keyed_by_concatenation() {
        // "ab c" then "a bc": the same key once spaces are dropped.
        let words = ["ab", "c", "a", "bc"];
        assert_eq!(all_duplicate_chars(&Joined::new(&words), 2), 3);
        // Multi-byte words count characters, not bytes.
        let words = ["é", "ü", "é", "ü"];
        assert_eq!(all_duplicate_chars(&Joined::new(&words), 2), 2);
        assert_eq!(all_duplicate_chars(&Joined::new(&words), 5), 0);
    }
}
