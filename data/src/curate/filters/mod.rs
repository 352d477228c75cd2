//! Heuristic document filters with datatrove's published defaults (issue 16).
//!
//! One file per filter family, each a port of datatrove's
//! `pipeline/filters/*.py` (datatrove 0.10.1, the parity oracle):
//! [`GopherQuality`], [`GopherRepetition`], [`C4Quality`] and
//! [`FineWebQuality`]. Each returns a [`Decision`] whose drop reason is
//! datatrove's own string ("gopher_short_doc", "dup_line_frac", ...), so
//! decisions compare rule by rule with datatrove's, and each is configured by
//! a serde struct whose field names are datatrove's parameter names.
//!
//! Two more, not ports: [`LanguageFilter`] (whatlang in place of datatrove's
//! fastText `LanguageFilter`) and [`BadWords`] (C4's bad-words rule, with a
//! user-supplied list). Their configs can be wrong ([`FilterError`] from
//! `LanguageFilter::validate` and `BadWordsConfig::load`); filtering a
//! document still cannot fail.
//!
//! Where datatrove would raise (FineWeb divides by a zero word count) these
//! filters take the float result instead: a filter never panics.

mod bad_words;
mod c4;
mod error;
mod exceptions;
mod fineweb;
mod gopher_quality;
mod gopher_repetition;
mod language;
mod punctuation;
mod text;
pub mod words;

pub use bad_words::{BadWords, BadWordsConfig};
pub use c4::{C4Outcome, C4Quality};
pub use error::FilterError;
pub use fineweb::FineWebQuality;
pub use gopher_quality::GopherQuality;
pub use gopher_repetition::GopherRepetition;
pub use language::{LanguageFilter, LanguageOutcome};

use std::borrow::Cow;

/// What a filter decided for one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Keep,
    /// Dropped by the rule datatrove names this way.
    Drop(Cow<'static, str>),
}

impl Decision {
    fn drop(reason: &'static str) -> Self {
        Decision::Drop(Cow::Borrowed(reason))
    }

    /// "keep" or the drop reason, as datatrove's stats name them.
    pub fn as_str(&self) -> &str {
        match self {
            Decision::Keep => "keep",
            Decision::Drop(r) => r,
        }
    }

    pub fn is_keep(&self) -> bool {
        matches!(self, Decision::Keep)
    }
}
