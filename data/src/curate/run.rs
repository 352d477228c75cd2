//! Running a recipe: score, dedup, select.
//!
//! 1. **Score**: the sources are read in order and cut into parts of
//!    `part_docs` documents per domain. A part whose files all exist is
//!    skipped (it was scored by an earlier run with the same stage config and
//!    inputs: `stage.json`); otherwise its missing stages run in parallel over
//!    its documents and each writes its part file atomically. Filters write
//!    attributes, dedup stages a sketch per document.
//! 2. **Dedup**: each dedup stage reads its sketches in document order into
//!    one index (ids global across domains, the first of a cluster kept) and
//!    writes its attribute parts.
//! 3. **Select**: the sources are read again beside every stage's attributes,
//!    the keep expression decides, and the kept documents are written as
//!    `kept/DOMAIN/part-NNNNN.jsonl`; then `REPORT.md`.
//!
//! Every output is a function of the inputs and the recipe: a killed run,
//! run again, skips the finished parts and ends with the same bytes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::error::CurateError;
use super::files::{self, Layout};
use super::keep::{Type, Value as KeepValue};
use super::minhash::{DedupIndex, DocSketch};
use super::recipe::Recipe;
use super::report::{DomainStats, Report, StageStats};
use crate::sources::{open_file, Document};

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct CurateOptions {
    /// Output directory in place of the recipe's `out`.
    pub out: Option<PathBuf>,
    /// Test hook: abort the process (as a kill would) while writing the first
    /// part that takes the scored documents of this run past this count,
    /// leaving a half-written temporary file.
    pub abort_after_docs: Option<u64>,
}

/// The phase a run is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Score,
    Dedup,
    Select,
}

/// Where a run is, for progress bars.
#[derive(Debug, Clone)]
pub struct CurateProgress {
    pub phase: Phase,
    pub docs: u64,
    /// Bytes read from disk (compressed) out of `disk_bytes_total`.
    pub disk_bytes: u64,
    pub disk_bytes_total: u64,
}

/// CPU time a stage spent scoring in this run (summed over threads).
#[derive(Debug, Clone)]
pub struct StageTiming {
    pub name: String,
    pub docs: u64,
    pub cpu_seconds: f64,
}

/// The closing summary of a run.
#[derive(Debug, Clone)]
pub struct CurateSummary {
    pub out: PathBuf,
    pub report: Report,
    /// Parts scored in this run and parts found complete from an earlier one.
    pub parts_scored: usize,
    pub parts_reused: usize,
    pub timings: Vec<StageTiming>,
    pub seconds: f64,
}

/// Streams each domain's documents in parts of `part_docs`, calling
/// `f(domain, part, docs)`. Returns the number of parts per domain.
fn for_each_part(
    recipe: &Recipe,
    disk_bytes: &Arc<AtomicU64>,
    f: &mut dyn FnMut(usize, usize, Vec<Document>) -> Result<(), CurateError>,
) -> Result<Vec<usize>, CurateError> {
    let mut parts = Vec::new();
    let n = recipe.part_docs as usize;
    for (d, (spec, files)) in recipe.sources.iter().zip(&recipe.files).enumerate() {
        let mut part = 0;
        let mut docs = Vec::with_capacity(n.min(1 << 16));
        for file in files {
            let before = disk_bytes.load(Ordering::Relaxed);
            for doc in open_file(file, spec, disk_bytes.clone())? {
                docs.push(doc?);
                if docs.len() == n {
                    f(d, part, std::mem::take(&mut docs))?;
                    part += 1;
                }
            }
            disk_bytes.store(before + file.size, Ordering::Relaxed);
        }
        if !docs.is_empty() {
            f(d, part, docs)?;
            part += 1;
        }
        parts.push(part);
    }
    Ok(parts)
}

/// A document's key in attribute files: its id, or a hash of its text.
pub fn doc_id(doc: &Document) -> String {
    match &doc.id {
        Some(id) => id.clone(),
        None => format!(
            "xxh3:{:016x}",
            xxhash_rust::xxh3::xxh3_64(doc.text.as_bytes())
        ),
    }
}

/// What the attributes of every stage depend on besides its own config.
fn inputs_fingerprint(recipe: &Recipe) -> String {
    let mut h = Sha256::new();
    let key = json!({"sources": recipe.sources, "part_docs": recipe.part_docs, "version": 1});
    h.update(key.to_string().as_bytes());
    for (d, fs) in recipe.files.iter().enumerate() {
        for f in fs {
            h.update(format!("{d}\t{}\t{}\t{}\n", f.path.display(), f.size, f.modified).as_bytes());
        }
    }
    crate::dataset::hex(&h.finalize())
}

/// Keeps each stage's directory when its `stage.json` matches this run,
/// else empties it: attributes are reused only when scored the same way.
fn prepare_stage_dirs(recipe: &Recipe, layout: &Layout) -> Result<(), CurateError> {
    let inputs = inputs_fingerprint(recipe);
    for s in &recipe.stages {
        let dir = layout.stage_dir(&s.name);
        let meta =
            json!({"kind": s.kind.kind_name(), "config": s.kind.config_json(), "inputs": inputs});
        let want = serde_json::to_string_pretty(&meta).unwrap_or_default();
        let path = dir.join("stage.json");
        if std::fs::read_to_string(&path).ok().as_deref() == Some(want.as_str()) {
            continue;
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| files::write_error(&dir, e))?;
        }
        files::write_atomic(&path, want.as_bytes())?;
    }
    Ok(())
}

/// Runs `recipe`; `progress` is called after every part.
pub fn curate(
    recipe: &Recipe,
    opts: &CurateOptions,
    progress: &mut dyn FnMut(&CurateProgress),
) -> Result<CurateSummary, CurateError> {
    let started = Instant::now();
    let out = opts
        .out
        .clone()
        .or_else(|| recipe.out.clone())
        .ok_or_else(|| CurateError::Recipe {
            path: recipe.path.clone(),
            field: "out".into(),
            message: "no output directory: set out = \"DIR\" in the recipe or pass --out DIR"
                .into(),
        })?;
    let layout = Layout { out: out.clone() };
    std::fs::create_dir_all(&out).map_err(|e| files::write_error(&out, e))?;
    files::remove_tmp_files(&out)?;
    // REPORT.md exists only after a run that finished.
    match std::fs::remove_file(layout.report()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(files::write_error(&layout.report(), e))
        }
        _ => {}
    }
    prepare_stage_dirs(recipe, &layout)?;
    let total = recipe.files.iter().flatten().map(|f| f.size).sum();
    let (parts, scored, timings) = score(recipe, &layout, opts, total, progress)?;
    let clusters = dedup(recipe, &layout, &parts)?;
    let quantiles = super::ranked::rank(recipe, &layout, &parts)?;
    let mut report = select(recipe, &layout, total, progress)?;
    report.clusters = clusters;
    report.score_quantiles = quantiles;
    files::write_atomic(&layout.report(), report.markdown().as_bytes())?;
    Ok(CurateSummary {
        out,
        report,
        parts_scored: scored,
        parts_reused: parts.iter().sum::<usize>() - scored,
        timings,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One stage's result for one document.
enum Scored {
    Attributes(Value),
    Sketch(DocSketch),
}

type ScoreResult = (Vec<usize>, usize, Vec<StageTiming>);

/// Phase 1: attributes and sketches for every part not yet scored.
fn score(
    recipe: &Recipe,
    layout: &Layout,
    opts: &CurateOptions,
    total: u64,
    progress: &mut dyn FnMut(&CurateProgress),
) -> Result<ScoreResult, CurateError> {
    let nanos: Vec<AtomicU64> = recipe.stages.iter().map(|_| AtomicU64::new(0)).collect();
    let mut stage_docs = vec![0u64; recipe.stages.len()];
    let disk_bytes = Arc::new(AtomicU64::new(0));
    let (mut docs_seen, mut docs_scored, mut parts_scored) = (0u64, 0u64, 0usize);
    let parts = for_each_part(recipe, &disk_bytes.clone(), &mut |d, k, docs| {
        let domain = &recipe.sources[d].domain;
        let target = |i: usize| {
            let s = &recipe.stages[i];
            if s.kind.is_dedup() {
                layout.sketches(&s.name, domain, k)
            } else if s.kind.ranked().is_some() {
                layout.scores(&s.name, domain, k)
            } else {
                layout.attributes(&s.name, domain, k)
            }
        };
        let missing: Vec<usize> = (0..recipe.stages.len())
            .filter(|&i| !target(i).exists())
            .collect();
        let (ranked, needed): (Vec<usize>, Vec<usize>) = missing
            .iter()
            .partition(|&&i| recipe.stages[i].kind.ranked().is_some());
        docs_seen += docs.len() as u64;
        // Ranked stages score the whole part at once (a model batches it).
        for &i in &ranked {
            let t = Instant::now();
            let bytes = super::ranked::ranked_part(&recipe.stages[i], &docs)?;
            nanos[i].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            stage_docs[i] += docs.len() as u64;
            files::write_atomic(&target(i), &bytes)?;
        }
        if !ranked.is_empty() && needed.is_empty() {
            docs_scored += docs.len() as u64;
            parts_scored += 1;
        }
        if !needed.is_empty() {
            let results: Vec<(String, Vec<Scored>)> = docs
                .par_iter()
                .map(|doc| {
                    let row = needed
                        .iter()
                        .map(|&i| {
                            let t = Instant::now();
                            let kind = &recipe.stages[i].kind;
                            let r = match kind.sketch(&doc.text) {
                                Some(s) => Scored::Sketch(s),
                                None => {
                                    Scored::Attributes(kind.score(&doc.text).unwrap_or(Value::Null))
                                }
                            };
                            nanos[i].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                            r
                        })
                        .collect();
                    (doc_id(doc), row)
                })
                .collect();
            docs_scored += docs.len() as u64;
            for (col, &i) in needed.iter().enumerate() {
                stage_docs[i] += docs.len() as u64;
                let bytes = part_bytes(&results, col);
                if opts.abort_after_docs.is_some_and(|n| docs_scored > n) {
                    abort_mid_write(&target(i), &bytes);
                }
                files::write_atomic(&target(i), &bytes)?;
            }
            parts_scored += 1;
        }
        progress(&CurateProgress {
            phase: Phase::Score,
            docs: docs_seen,
            disk_bytes: disk_bytes.load(Ordering::Relaxed),
            disk_bytes_total: total,
        });
        Ok(())
    })?;
    let timings = recipe
        .stages
        .iter()
        .zip(&nanos)
        .zip(stage_docs)
        .map(|((s, n), docs)| StageTiming {
            name: s.name.clone(),
            docs,
            cpu_seconds: n.load(Ordering::Relaxed) as f64 * 1e-9,
        })
        .collect();
    Ok((parts, parts_scored, timings))
}

/// One stage's part file: gzipped JSONL attributes or sketch records.
fn part_bytes(results: &[(String, Vec<Scored>)], col: usize) -> Vec<u8> {
    if let Some((_, row)) = results.first() {
        if matches!(row[col], Scored::Sketch(_)) {
            let sketches: Vec<(String, DocSketch)> = results
                .iter()
                .filter_map(|(id, row)| match &row[col] {
                    Scored::Sketch(s) => Some((id.clone(), s.clone())),
                    Scored::Attributes(_) => None,
                })
                .collect();
            return files::encode_sketches(&sketches);
        }
    }
    let mut text = String::new();
    for (id, row) in results {
        if let Scored::Attributes(a) = &row[col] {
            text.push_str(&json!({"id": id, "attributes": a}).to_string());
            text.push('\n');
        }
    }
    files::gzip(text.as_bytes())
}

/// The test hook: half a temporary file on disk, then die as a kill would.
fn abort_mid_write(path: &Path, bytes: &[u8]) -> ! {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(files::tmp_path(path), &bytes[..bytes.len() / 2]);
    std::process::abort()
}

/// Index entries per stream (exact + each band) held in memory before a
/// sorted run is spilled: 12 bytes each, so at most ~25 MB per stream.
const SPILL_ENTRIES: usize = 1 << 21;

/// Phase 2: clusters of each dedup stage, written as its attributes.
fn dedup(
    recipe: &Recipe,
    layout: &Layout,
    parts: &[usize],
) -> Result<Vec<(String, super::minhash::ClusterReport)>, CurateError> {
    let mut reports = Vec::new();
    for s in recipe.stages.iter().filter(|s| s.kind.is_dedup()) {
        // Bounded memory: past SPILL_ENTRIES per band the index writes
        // sorted runs here and merges them when resolving.
        let spill = layout.stage_dir(&s.name).join("spill");
        if spill.exists() {
            std::fs::remove_dir_all(&spill).map_err(|e| files::write_error(&spill, e))?;
        }
        std::fs::create_dir_all(&spill).map_err(|e| files::write_error(&spill, e))?;
        let mut index = DedupIndex::with_spill(s.kind.num_bands(), &spill, SPILL_ENTRIES);
        for (spec, &n) in recipe.sources.iter().zip(parts) {
            for k in 0..n {
                for (_, sk) in files::read_sketches(&layout.sketches(&s.name, &spec.domain, k))? {
                    index.insert(&sk)?;
                }
            }
        }
        let clusters = index.resolve()?;
        std::fs::remove_dir_all(&spill).map_err(|e| files::write_error(&spill, e))?;
        let mut size = vec![0u32; clusters.len()];
        for g in 0..clusters.len() as u32 {
            if let Some(r) = clusters.root(g) {
                size[r as usize] += 1;
            }
        }
        let mut g = 0u32;
        for (spec, &n) in recipe.sources.iter().zip(parts) {
            for k in 0..n {
                let mut text = String::new();
                // Ids are read again rather than held for the whole corpus.
                for (id, _) in files::read_sketches(&layout.sketches(&s.name, &spec.domain, k))? {
                    let root = clusters.root(g).unwrap_or(g);
                    let a = json!({"keep": root == g, "duplicate": root != g, "cluster": root, "cluster_size": size[root as usize]});
                    text.push_str(&json!({"id": id, "attributes": a}).to_string());
                    text.push('\n');
                    g += 1;
                }
                files::write_atomic(
                    &layout.attributes(&s.name, &spec.domain, k),
                    &files::gzip(text.as_bytes()),
                )?;
            }
        }
        reports.push((s.name.clone(), clusters.report()));
    }
    Ok(reports)
}

/// One attribute of one document, as the keep expression reads it.
fn attribute<'a>(
    attrs: &'a [Value],
    stage: usize,
    field: &str,
    ty: Type,
) -> Result<KeepValue<'a>, String> {
    let v = attrs
        .get(stage)
        .and_then(|a| a.get("attributes"))
        .and_then(|a| a.get(field));
    match (ty, v) {
        (Type::Bool, Some(Value::Bool(b))) => Ok(KeepValue::Bool(*b)),
        (Type::Num, Some(Value::Number(n))) => Ok(KeepValue::Num(n.as_f64().unwrap_or(f64::NAN))),
        (Type::Str, Some(Value::String(s))) => Ok(KeepValue::Str(s)),
        _ => Err(format!("attribute `{field}` is missing or not {ty:?}")),
    }
}

/// Phase 3: the keep expression over every document; kept ones written.
fn select(
    recipe: &Recipe,
    layout: &Layout,
    total: u64,
    progress: &mut dyn FnMut(&CurateProgress),
) -> Result<Report, CurateError> {
    let kept_dir = layout.kept_dir();
    if kept_dir.exists() {
        std::fs::remove_dir_all(&kept_dir).map_err(|e| files::write_error(&kept_dir, e))?;
    }
    let n_domains = recipe.sources.len();
    let mut report = Report {
        keep: recipe.keep_src.clone(),
        domains: recipe
            .sources
            .iter()
            .map(|s| DomainStats {
                name: s.domain.clone(),
                ..Default::default()
            })
            .collect(),
        stages: recipe
            .stages
            .iter()
            .map(|s| StageStats {
                name: s.name.clone(),
                kind: s.kind.kind_name().to_string(),
                dropped_by_domain: vec![Default::default(); n_domains],
                ..Default::default()
            })
            .collect(),
        clusters: Vec::new(),
        score_quantiles: Vec::new(),
    };
    let disk_bytes = Arc::new(AtomicU64::new(0));
    let mut docs_seen = 0u64;
    for_each_part(recipe, &disk_bytes.clone(), &mut |d, k, docs| {
        let domain = &recipe.sources[d].domain;
        let mut columns = Vec::new();
        for s in &recipe.stages {
            let path = layout.attributes(&s.name, domain, k);
            let lines = files::read_gz_lines(&path)?;
            if lines.len() != docs.len() {
                return Err(CurateError::Attributes {
                    path,
                    line: lines.len(),
                    reason: format!(
                        "{} lines for a part of {} documents",
                        lines.len(),
                        docs.len()
                    ),
                });
            }
            columns.push((path, lines));
        }
        let mut out = String::new();
        for (j, doc) in docs.iter().enumerate() {
            let mut attrs = Vec::with_capacity(columns.len());
            for (path, lines) in &columns {
                attrs.push(serde_json::from_str::<Value>(&lines[j]).map_err(|e| {
                    CurateError::Attributes {
                        path: path.clone(),
                        line: j + 1,
                        reason: e.to_string(),
                    }
                })?);
            }
            let get = |stage: usize, field: &str, ty: Type| attribute(&attrs, stage, field, ty);
            let kept = recipe
                .keep
                .eval(&get)
                .map_err(|reason| CurateError::Attributes {
                    path: columns.first().map(|c| c.0.clone()).unwrap_or_default(),
                    line: j + 1,
                    reason,
                })?;
            let drops: Vec<(usize, &str)> = attrs
                .iter()
                .enumerate()
                .filter(|(_, a)| a["attributes"]["keep"] == Value::Bool(false))
                .map(|(i, a)| (i, a["attributes"]["reason"].as_str().unwrap_or("duplicate")))
                .collect();
            let id = doc_id(doc);
            report.add_doc(d, &id, &doc.text, kept, &drops);
            if kept {
                let mut line = json!({"id": id, "text": doc.text});
                if let Some(m) = &doc.metadata {
                    line["metadata"] = m.clone();
                }
                out.push_str(&line.to_string());
                out.push('\n');
            }
        }
        files::write_atomic(&layout.kept(domain, k), out.as_bytes())?;
        docs_seen += docs.len() as u64;
        progress(&CurateProgress {
            phase: Phase::Select,
            docs: docs_seen,
            disk_bytes: disk_bytes.load(Ordering::Relaxed),
            disk_bytes_total: total,
        });
        Ok(())
    })?;
    Ok(report)
}
