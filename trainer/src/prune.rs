//! `kiln prune`: unstructured or N:M pruning of a checkpoint's projections
//! by magnitude or Wanda (specs.md section 8b; the arithmetic is
//! `kiln_models::prune`). The pruned checkpoint records its masks in
//! `masks.safetensors` (1 = kept, 0 = pruned, per weight), and a run that
//! starts from it keeps those weights exactly zero (`optim::masks`).

use std::collections::BTreeMap;
use std::path::Path;

use burn::backend::Flex;
use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData};
use kiln_data::Batch;
use kiln_models::prune::{
    keep_mask, magnitude_scores, wanda_scores, Grouping, InputStats, Pattern,
};
use kiln_models::{Decoder, LanguageModel, NamedTensor, ProjectionName};

use crate::config::short_target;
use crate::error::{Result, TrainerError};
use crate::optim::groups::glob_match;
use crate::session::{self, LoadedCheckpoint};
use crate::{adapter, data_setup};

/// How projections are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `|W|`, compared across the whole projection for unstructured
    /// sparsity: Wanda's magnitude baseline (`prune_magnitude` takes one
    /// threshold per layer), which is also the classic (Han et al.) recipe.
    Magnitude,
    /// `|W_ij| * ||X_j||_2` over calibration inputs, compared per output.
    Wanda,
}

/// What `kiln prune` was asked to do, validated.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub method: Method,
    pub pattern: Pattern,
    /// Validation batches Wanda runs through the model (per block).
    pub calib_batches: usize,
    /// Globs over projection names, or short names (`q`, `down`, ...);
    /// empty: every projection but the output head.
    pub targets: Vec<String>,
}

impl PruneOptions {
    /// Checks the command's flags; every error names the flag and the fix.
    pub fn parse(
        method: &str,
        sparsity: Option<f64>,
        nm: Option<&str>,
        calib_batches: usize,
        targets: Vec<String>,
    ) -> Result<Self> {
        let method = match method {
            "magnitude" => Method::Magnitude,
            "wanda" => Method::Wanda,
            other => {
                return Err(TrainerError::invalid(
                    "--method",
                    format!("{other:?} is not a pruning method: use magnitude or wanda"),
                ))
            }
        };
        let pattern = match (sparsity, nm) {
            (Some(s), None) => {
                if !(s > 0.0 && s < 1.0) {
                    return Err(TrainerError::invalid(
                        "--sparsity",
                        format!("{s} is outside (0, 1): give the share of weights to prune, e.g. 0.5"),
                    ));
                }
                Pattern::Unstructured { sparsity: s }
            }
            (None, Some(text)) => parse_nm(text)?,
            _ => {
                return Err(TrainerError::invalid(
                    "--sparsity / --nm",
                    "give exactly one: --sparsity 0.5 (unstructured) or --nm 2:4 (keep N of every M inputs)",
                ))
            }
        };
        if method == Method::Wanda && calib_batches == 0 {
            return Err(TrainerError::invalid(
                "--calib-batches",
                "0: wanda needs at least one calibration batch",
            ));
        }
        Ok(Self {
            method,
            pattern,
            calib_batches,
            targets,
        })
    }
}

/// `N:M` with `0 < N < M`.
fn parse_nm(text: &str) -> Result<Pattern> {
    let bad = |why: &str| TrainerError::invalid("--nm", format!("{text:?}: {why}"));
    let (n, m) = text
        .split_once(':')
        .ok_or_else(|| bad("use N:M, e.g. 2:4 (keep 2 of every 4 inputs)"))?;
    let parse = |s: &str| s.trim().parse::<usize>().ok().filter(|&v| v > 0);
    let (Some(n), Some(m)) = (parse(n), parse(m)) else {
        return Err(bad("N and M must be positive integers, e.g. 2:4"));
    };
    if n >= m {
        return Err(bad(
            "N must be smaller than M (N weights of every M are kept), e.g. 2:4",
        ));
    }
    Ok(Pattern::NOfM { n, m })
}

/// Weights pruned in one projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSparsity {
    pub name: String,
    pub pruned: usize,
    pub total: usize,
}

/// Per-projection and total sparsity of a pruned checkpoint.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    pub layers: Vec<LayerSparsity>,
}

impl PruneReport {
    /// One line per projection, then the total.
    pub fn render(&self) -> String {
        let pct = |p: usize, t: usize| 100.0 * p as f64 / t.max(1) as f64;
        let mut out = String::new();
        for l in &self.layers {
            out.push_str(&format!(
                "{}: {} of {} pruned ({:.2}%)\n",
                l.name,
                l.pruned,
                l.total,
                pct(l.pruned, l.total)
            ));
        }
        let (p, t) = self
            .layers
            .iter()
            .fold((0, 0), |(p, t), l| (p + l.pruned, t + l.total));
        out.push_str(&format!(
            "total: {p} of {t} projection weights pruned ({:.2}%)",
            pct(p, t)
        ));
        out
    }
}

/// True where a target (short name or glob) names this projection.
fn target_matches(target: &str, p: &ProjectionName) -> bool {
    match short_target(target) {
        Some(tails) => tails
            .iter()
            .any(|t| p.path.ends_with(&format!(".{t}")) || p.path == *t),
        None => glob_match(target, &p.name) || glob_match(target, &format!("{}.weight", p.name)),
    }
}

/// The projections to prune: `targets`, or all but the head. A target that
/// selects nothing, and an N:M whose M does not divide the input width of a
/// targeted projection (or of every projection), are errors naming it.
fn selected(names: &[ProjectionName], opts: &PruneOptions) -> Result<Vec<bool>> {
    for (i, t) in opts.targets.iter().enumerate() {
        if !names.iter().any(|p| target_matches(t, p)) {
            return Err(TrainerError::invalid(
                format!("--targets[{i}]"),
                format!(
                    "{t:?} matches no projection: use short names (q k v o gate up down ...) or globs over names like \"{}\"",
                    names.first().map_or("", |p| p.name.as_str())
                ),
            ));
        }
    }
    let pick: Vec<bool> = names
        .iter()
        .map(|p| match opts.targets.is_empty() {
            true => !(p.name == "lm_head" || p.name == "head"),
            false => opts.targets.iter().any(|t| target_matches(t, p)),
        })
        .collect();
    let Pattern::NOfM { n, m } = opts.pattern else {
        return Ok(pick);
    };
    let mut pick = pick;
    for (p, s) in names.iter().zip(pick.iter_mut()) {
        if !*s || p.d_in.is_multiple_of(m) {
            continue;
        }
        if !opts.targets.is_empty() {
            return Err(TrainerError::invalid(
                "--nm",
                format!(
                    "{n}:{m}: {m} does not divide the {} inputs of {}: choose an M that does, or leave it out of --targets",
                    p.d_in, p.name
                ),
            ));
        }
        // By default, as `[quantize]` does with its groups, a projection the
        // pattern cannot tile (Mamba's narrow dt_proj) is left dense, and said.
        eprintln!(
            "prune: {} stays dense: its {} inputs are not a multiple of {m}",
            p.name, p.d_in
        );
        *s = false;
    }
    if !pick.contains(&true) {
        let widths: std::collections::BTreeSet<usize> = names.iter().map(|p| p.d_in).collect();
        return Err(TrainerError::invalid(
            "--nm",
            format!("{n}:{m}: {m} does not divide the input width of any projection (widths {widths:?}): choose an M that does"),
        ));
    }
    Ok(pick)
}

/// Which group of the sequential pass a projection belongs to: its block
/// (`layers.{i}.`), or after every block (the shared FFN, the head).
fn block_of(path: &str) -> usize {
    path.strip_prefix("layers.")
        .and_then(|r| r.split('.').next())
        .and_then(|i| i.parse().ok())
        .unwrap_or(usize::MAX)
}

/// `ckpt` pruned as `opts` says: a full checkpoint (a LoRA checkpoint is
/// merged first) whose masks combine any it had with the new ones.
pub fn prune(
    ckpt: &LoadedCheckpoint,
    opts: &PruneOptions,
) -> Result<(LoadedCheckpoint, PruneReport)> {
    let merged = adapter::merged_if_adapters(ckpt)?;
    let ckpt = merged.as_ref().unwrap_or(ckpt);
    let device = Default::default();
    let mut model: Decoder<Flex> = session::build_model(ckpt, &device)?;
    let names = model.projection_names();
    let pick = selected(&names, opts)?;
    // The weight's own checkpoint name: not always `{name}.weight` (RWKV-7's
    // low-rank factors are bare `blocks.{i}.att.w1`).
    let keys: Vec<String> = names
        .iter()
        .map(|p| model.tensor_name(&format!("{}.weight", p.path)))
        .collect();
    let batches = match opts.method {
        Method::Wanda => calibration_batches(ckpt, opts.calib_batches, "--method wanda")?,
        Method::Magnitude => Vec::new(),
    };
    let mut weights = ckpt.model.clone();
    let mut masks = ckpt.masks.clone().unwrap_or_default();
    let mut report = PruneReport::default();
    let mut blocks: Vec<usize> = names.iter().map(|p| block_of(&p.path)).collect();
    blocks.sort_unstable();
    blocks.dedup();
    // Wanda prunes block by block, each block calibrated on the inputs the
    // already pruned blocks before it produce (`prune_wanda` does the same).
    for block in blocks {
        let group: Vec<usize> = (0..names.len())
            .filter(|&i| pick[i] && block_of(&names[i].path) == block)
            .collect();
        if group.is_empty() {
            continue;
        }
        let norms = match opts.method {
            Method::Wanda => Some(input_norms(&mut model, &group, &batches)?),
            Method::Magnitude => None,
        };
        for (j, &i) in group.iter().enumerate() {
            let key = &keys[i];
            let norms = norms.as_ref().map(|n| n[j].as_slice());
            let layer = prune_tensor(key, names[i].d_in, &mut weights, &mut masks, opts, norms)?;
            set_weight(&mut model, i, &weights[key]);
            report.layers.push(layer);
        }
    }
    let pruned = ckpt.derived(ckpt.config.model.clone(), weights, Some(masks));
    Ok((pruned, report))
}

/// The keep-mask (`true` = kept) of one projection's weight `[d_in, d_out]`:
/// Wanda's per-output comparison when `wanda_sq_norms` (per-input sums of
/// squares) are given, else magnitude's per-projection one.
pub fn projection_keep_mask(
    w: &[f32],
    d_in: usize,
    d_out: usize,
    pattern: Pattern,
    wanda_sq_norms: Option<&[f64]>,
) -> Vec<bool> {
    let (scores, grouping) = match wanda_sq_norms {
        Some(n) => (wanda_scores(w, d_out, n), Grouping::Row),
        None => (magnitude_scores(w), Grouping::Layer),
    };
    keep_mask(&scores, d_in, d_out, pattern, grouping)
}

/// Scores, masks and zeroes one weight `[d_in, d_out]` in place; its mask
/// (kept where both the old and the new mask keep) goes into `masks`.
fn prune_tensor(
    key: &str,
    d_in: usize,
    weights: &mut BTreeMap<String, NamedTensor>,
    masks: &mut BTreeMap<String, NamedTensor>,
    opts: &PruneOptions,
    sq_norms: Option<&[f64]>,
) -> Result<LayerSparsity> {
    let missing =
        || TrainerError::Internal(format!("projection weight {key} not in the checkpoint"));
    let w = weights.get_mut(key).ok_or_else(missing)?;
    let d_out = match w.shape[..] {
        [rows, cols] if rows == d_in => cols,
        _ => {
            return Err(TrainerError::Internal(format!(
                "{key} has shape {:?}, not [{d_in}, d_out]",
                w.shape
            )))
        }
    };
    let mut keep = projection_keep_mask(&w.data, d_in, d_out, opts.pattern, sq_norms);
    if let Some(old) = masks.get(key) {
        for (k, &o) in keep.iter_mut().zip(&old.data) {
            *k &= o != 0.0;
        }
    }
    for (x, &k) in w.data.iter_mut().zip(&keep) {
        if !k {
            *x = 0.0;
        }
    }
    let mask = keep.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
    masks.insert(
        key.to_string(),
        NamedTensor {
            shape: w.shape.clone(),
            data: mask,
        },
    );
    Ok(LayerSparsity {
        name: key.to_string(),
        pruned: keep.iter().filter(|&&k| !k).count(),
        total: keep.len(),
    })
}

/// Per-input sums of squares of the projections `group` (indices into
/// `linears_mut`) over `batches`, one forward each.
fn input_norms(
    model: &mut Decoder<Flex>,
    group: &[usize],
    batches: &[Batch],
) -> Result<Vec<Vec<f64>>> {
    let stats: Vec<InputStats> = group.iter().map(|_| InputStats::default()).collect();
    for (i, (_, linear)) in model.linears_mut().into_iter().enumerate() {
        if let Some(j) = group.iter().position(|&g| g == i) {
            linear.calib = Some(stats[j].clone());
        }
    }
    let device = Default::default();
    for b in batches {
        let ids: Vec<i64> = b.inputs.iter().map(|&x| x as i64).collect();
        let x = Tensor::<Flex, 2, Int>::from_data(
            TensorData::new(ids, [b.batch_size, b.seq_len]),
            &device,
        );
        drop(model.forward(x)); // [B, T, vocab]: only the recorded inputs matter
    }
    for (_, linear) in model.linears_mut() {
        linear.calib = None;
    }
    let mut out = Vec::with_capacity(stats.len());
    for s in stats {
        let (sums, rows) = s.sums();
        if rows == 0 {
            return Err(TrainerError::Internal(
                "a pruned projection saw no input during calibration".into(),
            ));
        }
        out.push(sums);
    }
    Ok(out)
}

/// Replaces the weight of projection `i` (of `linears_mut`) with `w`.
fn set_weight(model: &mut Decoder<Flex>, i: usize, w: &NamedTensor) {
    if let Some((_, linear)) = model.linears_mut().into_iter().nth(i) {
        let [d_in, d_out] = linear.weight.dims();
        let t = Tensor::from_data(
            TensorData::new(w.data.clone(), [d_in, d_out]),
            &Default::default(),
        );
        linear.weight = Param::from_tensor(t);
    }
}

/// Up to `k` batches of the checkpoint's own validation data (every
/// domain's, in order), as its run evaluated them; `flag` names the option
/// that needs them in the error when there are none.
pub(crate) fn calibration_batches(
    ckpt: &LoadedCheckpoint,
    k: usize,
    flag: &str,
) -> Result<Vec<Batch>> {
    let mut cfg = ckpt.config.clone();
    // The run kept `eval_batches` per domain; calibration may want more.
    cfg.training.eval_batches = cfg.training.eval_batches.max(k);
    // Shard specs prepare into RUN_DIR/data: a scratch directory, as `kiln eval` does.
    let scratch = std::env::temp_dir();
    let data = data_setup::load_run_data(&mut cfg, &scratch, Some(&ckpt.tokenizer))?;
    let batches: Vec<Batch> = data
        .val
        .into_iter()
        .flat_map(|v| v.batches)
        .take(k)
        .collect();
    if batches.is_empty() {
        let fix = match flag {
            "--method wanda" => ", or use --method magnitude",
            _ => "",
        };
        return Err(TrainerError::invalid(
            flag,
            format!(
                "{} has no validation batch to calibrate on (raise data.val_fraction or training.eval_batches in its run){fix}",
                ckpt.dir.display()
            ),
        ));
    }
    if batches.len() < k {
        eprintln!(
            "prune: calibrating on {} validation batches (its validation split holds no more than that; --calib-batches {k})",
            batches.len()
        );
    }
    Ok(batches)
}

/// Writes a pruned checkpoint into the new run directory `out`.
pub fn save(pruned: &LoadedCheckpoint, out: &Path) -> Result<std::path::PathBuf> {
    adapter::save_full(pruned, out)
}
