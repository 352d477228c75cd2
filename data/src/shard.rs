//! Token shards: flat little-endian token files, memory-mapped for reading.
//!
//! Layout (llm.c style: a fixed header with a magic and a version first):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `KILNTOK\0` |
//! | 8..12 | version (u32) |
//! | 12..16 | bytes per token: 2 (u16) or 4 (u32) |
//! | 16..24 | token count (u64) |
//! | 24..32 | document count (u64) |
//! | 32..36 | vocabulary size (u32) |
//! | 36..40 | CRC-32C of everything after the header |
//! | 40..44 | CRC-32C of bytes 0..40 |
//! | 44..64 | zero |
//! | 64.. | tokens, then one u64 per document: the token index where it starts |
//!
//! Each document is followed by `<|endoftext|>`, so a shard is a valid token
//! stream on its own and shards concatenate into one. A shard is written to a
//! temp file, fsynced and renamed: a prepare killed half-way never leaves a
//! file under a shard's name, and a torn or edited file fails its checksum.

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::DataError;

pub const SHARD_MAGIC: &[u8; 8] = b"KILNTOK\0";
pub const SHARD_VERSION: u32 = 1;
pub const HEADER_BYTES: usize = 64;

/// The on-disk token type, chosen from the vocabulary size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDtype {
    U16,
    U32,
}

impl TokenDtype {
    /// u16 while every id fits (vocab <= 65536), else u32.
    pub fn for_vocab(vocab_size: usize) -> TokenDtype {
        if vocab_size <= 1 << 16 {
            TokenDtype::U16
        } else {
            TokenDtype::U32
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            TokenDtype::U16 => 2,
            TokenDtype::U32 => 4,
        }
    }

    fn max_id(self) -> u64 {
        match self {
            TokenDtype::U16 => u16::MAX as u64,
            TokenDtype::U32 => u32::MAX as u64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TokenDtype::U16 => "u16",
            TokenDtype::U32 => "u32",
        }
    }
}

/// What a finished shard holds (recorded in the manifest).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardInfo {
    /// File name relative to the dataset directory.
    pub file: String,
    pub tokens: u64,
    pub docs: u64,
    pub crc32c: u32,
}

/// Writes one shard, streaming tokens to a temp file.
pub struct ShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    dtype: TokenDtype,
    vocab_size: u32,
    n_tokens: u64,
    doc_starts: Vec<u64>,
    crc: u32,
    buf: Vec<u8>,
}

fn write_err(path: &Path, source: std::io::Error) -> DataError {
    DataError::Write {
        path: path.to_path_buf(),
        source,
    }
}

impl ShardWriter {
    pub fn create(path: &Path, vocab_size: usize) -> Result<ShardWriter, DataError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&tmp).map_err(|e| write_err(&tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // A zeroed header until `finish`: a torn file has no magic.
        out.write_all(&[0u8; HEADER_BYTES])
            .map_err(|e| write_err(&tmp, e))?;
        Ok(ShardWriter {
            path: path.to_path_buf(),
            tmp,
            out,
            dtype: TokenDtype::for_vocab(vocab_size),
            vocab_size: vocab_size.min(u32::MAX as usize) as u32,
            n_tokens: 0,
            doc_starts: Vec::new(),
            crc: 0,
            buf: Vec::new(),
        })
    }

    pub fn n_tokens(&self) -> u64 {
        self.n_tokens
    }

    /// Appends one document followed by `eot`.
    pub fn push_doc(&mut self, ids: &[u32], eot: u32) -> Result<(), DataError> {
        let max = self.dtype.max_id();
        if let Some(i) = ids.iter().position(|&id| id as u64 > max) {
            return Err(DataError::TokenOutOfRange {
                path: self.path.clone(),
                id: ids[i] as u64,
                offset: self.n_tokens + i as u64,
                limit: format!("the shard's {} tokens (max {max})", self.dtype.name()),
            });
        }
        self.doc_starts.push(self.n_tokens);
        self.buf.clear();
        for &id in ids.iter().chain(std::iter::once(&eot)) {
            match self.dtype {
                TokenDtype::U16 => self.buf.extend_from_slice(&(id as u16).to_le_bytes()),
                TokenDtype::U32 => self.buf.extend_from_slice(&id.to_le_bytes()),
            }
        }
        self.crc = crc32c::crc32c_append(self.crc, &self.buf);
        self.out
            .write_all(&self.buf)
            .map_err(|e| write_err(&self.tmp, e))?;
        self.n_tokens += ids.len() as u64 + 1;
        Ok(())
    }

    /// Writes the document index and the header, fsyncs and renames into place.
    pub fn finish(mut self) -> Result<ShardInfo, DataError> {
        let result = self.finish_inner();
        if result.is_err() {
            // Best effort: the temp file is ours and useless now.
            let _ = fs::remove_file(&self.tmp);
        }
        result
    }

    fn finish_inner(&mut self) -> Result<ShardInfo, DataError> {
        let tmp = self.tmp.clone();
        let mut index = Vec::with_capacity(self.doc_starts.len() * 8);
        for s in &self.doc_starts {
            index.extend_from_slice(&s.to_le_bytes());
        }
        self.crc = crc32c::crc32c_append(self.crc, &index);
        self.out.write_all(&index).map_err(|e| write_err(&tmp, e))?;
        let header = encode_header(
            self.dtype,
            self.n_tokens,
            self.doc_starts.len() as u64,
            self.vocab_size,
            self.crc,
        );
        self.out.flush().map_err(|e| write_err(&tmp, e))?;
        let file = self.out.get_mut();
        file.seek(SeekFrom::Start(0))
            .map_err(|e| write_err(&tmp, e))?;
        file.write_all(&header).map_err(|e| write_err(&tmp, e))?;
        file.sync_all().map_err(|e| write_err(&tmp, e))?;
        fs::rename(&tmp, &self.path).map_err(|e| write_err(&self.path, e))?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(ShardInfo {
            file: self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            tokens: self.n_tokens,
            docs: self.doc_starts.len() as u64,
            crc32c: self.crc,
        })
    }
}

fn encode_header(
    dtype: TokenDtype,
    n_tokens: u64,
    n_docs: u64,
    vocab_size: u32,
    crc: u32,
) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0..8].copy_from_slice(SHARD_MAGIC);
    h[8..12].copy_from_slice(&SHARD_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(dtype.bytes() as u32).to_le_bytes());
    h[16..24].copy_from_slice(&n_tokens.to_le_bytes());
    h[24..32].copy_from_slice(&n_docs.to_le_bytes());
    h[32..36].copy_from_slice(&vocab_size.to_le_bytes());
    h[36..40].copy_from_slice(&crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&h[0..40]);
    h[40..44].copy_from_slice(&hcrc.to_le_bytes());
    h
}

/// A memory-mapped, verified shard.
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    dtype: TokenDtype,
    n_tokens: u64,
    n_docs: u64,
    vocab_size: u32,
    crc: u32,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("path", &self.path)
            .field("dtype", &self.dtype)
            .field("n_tokens", &self.n_tokens)
            .field("n_docs", &self.n_docs)
            .finish()
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Shard {
    /// Maps `path` and checks its header, size, checksum and that every
    /// token id is below the vocabulary size recorded in the header.
    pub fn open(path: &Path) -> Result<Shard, DataError> {
        Self::open_checked(path, true)
    }

    /// Header and size checks only, without reading the data: for deciding
    /// whether a prepare is up to date, where a full pass would cost as much
    /// I/O as the shards' size.
    pub fn open_header_only(path: &Path) -> Result<Shard, DataError> {
        Self::open_checked(path, false)
    }

    fn open_checked(path: &Path, verify_data: bool) -> Result<Shard, DataError> {
        let bad = |reason: String| DataError::BadShard {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|e| crate::sources::io_error(path, e))?;
        // SAFETY: the map is read-only and shards are only ever replaced by
        // rename, never modified in place, so the mapped bytes do not change
        // under us (a file truncated by another process would be a SIGBUS,
        // which the checksum pass below would hit first at open time).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| crate::sources::io_error(path, e))?;
        if map.len() < HEADER_BYTES {
            return Err(bad(format!(
                "{} bytes is shorter than the {HEADER_BYTES}-byte header",
                map.len()
            )));
        }
        if &map[0..8] != SHARD_MAGIC {
            return Err(bad("bad magic: not a kiln token shard".into()));
        }
        if crc32c::crc32c(&map[0..40]) != u32_at(&map, 40) {
            return Err(bad("header checksum mismatch (corrupt header)".into()));
        }
        let version = u32_at(&map, 8);
        if version != SHARD_VERSION {
            return Err(bad(format!(
                "version {version} is not the supported version {SHARD_VERSION}"
            )));
        }
        let dtype = match u32_at(&map, 12) {
            2 => TokenDtype::U16,
            4 => TokenDtype::U32,
            other => return Err(bad(format!("{other} bytes per token (must be 2 or 4)"))),
        };
        let n_tokens = u64_at(&map, 16);
        let n_docs = u64_at(&map, 24);
        let vocab_size = u32_at(&map, 32);
        let crc = u32_at(&map, 36);
        let expect = (n_tokens as u128) * dtype.bytes() as u128 + n_docs as u128 * 8;
        let have = (map.len() - HEADER_BYTES) as u128;
        if expect != have {
            return Err(bad(format!(
                "the header promises {n_tokens} tokens and {n_docs} documents ({expect} bytes) \
                 but the file holds {have} bytes (truncated?)"
            )));
        }
        if verify_data && crc32c::crc32c(&map[HEADER_BYTES..]) != crc {
            return Err(bad(
                "data checksum mismatch (corrupt or modified file)".into()
            ));
        }
        let shard = Shard {
            path: path.to_path_buf(),
            map,
            dtype,
            n_tokens,
            n_docs,
            vocab_size,
            crc,
        };
        if verify_data {
            shard.check_ids()?;
        }
        Ok(shard)
    }

    fn check_ids(&self) -> Result<(), DataError> {
        let limit = self.vocab_size as u64;
        let bytes = self.token_bytes();
        let bad_at = match self.dtype {
            TokenDtype::U16 => bytes
                .chunks_exact(2)
                .position(|c| u16::from_le_bytes([c[0], c[1]]) as u64 >= limit),
            TokenDtype::U32 => bytes
                .chunks_exact(4)
                .position(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64 >= limit),
        };
        match bad_at {
            None => Ok(()),
            Some(i) => Err(DataError::TokenOutOfRange {
                path: self.path.clone(),
                id: self.token(i as u64) as u64,
                offset: i as u64,
                limit: format!("the vocabulary of {limit} recorded in the shard"),
            }),
        }
    }

    fn token_bytes(&self) -> &[u8] {
        &self.map[HEADER_BYTES..HEADER_BYTES + self.n_tokens as usize * self.dtype.bytes()]
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn len(&self) -> u64 {
        self.n_tokens
    }
    pub fn is_empty(&self) -> bool {
        self.n_tokens == 0
    }
    pub fn n_docs(&self) -> u64 {
        self.n_docs
    }
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }
    pub fn dtype(&self) -> TokenDtype {
        self.dtype
    }
    pub fn crc32c(&self) -> u32 {
        self.crc
    }

    /// Token `i` (`i < len()`).
    pub fn token(&self, i: u64) -> u32 {
        let b = self.token_bytes();
        let i = i as usize;
        match self.dtype {
            TokenDtype::U16 => u16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as u32,
            TokenDtype::U32 => u32_at(b, 4 * i),
        }
    }

    /// Appends tokens `start..start + len` to `out`.
    pub fn extend_into(&self, start: u64, len: u64, out: &mut Vec<u32>) {
        let b = self.token_bytes();
        let (s, e) = (start as usize, (start + len) as usize);
        match self.dtype {
            TokenDtype::U16 => out.extend(
                b[2 * s..2 * e]
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32),
            ),
            TokenDtype::U32 => out.extend(
                b[4 * s..4 * e]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
        }
    }

    /// Token index where document `d` starts.
    pub fn doc_start(&self, d: u64) -> u64 {
        let at = HEADER_BYTES + self.n_tokens as usize * self.dtype.bytes() + d as usize * 8;
        u64_at(&self.map, at)
    }
}

/// Several shards read as one token stream (a domain's train or val part).
#[derive(Debug, Default)]
pub struct ShardStream {
    shards: Vec<Shard>,
    /// `ends[i]`: tokens in shards `0..=i`.
    ends: Vec<u64>,
}

impl ShardStream {
    pub fn new(shards: Vec<Shard>) -> ShardStream {
        let mut total = 0;
        let ends = shards
            .iter()
            .map(|s| {
                total += s.len();
                total
            })
            .collect();
        ShardStream { shards, ends }
    }

    pub fn len(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Appends tokens `start..start + len` (possibly spanning shards) to `out`.
    pub fn extend_into(&self, mut start: u64, mut len: u64, out: &mut Vec<u32>) {
        let mut i = self.ends.partition_point(|&e| e <= start);
        while len > 0 && i < self.shards.len() {
            let shard_start = if i == 0 { 0 } else { self.ends[i - 1] };
            let local = start - shard_start;
            let take = len.min(self.shards[i].len() - local);
            self.shards[i].extend_into(local, take, out);
            start += take;
            len -= take;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_shard(path: &Path, vocab: usize, docs: &[&[u32]]) -> ShardInfo {
        let mut w = ShardWriter::create(path, vocab).unwrap();
        for d in docs {
            w.push_doc(d, 0).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn round_trip_u16_and_u32() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        let info = write_shard(&p, 300, &[&[5, 6, 7], &[], &[299]]);
        assert_eq!((info.tokens, info.docs), (7, 3));
        let s = Shard::open(&p).unwrap();
        assert_eq!(s.dtype(), TokenDtype::U16);
        let mut v = Vec::new();
        s.extend_into(0, 7, &mut v);
        assert_eq!(v, [5, 6, 7, 0, 0, 299, 0]);
        assert_eq!((s.doc_start(0), s.doc_start(1), s.doc_start(2)), (0, 4, 5));
        assert_eq!(s.crc32c(), info.crc32c);

        let q = dir.path().join("b.bin");
        write_shard(&q, 100_000, &[&[70_000, 1]]);
        let s = Shard::open(&q).unwrap();
        assert_eq!(s.dtype(), TokenDtype::U32);
        assert_eq!(s.token(0), 70_000);
        assert_eq!(std::fs::metadata(&q).unwrap().len(), 64 + 3 * 4 + 8);

        let stream = ShardStream::new(vec![Shard::open(&p).unwrap(), s]);
        let mut v = Vec::new();
        stream.extend_into(5, 4, &mut v);
        assert_eq!(v, [299, 0, 70_000, 1]);
        assert_eq!(stream.len(), 10);
    }

    #[test]
    fn token_beyond_dtype_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        let mut w = ShardWriter::create(&p, 1000).unwrap();
        w.push_doc(&[1, 2], 0).unwrap();
        let err = w.push_doc(&[3, 70_000], 0).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TokenOutOfRange {
                    id: 70_000,
                    offset: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("u16"), "{err}");
    }

    #[test]
    fn bad_header_size_and_checksum_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_shard(&p, 300, &[&[1, 2, 3], &[4]]);
        let good = std::fs::read(&p).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"nonsense".to_vec(), "shorter than"),
            (
                {
                    let mut b = good.clone();
                    b[0] = b'X';
                    b
                },
                "bad magic",
            ),
            (
                {
                    let mut b = good.clone();
                    b[16] ^= 1;
                    b
                },
                "header checksum",
            ),
            (
                {
                    let mut b = good.clone();
                    b[66] ^= 1;
                    b
                },
                "data checksum",
            ),
            (good[..good.len() - 3].to_vec(), "truncated"),
        ];
        for (bytes, expect) in cases {
            std::fs::write(&p, &bytes).unwrap();
            let err = Shard::open(&p).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(expect) && msg.contains("a.bin"),
                "{expect}: {msg}"
            );
        }
    }

    #[test]
    fn id_beyond_recorded_vocab_is_caught_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        // Claims a vocabulary of 10 but holds id 12.
        write_shard(&p, 10, &[&[1, 12]]);
        let err = Shard::open(&p).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TokenOutOfRange {
                    id: 12,
                    offset: 1,
                    ..
                }
            ),
            "{err}"
        );
    }
}
