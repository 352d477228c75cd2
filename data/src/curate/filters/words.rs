//! Word and sentence splitting as datatrove does it for English.
//!
//! datatrove's `split_into_words(text, "eng")` runs spaCy's blank `en`
//! tokenizer (`spacy/lang/punctuation.py`, `lang/en/punctuation.py`) and drops
//! whitespace tokens; `split_into_sentences` adds spaCy's `Sentencizer`. Word
//! counts decide Gopher's and FineWeb's rules, so this mirrors spaCy's affix
//! algorithm: split on whitespace, peel prefixes and suffixes (the suffix regex
//! is searched leftmost-first, so "word..." loses "..." at once), then split
//! the middle on infixes (hyphens between letters, "...", "a.B", "a,b").
//!
//! spaCy's tokenizer exceptions ("don't" -> "do" "n't", "e.g.", ":)") come
//! from the generated table in `exceptions.rs`. Approximated: URL matching
//! (a scheme or "www." start), the Unicode classes of spaCy's `ALPHA` and
//! `_other_symbols` (Rust's alphabetic/lowercase/uppercase, a few symbol
//! blocks), and the special-case matcher that re-merges an exception split by
//! affixes inside a longer chunk (rare: "(:)").

use super::exceptions::EXCEPTIONS;

/// Python's `str.isspace` for one character: Rust's `White_Space` property
/// plus the four ASCII separators (U+001C..U+001F) that Python counts.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// spaCy's `LIST_PUNCT` (single characters), used as prefixes and suffixes.
const PUNCT: &[char] = &[
    '…', ',', ':', ';', '!', '?', '¿', '؟', '¡', '(', ')', '[', ']', '{', '}', '<', '>', '_', '#',
    '*', '&', '。', '？', '！', '，', '、', '；', '：', '～', '·', '।', '،', '۔', '؛', '٪',
];

/// spaCy's `LIST_QUOTES`.
const QUOTES: &[char] = &[
    '\'', '"', '”', '“', '`', '‘', '´', '’', '‚', ',', '„', '»', '«', '「', '」', '『', '』', '（',
    '）', '〔', '〕', '【', '】', '《', '》', '〈', '〉', '〈', '〉', '⟦', '⟧',
];

/// Single-character currency symbols of spaCy's `LIST_CURRENCY` (prefixes).
const CURRENCY: &[char] = &[
    '$', '£', '€', '¥', '฿', '₽', '﷼', '₴', '₠', '₡', '₢', '₣', '₤', '₥', '₦', '₧', '₨', '₩', '₪',
    '₫', '₭', '₮', '₯', '₰', '₱', '₲', '₳', '₵', '₶', '₷', '₸', '₹', '₺', '₻', '₼', '₾', '₿',
];

/// Units that spaCy splits off after a digit ("5km", "50%"); ASCII subset.
const UNITS: &[&str] = &[
    "km", "m", "dm", "cm", "mm", "ha", "nm", "yd", "in", "ft", "kg", "g", "mg", "t", "lb", "oz",
    "m/s", "km/h", "kmh", "mph", "hPa", "Pa", "mbar", "mb", "MB", "kb", "KB", "gb", "GB", "tb",
    "TB", "T", "G", "M", "K", "%",
];

/// Characters of spaCy's `_other_symbols` (Unicode So) approximated by the
/// blocks where web text meets them: emoji, dingbats, arrows, (c), (r), degree.
fn is_icon(c: char) -> bool {
    matches!(c,
        '©' | '®' | '°' | '¦' | '҂' | '֍' | '֎'
        | '\u{2100}'..='\u{214F}'
        | '\u{2190}'..='\u{21FF}'
        | '\u{2300}'..='\u{23FF}'
        | '\u{2500}'..='\u{27BF}'
        | '\u{2B00}'..='\u{2BFF}'
        | '\u{1F000}'..='\u{1FAFF}')
}

fn is_alpha(c: char) -> bool {
    c.is_alphabetic()
}

/// spaCy's `ALPHA_LOWER` includes the uncased scripts.
fn is_alpha_lower(c: char) -> bool {
    c.is_lowercase() || (c.is_alphabetic() && !c.is_uppercase())
}

fn is_quote(c: char) -> bool {
    QUOTES.contains(&c)
}

/// The lookbehind class of spaCy's "word." suffix rule:
/// `[0-9{ALPHA_LOWER}%²\-\+{CONCAT_QUOTES}{PUNCT}]` where PUNCT, being the
/// `|`-joined list, also puts `|` in the class.
fn before_period_suffix(c: char) -> bool {
    c.is_ascii_digit()
        || is_alpha_lower(c)
        || matches!(c, '%' | '²' | '-' | '+' | '|' | '…')
        || is_quote(c)
        || PUNCT.contains(&c)
}

/// spaCy's tokenizer exception for `s`, if any: the tokens it becomes.
fn special(s: &str) -> Option<&'static [&'static str]> {
    EXCEPTIONS
        .binary_search_by(|(k, _)| k.as_bytes().cmp(s.as_bytes()))
        .ok()
        .map(|i| EXCEPTIONS[i].1)
}

pub(crate) fn is_special(s: &str) -> bool {
    special(s).is_some()
}

/// Whether some exception key starts with `s` (the matcher stops growing a
/// span once none does, which keeps long runs of punctuation linear).
fn is_key_prefix(s: &str) -> bool {
    let i = EXCEPTIONS.partition_point(|(k, _)| k.as_bytes() < s.as_bytes());
    EXCEPTIONS.get(i).is_some_and(|(k, _)| k.starts_with(s))
}

/// spaCy's `URL_MATCH`, approximated: a scheme ("http://") or "www." start
/// keeps the rest of the chunk (affixes already peeled) as one token.
fn is_url(s: &str) -> bool {
    let scheme = s.find("://").is_some_and(|i| {
        i > 0
            && s[..i]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-')
    });
    scheme || (s.len() > 4 && s.starts_with("www."))
}

/// Length in bytes of the prefix spaCy peels off `s` (0: none).
fn prefix_len(s: &str) -> usize {
    let mut chars = s.chars();
    let Some(c) = chars.next() else { return 0 };
    if s.starts_with("..") {
        return s.len() - s.trim_start_matches('.').len();
    }
    if c == '+' {
        // `\+(?![0-9])`
        return match chars.next() {
            Some(d) if d.is_ascii_digit() => 0,
            _ => 1,
        };
    }
    if matches!(c, '§' | '%' | '=' | '—' | '–')
        || PUNCT.contains(&c)
        || is_quote(c)
        || CURRENCY.contains(&c)
        || is_icon(c)
    {
        return c.len_utf8();
    }
    0
}

/// Whether the whole of `tail` (preceded by `before`) matches one of spaCy's
/// suffix alternatives.
fn is_suffix(before: &[char], tail: &str) -> bool {
    let prev = before.last().copied();
    let mut tc = tail.chars();
    let first = tc.next();
    let single = first.filter(|_| tc.next().is_none());
    if let Some(c) = single {
        if PUNCT.contains(&c) || is_quote(c) || is_icon(c) || matches!(c, '—' | '–') {
            return true;
        }
        if c == '+' && prev.is_some_and(|p| p.is_ascii_digit()) {
            return true;
        }
        if c == '.' {
            if prev.is_some_and(before_period_suffix) {
                return true;
            }
            let n = before.len();
            if n >= 2 && before[n - 1].is_uppercase() && before[n - 2].is_uppercase() {
                return true;
            }
            if n >= 2 && before[n - 2] == '°' && "FfCcKk".contains(before[n - 1]) {
                return true;
            }
        }
    }
    if tail == "……" || (tail.len() >= 2 && tail.chars().all(|c| c == '.')) {
        return true;
    }
    if matches!(tail, "'s" | "'S" | "’s" | "’S") {
        return true;
    }
    if prev.is_some_and(|p| p.is_ascii_digit())
        && (UNITS.contains(&tail) || single.is_some_and(|c| CURRENCY.contains(&c)))
    {
        return true;
    }
    false
}

/// Length in bytes of the suffix: the leftmost position whose tail matches,
/// as Python's `re.search` over `alt1$|alt2$|...` finds it. Only a trailing
/// run of dots can be long; every other alternative spans at most 4
/// characters ("km/h") with at most 2 of lookbehind, so only the last 8
/// characters are examined: a chunk of 100,000 "!" stays linear, not quadratic.
fn suffix_len(s: &str) -> usize {
    let dots = s.len() - s.trim_end_matches('.').len();
    if dots >= 2 {
        return dots;
    }
    let mut window: Vec<(usize, char)> = s.char_indices().rev().take(8).collect();
    window.reverse();
    let whole = window.first().is_some_and(|&(b, _)| b == 0);
    let chars: Vec<char> = window.iter().map(|&(_, c)| c).collect();
    // Without the whole string, the first two positions lack their lookbehind.
    let first = if whole { 0 } else { 2 };
    for (k, &(byte, _)) in window.iter().enumerate().skip(first) {
        if is_suffix(&chars[..k], &s[byte..]) {
            return s.len() - byte;
        }
    }
    0
}

/// The infix found at char index `i` of `cs` (its length in chars), if any.
fn infix_at(cs: &[char], i: usize) -> usize {
    let c = cs[i];
    let prev = if i > 0 { Some(cs[i - 1]) } else { None };
    let at = |k: usize| cs.get(i + k).copied();
    if c == '.' && at(1) == Some('.') {
        return cs[i..].iter().take_while(|&&d| d == '.').count();
    }
    if c == '…' || is_icon(c) {
        return 1;
    }
    if matches!(c, '+' | '-' | '*' | '^')
        && prev.is_some_and(|p| p.is_ascii_digit())
        && at(1).is_some_and(|n| n.is_ascii_digit() || n == '-')
    {
        return 1;
    }
    if c == '.'
        && prev.is_some_and(|p| is_alpha_lower(p) || is_quote(p))
        && at(1).is_some_and(|n| n.is_uppercase() || is_quote(n))
    {
        return 1;
    }
    if c == ',' && prev.is_some_and(is_alpha) && at(1).is_some_and(is_alpha) {
        return 1;
    }
    if prev.is_some_and(|p| is_alpha(p) || p.is_ascii_digit()) {
        // `(?:-|–|—|--|---|——|~)(?=[ALPHA])`, alternatives in order.
        for h in ["-", "–", "—", "--", "---", "——", "~"] {
            let n = h.chars().count();
            if cs[i..].iter().take(n).copied().eq(h.chars()) && at(n).is_some_and(is_alpha) {
                return n;
            }
        }
        if matches!(c, ':' | '<' | '>' | '=' | '/') && at(1).is_some_and(is_alpha) {
            return 1;
        }
    }
    0
}

/// Splits the middle of a chunk on infixes, pushing the pieces.
fn push_infixed<'a>(s: &'a str, out: &mut Vec<&'a str>) {
    let cs: Vec<char> = s.chars().collect();
    let offsets: Vec<usize> = s
        .char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(s.len()))
        .collect();
    let mut start = 0;
    let mut i = 0;
    while i < cs.len() {
        let n = infix_at(&cs, i);
        if n == 0 {
            i += 1;
            continue;
        }
        // spaCy skips an infix at the very start of the string (it would
        // leave an empty token); the prefix rules handle those.
        if i == 0 {
            i += n;
            continue;
        }
        if i != start {
            out.push(&s[offsets[start]..offsets[i]]);
        }
        out.push(&s[offsets[i]..offsets[i + n]]);
        i += n;
        start = i;
    }
    if start < cs.len() {
        out.push(&s[offsets[start]..]);
    }
}

/// Pushes the slices of `s` spelled by `parts` (an exception's tokens, which
/// concatenate to `s`); falls back to `s` whole if they do not.
fn push_parts<'a>(s: &'a str, parts: &[&str], out: &mut Vec<&'a str>) {
    if parts.concat() != s {
        out.push(s);
        return;
    }
    let mut at = 0;
    for p in parts {
        out.push(&s[at..at + p.len()]);
        at += p.len();
    }
}

/// Tokens of one whitespace-free chunk, exceptions merged back as spaCy's
/// special-case matcher does: an exception split by the affix rules (":)."
/// -> ":" ")" "."; "i.\"" -> "i" "." "\"") is found as its own affix-only
/// tokenisation, longest match first, and replaced by its tokens.
fn push_chunk<'a>(s: &'a str, out: &mut Vec<&'a str>) {
    let mut toks = Vec::new();
    push_affixed(s, true, &mut toks);
    if toks.len() < 2 {
        out.extend(toks);
        return;
    }
    // Byte offset of each token in `s` (tokens are consecutive substrings).
    let mut starts = Vec::with_capacity(toks.len() + 1);
    let mut at = 0;
    for t in &toks {
        starts.push(at);
        at += t.len();
    }
    starts.push(at);
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for i in 0..toks.len() {
        for j in (i + 2)..=toks.len().min(i + MAX_SPECIAL_TOKENS) {
            let text = &s[starts[i]..starts[j]];
            if text.len() > MAX_SPECIAL_BYTES || !is_key_prefix(text) {
                break;
            }
            if is_special(text) {
                let mut plain = Vec::new();
                push_affixed(text, false, &mut plain);
                if plain[..] == toks[i..j] {
                    spans.push((i, j));
                }
            }
        }
    }
    // Longest first, then leftmost; overlapping matches are dropped.
    spans.sort_by_key(|&(i, j)| (std::cmp::Reverse(j - i), i));
    let mut taken = vec![false; toks.len()];
    let mut chosen: Vec<(usize, usize)> = Vec::new();
    for (i, j) in spans {
        if taken[i..j].iter().all(|t| !t) {
            taken[i..j].iter_mut().for_each(|t| *t = true);
            chosen.push((i, j));
        }
    }
    chosen.sort_unstable();
    let mut k = 0;
    for (i, j) in chosen {
        out.extend(&toks[k..i]);
        let text = &s[starts[i]..starts[j]];
        push_parts(text, special(text).unwrap_or(&[]), out);
        k = j;
    }
    out.extend(&toks[k..]);
}

/// Longest exception key, in tokens and bytes: bounds the matcher's search.
const MAX_SPECIAL_TOKENS: usize = 32;
const MAX_SPECIAL_BYTES: usize = 32;

/// spaCy's `_split_affixes` + `_attach_tokens` for one whitespace-free chunk;
/// `specials` false is `with_special_cases=False` (the matcher's patterns).
fn push_affixed<'a>(mut s: &'a str, specials: bool, out: &mut Vec<&'a str>) {
    let is_special = |s: &str| specials && is_special(s);
    let special = |s: &str| if specials { special(s) } else { None };
    let mut suffixes: Vec<&'a str> = Vec::new();
    while !s.is_empty() && !is_special(s) {
        let pre = prefix_len(s);
        let suf = suffix_len(s);
        if pre > 0 && is_special(&s[pre..]) {
            out.push(&s[..pre]);
            s = &s[pre..];
            break;
        }
        if suf > 0 && suf < s.len() && is_special(&s[..s.len() - suf]) {
            suffixes.push(&s[s.len() - suf..]);
            s = &s[..s.len() - suf];
            break;
        }
        if pre > 0 && suf > 0 && pre + suf <= s.len() {
            out.push(&s[..pre]);
            suffixes.push(&s[s.len() - suf..]);
            s = &s[pre..s.len() - suf];
        } else if pre > 0 {
            out.push(&s[..pre]);
            s = &s[pre..];
        } else if suf > 0 {
            suffixes.push(&s[s.len() - suf..]);
            s = &s[..s.len() - suf];
        } else {
            break;
        }
    }
    if !s.is_empty() {
        match special(s) {
            // The exception's tokens are substrings of `s` in order.
            Some(parts) => push_parts(s, parts, out),
            None if is_url(s) => out.push(s),
            None => push_infixed(s, out),
        }
    }
    out.extend(suffixes.iter().rev());
}

/// spaCy tokens including the whitespace tokens it makes: a whitespace run
/// gives one token, less the single ' ' it attaches to the previous token.
fn tokens_with_space(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut first = true;
    while !rest.is_empty() {
        let ws_end = rest.find(|c: char| !is_py_space(c)).unwrap_or(rest.len());
        let ws = &rest[..ws_end];
        if !ws.is_empty() {
            let extra = if !first && ws.starts_with(' ') {
                &ws[1..]
            } else {
                ws
            };
            if !extra.is_empty() {
                out.push(extra);
            }
        }
        rest = &rest[ws_end..];
        let end = rest.find(is_py_space).unwrap_or(rest.len());
        if end > 0 {
            push_chunk(&rest[..end], &mut out);
        }
        rest = &rest[end..];
        first = false;
    }
    out
}

/// datatrove's `split_into_words(text, "eng")`: spaCy tokens, whitespace dropped.
pub fn split_into_words(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest.find(|c: char| !is_py_space(c)).unwrap_or(rest.len());
        rest = &rest[start..];
        let end = rest.find(is_py_space).unwrap_or(rest.len());
        if end > 0 {
            push_chunk(&rest[..end], &mut words);
        }
        rest = &rest[end..];
    }
    words
}

/// spaCy's `Sentencizer` default `punct_chars` (the ASCII and common ones;
/// the rest of its list are rare scripts' full stops).
const SENT_END: &[&str] = &[
    "!", ".", "?", "։", "؟", "۔", "܀", "܁", "܂", "߹", "।", "॥", "၊", "။", "።", "፧", "፨", "᙮", "᜵",
    "᜶", "᠃", "᠉", "‼", "‽", "⁇", "⁈", "⁉", "⸮", "⸼", "꓿", "꘎", "꘏", "﹒", "﹖", "﹗", "！", "．",
    "？", "｡", "。",
];

/// spaCy's `is_punct`: every character is in a Unicode P* category. Rust has
/// no general categories, so: ASCII punctuation other than the symbols
/// (`$+<=>^`|~` are S*), and the punctuation blocks.
fn is_punct_token(t: &str) -> bool {
    t.chars().all(|c| {
        if c.is_ascii() {
            c.is_ascii_punctuation() && !"$+<=>^`|~".contains(c)
        } else {
            matches!(c, '¡' | '§' | '«' | '¶' | '·' | '»' | '¿'
                | '\u{2010}'..='\u{2027}' | '\u{2030}'..='\u{205E}'
                | '\u{3001}'..='\u{3003}' | '\u{3008}'..='\u{3011}'
                | '\u{FF01}'..='\u{FF0F}' | '\u{FF1A}'..='\u{FF1F}' | '｡' | '؟' | '۔' | '،')
                && !matches!(c, '\u{2044}' | '\u{2052}')
        }
    })
}

/// `len(split_into_sentences(text))`: the sentencizer starts a sentence at a
/// token that is neither punctuation nor a sentence end, after a sentence end.
pub fn count_sentences(text: &str) -> usize {
    let mut n = 1;
    let mut seen_end = false;
    for t in tokens_with_space(text) {
        let is_end = SENT_END.contains(&t);
        if seen_end && !is_end && !is_punct_token(t) {
            n += 1;
            seen_end = false;
        } else if is_end {
            seen_end = true;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokenisations printed by spaCy 3.8 `spacy.blank("en")`.
    #[test]
    fn matches_spacy_examples() {
        let cases: &[(&str, &[&str])] = &[
            ("a.", &["a."]),
            ("it.", &["it", "."]),
            ("12.5%", &["12.5", "%"]),
            ("he said.\"", &["he", "said", ".", "\""]),
            ("day...", &["day", "..."]),
            ("Who?", &["Who", "?"]),
            ("well-known", &["well", "-", "known"]),
            ("a--b", &["a", "--", "b"]),
            ("\"Hello", &["\"", "Hello"]),
            ("-item", &["-item"]),
            ("3,000", &["3,000"]),
            ("1990s.", &["1990s", "."]),
            ("x\ty  z", &["x", "y", "z"]),
            ("don't", &["do", "n't"]),
            ("e.g.", &["e.g."]),
            (":).\"", &[":)", ".", "\""]),
            ("i.\"[23]", &["i.", "\"[23", "]"]),
        ];
        for (text, want) in cases {
            assert_eq!(split_into_words(text), *want, "{text:?}");
        }
    }

    #[test]
    fn sentences() {
        assert_eq!(count_sentences("One two three. Four five six! Seven"), 3);
        assert_eq!(count_sentences("Wait... and then."), 1);
        assert_eq!(count_sentences(""), 1);
    }
}
