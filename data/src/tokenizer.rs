//! Tokenizers: a thin wrapper around Hugging Face `tokenizers`.
//!
//! Both kinds Kiln trains are ordinary `tokenizers::Tokenizer`s, so every
//! tokenizer is saved as a standard `tokenizer.json` that Python's
//! `tokenizers.Tokenizer.from_file` loads and encodes to the same ids:
//! - `char`: a `WordLevel` model whose vocabulary is `<|endoftext|>` (id 0)
//!   plus the sorted distinct chars of the corpus, a `Split` pre-tokenizer
//!   isolating every char, and a `Fuse` decoder that concatenates them back.
//!   nanoGPT's `shakespeare_char` vocabulary is exactly this minus the EOT.
//! - `bpe`: GPT-2 style byte-level BPE (`ByteLevel` pre-tokenizer without a
//!   prefix space, `ByteLevel` decoder), `<|endoftext|>` special with id 0.
//!
//! `<|endoftext|>` is a special added token: it separates documents in the
//! token stream, and the literal text `<|endoftext|>` encodes to it (as it
//! does in Python).

mod chunks;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tokenizers::decoders::fuse::Fuse;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::DataError;
use chunks::{split_at_lone_newlines, TARGET_CHUNK_BYTES};

/// The end-of-text token that separates documents (GPT-2's spelling).
pub const EOT_TOKEN: &str = "<|endoftext|>";

/// Matches exactly one char, newlines included, in both the Rust regex
/// engines and Python's Oniguruma (`.` would skip `\n`, and the flag that
/// changes that is spelled differently in the two).
const ONE_CHAR_REGEX: &str = r"[\s\S]";

/// Never in a char vocabulary (every entry there is one char or the EOT), so
/// an unknown char makes `WordLevel` fail instead of silently mapping to it.
const CHAR_UNK_TOKEN: &str = "<unk>";

/// 256 byte symbols plus `<|endoftext|>`.
const MIN_BPE_VOCAB: usize = 257;

/// Which kind of tokenizer a `tokenizer.json` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    Char,
    Bpe,
}

/// A trained tokenizer; cheap to share behind an `Arc`, `Clone` copies it.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    kind: TokenizerKind,
    eot_id: u32,
}

impl std::fmt::Debug for Tokenizer {
    // The derived form would print the whole vocabulary.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.vocab_size())
            .field("eot_id", &self.eot_id)
            .finish()
    }
}

fn hf_error(context: &str, err: impl std::fmt::Display) -> DataError {
    DataError::Tokenizer {
        context: context.to_string(),
        reason: err.to_string(),
    }
}

impl Tokenizer {
    /// Char-level tokenizer: id 0 is `<|endoftext|>`, then one id per
    /// distinct char of `docs` in sorted (code point) order.
    pub fn train_char(docs: &[String]) -> Result<Tokenizer, DataError> {
        let chars: BTreeSet<char> = docs.iter().flat_map(|d| d.chars()).collect();
        if chars.is_empty() {
            return Err(DataError::EmptyTrainingText);
        }
        let mut vocab = serde_json::Map::new();
        vocab.insert(EOT_TOKEN.to_string(), 0.into());
        for (i, c) in chars.iter().enumerate() {
            vocab.insert(c.to_string(), (i + 1).into());
        }
        // WordLevel's builder wants an `ahash` map; going through its serde
        // form avoids a dependency and is exactly what lands in the JSON.
        // (From a string: its deserializer borrows, which `from_value` can't.)
        let model_json = serde_json::json!({
            "type": "WordLevel",
            "vocab": vocab,
            "unk_token": CHAR_UNK_TOKEN,
        })
        .to_string();
        let model: WordLevel = serde_json::from_str(&model_json)
            .map_err(|e| hf_error("building the char vocabulary", e))?;
        let split = Split::new(
            SplitPattern::Regex(ONE_CHAR_REGEX.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| hf_error("building the char pre-tokenizer", e))?;

        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(split));
        inner.with_decoder(Some(Fuse::new()));
        inner.add_special_tokens(&[AddedToken::from(EOT_TOKEN, true)]);
        Self::from_hf(inner)
    }

    /// Byte-level BPE with `vocab_size` entries at most (fewer if the corpus
    /// runs out of pairs to merge), `<|endoftext|>` with id 0.
    pub fn train_bpe(docs: &[String], vocab_size: usize) -> Result<Tokenizer, DataError> {
        Self::train_bpe_stream(docs.iter().cloned(), vocab_size)
    }

    /// [`Tokenizer::train_bpe`] over a stream of documents: memory holds the
    /// trainer's word counts, not the corpus.
    pub fn train_bpe_stream<I>(docs: I, vocab_size: usize) -> Result<Tokenizer, DataError>
    where
        I: Iterator<Item = String> + Send,
    {
        if vocab_size < MIN_BPE_VOCAB {
            return Err(DataError::VocabTooSmall {
                vocab_size,
                min: MIN_BPE_VOCAB,
            });
        }
        // add_prefix_space = false: a document's first word is not rewritten,
        // so decode(encode(s)) == s; use_regex = true: GPT-2's split rules.
        let byte_level = ByteLevel::new(false, true, true);
        let trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(0)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(EOT_TOKEN, true)])
            // Every byte is in the vocabulary, so any text encodes.
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut trainer = TrainerWrapper::from(trainer);

        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(byte_level));
        inner.with_decoder(Some(byte_level));
        let saw_text = std::sync::atomic::AtomicBool::new(false);
        let docs = docs.inspect(|d| {
            if !d.is_empty() {
                saw_text.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
        inner
            .train(&mut trainer, docs)
            .map_err(|e| hf_error("training BPE", e))?;
        if !saw_text.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(DataError::EmptyTrainingText);
        }
        Self::from_hf(inner)
    }

    /// Wraps a Hugging Face tokenizer, checking it is one Kiln can drive.
    fn from_hf(inner: tokenizers::Tokenizer) -> Result<Tokenizer, DataError> {
        let kind = match inner.get_model() {
            ModelWrapper::WordLevel(_) => TokenizerKind::Char,
            ModelWrapper::BPE(_) => TokenizerKind::Bpe,
            _ => {
                return Err(hf_error(
                    "unsupported model",
                    "Kiln drives WordLevel (char) and BPE tokenizers; retrain with kiln",
                ))
            }
        };
        let eot_id = inner.token_to_id(EOT_TOKEN).ok_or_else(|| {
            hf_error(
                "missing special token",
                format!("the vocabulary has no {EOT_TOKEN}; retrain the tokenizer with kiln"),
            )
        })?;
        Ok(Tokenizer {
            inner,
            kind,
            eot_id,
        })
    }

    /// Parses a `tokenizer.json` document.
    pub fn from_json(s: &str) -> Result<Tokenizer, DataError> {
        let inner = tokenizers::Tokenizer::from_str(s)
            .map_err(|e| hf_error("parsing tokenizer.json", e))?;
        Self::from_hf(inner)
    }

    /// The `tokenizer.json` document (pretty-printed: it gets read by people).
    pub fn to_json(&self) -> Result<String, DataError> {
        self.inner
            .to_string(true)
            .map_err(|e| hf_error("serialising tokenizer.json", e))
    }

    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer, DataError> {
        let text = fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                DataError::TokenizerFile {
                    path: path.to_path_buf(),
                    reason: "not found: check tokenizer.path, or train one by leaving it unset"
                        .to_string(),
                }
            } else {
                DataError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        Self::from_json(&text).map_err(|e| {
            let reason = match e {
                DataError::Tokenizer { context, reason } => format!("{context}: {reason}"),
                other => other.to_string(),
            };
            DataError::TokenizerFile {
                path: path.to_path_buf(),
                reason: format!(
                    "{reason}; point tokenizer.path at a tokenizer.json written by kiln, or leave \
                     it unset to train one"
                ),
            }
        })
    }

    /// Writes `tokenizer.json` atomically: a crash mid-write leaves either the
    /// old file or the new one, never half of one (runs are resumed from disk).
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        let json = self.to_json()?;
        let io_err = |source| DataError::Write {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| DataError::TokenizerFile {
                path: path.to_path_buf(),
                reason: "the path has no file name: give a path like run/tokenizer.json"
                    .to_string(),
            })?;
        let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
        let write_tmp = || -> std::io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(json.as_bytes())?;
            file.sync_all()
        };
        if let Err(e) = write_tmp().and_then(|()| fs::rename(&tmp, path)) {
            // Best effort: the temp file is ours and useless now.
            let _ = fs::remove_file(&tmp);
            return Err(io_err(e));
        }
        // Persist the rename itself; not all platforms can open a directory,
        // and the file is already complete, so a failure here is not fatal.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Token ids of `text`; no special tokens are added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        let pieces = split_at_lone_newlines(text, TARGET_CHUNK_BYTES);
        let encodings = self
            .inner
            .encode_batch_fast(pieces, false)
            .map_err(|e| self.encode_error(&[text], e))?;
        let mut ids = Vec::with_capacity(encodings.iter().map(|e| e.len()).sum());
        for enc in &encodings {
            ids.extend_from_slice(enc.get_ids());
        }
        Ok(ids)
    }

    /// Token ids of each text, encoded together so that all cores work on
    /// a batch of many small documents as well as on a few large ones.
    pub fn encode_each(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, DataError> {
        let mut pieces = Vec::new();
        let mut ends = Vec::with_capacity(texts.len());
        for t in texts {
            pieces.extend(split_at_lone_newlines(t, TARGET_CHUNK_BYTES));
            ends.push(pieces.len());
        }
        let encodings = self
            .inner
            .encode_batch_fast(pieces, false)
            .map_err(|e| self.encode_error(texts, e))?;
        let mut out = Vec::with_capacity(texts.len());
        let mut piece = 0;
        for &end in &ends {
            let encs = &encodings[piece..end];
            let mut ids = Vec::with_capacity(encs.iter().map(|e| e.len()).sum());
            for enc in encs {
                ids.extend_from_slice(enc.get_ids());
            }
            out.push(ids);
            piece = end;
        }
        Ok(out)
    }

    /// All documents as one stream, `<|endoftext|>` between consecutive
    /// documents (not after the last: a single-document corpus such as
    /// tinyshakespeare then gives exactly nanoGPT's token stream).
    pub fn encode_docs(&self, docs: &[String]) -> Result<Vec<u32>, DataError> {
        // One flat batch of pieces across all documents keeps both cores busy
        // whether the corpus is one big file or many small documents.
        let mut pieces = Vec::new();
        let mut doc_piece_ends = Vec::with_capacity(docs.len());
        for doc in docs {
            pieces.extend(split_at_lone_newlines(doc, TARGET_CHUNK_BYTES));
            doc_piece_ends.push(pieces.len());
        }
        let encodings = match self.inner.encode_batch_fast(pieces, false) {
            Ok(encodings) => encodings,
            Err(e) => {
                let texts: Vec<&str> = docs.iter().map(String::as_str).collect();
                return Err(self.encode_error(&texts, e));
            }
        };
        let total: usize = encodings.iter().map(|e| e.len()).sum::<usize>() + docs.len();
        let mut ids = Vec::with_capacity(total);
        let mut piece = 0;
        for (d, &end) in doc_piece_ends.iter().enumerate() {
            if d > 0 {
                ids.push(self.eot_id);
            }
            for enc in &encodings[piece..end] {
                ids.extend_from_slice(enc.get_ids());
            }
            piece = end;
        }
        Ok(ids)
    }

    /// Turns a failed encode into an error naming the culprit: for a char
    /// tokenizer that is the first char missing from the vocabulary.
    fn encode_error(&self, texts: &[&str], err: tokenizers::Error) -> DataError {
        if self.kind == TokenizerKind::Char {
            let mut buf = [0u8; 4];
            if let Some(ch) = texts
                .iter()
                .flat_map(|t| t.chars())
                .find(|c| self.inner.token_to_id(c.encode_utf8(&mut buf)).is_none())
            {
                return DataError::UnknownChar { ch };
            }
        }
        hf_error("encoding", err)
    }

    /// The text of `ids`; `<|endoftext|>` is kept so document boundaries stay
    /// visible in samples. Unknown ids are an error, not silently dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, DataError> {
        if let Some(&id) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            return Err(DataError::UnknownId {
                id,
                vocab_size: self.vocab_size(),
            });
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| hf_error("decoding", e))
    }

    /// Number of ids, `<|endoftext|>` included: the model's vocab size.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of `<|endoftext|>`.
    pub fn eot_id(&self) -> u32 {
        self.eot_id
    }

    /// Id of a token string (for a char tokenizer, a one-char string).
    pub fn token_to_id(&self, tok: &str) -> Option<u32> {
        self.inner.token_to_id(tok)
    }

    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stories::generate_corpus;
    use std::time::Instant;

    const SHAKESPEARE: &str = "/work/shared/data/tinyshakespeare.txt";

    fn shakespeare() -> Option<String> {
        match fs::read_to_string(SHAKESPEARE) {
            Ok(t) => Some(t),
            Err(_) => {
                println!("note: {SHAKESPEARE} is absent; skipping this test");
                None
            }
        }
    }

    fn tricky_docs() -> Vec<String> {
        vec![
            "Hello, world!\n\tTabs\tand  double  spaces.\n\n".to_string(),
            "Ünïcödé: naïve café, 日本語, emoji 🦀.\r\nEnd".to_string(),
            " leading space and trailing \n".to_string(),
        ]
    }

    #[test]
    fn char_vocab_of_tinyshakespeare_is_nanogpts_65_plus_eot() {
        let Some(text) = shakespeare() else { return };
        let tok = Tokenizer::train_char(std::slice::from_ref(&text)).unwrap();
        assert_eq!(tok.vocab_size(), 66);
        assert_eq!(tok.eot_id(), 0);
        assert_eq!(tok.kind(), TokenizerKind::Char);
        // nanoGPT: stoi = { ch:i for i,ch in enumerate(sorted(set(data))) }.
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort();
        chars.dedup();
        for (i, c) in chars.iter().enumerate() {
            assert_eq!(tok.token_to_id(&c.to_string()), Some(i as u32 + 1));
        }

        let start = Instant::now();
        let ids = tok.encode(&text).unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!("char-encode of tinyshakespeare: {secs:.3} s");
        assert_eq!(ids.len(), text.chars().count());
        let expected: Vec<u32> = text
            .chars()
            .map(|c| chars.binary_search(&c).unwrap() as u32 + 1)
            .collect();
        assert_eq!(ids, expected);
        assert_eq!(tok.decode(&ids).unwrap(), text);
        // One document: no EOT, exactly nanoGPT's stream.
        assert_eq!(tok.encode_docs(&[text]).unwrap(), expected);
    }

    #[test]
    fn char_round_trip_is_exact() {
        let docs = tricky_docs();
        let tok = Tokenizer::train_char(&docs).unwrap();
        for d in &docs {
            let ids = tok.encode(d).unwrap();
            assert_eq!(ids.len(), d.chars().count());
            assert_eq!(&tok.decode(&ids).unwrap(), d);
        }
    }

    #[test]
    fn char_unknown_char_is_an_error_naming_it() {
        let tok = Tokenizer::train_char(&["abc\n".to_string()]).unwrap();
        let err = tok.encode("abxc").unwrap_err();
        assert!(matches!(err, DataError::UnknownChar { ch: 'x' }), "{err}");
        assert!(err.to_string().contains("'x'"), "{err}");
        let err = tok.encode_docs(&["ab".into(), "cé".into()]).unwrap_err();
        assert!(matches!(err, DataError::UnknownChar { ch: 'é' }), "{err}");
    }

    #[test]
    fn char_training_needs_text() {
        assert!(matches!(
            Tokenizer::train_char(&[String::new()]),
            Err(DataError::EmptyTrainingText)
        ));
    }

    #[test]
    fn encode_docs_separates_with_eot() {
        let tok = Tokenizer::train_char(&["ab".to_string()]).unwrap();
        let ids = tok
            .encode_docs(&["ab".into(), "".into(), "ba".into()])
            .unwrap();
        let (a, b, eot) = (1, 2, 0);
        assert_eq!(ids, vec![a, b, eot, eot, b, a]);
        assert_eq!(tok.decode(&ids).unwrap(), "ab<|endoftext|><|endoftext|>ba");
    }

    #[test]
    fn decode_rejects_unknown_ids() {
        let tok = Tokenizer::train_char(&["ab".to_string()]).unwrap();
        assert!(matches!(
            tok.decode(&[1, 99]),
            Err(DataError::UnknownId { id: 99, .. })
        ));
    }

    #[test]
    fn chunked_encode_matches_whole_text_encode() {
        let stories = generate_corpus(3, 300).join("\n");
        let docs = vec![stories.clone()];
        for tok in [
            Tokenizer::train_char(&docs).unwrap(),
            Tokenizer::train_bpe(&docs, 400).unwrap(),
        ] {
            let whole = tok.inner.encode(stories.as_str(), false).unwrap();
            assert_eq!(tok.encode(&stories).unwrap(), whole.get_ids());
        }
    }

    #[test]
    fn bpe_round_trip_and_save_load() {
        let docs = generate_corpus(7, 3500);
        let bytes: usize = docs.iter().map(|d| d.len()).sum();
        let start = Instant::now();
        let tok = Tokenizer::train_bpe(&docs, 512).unwrap();
        println!(
            "BPE training, vocab 512 on {:.2} MB of stories: {:.3} s",
            bytes as f64 / 1e6,
            start.elapsed().as_secs_f64()
        );
        assert_eq!(tok.vocab_size(), 512);
        // Training is deterministic: the same corpus gives the same file.
        let small = &docs[..300];
        assert_eq!(
            Tokenizer::train_bpe(small, 300).unwrap().to_json().unwrap(),
            Tokenizer::train_bpe(small, 300).unwrap().to_json().unwrap()
        );
        assert_eq!(tok.eot_id(), 0);
        assert_eq!(tok.kind(), TokenizerKind::Bpe);

        let mut samples = docs[..20].to_vec();
        samples.extend(tricky_docs());
        for s in &samples {
            let ids = tok.encode(s).unwrap();
            assert_eq!(&tok.decode(&ids).unwrap(), s);
        }
        // Merges were learnt: stories compress well below one token per byte.
        let ids = tok.encode(&docs[0]).unwrap();
        assert!(ids.len() * 2 < docs[0].len(), "{} ids", ids.len());

        let dir = std::env::temp_dir().join(format!("kiln-data-bpe-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        tok.save(&path).unwrap();
        let loaded = Tokenizer::from_file(&path).unwrap();
        assert_eq!(loaded.kind(), TokenizerKind::Bpe);
        for s in &samples {
            assert_eq!(loaded.encode(s).unwrap(), tok.encode(s).unwrap());
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn char_save_load_gives_identical_ids() {
        let docs = tricky_docs();
        let tok = Tokenizer::train_char(&docs).unwrap();
        let dir = std::env::temp_dir().join(format!("kiln-data-char-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        tok.save(&path).unwrap();
        // Atomic save leaves no temp file behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        let loaded = Tokenizer::from_file(&path).unwrap();
        assert_eq!(loaded.kind(), TokenizerKind::Char);
        assert_eq!(loaded.vocab_size(), tok.vocab_size());
        for d in &docs {
            assert_eq!(loaded.encode(d).unwrap(), tok.encode(d).unwrap());
        }
        let again = Tokenizer::from_json(&tok.to_json().unwrap()).unwrap();
        assert_eq!(
            again.encode_docs(&docs).unwrap(),
            tok.encode_docs(&docs).unwrap()
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_or_broken_tokenizer_file_names_the_path() {
        let err = Tokenizer::from_file(Path::new("/nonexistent/tokenizer.json")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/tokenizer.json"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        fs::write(&path, "{not json").unwrap();
        let msg = Tokenizer::from_file(&path).unwrap_err().to_string();
        assert!(
            msg.contains("tokenizer.json: parsing") && msg.contains("tokenizer.path"),
            "{msg}"
        );
    }

    #[test]
    fn bpe_vocab_too_small_is_an_error() {
        assert!(matches!(
            Tokenizer::train_bpe(&["abc".to_string()], 100),
            Err(DataError::VocabTooSmall { .. })
        ));
    }

    #[test]
    fn kind_serialises_lowercase() {
        assert_eq!(
            serde_json::to_string(&TokenizerKind::Bpe).unwrap(),
            "\"bpe\""
        );
        let k: TokenizerKind = serde_json::from_str("\"char\"").unwrap();
        assert_eq!(k, TokenizerKind::Char);
    }
}
