//! From a run config to a tokenizer and train/validation token streams.

use kiln_data::{generate_corpus, read_documents, TextFormat, TokenSplit, Tokenizer};

use crate::config::{RunConfig, TokenizerKindConfig};
use crate::error::{Result, TrainerError};

fn format_of(cfg: &RunConfig) -> Option<TextFormat> {
    match cfg.data.format.as_deref() {
        Some("jsonl") => Some(TextFormat::Jsonl),
        Some("text") => Some(TextFormat::Text),
        _ => None,
    }
}

/// Documents of the training source: a file/directory, or the built-in stories.
pub fn train_documents(cfg: &RunConfig) -> Result<Vec<String>> {
    match &cfg.data.train {
        Some(path) => Ok(read_documents(path, format_of(cfg), &cfg.data.text_field)?),
        None => Ok(generate_corpus(
            cfg.data.stories_seed,
            cfg.data.stories_docs,
        )),
    }
}

/// The run's tokenizer: an existing tokenizer.json, or one trained on `docs`.
pub fn build_tokenizer(cfg: &RunConfig, docs: &[String]) -> Result<Tokenizer> {
    if let Some(path) = &cfg.tokenizer.path {
        return Ok(Tokenizer::from_file(path)?);
    }
    Ok(match cfg.tokenizer.kind {
        TokenizerKindConfig::Char => Tokenizer::train_char(docs)?,
        TokenizerKindConfig::Bpe => Tokenizer::train_bpe(docs, cfg.tokenizer.vocab_size)?,
    })
}

/// Fills `model.vocab_size` from the tokenizer (or checks it is large enough).
pub fn resolve_vocab(cfg: &mut RunConfig, tokenizer: &Tokenizer) -> Result<()> {
    let n = tokenizer.vocab_size();
    if cfg.model.vocab_size == 0 {
        cfg.model.vocab_size = n;
    } else if cfg.model.vocab_size < n {
        return Err(TrainerError::invalid(
            "model.vocab_size",
            format!("{} is smaller than the tokenizer's {n} tokens: raise it or leave it out (0 = from the tokenizer)", cfg.model.vocab_size),
        ));
    }
    cfg.model.validate()?;
    Ok(())
}

/// Tokenised train and validation streams.
pub fn token_split(cfg: &RunConfig, tokenizer: &Tokenizer, docs: &[String]) -> Result<TokenSplit> {
    let split = match &cfg.data.val {
        Some(val) => {
            let val_docs = read_documents(val, format_of(cfg), &cfg.data.text_field)?;
            TokenSplit {
                train: tokenizer.encode_docs(docs)?,
                val: tokenizer.encode_docs(&val_docs)?,
            }
        }
        None => TokenSplit::from_tokens(tokenizer.encode_docs(docs)?, cfg.data.val_fraction)?,
    };
    split.check_seq_len(cfg.seq_len())?;
    Ok(split)
}
