//! Reading a corpus from disk: plain text files or JSON lines.
//!
//! A corpus path is a file or a directory. A text file is one document; a
//! JSONL file holds one JSON object per line whose `text_field` is the
//! document. Directories are read in sorted path order so the token stream,
//! and hence every batch, is the same on every machine.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DataError;

/// How a corpus file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextFormat {
    /// The whole file is one document.
    Text,
    /// One JSON object per line; the document is one string field.
    Jsonl,
}

impl TextFormat {
    /// The format implied by a file's extension, if it is one we know.
    pub fn from_extension(path: &Path) -> Option<TextFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "text" | "md" => Some(TextFormat::Text),
            "jsonl" | "json" => Some(TextFormat::Jsonl),
            _ => None,
        }
    }
}

/// All non-empty documents under `path` (a file or a directory).
///
/// `format` forces the layout; `None` detects it from each file's extension.
/// In a directory, `None` reads only files with a known extension, while an
/// explicit format reads every file (hidden files are always skipped).
/// Invalid UTF-8 is replaced with U+FFFD (see [`read_documents_counted`]).
pub fn read_documents(
    path: &Path,
    format: Option<TextFormat>,
    text_field: &str,
) -> Result<Vec<String>, DataError> {
    Ok(read_documents_counted(path, format, text_field)?.0)
}

/// Files in which invalid UTF-8 was replaced: `(path, byte offset of the first)`.
pub type Utf8Repairs = Vec<(PathBuf, usize)>;

/// [`read_documents`], also returning the files whose invalid UTF-8 was
/// replaced, so the caller can report them.
pub fn read_documents_counted(
    path: &Path,
    format: Option<TextFormat>,
    text_field: &str,
) -> Result<(Vec<String>, Utf8Repairs), DataError> {
    let meta = fs::metadata(path).map_err(|source| not_found_or_io(path, source))?;
    let files: Vec<(PathBuf, TextFormat)> = if meta.is_dir() {
        let mut found = Vec::new();
        collect_files(path, format, &mut found)?;
        if found.is_empty() {
            return Err(DataError::NoFiles {
                path: path.to_path_buf(),
            });
        }
        found
    } else {
        let fmt = match format.or_else(|| TextFormat::from_extension(path)) {
            Some(f) => f,
            None => {
                return Err(DataError::UnknownFormat {
                    path: path.to_path_buf(),
                })
            }
        };
        vec![(path.to_path_buf(), fmt)]
    };

    let mut docs = Vec::new();
    let mut repairs = Vec::new();
    for (file, fmt) in &files {
        let (text, bad_offset) = read_utf8_lossy(file)?;
        if let Some(offset) = bad_offset {
            repairs.push((file.clone(), offset));
        }
        match fmt {
            TextFormat::Text => docs.push(text),
            TextFormat::Jsonl => parse_jsonl(file, &text, text_field, &mut docs)?,
        }
    }
    // Whitespace-only documents carry nothing to learn but would still cost
    // an <|endoftext|> each.
    docs.retain(|d| !d.trim().is_empty());
    if docs.is_empty() {
        return Err(DataError::EmptyCorpus {
            path: path.to_path_buf(),
        });
    }
    Ok((docs, repairs))
}

fn not_found_or_io(path: &Path, source: std::io::Error) -> DataError {
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

/// Corpus files under `dir`, recursively, sorted by path.
fn collect_files(
    dir: &Path,
    format: Option<TextFormat>,
    out: &mut Vec<(PathBuf, TextFormat)>,
) -> Result<(), DataError> {
    let keep = |p: &Path| {
        format
            .or_else(|| TextFormat::from_extension(p))
            .map(|fmt| (p.to_path_buf(), fmt))
    };
    crate::walk::files_under(dir, &keep, out).map_err(|(d, e)| not_found_or_io(&d, e))
}

/// The file's text with invalid UTF-8 replaced by U+FFFD, and the byte
/// offset of the first invalid sequence if there was one.
fn read_utf8_lossy(path: &Path) -> Result<(String, Option<usize>), DataError> {
    let bytes = fs::read(path).map_err(|source| not_found_or_io(path, source))?;
    let (mut text, bad) = match String::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            (
                String::from_utf8_lossy(e.as_bytes()).into_owned(),
                Some(offset),
            )
        }
    };
    // Editors on Windows like to start files with a byte-order mark; it is
    // not text.
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok((text, bad))
}

fn parse_jsonl(
    path: &Path,
    text: &str,
    field: &str,
    docs: &mut Vec<String>,
) -> Result<(), DataError> {
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| DataError::BadJsonLine {
                path: path.to_path_buf(),
                line: line_no,
                reason: e.to_string(),
            })?;
        let serde_json::Value::Object(mut object) = value else {
            return Err(DataError::BadJsonLine {
                path: path.to_path_buf(),
                line: line_no,
                reason: format!("found {}", json_kind(&value)),
            });
        };
        match object.remove(field) {
            Some(serde_json::Value::String(s)) => docs.push(s),
            Some(other) => {
                return Err(DataError::FieldNotString {
                    path: path.to_path_buf(),
                    line: line_no,
                    field: field.to_string(),
                    found: json_kind(&other),
                })
            }
            None => {
                return Err(DataError::MissingField {
                    path: path.to_path_buf(),
                    line: line_no,
                    field: field.to_string(),
                })
            }
        }
    }
    Ok(())
}

pub(crate) fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn text_file_is_one_document() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "a.txt",
            "\u{feff}line one\nline two\n".as_bytes(),
        );
        let docs = read_documents(&p, None, "text").unwrap();
        assert_eq!(docs, vec!["line one\nline two\n".to_string()]);
    }

    #[test]
    fn jsonl_reads_the_field_and_skips_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "a.jsonl",
            b"{\"text\": \"first\", \"id\": 1}\n\n  \r\n{\"text\": \"second\\nline\"}\r\n",
        );
        let docs = read_documents(&p, None, "text").unwrap();
        assert_eq!(docs, vec!["first".to_string(), "second\nline".to_string()]);
        let p = write(dir.path(), "b.jsonl", b"{\"story\": \"x\"}\n");
        assert_eq!(read_documents(&p, None, "story").unwrap(), vec!["x"]);
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "bad.jsonl",
            b"{\"text\": \"ok\"}\n\n{not json\n",
        );
        let err = read_documents(&p, None, "text").unwrap_err();
        assert!(
            matches!(err, DataError::BadJsonLine { line: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("bad.jsonl:3"), "{err}");

        let p = write(
            dir.path(),
            "missing.jsonl",
            b"{\"text\": \"ok\"}\n{\"body\": \"x\"}\n",
        );
        let err = read_documents(&p, None, "text").unwrap_err();
        assert!(
            matches!(err, DataError::MissingField { line: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("missing.jsonl:2"), "{err}");

        let p = write(dir.path(), "num.jsonl", b"{\"text\": 5}\n");
        let err = read_documents(&p, None, "text").unwrap_err();
        assert!(
            matches!(err, DataError::FieldNotString { line: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("a number"), "{err}");

        let p = write(dir.path(), "arr.jsonl", b"[1, 2]\n");
        let err = read_documents(&p, None, "text").unwrap_err();
        assert!(
            matches!(err, DataError::BadJsonLine { line: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_and_reported_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad.txt", b"hello \xff world");
        let (docs, repairs) = read_documents_counted(&p, None, "text").unwrap();
        assert_eq!(docs, vec!["hello \u{fffd} world".to_string()]);
        assert_eq!(repairs, vec![(p, 6)]);
    }

    #[test]
    fn missing_path_says_what_to_check() {
        let err = read_documents(Path::new("/no/such/corpus.txt"), None, "text").unwrap_err();
        assert!(matches!(err, DataError::NotFound { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("/no/such/corpus.txt") && msg.contains("data.train"),
            "{msg}"
        );
    }

    #[test]
    fn empty_corpus_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "empty.txt", b" \n\n");
        assert!(matches!(
            read_documents(&p, None, "text"),
            Err(DataError::EmptyCorpus { .. })
        ));
        let p = write(dir.path(), "empty.jsonl", b"\n{\"text\": \"\"}\n");
        assert!(matches!(
            read_documents(&p, None, "text"),
            Err(DataError::EmptyCorpus { .. })
        ));
    }

    #[test]
    fn unknown_extension_needs_an_explicit_format() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "corpus.data", b"abc");
        assert!(matches!(
            read_documents(&p, None, "text"),
            Err(DataError::UnknownFormat { .. })
        ));
        let docs = read_documents(&p, Some(TextFormat::Text), "text").unwrap();
        assert_eq!(docs, vec!["abc"]);
    }

    #[test]
    fn directory_is_read_in_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "b.txt", b"bee");
        write(
            dir.path(),
            "a.jsonl",
            b"{\"text\": \"ay\"}\n{\"text\": \"ay2\"}\n",
        );
        write(dir.path(), "sub/c.md", b"sea");
        write(dir.path(), "notes.csv", b"ignored");
        write(dir.path(), ".hidden.txt", b"ignored");
        let docs = read_documents(dir.path(), None, "text").unwrap();
        assert_eq!(docs, vec!["ay", "ay2", "bee", "sea"]);

        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_documents(empty.path(), None, "text"),
            Err(DataError::NoFiles { .. })
        ));
    }
}
