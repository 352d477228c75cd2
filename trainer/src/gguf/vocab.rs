//! A Kiln tokenizer as GGUF's `gpt2`-style vocabulary: tokens in byte-level
//! form (GPT-2's bytes-to-unicode map), their types, and BPE merges. Kiln's
//! byte-level BPE is already in that form; a char-level vocabulary is
//! re-spelled byte by byte, with merges that rebuild multi-byte characters.

use std::collections::BTreeSet;

use kiln_data::Tokenizer;

use crate::error::{Result, TrainerError};

/// llama.cpp token types.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const UNUSED: i32 = 5;

pub struct GgufVocab {
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub merges: Vec<String>,
}

/// GPT-2's reversible byte -> printable char map.
pub fn byte_to_unicode(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    // The others take 256, 257, ... in byte order.
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap_or('?')
}

fn byte_level(s: &str) -> String {
    s.bytes().map(byte_to_unicode).collect()
}

fn internal(e: impl std::fmt::Display) -> TrainerError {
    TrainerError::Internal(format!("reading the tokenizer for GGUF: {e}"))
}

/// The vocabulary padded to `n_vocab` rows (the model's embedding).
pub fn gguf_vocab(tokenizer: &Tokenizer, n_vocab: usize) -> Result<GgufVocab> {
    let json: serde_json::Value = serde_json::from_str(&tokenizer.to_json()?).map_err(internal)?;
    let model = &json["model"];
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| internal("no model.vocab"))?;
    let special: BTreeSet<String> = json["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["special"].as_bool() == Some(true))
        .filter_map(|t| t["content"].as_str().map(str::to_string))
        .collect();
    let byte_bpe = model["type"] == "BPE";
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; n_vocab.max(vocab.len())];
    let mut merges = Vec::new();
    for (tok, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| internal("a vocab id is not a number"))? as usize;
        let kind = if special.contains(tok) {
            CONTROL
        } else if tok == "<unk>" {
            UNKNOWN
        } else {
            NORMAL
        };
        let spelled = if byte_bpe || kind != NORMAL {
            tok.clone()
        } else {
            byte_level(tok)
        };
        if !byte_bpe && kind == NORMAL && tok.len() > 1 {
            // A multi-byte char: merge its byte symbols left to right.
            let chars: Vec<char> = spelled.chars().collect();
            let mut left = chars[0].to_string();
            for c in &chars[1..] {
                merges.push(format!("{left} {c}"));
                left.push(*c);
            }
        }
        tokens[id] = Some((spelled, kind));
    }
    if byte_bpe {
        for m in model["merges"].as_array().into_iter().flatten() {
            match m {
                serde_json::Value::String(s) => merges.push(s.clone()),
                serde_json::Value::Array(pair) => merges.push(format!(
                    "{} {}",
                    pair.first().and_then(|v| v.as_str()).unwrap_or(""),
                    pair.get(1).and_then(|v| v.as_str()).unwrap_or("")
                )),
                _ => {}
            }
        }
    }
    let (mut names, mut types) = (Vec::new(), Vec::new());
    for (i, t) in tokens.into_iter().enumerate() {
        let (s, k) = t.unwrap_or_else(|| (format!("[PAD{i}]"), UNUSED));
        names.push(s);
        types.push(k);
    }
    Ok(GgufVocab {
        tokens: names,
        types,
        merges,
    })
}
