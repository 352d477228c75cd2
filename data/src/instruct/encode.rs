//! Examples to token ids plus a per-token train mask.
//!
//! Each piece of the rendered example (role prefix, content, role suffix) is
//! tokenized on its own and the ids are concatenated, so every token belongs
//! to exactly one piece and the mask is exact. The cost: a BPE merge never
//! spans a piece boundary, so ids can differ from encoding the rendered
//! string in one go (decoding gives the same text either way). Generation
//! must then encode the prompt the same way (pieces), which
//! [`super::ChatTemplate::generation_prompt`] plus `encode` of that string
//! approximates for char tokenizers exactly and for BPE up to merges at the
//! boundaries.
//!
//! After the last turn the tokenizer's `<|endoftext|>` is appended, trained
//! when the last turn's role is trained, so the model learns to stop.

use serde::{Deserialize, Serialize};

use super::error::InstructError;
use super::parse::Example;
use super::template::{InstructConfig, Overflow};
use crate::Tokenizer;

/// One encoded example: at most `seq_len + 1` tokens (one row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// `train[i]`: token `i` is predicted with loss (it is content or suffix
    /// of a trained role, or the final `<|endoftext|>` after one). `train[0]`
    /// never matters: the first token is never a target.
    pub train: Vec<bool>,
}

impl Encoded {
    /// Targets that take loss: trained tokens after the first.
    pub fn trained_targets(&self) -> usize {
        self.train.iter().skip(1).filter(|&&t| t).count()
    }
}

/// What [`encode`] kept and left out, for the run log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructReport {
    /// Examples given.
    pub examples: usize,
    /// Examples encoded (the length of the returned vector).
    pub kept: usize,
    /// Longer than `seq_len + 1` tokens and left out (`overflow = "drop"`).
    pub dropped: usize,
    /// Longer than `seq_len + 1` tokens and cut (`overflow = "truncate"`);
    /// kept unless nothing trained is left (then counted in `untrained`).
    pub truncated: usize,
    /// Left out because no target takes loss (a trained role's text starts
    /// only after the cut, or the example has no trained role).
    pub untrained: usize,
    /// Tokens of the kept examples.
    pub tokens: usize,
    /// Targets of the kept examples that take loss.
    pub trained_tokens: usize,
    /// Longest example in tokens, before truncation.
    pub longest: usize,
}

impl std::fmt::Display for InstructReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} examples kept ({} dropped as too long, {} truncated, {} with nothing to \
             train); {} tokens, {} trained; longest {} tokens",
            self.kept,
            self.examples,
            self.dropped,
            self.truncated,
            self.untrained,
            self.tokens,
            self.trained_tokens,
            self.longest
        )
    }
}

fn label(example: &Example, index: usize) -> String {
    match &example.origin {
        Some(origin) => origin.to_string(),
        None => format!("example {}", index + 1),
    }
}

/// Encodes `examples` for rows of `seq_len + 1` tokens (inputs `ids[..T]`,
/// targets `ids[1..T + 1]`), applying `config.overflow` to longer ones.
/// An error when nothing is left to train on says why.
pub fn encode(
    examples: &[Example],
    tokenizer: &Tokenizer,
    config: &InstructConfig,
    seq_len: usize,
) -> Result<(Vec<Encoded>, InstructReport), InstructError> {
    if seq_len == 0 {
        return Err(InstructError::ZeroSize { what: "seq_len" });
    }
    if examples.is_empty() {
        return Err(InstructError::NothingToEncode);
    }
    let template = config.template()?;
    let mut pieces = Vec::with_capacity(examples.len());
    for (i, ex) in examples.iter().enumerate() {
        let p = template.pieces(ex).map_err(|e| InstructError::InExample {
            at: label(ex, i),
            source: Box::new(e),
        })?;
        pieces.push(p);
    }
    // One batched call over every piece keeps all cores busy; only if it
    // fails do we look for the example to blame.
    let texts: Vec<&str> = pieces.iter().flatten().map(|p| p.text).collect();
    let piece_ids = match tokenizer.encode_each(&texts) {
        Ok(ids) => ids,
        Err(e) => return Err(blame(examples, &pieces, tokenizer, e)),
    };

    let max_len = seq_len + 1;
    let eot = tokenizer.eot_id();
    let mut report = InstructReport {
        examples: examples.len(),
        ..InstructReport::default()
    };
    let mut out = Vec::with_capacity(examples.len());
    let mut next = piece_ids.into_iter();
    for (ex, ex_pieces) in examples.iter().zip(&pieces) {
        let mut ids = Vec::new();
        let mut train = Vec::new();
        for (piece, piece_ids) in ex_pieces.iter().zip(next.by_ref()) {
            train.resize(train.len() + piece_ids.len(), piece.trained);
            ids.extend(piece_ids);
        }
        let last_trained = ex
            .turns
            .last()
            .is_some_and(|t| template.is_trained(&t.role));
        ids.push(eot);
        train.push(last_trained);
        report.longest = report.longest.max(ids.len());
        if ids.len() > max_len {
            match config.overflow {
                Overflow::Drop => {
                    report.dropped += 1;
                    continue;
                }
                Overflow::Truncate => {
                    report.truncated += 1;
                    ids.truncate(max_len);
                    train.truncate(max_len);
                }
            }
        }
        let encoded = Encoded { ids, train };
        let trained = encoded.trained_targets();
        if trained == 0 {
            report.untrained += 1;
            continue;
        }
        report.tokens += encoded.ids.len();
        report.trained_tokens += trained;
        out.push(encoded);
    }
    report.kept = out.len();
    if out.is_empty() {
        if report.dropped == report.examples {
            return Err(InstructError::AllTooLong {
                dropped: report.dropped,
                seq_len,
            });
        }
        return Err(InstructError::NothingToTrain {
            seq_len,
            too_long: report.dropped,
            untrained: report.untrained,
        });
    }
    Ok((out, report))
}

/// The error of the first example whose pieces fail to encode, named by
/// its origin (the batched call cannot say which one it was).
fn blame(
    examples: &[Example],
    pieces: &[Vec<super::template::Piece<'_>>],
    tokenizer: &Tokenizer,
    batch_error: crate::DataError,
) -> InstructError {
    for (i, (ex, p)) in examples.iter().zip(pieces).enumerate() {
        let texts: Vec<&str> = p.iter().map(|p| p.text).collect();
        if let Err(e) = tokenizer.encode_each(&texts) {
            return InstructError::Encode {
                at: label(ex, i),
                source: Box::new(e),
            };
        }
    }
    InstructError::Encode {
        at: "encoding the instruction examples".into(),
        source: Box::new(batch_error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instruct::{parse_jsonl_str, ChatTemplate, Turn};
    use std::path::Path;

    fn fixture() -> Vec<Example> {
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/instruct/mixed.jsonl");
        crate::instruct::read_examples(&p).unwrap()
    }

    /// A char tokenizer that knows every char of the fixture and templates.
    fn char_tok(examples: &[Example]) -> Tokenizer {
        let t = ChatTemplate::preset("plain").unwrap();
        let docs: Vec<String> = examples.iter().map(|e| t.render(e).unwrap()).collect();
        Tokenizer::train_char(&docs).unwrap()
    }

    /// The decoded trained tokens of `e`, in order.
    fn trained_text(tok: &Tokenizer, e: &Encoded) -> String {
        let ids: Vec<u32> = e
            .ids
            .iter()
            .zip(&e.train)
            .filter(|(_, &t)| t)
            .map(|(&id, _)| id)
            .collect();
        tok.decode(&ids).unwrap()
    }

    fn expected_trained(ex: &Example) -> String {
        let mut s: String = ex
            .turns
            .iter()
            .filter(|t| t.role == "assistant")
            .map(|t| format!("{}\n", t.content))
            .collect();
        s.push_str(crate::EOT_TOKEN);
        s
    }

    #[test]
    fn masks_cover_exactly_assistant_content_suffix_and_eot() {
        let examples = fixture();
        let tok = char_tok(&examples);
        let (enc, report) = encode(&examples, &tok, &InstructConfig::default(), 512).unwrap();
        assert_eq!(enc.len(), examples.len());
        assert_eq!((report.kept, report.dropped, report.truncated), (6, 0, 0));
        let t = ChatTemplate::preset("plain").unwrap();
        for (e, ex) in enc.iter().zip(&examples) {
            assert_eq!(e.ids.len(), e.train.len());
            assert_eq!(trained_text(&tok, e), expected_trained(ex));
            let all = tok.decode(&e.ids).unwrap();
            assert_eq!(
                all,
                format!("{}{}", t.render(ex).unwrap(), crate::EOT_TOKEN)
            );
            assert_eq!(*e.ids.last().unwrap(), tok.eot_id());
            assert!(!e.train[0]);
        }
        let total: usize = enc.iter().map(Encoded::trained_targets).sum();
        assert_eq!(report.trained_tokens, total);
        assert_eq!(
            report.tokens,
            enc.iter().map(|e| e.ids.len()).sum::<usize>()
        );
    }

    #[test]
    fn bpe_masks_are_exact_with_chatml() {
        let examples = fixture();
        let t = ChatTemplate::preset("chatml").unwrap();
        let mut docs: Vec<String> = examples.iter().map(|e| t.render(e).unwrap()).collect();
        docs.extend(crate::generate_corpus(1, 20));
        let tok = Tokenizer::train_bpe(&docs, 400).unwrap();
        let config = InstructConfig {
            template: Some("chatml".into()),
            ..InstructConfig::default()
        };
        let (enc, _) = encode(&examples, &tok, &config, 512).unwrap();
        for (e, ex) in enc.iter().zip(&examples) {
            let want: String = ex
                .turns
                .iter()
                .filter(|t| t.role == "assistant")
                .map(|t| format!("{}<|im_end|>\n", t.content))
                .collect::<String>()
                + crate::EOT_TOKEN;
            assert_eq!(trained_text(&tok, e), want);
        }
    }

    #[test]
    fn overflow_drop_and_truncate_count() {
        let examples = vec![
            Example::prompt_response("a", "b"),
            Example::prompt_response("a", &"b".repeat(50)),
            Example::prompt_response(&"a".repeat(50), "b"),
        ];
        let tok = char_tok(&examples);
        let t = ChatTemplate::preset("plain").unwrap();
        // Char tokenizer: one token per char, plus the EOT.
        let tokens = |e: &Example| t.render(e).unwrap().chars().count() + 1;
        let seq_len = tokens(&examples[0]) - 1; // the short one just fits
        let (enc, r) = encode(&examples, &tok, &InstructConfig::default(), seq_len).unwrap();
        assert_eq!(enc.len(), 1);
        assert_eq!(enc[0].ids.len(), seq_len + 1);
        assert_eq!((r.kept, r.dropped, r.truncated, r.untrained), (1, 2, 0, 0));
        assert_eq!(r.longest, tokens(&examples[1]));
        let config = InstructConfig {
            overflow: Overflow::Truncate,
            ..InstructConfig::default()
        };
        let (enc, r) = encode(&examples, &tok, &config, seq_len).unwrap();
        // The long response is cut; the long prompt leaves nothing to train.
        assert_eq!((r.kept, r.dropped, r.truncated, r.untrained), (2, 0, 2, 1));
        assert_eq!(enc[1].ids.len(), seq_len + 1);
        let prompt = t.generation_prompt(&[Turn::new("user", "a")]).unwrap();
        let kept_b = seq_len + 1 - prompt.chars().count();
        assert_eq!(trained_text(&tok, &enc[1]), "b".repeat(kept_b));
        assert!(r.to_string().starts_with("2 of 3 examples kept"), "{r}");
    }

    #[test]
    fn all_dropped_says_how_many_and_the_fix() {
        let examples: Vec<Example> = (0..12)
            .map(|_| Example::prompt_response(&"a".repeat(80), "b"))
            .collect();
        let tok = char_tok(&examples);
        let e = encode(&examples, &tok, &InstructConfig::default(), 64).unwrap_err();
        assert_eq!(
            e.to_string(),
            "all 12 examples are longer than seq_len 64: raise data.seq_len or set \
             data.instruct.overflow = \"truncate\""
        );
        let config = InstructConfig {
            overflow: Overflow::Truncate,
            ..InstructConfig::default()
        };
        let e = encode(&examples, &tok, &config, 64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("12 with nothing to learn"), "{e}");
    }

    #[test]
    fn unknown_char_names_the_example() {
        let text = "{\"prompt\": \"hi\", \"response\": \"yo\"}\n{\"prompt\": \"hi\", \"response\": \"y\u{e9}\"}\n";
        let examples = parse_jsonl_str(Path::new("d.jsonl"), text).unwrap();
        let tok = char_tok(&examples[..1]);
        let e = encode(&examples, &tok, &InstructConfig::default(), 64)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("d.jsonl:2: character"), "{e}");
        // A role missing from the template is blamed on its example too.
        let ex = vec![Example {
            turns: vec![Turn::new("tool", "x"), Turn::new("assistant", "y")],
            origin: None,
        }];
        let e = encode(&ex, &tok, &InstructConfig::default(), 64)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("example 1: chat role \"tool\""), "{e}");
    }
}
