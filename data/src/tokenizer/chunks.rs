//! Cutting long text into pieces that encode exactly like the whole.
//!
//! The Hugging Face pipeline runs on one thread per input and allocates per
//! split, so a single 1 MB input is slow. We cut the text into pieces of a
//! few KiB and encode them with `encode_batch` (parallel), which only gives
//! the same ids as encoding the whole text if no token and no pre-tokenizer
//! split can straddle a cut.
//!
//! We therefore cut only right after a lone `'\n'`: one that is preceded and
//! followed by non-whitespace characters. That position is a split boundary
//! for both of our pre-tokenizers:
//! - the char-level one splits between every pair of chars;
//! - GPT-2's byte-level regex only puts `'\n'` into an all-whitespace split,
//!   and a whitespace run of exactly `"\n"` between two non-whitespace chars
//!   is its own split whether or not the text continues after it (the
//!   `\s+(?!\S)` lookahead matters only for runs of two or more).
//!
//! The special token `<|endoftext|>` contains no newline, so it is never cut.

/// Pieces smaller than this are not worth a task of their own.
pub(crate) const TARGET_CHUNK_BYTES: usize = 8 * 1024;

/// Splits `text` into consecutive pieces of at least `target` bytes (except
/// the last) whose concatenation is `text`, cutting only after lone newlines.
/// Text without such newlines comes back as one piece: correct, just slower.
pub(crate) fn split_at_lone_newlines(text: &str, target: usize) -> Vec<&str> {
    let mut pieces = Vec::with_capacity(text.len() / target.max(1) + 1);
    let mut start = 0;
    let mut search_from = target;
    while search_from < text.len() {
        let Some(rel) = text.get(search_from..).and_then(|rest| rest.find('\n')) else {
            break;
        };
        let nl = search_from + rel;
        let cut = nl + 1;
        let before = text[..nl].chars().next_back();
        let after = text[cut..].chars().next();
        let lone = matches!(before, Some(c) if !c.is_whitespace())
            && matches!(after, Some(c) if !c.is_whitespace());
        if lone {
            pieces.push(&text[start..cut]);
            start = cut;
            search_from = cut + target;
        } else {
            search_from = cut;
        }
        // `search_from` may now sit inside a multi-byte char; move it forward
        // to a char boundary so slicing stays valid.
        while search_from < text.len() && !text.is_char_boundary(search_from) {
            search_from += 1;
        }
    }
    if start < text.len() || pieces.is_empty() {
        pieces.push(&text[start..]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_concatenate_to_the_text() {
        let text = "ab\ncd\n\nef\n gh\nij\né\nü\n\n";
        for target in 1..text.len() + 2 {
            let pieces = split_at_lone_newlines(text, target);
            assert_eq!(pieces.concat(), text, "target {target}");
        }
    }

    #[test]
    fn cuts_only_after_lone_newlines() {
        let text = "ab\ncd\n\nef\n gh\nij";
        let pieces = split_at_lone_newlines(text, 1);
        assert_eq!(pieces, vec!["ab\n", "cd\n\nef\n gh\n", "ij"]);
    }

    #[test]
    fn empty_text_is_one_empty_piece() {
        assert_eq!(split_at_lone_newlines("", 4), vec![""]);
    }
}
