//! Near-duplicate detection: exact (normalised text hash) and fuzzy MinHash
//! LSH, following datatrove's `pipeline/dedup/minhash.py` (its defaults:
//! 5-word shingles, 14 bands x 8 hashes, 64-bit xxhash shingles, permutation
//! parameters from numpy `RandomState(1)`).
//!
//! Two documents with shingle-set Jaccard similarity s share at least one
//! band, and so become candidates, with probability 1 - (1 - s^8)^14
//! (0.92 at s = 0.8, 0.01 at s = 0.4). Candidates are merged without checking
//! their true similarity, as datatrove does.
//!
//! ```text
//! text --simplify--> spaCy en words --5-grams--> xxh64 shingles --112 perms-->
//!   signature [14 bands x 8 mins] --xxh3 per band--> band keys [14]
//! DedupIndex: per band Vec<(key, doc)>; resolve: sort per band, union runs
//! Clusters: [docs] -> root (lowest id, the kept one); report of sizes
//! ```
//!
//! Use: `MinHasher::sketch` is pure and can run in parallel over documents;
//! `DedupIndex::insert` takes the sketches in document order;
//! `DedupIndex::with_spill` bounds memory with sorted run files on disk.
//!
//! Documents with fewer than `n_grams` words get no signature (datatrove
//! writes none either), so only the exact hash can match them.

mod lsh;
mod mt19937;
mod normalize;
mod signature;
mod spill;

pub use lsh::{ClusterReport, Clusters, DedupIndex};
pub use normalize::simplify_text;
pub use signature::{DocSketch, MinHasher};

/// Why MinHash dedup refused to run.
#[derive(Debug, thiserror::Error)]
pub enum MinhashError {
    #[error("minhash.{field} must be at least 1 (got 0): datatrove's default is {default}")]
    ZeroParameter { field: &'static str, default: usize },

    #[error(
        "minhash: more than 4,294,967,295 documents in one index: split the corpus and dedup \
         the parts, or dedup in stages"
    )]
    TooManyDocuments,

    #[error(
        "minhash: a sketch has {got} band keys but the index has {expected} bands: build \
         sketches and index from the same MinhashConfig"
    )]
    BandMismatch { expected: usize, got: usize },

    #[error(
        "minhash spill file {}: {source}: check the spill directory exists, is writable and \
         has room for about 12 bytes per document per band",
        path.display()
    )]
    Spill {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// datatrove's `MinhashConfig` (its field names), with its defaults.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MinhashConfig {
    /// Words per shingle.
    pub n_grams: usize,
    /// Bands: a pair is a candidate when all rows of any one band agree.
    pub num_buckets: usize,
    /// Rows (minimums) per band.
    pub hashes_per_bucket: usize,
    /// numpy RandomState seed for the permutation parameters.
    pub seed: u32,
}

impl Default for MinhashConfig {
    fn default() -> Self {
        Self {
            n_grams: 5,
            num_buckets: 14,
            hashes_per_bucket: 8,
            seed: 1,
        }
    }
}

impl MinhashConfig {
    pub fn num_hashes(&self) -> usize {
        self.num_buckets * self.hashes_per_bucket
    }

    /// Probability that a pair at Jaccard similarity `s` becomes a candidate.
    pub fn candidate_probability(&self, s: f64) -> f64 {
        1.0 - (1.0 - s.powi(self.hashes_per_bucket as i32)).powi(self.num_buckets as i32)
    }

    pub fn validate(&self) -> Result<(), MinhashError> {
        let checks = [
            ("n_grams", self.n_grams, 5),
            ("num_buckets", self.num_buckets, 14),
            ("hashes_per_bucket", self.hashes_per_bucket, 8),
        ];
        for (field, value, default) in checks {
            if value == 0 {
                return Err(MinhashError::ZeroParameter { field, default });
            }
        }
        Ok(())
    }
}

/// Dedup a whole in-memory corpus: sketches in parallel, then one index.
pub fn dedup<S: AsRef<str> + Sync>(
    config: &MinhashConfig,
    docs: &[S],
) -> Result<Clusters, MinhashError> {
    use rayon::prelude::*;
    let hasher = MinHasher::new(config.clone())?;
    let sketches: Vec<DocSketch> = docs.par_iter().map(|d| hasher.sketch(d.as_ref())).collect();
    let mut index = DedupIndex::new(config.num_buckets);
    for sketch in &sketches {
        index.insert(sketch)?;
    }
    index.resolve()
}
