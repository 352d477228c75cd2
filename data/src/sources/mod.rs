//! Streaming corpus readers: plain text, JSONL (optionally gzip/zstd) and
//! Parquet, from files, directories and globs.
//!
//! A [`SourceSpec`] names a domain and where its documents live. Its files are
//! resolved up front (sorted, so every machine sees the same order) and then
//! read one document at a time: memory holds one document (or one Parquet
//! record batch), never the corpus. Invalid UTF-8 is replaced with U+FFFD and
//! counted, not fatal; a file that cannot be decoded (corrupt gzip, torn
//! Parquet) is an error naming the file and the line/row where it broke.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::DataError;

mod jsonl_docs;
mod parquet_docs;

use jsonl_docs::JsonlDocs;
use parquet_docs::ParquetDocs;

/// How the documents of a file are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceFormat {
    /// The whole file is one document.
    Text,
    /// Documents are blocks of lines separated by blank lines.
    TextBlocks,
    /// One JSON object per line (`{id, text, metadata}`, dolma/datatrove).
    Jsonl,
    /// A Parquet table with a string column of documents (FineWeb).
    Parquet,
}

/// Compression wrapped around a file, from its last extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// One domain's raw documents: a `[[source]]` of a data spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Name used for mixture weights and per-domain evaluation.
    pub domain: String,
    /// Files, directories (read recursively) or glob patterns.
    pub paths: Vec<String>,
    /// Absent: from each file's extension (`.txt` = one document per file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<SourceFormat>,
    /// JSONL field / Parquet column holding the text.
    #[serde(default = "default_text_field")]
    pub text_field: String,
    /// Optional JSONL field / Parquet column with a document id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_field: Option<String>,
    /// Optional JSONL field kept as the document's metadata (for curation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_field: Option<String>,
}

fn default_text_field() -> String {
    "text".into()
}

impl SourceSpec {
    /// A source over `paths` with the defaults (formats from extensions).
    pub fn new(domain: &str, paths: &[&str]) -> SourceSpec {
        SourceSpec {
            domain: domain.to_string(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            format: None,
            text_field: default_text_field(),
            id_field: None,
            metadata_field: None,
        }
    }
}

/// One document as read; `id` and `metadata` are kept for later curation
/// (dedup, quality filters) and for error messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub text: String,
    pub id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    /// Invalid UTF-8 sequences replaced with U+FFFD while reading.
    pub replaced_utf8: bool,
}

impl Document {
    fn plain(text: String, replaced_utf8: bool) -> Document {
        Document {
            text,
            id: None,
            metadata: None,
            replaced_utf8,
        }
    }
}

/// A file to read, with what its name says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub format: SourceFormat,
    pub compression: Compression,
    /// Size on disk (compressed), for progress and fingerprints.
    pub size: u64,
    /// Seconds since the epoch of the last modification, for fingerprints.
    pub modified: u64,
}

/// `(format, compression)` implied by a file name, e.g. `a.jsonl.zst`.
pub fn detect_format(path: &Path) -> Option<(SourceFormat, Compression)> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let (stem, compression) = if let Some(s) = name.strip_suffix(".gz") {
        (s, Compression::Gzip)
    } else if let Some(s) = name
        .strip_suffix(".zst")
        .or_else(|| name.strip_suffix(".zstd"))
    {
        (s, Compression::Zstd)
    } else {
        (name.as_str(), Compression::None)
    };
    let ext = stem.rsplit_once('.')?.1;
    let format = match ext {
        "txt" | "text" | "md" => SourceFormat::Text,
        "jsonl" | "json" | "ndjson" => SourceFormat::Jsonl,
        "parquet" | "pq" if compression == Compression::None => SourceFormat::Parquet,
        _ => return None,
    };
    Some((format, compression))
}

fn compression_of(path: &Path) -> Compression {
    detect_format(path)
        .map(|(_, c)| c)
        .unwrap_or(Compression::None)
}

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> DataError {
    if source.kind() == std::io::ErrorKind::NotFound {
        DataError::NotFound {
            path: path.to_path_buf(),
        }
    } else {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The files of `spec`, sorted by path within each entry of `paths`.
///
/// Directories are read recursively (hidden files skipped); with no explicit
/// format only files with a known extension are taken. A pattern or
/// directory that matches nothing is an error: a typo should not silently
/// drop a domain.
pub fn resolve_files(spec: &SourceSpec) -> Result<Vec<SourceFile>, DataError> {
    let mut files = Vec::new();
    for entry in &spec.paths {
        let mut paths = Vec::new();
        if entry.contains(['*', '?', '[']) {
            let matches = glob::glob(entry).map_err(|e| DataError::BadSpec {
                field: format!("source \"{}\" paths", spec.domain),
                message: format!("\"{entry}\" is not a valid glob: {e}"),
            })?;
            for m in matches {
                let p = m.map_err(|e| {
                    let path = e.path().to_path_buf();
                    io_error(&path, e.into())
                })?;
                if p.is_dir() {
                    collect_dir(&p, spec.format, &mut paths)?;
                } else {
                    paths.push(p);
                }
            }
            paths.sort();
        } else {
            let p = PathBuf::from(entry);
            let meta = fs::metadata(&p).map_err(|e| io_error(&p, e))?;
            if meta.is_dir() {
                collect_dir(&p, spec.format, &mut paths)?;
            } else {
                paths.push(p);
            }
        }
        if paths.is_empty() {
            return Err(DataError::NoFiles {
                path: PathBuf::from(entry),
            });
        }
        for path in paths {
            let (format, compression) = match (spec.format, detect_format(&path)) {
                (Some(f), _) => (f, compression_of(&path)),
                (None, Some(fc)) => fc,
                (None, None) => return Err(DataError::UnknownFormat { path }),
            };
            let meta = fs::metadata(&path).map_err(|e| io_error(&path, e))?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0);
            files.push(SourceFile {
                path,
                format,
                compression,
                size: meta.len(),
                modified,
            });
        }
    }
    Ok(files)
}

/// Corpus files under `dir`, recursively, sorted by path.
fn collect_dir(
    dir: &Path,
    format: Option<SourceFormat>,
    out: &mut Vec<PathBuf>,
) -> Result<(), DataError> {
    let keep = |p: &Path| (format.is_some() || detect_format(p).is_some()).then(|| p.to_path_buf());
    crate::walk::files_under(dir, &keep, out).map_err(|(d, e)| io_error(&d, e))
}

/// Counts the (compressed) bytes read from a file, for progress bars.
struct CountingReader<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Documents of one file, one at a time.
pub type DocIter = Box<dyn Iterator<Item = Result<Document, DataError>> + Send>;

/// Opens `file` for streaming. `bytes_read` grows with the bytes taken from
/// disk (for a Parquet file: by row group, roughly).
pub fn open_file(
    file: &SourceFile,
    spec: &SourceSpec,
    bytes_read: Arc<AtomicU64>,
) -> Result<DocIter, DataError> {
    let path = file.path.clone();
    let raw = File::open(&path).map_err(|e| io_error(&path, e))?;
    if file.format == SourceFormat::Parquet {
        return ParquetDocs::open(raw, file, spec, bytes_read).map(|r| Box::new(r) as DocIter);
    }
    let counted = CountingReader {
        inner: raw,
        counter: bytes_read,
    };
    let reader: Box<dyn BufRead + Send> = match file.compression {
        Compression::None => Box::new(BufReader::with_capacity(1 << 16, counted)),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(counted),
        )),
        Compression::Zstd => {
            let dec =
                zstd::stream::read::Decoder::new(counted).map_err(|e| DataError::Corrupt {
                    path: path.clone(),
                    at: "the start".into(),
                    reason: e.to_string(),
                })?;
            Box::new(BufReader::with_capacity(1 << 16, dec))
        }
    };
    let lines = LineReader {
        reader,
        path,
        line: 0,
        done: false,
    };
    Ok(match file.format {
        SourceFormat::Text => Box::new(WholeFile(Some(lines))),
        SourceFormat::TextBlocks => Box::new(TextBlocks(lines)),
        SourceFormat::Jsonl => Box::new(JsonlDocs {
            lines,
            text_field: spec.text_field.clone(),
            id_field: spec.id_field.clone(),
            metadata_field: spec.metadata_field.clone(),
        }),
        SourceFormat::Parquet => unreachable!("handled above"),
    })
}

/// Lines as bytes (newline kept), with the line number for errors.
pub(super) struct LineReader {
    reader: Box<dyn BufRead + Send>,
    path: PathBuf,
    line: usize,
    done: bool,
}

impl LineReader {
    /// The next line into `buf` (cleared first); `Ok(false)` at the end.
    pub(super) fn next_line(&mut self, buf: &mut Vec<u8>) -> Result<bool, DataError> {
        buf.clear();
        if self.done {
            return Ok(false);
        }
        match self.reader.read_until(b'\n', buf) {
            Ok(0) => {
                self.done = true;
                Ok(false)
            }
            Ok(_) => {
                self.line += 1;
                Ok(true)
            }
            Err(e) => {
                self.done = true;
                Err(DataError::Corrupt {
                    path: self.path.clone(),
                    at: format!("line {}", self.line + 1),
                    reason: e.to_string(),
                })
            }
        }
    }
}

/// Bytes to text, replacing invalid UTF-8 (and saying whether it did).
pub(super) fn to_text(bytes: Vec<u8>) -> (String, bool) {
    match String::from_utf8(bytes) {
        Ok(s) => (s, false),
        Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), true),
    }
}

struct WholeFile(Option<LineReader>);

impl Iterator for WholeFile {
    type Item = Result<Document, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut lines = self.0.take()?;
        let mut bytes = Vec::new();
        if let Err(e) = lines.reader.read_to_end(&mut bytes) {
            return Some(Err(DataError::Corrupt {
                path: lines.path,
                at: format!("byte {} of the decompressed text", bytes.len()),
                reason: e.to_string(),
            }));
        }
        // Editors on Windows like to start files with a byte-order mark.
        if bytes.starts_with("\u{feff}".as_bytes()) {
            bytes.drain(..3);
        }
        let (text, replaced) = to_text(bytes);
        Some(Ok(Document::plain(text, replaced)))
    }
}

struct TextBlocks(LineReader);

impl Iterator for TextBlocks {
    type Item = Result<Document, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut block: Vec<u8> = Vec::new();
        let mut line = Vec::new();
        loop {
            match self.0.next_line(&mut line) {
                Err(e) => return Some(Err(e)),
                Ok(false) => break,
                Ok(true) => {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        if block.is_empty() {
                            continue;
                        }
                        break;
                    }
                    block.extend_from_slice(&line);
                }
            }
        }
        if block.is_empty() {
            return None;
        }
        while block.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            block.pop();
        }
        let (text, replaced) = to_text(block);
        Some(Ok(Document::plain(text, replaced)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, bytes).unwrap();
        p
    }

    fn read_all(spec: &SourceSpec) -> Result<Vec<Document>, DataError> {
        let mut docs = Vec::new();
        for f in resolve_files(spec)? {
            for d in open_file(&f, spec, Arc::default())? {
                docs.push(d?);
            }
        }
        Ok(docs)
    }

    fn texts(docs: &[Document]) -> Vec<&str> {
        docs.iter().map(|d| d.text.as_str()).collect()
    }

    #[test]
    fn formats_from_names() {
        let f = |s: &str| detect_format(Path::new(s));
        assert_eq!(
            f("a.jsonl.zst"),
            Some((SourceFormat::Jsonl, Compression::Zstd))
        );
        assert_eq!(
            f("a.JSONL.gz"),
            Some((SourceFormat::Jsonl, Compression::Gzip))
        );
        assert_eq!(f("x/a.txt"), Some((SourceFormat::Text, Compression::None)));
        assert_eq!(
            f("a.parquet"),
            Some((SourceFormat::Parquet, Compression::None))
        );
        assert_eq!(f("a.csv"), None);
        assert_eq!(f("gz"), None);
    }

    #[test]
    fn jsonl_gz_and_zst_with_id_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"{\"id\": \"a\", \"text\": \"one\", \"metadata\": {\"url\": \"u\"}}\n\n{\"id\": 7, \"text\": \"two\"}\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body).unwrap();
        write(dir.path(), "d/a.jsonl.gz", &gz.finish().unwrap());
        write(
            dir.path(),
            "d/b.jsonl.zst",
            &zstd::encode_all(&body[..], 3).unwrap(),
        );
        let mut spec = SourceSpec::new("web", &[dir.path().join("d").to_str().unwrap()]);
        spec.id_field = Some("id".into());
        spec.metadata_field = Some("metadata".into());
        let docs = read_all(&spec).unwrap();
        assert_eq!(texts(&docs), ["one", "two", "one", "two"]);
        assert_eq!(docs[0].id.as_deref(), Some("a"));
        assert_eq!(docs[1].id.as_deref(), Some("7"));
        assert_eq!(docs[0].metadata, Some(serde_json::json!({"url": "u"})));
    }

    #[test]
    fn text_blocks_and_globs() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.txt", b"p1 l1\np1 l2\n\n\n  \np2\r\n\np3");
        write(dir.path(), "b.txt", b"q1\n\nq2\n");
        write(dir.path(), "c.md", b"not matched");
        let pattern = format!("{}/*.txt", dir.path().display());
        let mut spec = SourceSpec::new("books", &[&pattern]);
        assert_eq!(
            texts(&read_all(&spec).unwrap()),
            ["p1 l1\np1 l2\n\n\n  \np2\r\n\np3", "q1\n\nq2\n"]
        );
        spec.format = Some(SourceFormat::TextBlocks);
        assert_eq!(
            texts(&read_all(&spec).unwrap()),
            ["p1 l1\np1 l2", "p2", "p3", "q1", "q2"]
        );
        let none = SourceSpec::new("x", &[&format!("{}/*.nope", dir.path().display())]);
        assert!(matches!(read_all(&none), Err(DataError::NoFiles { .. })));
    }

    #[test]
    fn invalid_utf8_is_replaced_and_flagged() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.jsonl",
            b"{\"text\": \"ok \xff\"}\n{\"text\": \"fine\"}\n",
        );
        let docs = read_all(&SourceSpec::new("w", &[dir.path().to_str().unwrap()])).unwrap();
        assert_eq!(texts(&docs), ["ok \u{fffd}", "fine"]);
        assert_eq!(
            docs.iter().map(|d| d.replaced_utf8).collect::<Vec<_>>(),
            [true, false]
        );
    }

    #[test]
    fn corrupt_gzip_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let body: String = (0..2000)
            .map(|i| format!("{{\"text\": \"doc {i}\"}}\n"))
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body.as_bytes()).unwrap();
        let mut bytes = gz.finish().unwrap();
        let n = bytes.len();
        bytes.truncate(n / 2);
        write(dir.path(), "bad.jsonl.gz", &bytes);
        let err = read_all(&SourceSpec::new("w", &[dir.path().to_str().unwrap()])).unwrap_err();
        assert!(matches!(err, DataError::Corrupt { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("bad.jsonl.gz") && msg.contains("line "),
            "{msg}"
        );
    }
}
