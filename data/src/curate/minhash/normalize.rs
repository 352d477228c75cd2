//! Text normalisation before shingling: datatrove's `simplify_text`
//! (`datatrove/utils/text.py`) with its default `TextNormConfig`, so that
//! documents differing only in case, punctuation, spacing, accents or numbers
//! produce the same shingles.
//!
//! Order matters and follows datatrove: lowercase, numbers -> "0",
//! punctuation -> " ", collapse whitespace, strip diacritics (NFD, drop
//! nonspacing marks), trim.
//!
//! Known differences from datatrove: the `unicode_categories` tables are an
//! older Unicode version than Python's, and Rust's `to_lowercase` treats a
//! final capital sigma differently. Both only touch rare characters.

use unicode_categories::UnicodeCategories;
use unicode_normalization::UnicodeNormalization;

/// datatrove's `PUNCTUATION` (ASCII and CJK punctuation, typographic quotes),
/// each mapped to a space. The control characters it also lists are handled
/// in [`is_punctuation`].
const PUNCTUATION: &str =
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»";

/// Decimal separators datatrove's number pattern accepts between two digit
/// runs: `\p{Nd}+([.,،٫⎖⎗⎘]\p{Nd}+)?`.
const DECIMAL_SEPARATORS: [char; 7] = ['.', ',', '،', '٫', '⎖', '⎗', '⎘'];

fn is_punctuation(c: char) -> bool {
    // datatrove adds chr 0..9, 11..13, 13..32 and 127..160: every control
    // character except '\t' and '\n' (which are whitespace anyway).
    let code = c as u32;
    let control = (code < 32 && c != '\t' && c != '\n') || (127..160).contains(&code);
    control || PUNCTUATION.contains(c)
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_number_decimal_digit())
}

/// Replace each number (a digit run, optionally one separator and a second
/// run, as in "3.14" or "1,000") by a single "0".
fn replace_numbers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !is_digit(chars[i]) {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        while i < chars.len() && is_digit(chars[i]) {
            i += 1;
        }
        // Regex semantics: the optional group needs a separator followed by
        // at least one digit; otherwise the separator stays.
        if i + 1 < chars.len() && DECIMAL_SEPARATORS.contains(&chars[i]) && is_digit(chars[i + 1]) {
            i += 1;
            while i < chars.len() && is_digit(chars[i]) {
                i += 1;
            }
        }
        out.push('0');
    }
    out
}

/// datatrove's `simplify_text` with the default config (see module docs).
pub fn simplify_text(text: &str) -> String {
    let lower = text.to_lowercase();
    let numbers = replace_numbers(&lower);
    // Punctuation to spaces, then collapse whitespace runs to one space.
    let mut spaced = String::with_capacity(numbers.len());
    let mut pending_space = false;
    for c in numbers.chars() {
        if c.is_whitespace() || is_punctuation(c) {
            pending_space = !spaced.is_empty();
        } else {
            if pending_space {
                spaced.push(' ');
                pending_space = false;
            }
            spaced.push(c);
        }
    }
    if spaced.is_ascii() {
        // NFD of ASCII is itself: skip the decomposition (most web text).
        return spaced;
    }
    let stripped: String = spaced.nfd().filter(|c| !c.is_mark_nonspacing()).collect();
    stripped.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::simplify_text;

    #[test]
    fn matches_datatrove_defaults() {
        // Expected strings follow datatrove 0.10 simplify_text's rules.
        assert_eq!(simplify_text("  Hello,   World!\n"), "hello world");
        assert_eq!(simplify_text("Pi is 3.14, e is 2,718."), "pi is 0 e is 0");
        assert_eq!(simplify_text("1999 and 2024"), "0 and 0");
        assert_eq!(simplify_text("1.2.3"), "0 0");
        assert_eq!(
            simplify_text("Crème Brûlée, naïve café"),
            "creme brulee naive cafe"
        );
        assert_eq!(simplify_text("don't — stop"), "don t stop");
        assert_eq!(simplify_text("「東京」は、大きい。"), "東京 は 大きい");
        assert_eq!(simplify_text("tab\there\u{7}bell"), "tab here bell");
        assert_eq!(simplify_text("٣٤ apples"), "0 apples");
        assert_eq!(simplify_text(""), "");
        assert_eq!(simplify_text(" !!! "), "");
    }
}
