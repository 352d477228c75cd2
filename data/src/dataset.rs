//! A prepared dataset: `manifest.json`, `tokenizer.json` and per-domain
//! token shards, as written by `kiln data prepare`.
//!
//! ```text
//! OUT/manifest.json          what is here, per domain; written last
//! OUT/tokenizer.json         the tokenizer the shards were made with
//! OUT/<domain>/train-00000.bin
//! OUT/<domain>/val-00000.bin
//! ```
//!
//! The manifest records the SHA-256 of the tokenizer: token ids only mean
//! something with the tokenizer that made them, so a run whose tokenizer
//! differs is refused instead of silently training on the wrong ids.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::DataError;
use crate::shard::{Shard, ShardInfo, ShardStream};
use crate::tokenizer::Tokenizer;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const DATASET_TOKENIZER_FILE: &str = "tokenizer.json";
pub const MANIFEST_VERSION: u32 = 1;

/// SHA-256 (hex) of the tokenizer's `tokenizer.json` form.
pub fn tokenizer_hash(tokenizer: &Tokenizer) -> Result<String, DataError> {
    let json = tokenizer.to_json()?;
    Ok(hex(&Sha256::digest(json.as_bytes())))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Counts of one domain's split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitManifest {
    pub tokens: u64,
    pub docs: u64,
    pub shards: Vec<ShardInfo>,
}

/// What reading a domain's sources found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStats {
    pub files: u64,
    /// Documents read (before dropping empty ones).
    pub docs_read: u64,
    /// UTF-8 bytes of the documents kept.
    pub text_bytes: u64,
    /// Empty or whitespace-only documents, skipped.
    pub empty_docs: u64,
    /// Documents in which invalid UTF-8 was replaced with U+FFFD.
    pub invalid_utf8_docs: u64,
    /// Files skipped with --skip-bad, with the reason.
    pub bad_files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainManifest {
    pub name: String,
    pub train: SplitManifest,
    pub val: SplitManifest,
    pub stats: SourceStats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub tokenizer_sha256: String,
    pub vocab_size: usize,
    pub eot_id: u32,
    pub dtype: String,
    pub val_fraction: f64,
    /// Hash of the spec, the tokenizer and every input file's size and mtime:
    /// equal on a re-run over the same inputs, which is then skipped.
    pub fingerprint: String,
    pub domains: Vec<DomainManifest>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest, DataError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DataError::BadManifest {
                    path: path.clone(),
                    reason: "not found: this is not a prepared dataset (or its prepare was \
                             interrupted); run `kiln data prepare DATA.toml`"
                        .into(),
                }
            } else {
                crate::sources::io_error(&path, e)
            }
        })?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| DataError::BadManifest {
            path: path.clone(),
            reason: format!("not a valid manifest ({e}); re-run `kiln data prepare`"),
        })?;
        if m.version != MANIFEST_VERSION {
            return Err(DataError::BadManifest {
                path,
                reason: format!(
                    "version {} is not the supported version {MANIFEST_VERSION}; re-run \
                     `kiln data prepare`",
                    m.version
                ),
            });
        }
        Ok(m)
    }
}

/// One domain's memory-mapped train and validation streams.
#[derive(Debug)]
pub struct DomainData {
    pub name: String,
    pub train: ShardStream,
    pub val: ShardStream,
}

/// A prepared dataset, opened and verified.
#[derive(Debug)]
pub struct Dataset {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub domains: Vec<DomainData>,
}

impl Dataset {
    /// Opens every shard (checksums verified) after checking the manifest's
    /// tokenizer against `tokenizer_sha256` when one is given.
    pub fn open(dir: &Path, tokenizer_sha256: Option<&str>) -> Result<Dataset, DataError> {
        Self::open_with(dir, tokenizer_sha256, true)
    }

    /// [`Dataset::open`] checking shard headers and sizes but not the data.
    pub fn open_header_only(
        dir: &Path,
        tokenizer_sha256: Option<&str>,
    ) -> Result<Dataset, DataError> {
        Self::open_with(dir, tokenizer_sha256, false)
    }

    fn open_with(
        dir: &Path,
        tokenizer_sha256: Option<&str>,
        verify_data: bool,
    ) -> Result<Dataset, DataError> {
        let manifest = Manifest::read(dir)?;
        if let Some(found) = tokenizer_sha256 {
            if found != manifest.tokenizer_sha256 {
                return Err(DataError::TokenizerMismatch {
                    dataset: dir.to_path_buf(),
                    expected: short(&manifest.tokenizer_sha256),
                    found: short(found),
                });
            }
        }
        let mut domains = Vec::new();
        for d in &manifest.domains {
            let open_split = |split: &SplitManifest| -> Result<ShardStream, DataError> {
                let mut shards = Vec::new();
                for info in &split.shards {
                    let path = dir.join(&d.name).join(&info.file);
                    let shard = if verify_data {
                        Shard::open(&path)?
                    } else {
                        Shard::open_header_only(&path)?
                    };
                    if shard.len() != info.tokens || shard.crc32c() != info.crc32c {
                        return Err(DataError::BadShard {
                            path,
                            reason: "does not match the manifest (left from another prepare?)"
                                .into(),
                        });
                    }
                    shards.push(shard);
                }
                Ok(ShardStream::new(shards))
            };
            domains.push(DomainData {
                name: d.name.clone(),
                train: open_split(&d.train)?,
                val: open_split(&d.val)?,
            });
        }
        Ok(Dataset {
            dir: dir.to_path_buf(),
            manifest,
            domains,
        })
    }

    /// The tokenizer stored beside the shards.
    pub fn tokenizer(dir: &Path) -> Result<Tokenizer, DataError> {
        Tokenizer::from_file(&dir.join(DATASET_TOKENIZER_FILE))
    }
}

fn short(hash: &str) -> String {
    format!("sha256:{}", &hash[..hash.len().min(12)])
}
