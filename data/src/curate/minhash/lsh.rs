//! LSH bucketing and cluster resolution.
//!
//! Layout, chosen so memory stays a small constant per document and each band
//! can be processed (or, later, spilled and external-sorted) on its own:
//!
//! ```text
//! exact:  Vec<Entry>            [docs]            (normalised-text hash, doc)
//! bands:  Vec<Vec<Entry>>       [bands][docs with a signature]
//!                               (xxh3 of the band's 8 minimums, doc)
//! Entry = 12 bytes (u64 key + u32 doc, packed)
//! ```
//!
//! No hash map of buckets: resolving sorts one band by key, walks runs of
//! equal keys, unions every member of a run with the run's first document and
//! frees the band before touching the next. A bucket of k documents costs k-1
//! unions, never k^2 pairs, and each document ends pointing at one root: the
//! lowest id of its cluster, which is the one kept (first seen wins, as
//! datatrove keeps one document per cluster).
//!
//! Memory: 14 bands * 12 bytes + 12 (exact) + 4 (union-find parent) =
//! 184 bytes per document at the default config, plus `Vec` slack. Past one
//! machine's RAM (~184 GB at a billion documents), [`DedupIndex::with_spill`]
//! bounds each stream's buffer: a full buffer is sorted and written as a run
//! file, and resolving k-way merges each stream's runs (external sort, the
//! datatrove layout of one sorted file set per band). Then memory is the
//! buffers plus 4 bytes per document for the union-find.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::slice::ParallelSliceMut;

use super::signature::DocSketch;
use super::spill;
use super::MinhashError;

/// One bucket membership. Packed to 12 bytes: this is the per-document cost
/// that dominates the index.
#[repr(C, packed(4))]
#[derive(Clone, Copy)]
pub(super) struct Entry {
    pub(super) key: u64,
    pub(super) doc: u32,
}

/// Where full buffers go when the index spills.
struct Spill {
    dir: PathBuf,
    /// Entries a stream buffers before it writes a sorted run.
    max_entries: usize,
    /// `[1 + bands][runs]`: run files per stream (0 = exact).
    runs: Vec<Vec<PathBuf>>,
}

/// Documents added so far, by band; turn into [`Clusters`] with
/// [`DedupIndex::resolve`].
pub struct DedupIndex {
    num_bands: usize,
    docs: usize,
    exact: Vec<Entry>,
    bands: Vec<Vec<Entry>>,
    spill: Option<Spill>,
}

impl DedupIndex {
    pub fn new(num_bands: usize) -> Self {
        Self {
            num_bands,
            docs: 0,
            exact: Vec::new(),
            bands: (0..num_bands).map(|_| Vec::new()).collect(),
            spill: None,
        }
    }

    /// An index that holds at most `max_entries` per stream (exact + each
    /// band) in memory and writes sorted runs to `dir` beyond that; the
    /// caller owns `dir` (a temporary directory). Run files are removed as
    /// they are merged.
    pub fn with_spill(num_bands: usize, dir: &Path, max_entries: usize) -> Self {
        let mut index = Self::new(num_bands);
        index.spill = Some(Spill {
            dir: dir.to_path_buf(),
            max_entries: max_entries.max(1),
            runs: (0..=num_bands).map(|_| Vec::new()).collect(),
        });
        index
    }

    /// Number of documents inserted.
    pub fn len(&self) -> usize {
        self.docs
    }

    pub fn is_empty(&self) -> bool {
        self.docs == 0
    }

    /// Add the next document; its id is the insertion order.
    pub fn insert(&mut self, sketch: &DocSketch) -> Result<u32, MinhashError> {
        let doc = u32::try_from(self.docs).map_err(|_| MinhashError::TooManyDocuments)?;
        if !sketch.band_keys.is_empty() && sketch.band_keys.len() != self.num_bands {
            return Err(MinhashError::BandMismatch {
                expected: self.num_bands,
                got: sketch.band_keys.len(),
            });
        }
        self.exact.push(Entry {
            key: sketch.exact,
            doc,
        });
        for (band, &key) in self.bands.iter_mut().zip(&sketch.band_keys) {
            band.push(Entry { key, doc });
        }
        self.docs += 1;
        if let Some(spill) = &mut self.spill {
            let streams = std::iter::once(&mut self.exact).chain(self.bands.iter_mut());
            for ((stream, buf), runs) in streams.enumerate().zip(&mut spill.runs) {
                if buf.len() >= spill.max_entries {
                    runs.push(spill::write_run(&spill.dir, stream, runs.len(), buf)?);
                }
            }
        }
        Ok(doc)
    }

    /// Heap bytes held by the index now (capacities, not lengths): what the
    /// memory test measures per document.
    pub fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<Entry>();
        let bands: usize = self.bands.iter().map(|b| b.capacity() * entry).sum();
        self.exact.capacity() * entry
            + bands
            + self.bands.capacity() * std::mem::size_of::<Vec<Entry>>()
    }

    /// Union documents sharing the exact hash or any band key; one band at a
    /// time, each freed after use, so the peak is the index itself plus the
    /// union-find parents (4 bytes per document). A spilled stream is merged
    /// from its run files and its in-memory tail.
    pub fn resolve(self) -> Result<Clusters, MinhashError> {
        let mut uf = UnionFind::new(self.docs);
        let mut runs = match self.spill {
            Some(spill) => spill.runs,
            None => (0..=self.num_bands).map(|_| Vec::new()).collect(),
        };
        let streams = std::iter::once(self.exact).chain(self.bands);
        let mut merged = Vec::with_capacity(runs.len());
        for (buf, files) in streams.zip(runs.iter_mut()) {
            merged.push(if files.is_empty() {
                union_runs(buf, &mut uf)
            } else {
                spill::merge_union(buf, std::mem::take(files), &mut uf)?
            });
        }
        Ok(Clusters {
            root: uf.into_roots(),
            merged_exact: merged.first().copied().unwrap_or(0),
            merged_fuzzy: merged.iter().skip(1).sum(),
        })
    }
}

/// Sort by key (then doc, so a run starts with its lowest id) and union each
/// run onto its first document; returns how many unions merged two clusters.
fn union_runs(mut entries: Vec<Entry>, uf: &mut UnionFind) -> usize {
    entries.par_sort_unstable_by_key(|e| (e.key, e.doc));
    let mut merged = 0;
    let mut start = 0;
    while start < entries.len() {
        let Entry { key, doc: first } = entries[start];
        let mut end = start + 1;
        while end < entries.len() && { entries[end].key } == key {
            if uf.union(first, entries[end].doc) {
                merged += 1;
            }
            end += 1;
        }
        start = end;
    }
    merged
}

/// Union-find whose root is always the lowest id in the set (so the kept
/// document is the first one seen), with path halving.
pub(super) struct UnionFind {
    /// `[docs]`: parent id; a root points at itself.
    parent: Vec<u32>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        // n fits in u32: DedupIndex::insert refuses more documents.
        Self {
            parent: (0..n as u32).collect(),
        }
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    /// True when a and b were in different sets.
    pub(super) fn union(&mut self, a: u32, b: u32) -> bool {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[hi as usize] = lo;
        true
    }

    /// Every document's final root (fully compressed).
    fn into_roots(mut self) -> Vec<u32> {
        for x in 0..self.parent.len() as u32 {
            let r = self.find(x);
            self.parent[x as usize] = r;
        }
        self.parent
    }
}

/// The dedup decision: each document's cluster root; roots are kept.
#[derive(Debug, Clone)]
pub struct Clusters {
    /// `[docs]`: id of the kept document of this document's cluster.
    root: Vec<u32>,
    /// Documents removed by exact (normalised text) matches.
    merged_exact: usize,
    /// Further documents removed by MinHash band matches.
    merged_fuzzy: usize,
}

/// Cluster sizes and removal counts, for the curation report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterReport {
    pub documents: usize,
    pub kept: usize,
    pub removed_exact: usize,
    pub removed_fuzzy: usize,
    /// Clusters with more than one document.
    pub duplicate_clusters: usize,
    pub largest_cluster: usize,
    /// cluster size -> number of clusters of that size (sizes >= 2).
    pub size_histogram: BTreeMap<usize, usize>,
}

impl Clusters {
    pub fn len(&self) -> usize {
        self.root.len()
    }

    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// The kept document of `doc`'s cluster; `None` for an unknown id.
    pub fn root(&self, doc: u32) -> Option<u32> {
        self.root.get(doc as usize).copied()
    }

    /// Whether `doc` survives dedup (it is its cluster's lowest id).
    pub fn is_kept(&self, doc: u32) -> bool {
        self.root(doc) == Some(doc)
    }

    pub fn report(&self) -> ClusterReport {
        // `[docs]` cluster size by root id: 4 bytes per document, no map.
        let mut sizes = vec![0u32; self.root.len()];
        for &r in &self.root {
            sizes[r as usize] += 1;
        }
        let mut size_histogram = BTreeMap::new();
        for &size in sizes.iter().filter(|&&s| s > 1) {
            *size_histogram.entry(size as usize).or_default() += 1;
        }
        ClusterReport {
            documents: self.root.len(),
            kept: sizes.iter().filter(|&&s| s > 0).count(),
            removed_exact: self.merged_exact,
            removed_fuzzy: self.merged_fuzzy,
            duplicate_clusters: size_histogram.values().sum(),
            largest_cluster: sizes.iter().copied().max().unwrap_or(0) as usize,
            size_histogram,
        }
    }
}
