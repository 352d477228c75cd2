//! Language identification, the role of datatrove's `LanguageFilter`
//! (`pipeline/filters/language_filter.py`), with the `whatlang` crate.
//!
//! Not a port: datatrove scores documents with fastText's `lid.176` model
//! (176 languages, a linear classifier over character n-gram embeddings),
//! while whatlang detects the script and then ranks its ~70 languages by
//! trigram profiles. Its confidence is a different number on a different
//! scale, so keep/drop decisions are not expected to match datatrove one for
//! one; only the threshold default (0.65) is datatrove's. Codes are ISO 639-3
//! as whatlang names them ("eng", "fra", "deu", "cmn"), not fastText's
//! ISO 639-1 labels ("en", "fr").
//!
//! A document is kept when whatlang's best language is one of `languages`
//! and its confidence is above `min_confidence`. Short or ambiguous texts
//! get a low confidence from whatlang and are dropped; text with no letters
//! at all ("", "12 345 !!") gets no detection and is dropped too, with
//! `language: None`. whatlang's own `Info::is_reliable()` is
//! `confidence > 0.9`: set `min_confidence = 0.9` to keep only what whatlang
//! itself calls reliable.

use serde::{Deserialize, Serialize};
use whatlang::Lang;

use super::error::FilterError;
use super::Decision;

/// The language filter's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LanguageFilter {
    /// ISO 639-3 codes as whatlang names them; default `["eng"]`.
    pub languages: Vec<String>,
    /// Keep only above this confidence; default 0.65, datatrove's
    /// `LanguageFilter` threshold (there on fastText's score).
    pub min_confidence: f64,
}

impl Default for LanguageFilter {
    fn default() -> Self {
        Self {
            languages: vec!["eng".to_string()],
            min_confidence: 0.65,
        }
    }
}

/// The decision with what was detected, datatrove's `language` and
/// `language_score` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LanguageOutcome {
    /// Keep, or drop with reason "language".
    pub decision: Decision,
    /// whatlang's best ISO 639-3 code; `None` when the text has no letters.
    pub language: Option<&'static str>,
    /// whatlang's confidence in `language`, in [0, 1]; 0 when none.
    pub confidence: f64,
}

impl LanguageFilter {
    /// Checks every code is one whatlang knows and the threshold is in [0, 1].
    pub fn validate(&self) -> Result<(), FilterError> {
        if self.languages.is_empty() {
            return Err(FilterError::NoLanguages);
        }
        if let Some(code) = self
            .languages
            .iter()
            .find(|c| Lang::from_code(c.as_str()).is_none())
        {
            return Err(FilterError::UnknownLanguage { code: code.clone() });
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(FilterError::MinConfidence {
                got: self.min_confidence,
            });
        }
        Ok(())
    }

    pub fn filter(&self, text: &str) -> Decision {
        self.apply(text).decision
    }

    /// The decision and the detected language and confidence.
    pub fn apply(&self, text: &str) -> LanguageOutcome {
        let (language, confidence) = match whatlang::detect(text) {
            Some(info) => (Some(info.lang().code()), info.confidence()),
            None => (None, 0.0),
        };
        let wanted = language.is_some_and(|l| self.languages.iter().any(|c| c == l));
        let decision = if wanted && confidence > self.min_confidence {
            Decision::Keep
        } else {
            Decision::drop("language")
        };
        LanguageOutcome {
            decision,
            language,
            confidence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENGLISH: &str = "The old lighthouse keeper climbed the stairs every evening to \
        light the lamp. Ships passing the rocky coast relied on its beam to find their way \
        home. In winter the storms were fierce, but he never missed a single night. The \
        villagers said that the light had not gone out in forty years.";
    const FRENCH: &str = "Le vieux gardien du phare montait les escaliers chaque soir pour \
        allumer la lampe. Les navires qui longeaient la côte rocheuse comptaient sur sa \
        lumière pour rentrer au port. En hiver, les tempêtes étaient violentes, mais il \
        n'a jamais manqué une seule nuit. Les habitants du village disaient que la lumière \
        ne s'était pas éteinte depuis quarante ans.";
    const GERMAN: &str = "Der alte Leuchtturmwärter stieg jeden Abend die Treppe hinauf, um \
        die Lampe anzuzünden. Die Schiffe, die an der felsigen Küste vorbeifuhren, \
        verließen sich auf ihr Licht, um den Weg nach Hause zu finden. Im Winter waren die \
        Stürme heftig, aber er hat keine einzige Nacht versäumt. Die Dorfbewohner sagten, \
        dass das Licht seit vierzig Jahren nicht ausgegangen sei.";
    const SPANISH: &str = "El viejo guardián del faro subía las escaleras cada tarde para \
        encender la lámpara. Los barcos que pasaban junto a la costa rocosa confiaban en su \
        luz para encontrar el camino a casa. En invierno las tormentas eran feroces, pero \
        él nunca faltó ni una sola noche. Los vecinos del pueblo decían que la luz no se \
        había apagado en cuarenta años.";

    #[test]
    fn keeps_english_with_defaults() {
        let out = LanguageFilter::default().apply(ENGLISH);
        assert_eq!(out.decision, Decision::Keep, "{out:?}");
        assert_eq!(out.language, Some("eng"));
        assert!(out.confidence > 0.65, "{out:?}");
    }

    #[test]
    fn drops_other_languages_naming_them() {
        let f = LanguageFilter::default();
        for (text, code) in [(FRENCH, "fra"), (GERMAN, "deu"), (SPANISH, "spa")] {
            let out = f.apply(text);
            assert_eq!(out.decision.as_str(), "language", "{code}: {out:?}");
            assert_eq!(out.language, Some(code), "{out:?}");
            assert!(out.confidence > 0.65, "{code}: {out:?}");
        }
    }

    #[test]
    fn keeps_any_listed_language() {
        let f = LanguageFilter {
            languages: vec!["fra".into(), "deu".into()],
            ..Default::default()
        };
        assert!(f.filter(FRENCH).is_keep());
        assert!(f.filter(GERMAN).is_keep());
        assert!(!f.filter(ENGLISH).is_keep());
        assert!(!f.filter(SPANISH).is_keep());
    }

    #[test]
    fn text_without_letters_is_dropped_with_no_language() {
        let f = LanguageFilter::default();
        for text in ["", "   ", "12 345 !!"] {
            let out = f.apply(text);
            assert_eq!(out.decision.as_str(), "language", "{text:?}");
            assert_eq!(out.language, None, "{text:?}");
            assert_eq!(out.confidence, 0.0);
        }
    }

    #[test]
    fn short_text_falls_below_the_threshold() {
        // whatlang does pick English for two English words, but with a
        // confidence (about 0.19) far below datatrove's 0.65: dropped.
        let out = LanguageFilter::default().apply("Hello there");
        assert_eq!(out.decision.as_str(), "language", "{out:?}");
        assert_eq!(out.language, Some("eng"));
        assert!(out.confidence < 0.65, "{out:?}");
        // The threshold alone decides: at 0 the same text is kept.
        let lenient = LanguageFilter {
            min_confidence: 0.0,
            ..Default::default()
        };
        assert!(lenient.filter("Hello there").is_keep());
        // Ambiguous words shared across languages: any guess, low confidence.
        let out = LanguageFilter::default().apply("no taxi");
        assert_eq!(out.decision.as_str(), "language", "{out:?}");
        assert!(out.confidence < 0.65, "{out:?}");
    }

    #[test]
    fn validate_names_the_bad_field() {
        assert!(LanguageFilter::default().validate().is_ok());
        let bad_code = LanguageFilter {
            languages: vec!["en".into()],
            ..Default::default()
        };
        let msg = bad_code.validate().unwrap_err().to_string();
        assert!(msg.contains("\"en\""), "{msg}");
        let empty = LanguageFilter {
            languages: vec![],
            ..Default::default()
        };
        assert!(matches!(empty.validate(), Err(FilterError::NoLanguages)));
        let bad_conf = LanguageFilter {
            min_confidence: 1.5,
            ..Default::default()
        };
        assert!(matches!(
            bad_conf.validate(),
            Err(FilterError::MinConfidence { .. })
        ));
        let nan = LanguageFilter {
            min_confidence: f64::NAN,
            ..Default::default()
        };
        assert!(nan.validate().is_err());
    }

    #[test]
    fn config_from_toml() {
        let f: LanguageFilter = toml::from_str("languages = [\"deu\"]").unwrap();
        assert_eq!(f.languages, ["deu"]);
        assert_eq!(f.min_confidence, 0.65);
        assert!(toml::from_str::<LanguageFilter>("threshold = 0.5").is_err());
    }
}
