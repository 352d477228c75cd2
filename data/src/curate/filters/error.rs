//! Why a document filter refused to start (bad config, unreadable list).
//! Filters themselves never fail on a document: these come from building them.

use std::path::PathBuf;

/// Errors from configuring or loading a document filter.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(
        "language.languages is empty: list at least one ISO 639-3 code as whatlang names \
         them, e.g. languages = [\"eng\"]"
    )]
    NoLanguages,

    #[error(
        "language.languages: \"{code}\" is not a language whatlang knows: use its ISO 639-3 \
         code (\"eng\", \"fra\", \"deu\", \"spa\", \"cmn\", ...)"
    )]
    UnknownLanguage { code: String },

    #[error(
        "language.min_confidence must be a number in [0, 1] (got {got}): datatrove's \
         LanguageFilter default is 0.65"
    )]
    MinConfidence { got: f64 },

    #[error(
        "bad_words.path {}: {source}: point bad_words.path at a UTF-8 file with one word or \
         phrase per line",
        path.display()
    )]
    BadWordsRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "bad_words.path {} has no words (only blank lines): add one word or phrase per line, \
         or remove the bad_words filter",
        path.display()
    )]
    BadWordsEmpty { path: PathBuf },
}
