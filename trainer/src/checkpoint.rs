//! Checkpoints: `RUN_DIR/checkpoints/step-NNNNNNNN/` with model weights,
//! optimizer state, trainer state, resolved config, tokenizer and a manifest
//! of SHA-256 digests. Written into a temp dir (each file fsynced), then
//! renamed into place, so a crash mid-save leaves the previous checkpoint
//! intact; verified on load so a truncated or altered file is an error.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainerError};
use crate::fsutil::sync_dir;

pub const MANIFEST: &str = "manifest.json";
const FORMAT: &str = "kiln-checkpoint";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub step: u64,
    /// What the checkpoint holds (absent in older manifests: a full model).
    #[serde(default)]
    pub content: Content,
    /// file name -> (bytes, sha256 hex)
    pub files: BTreeMap<String, FileEntry>,
}

/// What a checkpoint's weights are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    /// Every parameter of the model (and the optimizer state of the trainable ones).
    #[default]
    Full,
    /// Only adapter tensors, over a base model whose weights hash to
    /// `base_sha256` ([`tensors_sha256`]); loading over another base is an error.
    Adapters { base_sha256: String },
    /// A ZeRO run of `world_size` ranks: each rank's parameter and
    /// optimizer segments in `shard-RRRRR.safetensors`, the rest (frozen
    /// weights, state, config, tokenizer, `shards.json`) from rank 0.
    /// Loading joins the segments into the full model and state.
    Sharded { world_size: usize, strategy: String },
}

impl Content {
    /// The base hash of an adapter checkpoint.
    pub fn base_sha256(&self) -> Option<&str> {
        match self {
            Content::Adapters { base_sha256 } => Some(base_sha256),
            _ => None,
        }
    }
}

/// SHA-256 over the names, shapes and f32 values (little-endian) of a set of
/// tensors in name order: the identity of a base model's weights.
pub fn tensors_sha256(tensors: &BTreeMap<String, kiln_models::NamedTensor>) -> String {
    let mut h = Sha256::new();
    for (name, t) in tensors {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((t.shape.len() as u64).to_le_bytes());
        for d in &t.shape {
            h.update((*d as u64).to_le_bytes());
        }
        for v in &t.data {
            h.update(v.to_le_bytes());
        }
    }
    hex(&h.finalize())
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FileEntry {
    pub bytes: u64,
    pub sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Writes a checkpoint atomically and returns its directory.
pub fn save(
    run_dir: &Path,
    step: u64,
    content: &Content,
    files: Vec<(&str, Vec<u8>)>,
) -> Result<PathBuf> {
    let parts: Vec<FilePart<'_>> = files
        .into_iter()
        .map(|(name, bytes)| -> FilePart<'_> { (name, Box::new(move || Ok(bytes))) })
        .collect();
    save_parts(run_dir, step, content, parts)
}

/// A checkpoint file's name and the function that makes its bytes.
pub type FilePart<'a> = (&'a str, Box<dyn FnOnce() -> Result<Vec<u8>> + 'a>);

/// As [`save`], each file's bytes made, written and dropped in turn, so a
/// save holds one file's bytes at a time (the optimizer state alone is
/// twice the model).
pub fn save_parts(
    run_dir: &Path,
    step: u64,
    content: &Content,
    files: Vec<FilePart<'_>>,
) -> Result<PathBuf> {
    let root = checkpoints_dir(run_dir);
    fs::create_dir_all(&root).map_err(|e| TrainerError::io(&root, e))?;
    let final_dir = root.join(step_dir_name(step));
    let tmp = root.join(format!(
        ".tmp-{}-{}",
        step_dir_name(step),
        std::process::id()
    ));
    let io = |p: &Path, e| TrainerError::io(p, e);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let manifest = write_files(&tmp, step, content, files)?;
    commit(&root, &tmp, &final_dir, &manifest)?;
    Ok(final_dir)
}

/// Writes `files` into `dir` (each fsynced) and returns their manifest.
fn write_files(
    dir: &Path,
    step: u64,
    content: &Content,
    files: Vec<FilePart<'_>>,
) -> Result<Manifest> {
    let mut manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        step,
        content: content.clone(),
        files: BTreeMap::new(),
    };
    for (name, make) in files {
        let entry = write_file(dir, name, &make()?)?;
        manifest.files.insert(name.to_string(), entry);
    }
    Ok(manifest)
}

/// Writes one checkpoint file and fsyncs it; returns its manifest entry.
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<FileEntry> {
    let path = dir.join(name);
    let io = |e| TrainerError::io(&path, e);
    let mut f = fs::File::create(&path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(FileEntry {
        bytes: bytes.len() as u64,
        sha256: hex(&Sha256::digest(bytes)),
    })
}

/// Writes the manifest into `tmp` (last: a checkpoint without one is not
/// complete), then renames `tmp` to `final_dir`.
fn commit(root: &Path, tmp: &Path, final_dir: &Path, manifest: &Manifest) -> Result<()> {
    let io = |p: &Path, e| TrainerError::io(p, e);
    let mpath = tmp.join(MANIFEST);
    let mbytes = serde_json::to_vec_pretty(manifest).map_err(|e| {
        TrainerError::checkpoint(&mpath, format!("cannot encode the manifest: {e}"))
    })?;
    write_file(tmp, MANIFEST, &mbytes)?;
    sync_dir(tmp).map_err(|e| io(tmp, e))?;
    if final_dir.exists() {
        // Same step saved again (e.g. after a resume): move the old one aside
        // first so there is never a moment without a complete checkpoint.
        let old = root.join(format!(
            ".old-{}-{}",
            final_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("step"),
            std::process::id()
        ));
        fs::rename(final_dir, &old).map_err(|e| io(final_dir, e))?;
        fs::rename(tmp, final_dir).map_err(|e| io(final_dir, e))?;
        let _ = fs::remove_dir_all(&old);
    } else {
        fs::rename(tmp, final_dir).map_err(|e| io(final_dir, e))?;
    }
    sync_dir(root).map_err(|e| io(root, e))?;
    Ok(())
}

/// A sharded save by every rank of `c` (they share `run_dir`): rank 0
/// makes the temp dir, each rank writes and fsyncs `mine` (its shard file),
/// then rank 0 writes `leader_files`, hashes every file into the manifest
/// and renames the directory into place. A rank that dies before the
/// rename leaves only a temp dir: the previous checkpoint stays the latest.
pub fn save_sharded(
    run_dir: &Path,
    step: u64,
    content: &Content,
    mine: FilePart<'_>,
    leader_files: Vec<FilePart<'_>>,
    c: &dyn crate::world::Collective,
) -> Result<PathBuf> {
    let root = checkpoints_dir(run_dir);
    let final_dir = root.join(step_dir_name(step));
    let tmp = root.join(format!(".tmp-{}-sharded", step_dir_name(step)));
    let leader = c.world().is_leader();
    let io = |p: &Path, e| TrainerError::io(p, e);
    if leader {
        fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        }
        fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    c.barrier()?;
    let (name, make) = mine;
    write_file(&tmp, name, &make()?)?;
    crash_point(step, c.world().rank);
    c.barrier()?;
    if leader {
        let mut manifest = write_files(&tmp, step, content, leader_files)?;
        // The other ranks' shards, read back from the shared directory.
        for r in 0..c.world().size {
            let name = shard_file_name(r);
            let path = tmp.join(&name);
            let bytes = fs::read(&path).map_err(|e| io(&path, e))?;
            manifest.files.insert(
                name,
                FileEntry {
                    bytes: bytes.len() as u64,
                    sha256: hex(&Sha256::digest(&bytes)),
                },
            );
        }
        commit(&root, &tmp, &final_dir, &manifest)?;
    }
    c.barrier()?;
    Ok(final_dir)
}

/// Fault injection for the tests of a crash mid-save:
/// `KILN_FAULT_CRASH_IN_SAVE=STEP:RANK` kills that rank (as `kill -9`
/// would) after it wrote its shard of step STEP, before the commit.
fn crash_point(step: u64, rank: usize) {
    if let Ok(v) = std::env::var("KILN_FAULT_CRASH_IN_SAVE") {
        if v == format!("{step}:{rank}") {
            eprintln!(
                "kiln: KILN_FAULT_CRASH_IN_SAVE: rank {rank} dies in the save of step {step}"
            );
            std::process::abort();
        }
    }
}

/// The file of rank `rank`'s segments in a sharded checkpoint.
pub fn shard_file_name(rank: usize) -> String {
    format!("shard-{rank:05}.safetensors")
}

/// Reads and checks every file listed in the manifest; returns their bytes.
pub fn load_verified(dir: &Path) -> Result<(Manifest, BTreeMap<String, Vec<u8>>)> {
    let mpath = dir.join(MANIFEST);
    let text = fs::read(&mpath).map_err(|e| {
        TrainerError::checkpoint(
            &mpath,
            format!("cannot read the checkpoint manifest ({e}): is {} a checkpoint directory (RUN_DIR/checkpoints/step-N)?", dir.display()),
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        TrainerError::checkpoint(
            &mpath,
            format!(
                "corrupt manifest ({e}); delete this checkpoint and resume from an earlier one"
            ),
        )
    })?;
    if manifest.format != FORMAT || manifest.version != VERSION {
        return Err(TrainerError::checkpoint(
            &mpath,
            format!(
                "format {} v{} is not {FORMAT} v{VERSION}: written by another tool or kiln version",
                manifest.format, manifest.version
            ),
        ));
    }
    let mut out = BTreeMap::new();
    for (name, entry) in &manifest.files {
        let path = dir.join(name);
        let bytes = fs::read(&path).map_err(|e| {
            TrainerError::checkpoint(&path, format!("missing checkpoint file ({e})"))
        })?;
        if bytes.len() as u64 != entry.bytes {
            return Err(TrainerError::checkpoint(
                &path,
                format!("has {} bytes, the manifest says {}: the file is truncated or altered; resume from an earlier checkpoint", bytes.len(), entry.bytes),
            ));
        }
        if hex(&Sha256::digest(&bytes)) != entry.sha256 {
            return Err(TrainerError::checkpoint(
                &path,
                "SHA-256 does not match the manifest: the file is corrupt or altered; resume from an earlier checkpoint",
            ));
        }
        out.insert(name.clone(), bytes);
    }
    Ok((manifest, out))
}

/// Complete checkpoints of a run (temp dirs of interrupted saves are ignored), by step.
pub fn list(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let root = checkpoints_dir(run_dir);
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            e.path().join(MANIFEST).exists().then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Removes all but the last `keep_last` checkpoints (and `keep`, e.g. the best)
/// and leftovers of interrupted saves.
pub fn prune(run_dir: &Path, keep_last: usize, keep: Option<u64>) {
    let all = list(run_dir);
    let cut = all.len().saturating_sub(keep_last);
    let root = checkpoints_dir(run_dir);
    for (step, path) in &all[..cut] {
        if Some(*step) != keep {
            // Rename first (atomic), then delete: a crash mid-delete must not
            // leave a half-removed `step-N` that still looks complete.
            let doomed = root.join(format!(
                ".old-{}-{}",
                step_dir_name(*step),
                std::process::id()
            ));
            if fs::rename(path, &doomed).is_ok() {
                let _ = fs::remove_dir_all(&doomed);
            }
        }
    }
    for e in fs::read_dir(&root).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(".tmp-") || name.starts_with(".old-") {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// A checkpoint directory from `RUN_DIR` (its latest) or a checkpoint path.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join(MANIFEST).exists() {
        return Ok(path.to_path_buf());
    }
    if !path.exists() {
        return Err(TrainerError::checkpoint(
            path,
            "does not exist: give a run directory or RUN_DIR/checkpoints/step-N",
        ));
    }
    match list(path).pop() {
        Some((_, dir)) => Ok(dir),
        None => Err(TrainerError::checkpoint(
            path,
            "holds no complete checkpoint (no checkpoints/step-N/manifest.json): was the run saved yet?",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_models::NamedTensor;

    fn one(name: &str, data: Vec<f32>) -> BTreeMap<String, NamedTensor> {
        let shape = vec![data.len()];
        BTreeMap::from([(name.to_string(), NamedTensor { shape, data })])
    }

    #[test]
    fn weights_hash_sees_names_shapes_and_values() {
        let a = tensors_sha256(&one("w", vec![1.0, 2.0]));
        assert_eq!(a, tensors_sha256(&one("w", vec![1.0, 2.0])));
        assert_ne!(a, tensors_sha256(&one("v", vec![1.0, 2.0])));
        assert_ne!(a, tensors_sha256(&one("w", vec![1.0, 2.5])));
        let mut reshaped = one("w", vec![1.0, 2.0]);
        reshaped.get_mut("w").expect("w").shape = vec![1, 2];
        assert_ne!(a, tensors_sha256(&reshaped));
    }

    #[test]
    fn manifest_records_content_and_old_manifests_read_as_full() {
        let tmp = tempfile::tempdir().expect("tmp");
        let content = Content::Sharded {
            world_size: 2,
            strategy: "zero1".into(),
        };
        let dir = save(tmp.path(), 3, &content, vec![("a.bin", vec![1, 2, 3])]).expect("save");
        let (m, files) = load_verified(&dir).expect("load");
        assert_eq!(m.content, content);
        assert_eq!(files["a.bin"], vec![1, 2, 3]);
        let old = r#"{"format":"kiln-checkpoint","version":1,"step":1,"files":{}}"#;
        let m: Manifest = serde_json::from_str(old).expect("old manifest");
        assert_eq!(m.content, Content::Full);
    }
}
