//! External sort for [`super::DedupIndex::with_spill`]: a full stream buffer
//! becomes a sorted run file of 12-byte records (u64 key LE, u32 doc LE), and
//! resolving merges a stream's runs and in-memory tail in (key, doc) order
//! with a k-way heap, so only one record per run is in memory.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use rayon::slice::ParallelSliceMut;

use super::lsh::{Entry, UnionFind};
use super::MinhashError;

const RECORD: usize = 12;

fn spill_error(path: &Path, source: std::io::Error) -> MinhashError {
    MinhashError::Spill {
        path: path.to_path_buf(),
        source,
    }
}

/// Sort `buf`, write it as run `run` of stream `stream` under `dir`, clear it
/// (keeping its capacity for the next run).
pub(super) fn write_run(
    dir: &Path,
    stream: usize,
    run: usize,
    buf: &mut Vec<Entry>,
) -> Result<PathBuf, MinhashError> {
    buf.par_sort_unstable_by_key(|e| (e.key, e.doc));
    let path = dir.join(format!("minhash-s{stream:03}-r{run:06}.run"));
    let file = File::create(&path).map_err(|e| spill_error(&path, e))?;
    let mut w = BufWriter::new(file);
    for e in buf.iter() {
        let (key, doc) = (e.key, e.doc);
        let mut rec = [0u8; RECORD];
        rec[..8].copy_from_slice(&key.to_le_bytes());
        rec[8..].copy_from_slice(&doc.to_le_bytes());
        w.write_all(&rec).map_err(|e| spill_error(&path, e))?;
    }
    w.flush().map_err(|e| spill_error(&path, e))?;
    buf.clear();
    Ok(path)
}

/// One sorted input of the merge.
enum Source {
    Memory(std::vec::IntoIter<Entry>),
    Run { path: PathBuf, r: BufReader<File> },
}

impl Source {
    fn next(&mut self) -> Result<Option<Entry>, MinhashError> {
        match self {
            Source::Memory(it) => Ok(it.next()),
            Source::Run { path, r } => {
                let mut rec = [0u8; RECORD];
                match r.read_exact(&mut rec) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
                    Err(e) => return Err(spill_error(path, e)),
                }
                let mut key = [0u8; 8];
                let mut doc = [0u8; 4];
                key.copy_from_slice(&rec[..8]);
                doc.copy_from_slice(&rec[8..]);
                Ok(Some(Entry {
                    key: u64::from_le_bytes(key),
                    doc: u32::from_le_bytes(doc),
                }))
            }
        }
    }
}

/// Merge `tail` (unsorted, in memory) and the sorted `runs` of one stream in
/// (key, doc) order, union each equal-key run onto its first (lowest) doc,
/// then delete the run files. Returns how many unions merged two clusters.
pub(super) fn merge_union(
    mut tail: Vec<Entry>,
    runs: Vec<PathBuf>,
    uf: &mut UnionFind,
) -> Result<usize, MinhashError> {
    tail.par_sort_unstable_by_key(|e| (e.key, e.doc));
    let mut sources = vec![Source::Memory(tail.into_iter())];
    for path in &runs {
        let file = File::open(path).map_err(|e| spill_error(path, e))?;
        sources.push(Source::Run {
            path: path.clone(),
            r: BufReader::new(file),
        });
    }
    // Min-heap of (key, doc, source): the next record of every source.
    let mut heap = BinaryHeap::with_capacity(sources.len());
    for (i, s) in sources.iter_mut().enumerate() {
        if let Some(e) = s.next()? {
            heap.push(Reverse((e.key, e.doc, i)));
        }
    }
    let mut merged = 0;
    let mut current: Option<(u64, u32)> = None;
    while let Some(Reverse((key, doc, i))) = heap.pop() {
        match current {
            Some((k, first)) if k == key => {
                if uf.union(first, doc) {
                    merged += 1;
                }
            }
            _ => current = Some((key, doc)),
        }
        if let Some(e) = sources[i].next()? {
            heap.push(Reverse((e.key, e.doc, i)));
        }
    }
    drop(sources);
    for path in &runs {
        std::fs::remove_file(path).map_err(|e| spill_error(path, e))?;
    }
    Ok(merged)
}
