//! `kiln data prepare`: raw sources -> tokenized, packed shards.
//!
//! One reader thread streams documents (in sorted file order) into chunks of
//! a few MB; the main thread tokenizes each chunk on all cores (the
//! `tokenizers` batch encoder runs on rayon) and appends the ids to the
//! domain's train or validation shard. At most two chunks wait in the
//! channel, so memory stays bounded by a few chunks and one shard's document
//! index, whatever the corpus size. Output is a pure function of the inputs:
//! chunking and thread count do not change a single byte.
//!
//! Train/validation is decided per document by a hash of its text, so a
//! document stays on its side when more data is added.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::{
    hex, tokenizer_hash, DomainManifest, Manifest, SourceStats, SplitManifest,
    DATASET_TOKENIZER_FILE, MANIFEST_FILE, MANIFEST_VERSION,
};
use crate::error::DataError;
use crate::shard::{ShardWriter, TokenDtype};
use crate::sources::{open_file, resolve_files, Document, SourceFile, SourceSpec};
use crate::tokenizer::Tokenizer;

/// A data spec (`DATA.toml`): where the raw sources are and how to prepare them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Output directory of `kiln data prepare`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    /// The tokenizer.json to tokenize with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// Share of documents (by text hash) held out for validation.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Salt of the split hash.
    #[serde(default)]
    pub split_seed: u64,
    /// Tokens per shard file (a shard ends at a document boundary past this).
    #[serde(default = "default_shard_tokens")]
    pub shard_tokens: u64,
    #[serde(rename = "source")]
    pub sources: Vec<SourceSpec>,
}

fn default_val_fraction() -> f64 {
    0.01
}
fn default_shard_tokens() -> u64 {
    100_000_000
}

impl DataSpec {
    /// Parses a `DATA.toml`. Relative paths (sources, out, tokenizer) are
    /// taken from the spec file's directory.
    pub fn load(path: &Path) -> Result<DataSpec, DataError> {
        let text = std::fs::read_to_string(path).map_err(|e| crate::sources::io_error(path, e))?;
        let mut spec: DataSpec = toml::from_str(&text).map_err(|e| DataError::BadSpec {
            field: path.display().to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        spec.rebase(&base);
        spec.validate(path)?;
        Ok(spec)
    }

    pub(crate) fn rebase(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(o) = self.out.as_mut() {
            fix(o);
        }
        if let Some(t) = self.tokenizer.as_mut() {
            fix(t);
        }
        for s in &mut self.sources {
            for p in &mut s.paths {
                if Path::new(p.as_str()).is_relative() {
                    *p = base.join(&*p).to_string_lossy().into_owned();
                }
            }
        }
    }

    /// Checks names, fractions and sizes; errors name the field.
    pub fn validate(&self, origin: &Path) -> Result<(), DataError> {
        let err = |field: &str, message: String| DataError::BadSpec {
            field: format!("{}: {field}", origin.display()),
            message,
        };
        if self.sources.is_empty() {
            return Err(err(
                "source",
                "no [[source]] sections: add at least one".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(err(
                "val_fraction",
                format!("{} must be in [0, 1), e.g. 0.01", self.val_fraction),
            ));
        }
        if self.shard_tokens == 0 {
            return Err(err("shard_tokens", "0 must be at least 1".into()));
        }
        let mut seen = BTreeSet::new();
        for s in &self.sources {
            let ok = !s.domain.is_empty()
                && s.domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
                && !s.domain.starts_with('.');
            if !ok {
                return Err(err(
                    "source.domain",
                    format!(
                        "\"{}\" must be a non-empty name of letters, digits, '_', '-', '.'",
                        s.domain
                    ),
                ));
            }
            if !seen.insert(s.domain.as_str()) {
                return Err(err(
                    "source.domain",
                    format!(
                        "\"{}\" appears twice: merge its paths into one [[source]]",
                        s.domain
                    ),
                ));
            }
            if s.paths.is_empty() {
                return Err(err(
                    "source.paths",
                    format!("source \"{}\" has no paths", s.domain),
                ));
            }
        }
        Ok(())
    }
}

/// Options of one prepare.
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// Skip (and report) files that fail to decode instead of stopping.
    pub skip_bad: bool,
    /// Rebuild even when the manifest says the output is up to date.
    pub force: bool,
}

/// Where a prepare is, for progress bars.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub docs: u64,
    pub text_bytes: u64,
    pub tokens: u64,
    /// Bytes read from disk (compressed) out of `disk_bytes_total`.
    pub disk_bytes: u64,
    pub disk_bytes_total: u64,
}

/// The closing report of a prepare.
#[derive(Debug, Clone)]
pub struct PrepareReport {
    pub out: PathBuf,
    /// Nothing was done: the manifest matched the inputs.
    pub up_to_date: bool,
    pub manifest: Manifest,
    pub seconds: f64,
}

impl PrepareReport {
    /// One line per domain plus a total, for the terminal.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if self.up_to_date {
            s.push_str(&format!(
                "{} is up to date (same inputs and tokenizer): nothing to do\n",
                self.out.display()
            ));
        }
        s.push_str(&format!(
            "{:<16} {:>6} {:>10} {:>12} {:>12} {:>12} {:>7} {:>8} {:>5}\n",
            "domain", "files", "docs", "train tok", "val tok", "bytes", "empty", "bad utf8", "bad"
        ));
        let (mut docs, mut tok, mut bytes) = (0u64, 0u64, 0u64);
        for d in &self.manifest.domains {
            let st = &d.stats;
            s.push_str(&format!(
                "{:<16} {:>6} {:>10} {:>12} {:>12} {:>12} {:>7} {:>8} {:>5}\n",
                d.name,
                st.files,
                d.train.docs + d.val.docs,
                d.train.tokens,
                d.val.tokens,
                st.text_bytes,
                st.empty_docs,
                st.invalid_utf8_docs,
                st.bad_files.len()
            ));
            for b in &st.bad_files {
                s.push_str(&format!("  skipped: {b}\n"));
            }
            docs += d.train.docs + d.val.docs;
            tok += d.train.tokens + d.val.tokens;
            bytes += st.text_bytes;
        }
        if !self.up_to_date && self.seconds > 0.0 {
            s.push_str(&format!(
                "total: {docs} documents, {tok} tokens, {:.1} MB of text in {:.1} s ({:.2} MB/s)\n",
                bytes as f64 / 1e6,
                self.seconds,
                bytes as f64 / 1e6 / self.seconds
            ));
        }
        s
    }
}

/// Text bytes per chunk handed to the tokenizer: large enough to keep every
/// core busy, small enough that a few in flight stay far below 1 GB.
const CHUNK_BYTES: usize = 8 << 20;

enum Msg {
    Docs(Vec<(usize, Document)>),
    BadFile { domain: usize, reason: String },
    Failed(DataError),
}

fn fingerprint(
    spec: &DataSpec,
    tok_hash: &str,
    files: &[Vec<SourceFile>],
) -> Result<String, DataError> {
    let mut h = Sha256::new();
    let key = serde_json::json!({
        "sources": spec.sources,
        "val_fraction": spec.val_fraction,
        "split_seed": spec.split_seed,
        "shard_tokens": spec.shard_tokens,
        "tokenizer": tok_hash,
        "manifest_version": MANIFEST_VERSION,
    });
    h.update(key.to_string().as_bytes());
    for (d, fs) in files.iter().enumerate() {
        for f in fs {
            h.update(format!("{d}\t{}\t{}\t{}\n", f.path.display(), f.size, f.modified).as_bytes());
        }
    }
    Ok(hex(&h.finalize()))
}

/// True when document `text` goes to validation.
pub fn is_val(text: &str, val_fraction: f64, seed: u64) -> bool {
    if val_fraction <= 0.0 {
        return false;
    }
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(text.as_bytes(), seed);
    // Top 53 bits as a uniform number in [0, 1).
    ((h >> 11) as f64 / (1u64 << 53) as f64) < val_fraction
}

/// Reads all sources in order on a background thread.
fn spawn_reader(
    sources: Vec<SourceSpec>,
    files: Vec<Vec<SourceFile>>,
    skip_bad: bool,
    disk_bytes: Arc<AtomicU64>,
) -> Receiver<Msg> {
    let (tx, rx) = sync_channel::<Msg>(2);
    std::thread::spawn(move || {
        let mut chunk: Vec<(usize, Document)> = Vec::new();
        let mut chunk_bytes = 0usize;
        for (d, (spec, files)) in sources.iter().zip(&files).enumerate() {
            for file in files {
                let before = disk_bytes.load(Ordering::Relaxed);
                let result = open_file(file, spec, disk_bytes.clone()).and_then(|docs| {
                    for doc in docs {
                        let doc = doc?;
                        chunk_bytes += doc.text.len();
                        chunk.push((d, doc));
                        if chunk_bytes >= CHUNK_BYTES {
                            chunk_bytes = 0;
                            if tx.send(Msg::Docs(std::mem::take(&mut chunk))).is_err() {
                                return Ok(false);
                            }
                        }
                    }
                    Ok(true)
                });
                // Progress counts the whole file once it is done (Parquet
                // and gzip report bytes only roughly while reading).
                disk_bytes.store(before + file.size, Ordering::Relaxed);
                match result {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) if skip_bad => {
                        if tx
                            .send(Msg::BadFile {
                                domain: d,
                                reason: e.to_string(),
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Msg::Failed(e));
                        return;
                    }
                }
                if !chunk.is_empty() && tx.send(Msg::Docs(std::mem::take(&mut chunk))).is_err() {
                    return;
                }
                chunk_bytes = 0;
            }
        }
    });
    rx
}

/// A domain's open shard writers and counters.
struct DomainOut {
    name: String,
    dir: PathBuf,
    train: SplitOut,
    val: SplitOut,
    stats: SourceStats,
}

struct SplitOut {
    prefix: &'static str,
    writer: Option<ShardWriter>,
    manifest: SplitManifest,
}

impl SplitOut {
    fn new(prefix: &'static str) -> SplitOut {
        SplitOut {
            prefix,
            writer: None,
            manifest: SplitManifest::default(),
        }
    }

    fn push(
        &mut self,
        dir: &Path,
        ids: &[u32],
        eot: u32,
        vocab: usize,
        shard_tokens: u64,
    ) -> Result<(), DataError> {
        if self.writer.is_none() {
            let name = format!("{}-{:05}.bin", self.prefix, self.manifest.shards.len());
            self.writer = Some(ShardWriter::create(&dir.join(name), vocab)?);
        }
        if let Some(w) = self.writer.as_mut() {
            w.push_doc(ids, eot)?;
            self.manifest.docs += 1;
            self.manifest.tokens += ids.len() as u64 + 1;
            if w.n_tokens() >= shard_tokens {
                self.close()?;
            }
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), DataError> {
        if let Some(w) = self.writer.take() {
            self.manifest.shards.push(w.finish()?);
        }
        Ok(())
    }
}

/// Prepares `spec` into `out` with `tokenizer`. `progress` is called after
/// every chunk. Skips the work when `out` already holds a manifest for the
/// same inputs and tokenizer (unless `opts.force`).
/// The manifest of `out` when it was prepared from the same sources and
/// tokenizer (fingerprint) and its shards open.
fn up_to_date(out: &Path, fp: &str, tok_hash: &str) -> Option<Manifest> {
    let m = Manifest::read(out).ok()?;
    let fresh = m.fingerprint == fp
        && crate::dataset::Dataset::open_header_only(out, Some(tok_hash)).is_ok();
    fresh.then_some(m)
}

/// Creates `out` and removes its manifest: while shards are being replaced,
/// an interrupted prepare leaves a directory that refuses to load, never a
/// stale mix.
fn open_for_rewrite(out: &Path) -> Result<(), DataError> {
    std::fs::create_dir_all(out).map_err(|e| DataError::Write {
        path: out.to_path_buf(),
        source: e,
    })?;
    let manifest_path = out.join(MANIFEST_FILE);
    match std::fs::remove_file(&manifest_path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DataError::Write {
            path: manifest_path,
            source: e,
        }),
    }
}

pub fn prepare(
    spec: &DataSpec,
    out: &Path,
    tokenizer: &Tokenizer,
    opts: &PrepareOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<PrepareReport, DataError> {
    let started = Instant::now();
    let tok_hash = tokenizer_hash(tokenizer)?;
    let files: Vec<Vec<SourceFile>> = spec
        .sources
        .iter()
        .map(resolve_files)
        .collect::<Result<_, _>>()?;
    let fp = fingerprint(spec, &tok_hash, &files)?;
    if !opts.force {
        if let Some(m) = up_to_date(out, &fp, &tok_hash) {
            return Ok(PrepareReport {
                out: out.to_path_buf(),
                up_to_date: true,
                manifest: m,
                seconds: 0.0,
            });
        }
    }
    open_for_rewrite(out)?;
    let manifest_path = out.join(MANIFEST_FILE);
    tokenizer.save(&out.join(DATASET_TOKENIZER_FILE))?;

    let vocab = tokenizer.vocab_size();
    let eot = tokenizer.eot_id();
    let mut domains: Vec<DomainOut> = spec
        .sources
        .iter()
        .zip(&files)
        .map(|(s, f)| DomainOut {
            name: s.domain.clone(),
            dir: out.join(&s.domain),
            train: SplitOut::new("train"),
            val: SplitOut::new("val"),
            stats: SourceStats {
                files: f.len() as u64,
                ..SourceStats::default()
            },
        })
        .collect();
    for d in &domains {
        remove_old_shards(&d.dir)?;
    }

    let disk_bytes = Arc::new(AtomicU64::new(0));
    let mut prog = Progress {
        disk_bytes_total: files.iter().flatten().map(|f| f.size).sum(),
        ..Progress::default()
    };
    let rx = spawn_reader(
        spec.sources.clone(),
        files.clone(),
        opts.skip_bad,
        disk_bytes.clone(),
    );
    for msg in rx {
        match msg {
            Msg::Failed(e) => return Err(e),
            Msg::BadFile { domain, reason } => domains[domain].stats.bad_files.push(reason),
            Msg::Docs(chunk) => {
                let mut kept: Vec<(usize, Document)> = Vec::with_capacity(chunk.len());
                for (d, doc) in chunk {
                    let st = &mut domains[d].stats;
                    st.docs_read += 1;
                    st.invalid_utf8_docs += doc.replaced_utf8 as u64;
                    // Whitespace-only documents carry nothing to learn but
                    // would still cost an <|endoftext|> each.
                    if doc.text.trim().is_empty() {
                        st.empty_docs += 1;
                        continue;
                    }
                    st.text_bytes += doc.text.len() as u64;
                    prog.text_bytes += doc.text.len() as u64;
                    kept.push((d, doc));
                }
                let texts: Vec<&str> = kept.iter().map(|(_, doc)| doc.text.as_str()).collect();
                let ids = tokenizer.encode_each(&texts)?;
                for ((d, doc), ids) in kept.iter().zip(&ids) {
                    let dom = &mut domains[*d];
                    let split = if is_val(&doc.text, spec.val_fraction, spec.split_seed) {
                        &mut dom.val
                    } else {
                        &mut dom.train
                    };
                    split.push(&dom.dir, ids, eot, vocab, spec.shard_tokens)?;
                    prog.tokens += ids.len() as u64 + 1;
                }
                prog.docs += kept.len() as u64;
                prog.disk_bytes = disk_bytes.load(Ordering::Relaxed);
                progress(&prog);
            }
        }
    }
    let mut out_domains = Vec::new();
    for mut d in domains {
        d.train.close()?;
        d.val.close()?;
        out_domains.push(DomainManifest {
            name: d.name,
            train: d.train.manifest,
            val: d.val.manifest,
            stats: d.stats,
        });
    }
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        tokenizer_sha256: tok_hash,
        vocab_size: vocab,
        eot_id: eot,
        dtype: TokenDtype::for_vocab(vocab).name().into(),
        val_fraction: spec.val_fraction,
        fingerprint: fp,
        domains: out_domains,
    };
    let json = serde_json::to_string_pretty(&manifest).map_err(|e| DataError::BadManifest {
        path: manifest_path.clone(),
        reason: e.to_string(),
    })?;
    write_atomic(&manifest_path, json.as_bytes())?;
    prog.disk_bytes = prog.disk_bytes_total;
    progress(&prog);
    Ok(PrepareReport {
        out: out.to_path_buf(),
        up_to_date: false,
        manifest,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Shards of an earlier prepare in a domain directory: replaced wholesale.
fn remove_old_shards(dir: &Path) -> Result<(), DataError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".bin") || name.contains(".bin.tmp-") {
            std::fs::remove_file(&p).map_err(|e| DataError::Write { path: p, source: e })?;
        }
    }
    Ok(())
}

/// temp, fsync, rename, fsync the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
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
        DataError::Write {
            path: path.to_path_buf(),
            source: e,
        }
    })
}

/// Every non-empty document text of `spec`'s sources, streamed in order
/// (for tokenizer training). Stops after `max_bytes` of text. A file that
/// fails to decode ends the stream with its error in `error`.
pub struct SpecTexts {
    rx: Receiver<Msg>,
    buf: std::vec::IntoIter<(usize, Document)>,
    left: u64,
    pub error: Option<DataError>,
}

impl SpecTexts {
    pub fn open(spec: &DataSpec, max_bytes: u64, skip_bad: bool) -> Result<SpecTexts, DataError> {
        let files: Vec<Vec<SourceFile>> = spec
            .sources
            .iter()
            .map(resolve_files)
            .collect::<Result<_, _>>()?;
        let rx = spawn_reader(spec.sources.clone(), files, skip_bad, Arc::default());
        Ok(SpecTexts {
            rx,
            buf: Vec::new().into_iter(),
            left: max_bytes,
            error: None,
        })
    }
}

impl Iterator for SpecTexts {
    type Item = String;
    fn next(&mut self) -> Option<String> {
        loop {
            if self.left == 0 {
                return None;
            }
            if let Some((_, doc)) = self.buf.next() {
                if doc.text.trim().is_empty() {
                    continue;
                }
                self.left = self.left.saturating_sub(doc.text.len() as u64);
                return Some(doc.text);
            }
            match self.rx.recv().ok()? {
                Msg::Docs(chunk) => self.buf = chunk.into_iter(),
                Msg::Failed(e) => {
                    self.error = Some(e);
                    return None;
                }
                Msg::BadFile { .. } => {}
            }
        }
    }
}
