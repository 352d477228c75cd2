//! Structured (width and depth) pruning arithmetic of the Llama stack, as
//! Minitron (Muralidharan et al. 2024, "Compact Language Models via Pruning
//! and Knowledge Distillation", arXiv 2407.14679; Sreenivas et al. 2024,
//! "LLM Pruning and Distillation in Practice", arXiv 2408.11796) does it:
//! whole attention heads, SwiGLU channels, embedding channels and blocks are
//! removed, leaving a smaller dense model. What to keep is chosen from
//! activation scores by the trainer (`kiln prune --structured`); this file
//! turns a [`Keep`] into the new `[model]` config and sliced weights, and
//! holds the selection rules.
//!
//! Host vectors in Kiln's layout: projections `[d_in, d_out]`, the embedding
//! `[vocab, dim]`, norms `[dim]`. Query head `h` owns the columns
//! `h * head_dim ..` of `q_proj` (the rows of `o_proj`) and reads kv head
//! `h / (n_heads / n_kv_heads)` (`repeat_kv`'s contiguous groups), so a kept
//! head keeps its width, its rotary frequencies and its kv head.

use std::collections::BTreeMap;

use crate::config::{Arch, BlockKind};
use crate::{ModelConfig, ModelError, NamedTensor};

/// The kept attention heads of one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadKeep {
    /// Kept key/value heads, ascending.
    pub kv: Vec<usize>,
    /// Kept query heads (original indices), ascending: the same number in
    /// every kept kv head's group, and none outside them.
    pub q: Vec<usize>,
}

/// What survives structured pruning; indices are the original model's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    /// Kept stored blocks, ascending; they are renumbered `0..`.
    pub layers: Vec<usize>,
    /// Per kept block (in `layers` order): its heads.
    pub heads: Vec<HeadKeep>,
    /// Per kept block: its SwiGLU channels, ascending.
    pub ffn: Vec<Vec<usize>>,
    /// Residual-stream (embedding) channels, ascending.
    pub dim: Vec<usize>,
}

impl Keep {
    /// Keeps everything of `cfg`.
    pub fn all(cfg: &ModelConfig) -> Self {
        let all_heads = HeadKeep {
            kv: (0..cfg.kv_heads()).collect(),
            q: (0..cfg.n_heads).collect(),
        };
        Self {
            layers: (0..cfg.n_layers).collect(),
            heads: vec![all_heads; cfg.n_layers],
            ffn: vec![(0..cfg.ffn_dim).collect(); cfg.n_layers],
            dim: (0..cfg.dim).collect(),
        }
    }
}

fn bad(field: &str, value: impl ToString, problem: impl Into<String>) -> ModelError {
    ModelError::InvalidConfig {
        field: field.to_string(),
        value: value.to_string(),
        problem: problem.into(),
    }
}

/// `None` when `cfg` can be structurally pruned, else why not (one line,
/// naming the key): a pure Llama stack without a shared FFN.
pub fn unsupported(cfg: &ModelConfig) -> Option<String> {
    if cfg.arch != Arch::Llama || cfg.block_kinds().iter().any(|&k| k != BlockKind::Attention) {
        return Some(format!(
            "model.arch = {} / model.blocks = {}: structured pruning handles Llama attention stacks only (Mamba and RWKV-7 blocks have no heads or SwiGLU channels to rank); use --method magnitude|wanda",
            format!("{:?}", cfg.arch).to_lowercase(),
            format!("{:?}", cfg.blocks).to_lowercase()
        ));
    }
    if cfg.shared_ffn {
        return Some(
            "model.shared_ffn = true: one FFN shared by every block has no per-block channels to rank; structured pruning is not supported for it".into(),
        );
    }
    None
}

/// Indices of the `k` highest scores, ascending. Ties drop the earlier
/// index first (a stable ascending sort pruned from the front), as
/// unstructured pruning does.
pub fn top_k(scores: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut kept = order[scores.len().saturating_sub(k)..].to_vec();
    kept.sort_unstable();
    kept
}

/// The heads of one block to keep: the `kv` kv heads whose groups score
/// highest (a group's score is the sum of its query heads'), then the `q /
/// kv` best query heads of each kept group. `q_scores` has one entry per
/// query head. `q` must be a positive multiple of `kv` (the caller checks).
pub fn select_heads(q_scores: &[f64], n_kv: usize, kv: usize, q: usize) -> HeadKeep {
    let group = q_scores.len() / n_kv.max(1);
    let group_scores: Vec<f64> = (0..n_kv)
        .map(|g| q_scores[g * group..(g + 1) * group].iter().sum())
        .collect();
    let kept_kv = top_k(&group_scores, kv);
    let per = q / kv.max(1);
    let q = kept_kv
        .iter()
        .flat_map(|&g| {
            top_k(&q_scores[g * group..(g + 1) * group], per)
                .into_iter()
                .map(move |i| g * group + i)
        })
        .collect();
    HeadKeep { kv: kept_kv, q }
}

/// Block importance (Men et al. 2024, "ShortGPT", as Minitron's depth
/// ranking): the summed `1 - cos(x_in, x_out)` over the rows of a block's
/// input and output `[rows, dim]`; divide by the row count for the mean.
pub fn block_importance_sum(x_in: &[f32], x_out: &[f32], dim: usize) -> f64 {
    x_in.chunks_exact(dim)
        .zip(x_out.chunks_exact(dim))
        .map(|(a, b)| {
            let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
            for (&x, &y) in a.iter().zip(b) {
                let (x, y) = (x as f64, y as f64);
                ab += x * y;
                aa += x * x;
                bb += y * y;
            }
            let den = (aa * bb).sqrt();
            if den > 0.0 {
                1.0 - ab / den
            } else {
                0.0
            }
        })
        .sum()
}

/// The kept columns of `n` heads of width `hd`.
fn head_cols(heads: &[usize], hd: usize) -> Vec<usize> {
    heads.iter().flat_map(|&h| h * hd..(h + 1) * hd).collect()
}

/// `t [rows, cols]` restricted to `rows` and `cols` (`None`: all).
fn take_2d(t: &NamedTensor, rows: Option<&[usize]>, cols: Option<&[usize]>) -> NamedTensor {
    let (r, c) = (t.shape[0], t.shape[1]);
    let all_r: Vec<usize> = (0..r).collect();
    let all_c: Vec<usize> = (0..c).collect();
    let rows = rows.unwrap_or(&all_r);
    let cols = cols.unwrap_or(&all_c);
    let data = rows
        .iter()
        .flat_map(|&i| cols.iter().map(move |&j| t.data[i * c + j]))
        .collect();
    NamedTensor {
        shape: vec![rows.len(), cols.len()],
        data,
    }
}

/// The checked original shapes and the kept indices, per tensor.
struct Slicer<'a> {
    cfg: &'a ModelConfig,
    keep: &'a Keep,
    /// `sqrt(dim / kept dim)`: see [`slice_llama`].
    norm_scale: f32,
}

impl Slicer<'_> {
    /// The new name and sliced value of `name` (`None`: its block is dropped).
    fn slice(
        &self,
        name: &str,
        t: &NamedTensor,
        is_mask: bool,
    ) -> Result<Option<(String, NamedTensor)>, ModelError> {
        let cfg = self.cfg;
        let (d, hd, f, v) = (cfg.dim, cfg.head_dim(), cfg.ffn_dim, cfg.vocab_size);
        let (h, kvh) = (cfg.n_heads, cfg.kv_heads());
        let dim = Some(self.keep.dim.as_slice());
        let check = |expected: Vec<usize>| -> Result<(), ModelError> {
            match t.shape == expected {
                true => Ok(()),
                false => Err(ModelError::ShapeMismatch {
                    name: name.to_string(),
                    source_desc: "the checkpoint being pruned".into(),
                    expected,
                    found: t.shape.clone(),
                }),
            }
        };
        let norm = |t: &NamedTensor| {
            let scale = if is_mask { 1.0 } else { self.norm_scale };
            NamedTensor {
                shape: vec![self.keep.dim.len()],
                data: self.keep.dim.iter().map(|&i| t.data[i] * scale).collect(),
            }
        };
        let out = match name {
            "model.embed_tokens.weight" => {
                check(vec![v, d])?;
                take_2d(t, None, dim)
            }
            "lm_head.weight" => {
                check(vec![d, v])?;
                take_2d(t, dim, None)
            }
            "model.norm.weight" => {
                check(vec![d])?;
                norm(t)
            }
            _ => {
                let unknown = || ModelError::UnexpectedTensors {
                    source_desc: "the checkpoint being pruned".into(),
                    names: name.to_string(),
                };
                let rest = name.strip_prefix("model.layers.").ok_or_else(unknown)?;
                let (i, rest) = rest.split_once('.').ok_or_else(unknown)?;
                let i: usize = i.parse().map_err(|_| unknown())?;
                let Some(j) = self.keep.layers.iter().position(|&l| l == i) else {
                    return Ok(None);
                };
                let heads = &self.keep.heads[j];
                let q = head_cols(&heads.q, hd);
                let kv = head_cols(&heads.kv, hd);
                let ffn = Some(self.keep.ffn[j].as_slice());
                let t = match rest {
                    "input_layernorm.weight" | "post_attention_layernorm.weight" => {
                        check(vec![d])?;
                        norm(t)
                    }
                    "self_attn.q_proj.weight" => {
                        check(vec![d, h * hd])?;
                        take_2d(t, dim, Some(&q))
                    }
                    "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => {
                        check(vec![d, kvh * hd])?;
                        take_2d(t, dim, Some(&kv))
                    }
                    "self_attn.o_proj.weight" => {
                        check(vec![h * hd, d])?;
                        take_2d(t, Some(&q), dim)
                    }
                    "mlp.gate_proj.weight" | "mlp.up_proj.weight" => {
                        check(vec![d, f])?;
                        take_2d(t, dim, ffn)
                    }
                    "mlp.down_proj.weight" => {
                        check(vec![f, d])?;
                        take_2d(t, ffn, dim)
                    }
                    _ => return Err(unknown()),
                };
                return Ok(Some((format!("model.layers.{j}.{rest}"), t)));
            }
        };
        Ok(Some((name.to_string(), out)))
    }
}

/// Checks that `keep` is a valid structured pruning of `cfg`: indices in
/// range, ascending, the same counts in every block, a whole number of query
/// heads per kept kv head.
fn check_keep(cfg: &ModelConfig, keep: &Keep) -> Result<(), ModelError> {
    let ascending_below = |v: &[usize], n: usize| {
        !v.is_empty() && v.windows(2).all(|w| w[0] < w[1]) && v.iter().all(|&i| i < n)
    };
    let n = keep.layers.len();
    if !ascending_below(&keep.layers, cfg.n_layers) || keep.heads.len() != n || keep.ffn.len() != n
    {
        return Err(bad(
            "keep.layers",
            format!("{:?}", keep.layers),
            "must be ascending block indices below n_layers, with heads and ffn for each",
        ));
    }
    if !ascending_below(&keep.dim, cfg.dim) {
        return Err(bad(
            "keep.dim",
            keep.dim.len(),
            "must be ascending channels below dim",
        ));
    }
    let group = cfg.n_heads / cfg.kv_heads();
    let first = &keep.heads[0];
    for (hk, ffn) in keep.heads.iter().zip(&keep.ffn) {
        let per_group_ok = hk.kv.iter().all(|&g| {
            hk.q.iter().filter(|&&q| q / group == g).count() == first.q.len() / first.kv.len()
        });
        if !ascending_below(&hk.kv, cfg.kv_heads())
            || !ascending_below(&hk.q, cfg.n_heads)
            || hk.kv.len() != first.kv.len()
            || hk.q.len() != first.q.len()
            || !hk.q.len().is_multiple_of(hk.kv.len())
            || !hk.q.iter().all(|&q| hk.kv.contains(&(q / group)))
            || !per_group_ok
        {
            return Err(bad(
                "keep.heads",
                format!("{hk:?}"),
                "must keep the same number of query heads in every kept kv group of every block",
            ));
        }
        if !ascending_below(ffn, cfg.ffn_dim) || ffn.len() != keep.ffn[0].len() {
            return Err(bad(
                "keep.ffn",
                ffn.len(),
                "must be ascending channels below ffn_dim, as many in every block",
            ));
        }
    }
    Ok(())
}

/// The `[model]` of `cfg` pruned to `keep` (heads keep `head_dim`, written
/// out when `dim / n_heads` no longer gives it).
pub fn pruned_config(cfg: &ModelConfig, keep: &Keep) -> ModelConfig {
    let (h, kv) = (keep.heads[0].q.len(), keep.heads[0].kv.len());
    let dim = keep.dim.len();
    let hd = cfg.head_dim();
    ModelConfig {
        dim,
        n_layers: keep.layers.len(),
        n_heads: h,
        n_kv_heads: (cfg.n_kv_heads.is_some() || kv != h).then_some(kv),
        ffn_dim: keep.ffn[0].len(),
        head_dim: (cfg.head_dim.is_some() || h * hd != dim).then_some(hd),
        blocks: Vec::new(),
        ..cfg.clone()
    }
}

/// Slices `weights` (and, with the same indices, `masks`) of a Llama stack
/// `cfg` down to `keep`: the new config and tensors (blocks renumbered).
///
/// RMSNorm weights are sliced with the embedding channels and multiplied by
/// `sqrt(dim / kept)`: the norm then divides by the same root mean square as
/// the original did when the dropped channels were zero, so removing
/// channels equals zeroing them (with `norm_eps` scaled by `kept / dim`,
/// which is how `tests/prune_structured.rs` checks it) instead of inflating
/// the mean square of every normalised row.
#[allow(clippy::type_complexity)]
pub fn slice_llama(
    cfg: &ModelConfig,
    weights: &BTreeMap<String, NamedTensor>,
    masks: Option<&BTreeMap<String, NamedTensor>>,
    keep: &Keep,
) -> Result<
    (
        ModelConfig,
        BTreeMap<String, NamedTensor>,
        Option<BTreeMap<String, NamedTensor>>,
    ),
    ModelError,
> {
    if let Some(why) = unsupported(cfg) {
        return Err(bad("model", "", why));
    }
    check_keep(cfg, keep)?;
    let slicer = Slicer {
        cfg,
        keep,
        norm_scale: (cfg.dim as f64 / keep.dim.len() as f64).sqrt() as f32,
    };
    let apply = |map: &BTreeMap<String, NamedTensor>, is_mask: bool| {
        let mut out = BTreeMap::new();
        for (name, t) in map {
            if let Some((n, t)) = slicer.slice(name, t, is_mask)? {
                out.insert(n, t);
            }
        }
        Ok::<_, ModelError>(out)
    };
    let new_weights = apply(weights, false)?;
    let new_masks = masks.map(|m| apply(m, true)).transpose()?;
    let new_cfg = pruned_config(cfg, keep);
    new_cfg.validate()?;
    Ok((new_cfg, new_weights, new_masks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_largest_and_drops_the_earlier_tie() {
        assert_eq!(top_k(&[3.0, 1.0, 2.0, 1.0], 2), vec![0, 2]);
        assert_eq!(top_k(&[1.0, 1.0, 1.0], 2), vec![1, 2]);
        assert_eq!(top_k(&[1.0, 2.0], 5), vec![0, 1]);
    }

    #[test]
    fn heads_keep_whole_groups_then_the_best_per_group() {
        // 2 kv heads, groups {0,1,2} and {3,4,5}.
        let s = [1.0, 5.0, 2.0, 0.5, 0.1, 0.2];
        let k = select_heads(&s, 2, 2, 4);
        assert_eq!(k.kv, vec![0, 1]);
        assert_eq!(k.q, vec![1, 2, 3, 5]);
        assert_eq!(select_heads(&s, 2, 2, 2).q, vec![1, 3]);
        let k = select_heads(&s, 2, 1, 2);
        assert_eq!(k.kv, vec![0]);
        assert_eq!(k.q, vec![1, 2]);
    }

    #[test]
    fn block_importance_is_one_minus_cosine() {
        let bi = block_importance_sum(&[1.0, 0.0, 1.0, 1.0], &[1.0, 0.0, -1.0, -1.0], 2);
        assert!((bi - 2.0).abs() < 1e-12, "{bi}");
    }
}
