//! Prepared instruction data: encoded examples (ids and per-token train
//! masks) saved once, so a run over a large instruction set skips parsing,
//! rendering and tokenizing. A directory with `train.bin`, `val.bin` and a
//! `manifest.json` naming the tokenizer (SHA-256) and each file's SHA-256;
//! every file is written atomically, the manifest last.
//!
//! `*.bin`: per example, `u32` length `n` (LE), `n` `u32` ids, `n` mask bytes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::encode::Encoded;
use super::error::InstructError;
use crate::dataset::hex;
use crate::error::DataError;
use crate::prepare::write_atomic;

pub const MANIFEST: &str = "manifest.json";
const FORMAT: &str = "kiln-instruct";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedManifest {
    pub format: String,
    pub version: u32,
    pub tokenizer_sha256: String,
    /// The `seq_len` the examples were cut or dropped for.
    pub seq_len: usize,
    pub train_examples: usize,
    pub val_examples: usize,
    pub train_sha256: String,
    pub val_sha256: String,
}

fn to_bytes(examples: &[Encoded]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in examples {
        out.extend_from_slice(&(e.ids.len() as u32).to_le_bytes());
        e.ids
            .iter()
            .for_each(|id| out.extend_from_slice(&id.to_le_bytes()));
        out.extend(e.train.iter().map(|&t| t as u8));
    }
    out
}

fn bad(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Instruct(InstructError::Prepared {
        path: path.to_path_buf(),
        reason: reason.into(),
    })
}

fn from_bytes(path: &Path, b: &[u8]) -> Result<Vec<Encoded>, DataError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let u32_at = |at: usize| -> Option<u32> {
        b.get(at..at + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    while at < b.len() {
        let truncated = || {
            bad(
                path,
                format!("truncated at byte offset {at}: prepare it again"),
            )
        };
        let n = u32_at(at).ok_or_else(truncated)? as usize;
        let (ids_at, mask_at) = (at + 4, at + 4 + 4 * n);
        let end = mask_at + n;
        if end > b.len() {
            return Err(truncated());
        }
        let ids = (0..n).filter_map(|i| u32_at(ids_at + 4 * i)).collect();
        let train = b[mask_at..end].iter().map(|&m| m != 0).collect();
        out.push(Encoded { ids, train });
        at = end;
    }
    Ok(out)
}

/// Writes `train` and `val` into `dir` (created if needed).
pub fn save_prepared(
    dir: &Path,
    train: &[Encoded],
    val: &[Encoded],
    tokenizer_sha256: &str,
    seq_len: usize,
) -> Result<PathBuf, DataError> {
    std::fs::create_dir_all(dir).map_err(|e| bad(dir, format!("cannot create: {e}")))?;
    let (tb, vb) = (to_bytes(train), to_bytes(val));
    write_atomic(&dir.join("train.bin"), &tb)?;
    write_atomic(&dir.join("val.bin"), &vb)?;
    let manifest = PreparedManifest {
        format: FORMAT.into(),
        version: 1,
        tokenizer_sha256: tokenizer_sha256.into(),
        seq_len,
        train_examples: train.len(),
        val_examples: val.len(),
        train_sha256: hex(&Sha256::digest(&tb)),
        val_sha256: hex(&Sha256::digest(&vb)),
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| bad(dir, format!("cannot encode the manifest: {e}")))?;
    let path = dir.join(MANIFEST);
    write_atomic(&path, &json)?;
    Ok(path)
}

/// True when `dir` holds prepared instruction data.
pub fn is_prepared(dir: &Path) -> bool {
    dir.join(MANIFEST).is_file() && dir.join("train.bin").is_file()
}

/// `(train, val, manifest)` of a prepared directory, each file checked
/// against the manifest's hash.
pub fn load_prepared(
    dir: &Path,
) -> Result<(Vec<Encoded>, Vec<Encoded>, PreparedManifest), DataError> {
    let mpath = dir.join(MANIFEST);
    let text = std::fs::read(&mpath).map_err(|e| bad(&mpath, format!("cannot read: {e}")))?;
    let m: PreparedManifest = serde_json::from_slice(&text)
        .map_err(|e| bad(&mpath, format!("not a prepared-instruction manifest: {e}")))?;
    if m.format != FORMAT {
        return Err(bad(
            &mpath,
            format!("format {:?} is not {FORMAT:?}", m.format),
        ));
    }
    let read = |name: &str, sha: &str, count: usize| -> Result<Vec<Encoded>, DataError> {
        let p = dir.join(name);
        let b = std::fs::read(&p).map_err(|e| bad(&p, format!("cannot read: {e}")))?;
        if hex(&Sha256::digest(&b)) != sha {
            return Err(bad(&p, "does not match its SHA-256 in manifest.json: the file is corrupt; prepare it again"));
        }
        let ex = from_bytes(&p, &b)?;
        if ex.len() != count {
            return Err(bad(
                &p,
                format!("holds {} examples, the manifest says {count}", ex.len()),
            ));
        }
        Ok(ex)
    };
    let train = read("train.bin", &m.train_sha256, m.train_examples)?;
    let val = read("val.bin", &m.val_sha256, m.val_examples)?;
    Ok((train, val, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_examples_round_trip_and_corruption_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let ex = |ids: Vec<u32>, t: Vec<bool>| Encoded { ids, train: t };
        let train = vec![
            ex(vec![1, 2, 3], vec![false, true, true]),
            ex(vec![7], vec![true]),
        ];
        let val = vec![ex(vec![4, 5], vec![false, true])];
        save_prepared(dir.path(), &train, &val, "abc", 16).unwrap();
        let (t, v, m) = load_prepared(dir.path()).unwrap();
        assert_eq!((t, v, m.seq_len), (train, val, 16));
        let p = dir.path().join("train.bin");
        let mut b = std::fs::read(&p).unwrap();
        b[5] ^= 1;
        std::fs::write(&p, b).unwrap();
        let err = load_prepared(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("SHA-256") && err.contains("train.bin"),
            "{err}"
        );
    }
}
