//! Directory walking shared by the in-memory corpus reader and the
//! streaming sources: every non-hidden file under a directory, recursively,
//! in sorted path order (read_dir order depends on the file system).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Files under `dir` (recursively, hidden entries skipped) for which `keep`
/// returns Some, in sorted path order. An I/O error names the directory it
/// happened in.
pub fn files_under<T>(
    dir: &Path,
    keep: &impl Fn(&Path) -> Option<T>,
    out: &mut Vec<T>,
) -> Result<(), (PathBuf, io::Error)> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| (dir.to_path_buf(), e))? {
        paths.push(entry.map_err(|e| (dir.to_path_buf(), e))?.path());
    }
    paths.sort();
    for p in paths {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            files_under(&p, keep, out)?;
        } else if let Some(t) = keep(&p) {
            out.push(t);
        }
    }
    Ok(())
}
