//! C4's bad-words rule (Raffel et al. 2020, section 2.2: "we removed any page
//! that contained any word on the List of Dirty, Naughty, Obscene or
//! Otherwise Bad Words"), datatrove's `C4BadWordsFilter` without its
//! `keep_fraction` sampling: one hit drops the document.
//!
//! The list is the user's file, one word or phrase per line, compared
//! case-insensitively (Unicode lowercase) on word boundaries, as C4's
//! `(?:\W|^)(word|...)(?:\W|$)` does:
//! - a single word (only alphanumeric characters) is looked up among the
//!   document's words, its lowercased text split on every non-alphanumeric
//!   character: "zorp" drops "a zorp here" and "zorp-like", not "zorpish";
//! - a phrase (any other line: "foo bar", "x-ray") is searched for in the
//!   lowercased text and counts only where the characters either side of it
//!   are not alphanumeric (or are the text's ends). Whitespace inside a
//!   phrase is matched literally: "foo bar" does not match "foo  bar".
//!
//! One difference from C4's regex: '_' is a word character to Python's `\W`
//! but not alphanumeric, so here "zorp_x" contains the word "zorp".
//!
//! No list ships with Kiln: bring your own (for C4's, the LDNOOBW list).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::FilterError;
use super::Decision;

/// The bad-words filter's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BadWordsConfig {
    /// The list: UTF-8, one word or phrase per line; blank lines ignored.
    pub path: PathBuf,
}

/// A loaded list, ready to filter documents.
#[derive(Debug, Clone, PartialEq)]
pub struct BadWords {
    words: HashSet<String>,
    phrases: Vec<String>,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

impl BadWordsConfig {
    /// Reads the list; an error names the file when it is missing,
    /// unreadable, not UTF-8, or has no words.
    pub fn load(&self) -> Result<BadWords, FilterError> {
        BadWords::from_file(&self.path)
    }
}

impl BadWords {
    pub fn from_file(path: &Path) -> Result<Self, FilterError> {
        let text = std::fs::read_to_string(path).map_err(|source| FilterError::BadWordsRead {
            path: path.to_path_buf(),
            source,
        })?;
        let list = Self::from_words(text.lines());
        if list.is_empty() {
            return Err(FilterError::BadWordsEmpty {
                path: path.to_path_buf(),
            });
        }
        Ok(list)
    }

    /// A list from words and phrases (trimmed, lowercased; blanks skipped).
    pub fn from_words<'a>(entries: impl IntoIterator<Item = &'a str>) -> Self {
        let mut words = HashSet::new();
        let mut phrases = Vec::new();
        for entry in entries {
            let entry = entry.trim().to_lowercase();
            if entry.is_empty() {
                continue;
            }
            if entry.chars().all(is_word_char) {
                words.insert(entry);
            } else if !phrases.contains(&entry) {
                phrases.push(entry);
            }
        }
        Self { words, phrases }
    }

    /// Number of distinct words and phrases.
    pub fn len(&self) -> usize {
        self.words.len() + self.phrases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn filter(&self, text: &str) -> Decision {
        if self.first_match(text).is_some() {
            Decision::drop("bad_words")
        } else {
            Decision::Keep
        }
    }

    /// The first listed word or phrase the text contains (words checked
    /// before phrases), for logging why a document went.
    pub fn first_match(&self, text: &str) -> Option<&str> {
        let lower = text.to_lowercase();
        if !self.words.is_empty() {
            let hit = lower
                .split(|c: char| !is_word_char(c))
                .find_map(|w| self.words.get(w));
            if let Some(w) = hit {
                return Some(w);
            }
        }
        self.phrases
            .iter()
            .find(|p| contains_bounded(&lower, p))
            .map(String::as_str)
    }
}

/// Whether `needle` occurs in `hay` with no word character just before or
/// just after it. Tries every occurrence, overlapping ones included.
fn contains_bounded(hay: &str, needle: &str) -> bool {
    let mut from = 0;
    while let Some(i) = hay[from..].find(needle) {
        let start = from + i;
        let end = start + needle.len();
        let before_ok = !hay[..start].chars().next_back().is_some_and(is_word_char);
        let after_ok = !hay[end..].chars().next().is_some_and(is_word_char);
        if before_ok && after_ok {
            return true;
        }
        // Step one character past this start.
        from = start + hay[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Harmless stand-ins: no real list is committed.
    const FIXTURE: &str = "zorp\nBlarg\n\n  foo bar  \nx-ray\n";

    fn list() -> BadWords {
        BadWords::from_words(FIXTURE.lines())
    }

    #[test]
    fn single_words_match_on_boundaries() {
        let l = list();
        assert_eq!(l.filter("a zorp here").as_str(), "bad_words");
        assert_eq!(l.filter("zorp").as_str(), "bad_words");
        assert_eq!(
            l.filter("(zorp), zorp-like; end.zorp").as_str(),
            "bad_words"
        );
        assert!(l.filter("zorpish words and a glazorp").is_keep());
        // '_' is not alphanumeric, so it splits words (C4's \W would not).
        assert_eq!(l.filter("zorp_x").as_str(), "bad_words");
        assert!(l.filter("zorp1").is_keep());
        assert!(l.filter("nothing to see").is_keep());
        assert!(l.filter("").is_keep());
    }

    #[test]
    fn case_insensitive() {
        let l = list();
        assert_eq!(l.first_match("A ZORP here"), Some("zorp"));
        assert_eq!(l.first_match("so blarg!"), Some("blarg"));
        assert_eq!(l.first_match("Foo Bar baz"), Some("foo bar"));
    }

    #[test]
    fn phrases_match_on_boundaries() {
        let l = list();
        assert_eq!(l.first_match("say foo bar."), Some("foo bar"));
        assert_eq!(l.first_match("foo bar"), Some("foo bar"));
        assert_eq!(l.first_match("an X-Ray image"), Some("x-ray"));
        assert!(l.filter("foo barn and afoo bar").is_keep());
        assert!(l.filter("foo  bar and foo, bar and bar foo").is_keep());
        // A bounded occurrence after an unbounded one still counts.
        assert_eq!(l.first_match("afoo bar, then foo bar"), Some("foo bar"));
        // The words of a phrase alone are not hits.
        assert!(l.filter("foo and bar").is_keep());
    }

    #[test]
    fn len_counts_distinct_entries() {
        assert_eq!(list().len(), 4);
        assert_eq!(BadWords::from_words(["Zorp", "zorp", " ZORP "]).len(), 1);
    }

    #[test]
    fn loads_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("words.txt");
        std::fs::write(&path, FIXTURE).unwrap();
        let l = BadWordsConfig { path }.load().unwrap();
        assert_eq!(l, list());
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-list.txt");
        let err = BadWordsConfig { path }.load().unwrap_err();
        assert!(matches!(err, FilterError::BadWordsRead { .. }));
        assert!(err.to_string().contains("no-such-list.txt"), "{err}");
    }

    #[test]
    fn empty_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blank.txt");
        std::fs::write(&path, "\n  \n\t\n").unwrap();
        let err = BadWordsConfig { path }.load().unwrap_err();
        assert!(matches!(err, FilterError::BadWordsEmpty { .. }));
        assert!(err.to_string().contains("blank.txt"), "{err}");
    }

    #[test]
    fn config_from_toml() {
        let c: BadWordsConfig = toml::from_str("path = \"lists/en.txt\"").unwrap();
        assert_eq!(c.path, PathBuf::from("lists/en.txt"));
        assert!(toml::from_str::<BadWordsConfig>("path = \"x\"\nkeep_fraction = 0.1").is_err());
    }
}
