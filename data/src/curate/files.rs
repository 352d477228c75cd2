//! Where a curation run writes, and how: every file is written whole to a
//! temporary name, fsynced and renamed, so a file that exists is complete and
//! a killed run leaves at most `.NAME.tmp-PID` files (removed on the next
//! run).
//!
//! ```text
//! OUT/attributes/STAGE/stage.json                 what the attributes were scored with
//! OUT/attributes/STAGE/DOMAIN/part-00000.jsonl.gz {"id", "attributes": {...}} per document, in order
//! OUT/attributes/STAGE/DOMAIN/part-00000.sketch   dedup stages: the sketch per document
//! OUT/kept/DOMAIN/part-00000.jsonl                the kept documents ({"id", "text"})
//! OUT/REPORT.md                                   written last
//! ```

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use super::error::CurateError;
use super::minhash::DocSketch;

/// Paths of one output directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub out: PathBuf,
}

fn part_name(part: usize, ext: &str) -> String {
    format!("part-{part:05}.{ext}")
}

impl Layout {
    pub fn stage_dir(&self, stage: &str) -> PathBuf {
        self.out.join("attributes").join(stage)
    }

    pub fn attributes(&self, stage: &str, domain: &str, part: usize) -> PathBuf {
        self.stage_dir(stage)
            .join(domain)
            .join(part_name(part, "jsonl.gz"))
    }

    pub fn sketches(&self, stage: &str, domain: &str, part: usize) -> PathBuf {
        self.stage_dir(stage)
            .join(domain)
            .join(part_name(part, "sketch"))
    }

    /// A ranked stage's scores of one part (`id \t score` lines, gzipped).
    pub fn scores(&self, stage: &str, domain: &str, part: usize) -> PathBuf {
        self.stage_dir(stage)
            .join(domain)
            .join(part_name(part, "scores.gz"))
    }

    pub fn kept_dir(&self) -> PathBuf {
        self.out.join("kept")
    }

    pub fn kept(&self, domain: &str, part: usize) -> PathBuf {
        self.kept_dir().join(domain).join(part_name(part, "jsonl"))
    }

    pub fn report(&self) -> PathBuf {
        self.out.join("REPORT.md")
    }
}

pub(crate) fn write_error(path: &Path, source: std::io::Error) -> CurateError {
    CurateError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// The temporary name `path` is written under first.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// temp, fsync, rename, fsync the directory; creates the parent first.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CurateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    let tmp = tmp_path(path);
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        write_error(path, e)
    })
}

/// gzip with no name and a zero mtime: the same bytes give the same file.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// The lines of a gzipped JSONL attribute file.
pub fn read_gz_lines(path: &Path) -> Result<Vec<String>, CurateError> {
    let f = std::fs::File::open(path).map_err(|e| crate::sources::io_error(path, e))?;
    let r = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(f));
    let mut out = Vec::new();
    for (i, line) in r.lines().enumerate() {
        out.push(line.map_err(|e| CurateError::Attributes {
            path: path.to_path_buf(),
            line: i + 1,
            reason: e.to_string(),
        })?);
    }
    Ok(out)
}

const SKETCH_MAGIC: &[u8; 8] = b"KSKETCH1";

/// Sketches as bytes: magic, then per document `id_len: u32`, the id's
/// UTF-8 bytes, `exact: u64`, `n: u32`, `n x u64` band keys (little-endian).
pub fn encode_sketches(sketches: &[(String, DocSketch)]) -> Vec<u8> {
    let mut out = SKETCH_MAGIC.to_vec();
    for (id, s) in sketches {
        out.extend_from_slice(&(id.len() as u32).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&s.exact.to_le_bytes());
        out.extend_from_slice(&(s.band_keys.len() as u32).to_le_bytes());
        for k in &s.band_keys {
            out.extend_from_slice(&k.to_le_bytes());
        }
    }
    out
}

/// Reads a sketch file written by [`encode_sketches`].
pub fn read_sketches(path: &Path) -> Result<Vec<(String, DocSketch)>, CurateError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| crate::sources::io_error(path, e))?;
    let bad = |reason: &str| CurateError::Attributes {
        path: path.to_path_buf(),
        line: 0,
        reason: reason.to_string(),
    };
    let body = bytes
        .strip_prefix(SKETCH_MAGIC.as_slice())
        .ok_or_else(|| bad("not a sketch file (bad magic)"))?;
    let mut out = Vec::new();
    let mut rest = body;
    let take = |rest: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        *rest = tail;
        Some(head.to_vec())
    };
    let u64_of = |b: Vec<u8>| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
    let u32_of = |b: Vec<u8>| u32::from_le_bytes(b.try_into().unwrap_or([0; 4]));
    while !rest.is_empty() {
        let id_len = take(&mut rest, 4)
            .map(u32_of)
            .ok_or_else(|| bad("truncated"))?;
        let id = take(&mut rest, id_len as usize).ok_or_else(|| bad("truncated"))?;
        let id = String::from_utf8(id).map_err(|_| bad("an id is not UTF-8"))?;
        let exact = take(&mut rest, 8)
            .map(u64_of)
            .ok_or_else(|| bad("truncated"))?;
        let n = take(&mut rest, 4)
            .map(u32_of)
            .ok_or_else(|| bad("truncated"))?;
        let mut band_keys = Vec::with_capacity(n as usize);
        for _ in 0..n {
            band_keys.push(
                take(&mut rest, 8)
                    .map(u64_of)
                    .ok_or_else(|| bad("truncated"))?,
            );
        }
        out.push((id, DocSketch { exact, band_keys }));
    }
    Ok(out)
}

/// Removes `.NAME.tmp-PID` files a killed run left under `dir`.
pub fn remove_tmp_files(dir: &Path) -> Result<(), CurateError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            remove_tmp_files(&p)?;
        } else if name.starts_with('.') && name.contains(".tmp-") {
            std::fs::remove_file(&p).map_err(|e| write_error(&p, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketches_round_trip_and_truncation_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.sketch");
        let sketches = vec![
            (
                "a".to_string(),
                DocSketch {
                    exact: 7,
                    band_keys: vec![1, 2, u64::MAX],
                },
            ),
            (
                "ünïcode id".to_string(),
                DocSketch {
                    exact: u64::MAX,
                    band_keys: vec![],
                },
            ),
        ];
        let bytes = encode_sketches(&sketches);
        write_atomic(&path, &bytes).unwrap();
        assert_eq!(read_sketches(&path).unwrap(), sketches);
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let err = read_sketches(&path).unwrap_err().to_string();
        assert!(
            err.contains("truncated") && err.contains("p.sketch"),
            "{err}"
        );
        std::fs::write(&path, b"not a sketch").unwrap();
        assert!(read_sketches(&path).is_err());
    }

    #[test]
    fn gzip_is_deterministic_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/a.jsonl.gz");
        let text = "{\"id\":\"x\"}\n{\"id\":\"y\"}\n";
        assert_eq!(gzip(text.as_bytes()), gzip(text.as_bytes()));
        write_atomic(&path, &gzip(text.as_bytes())).unwrap();
        assert_eq!(
            read_gz_lines(&path).unwrap(),
            ["{\"id\":\"x\"}", "{\"id\":\"y\"}"]
        );
    }

    #[test]
    fn leftover_temporary_files_are_removed_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        let tmp = tmp_path(&sub.join("part-00000.jsonl.gz"));
        std::fs::write(&tmp, b"half").unwrap();
        std::fs::write(sub.join("part-00001.jsonl.gz"), b"whole").unwrap();
        remove_tmp_files(dir.path()).unwrap();
        assert!(!tmp.exists());
        assert!(sub.join("part-00001.jsonl.gz").exists());
    }
}
