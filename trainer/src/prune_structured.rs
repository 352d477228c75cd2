//! `kiln prune --structured`: Minitron-style width and depth pruning
//! (arXiv 2407.14679) of a Llama checkpoint into a smaller dense one.
//!
//! Importance comes from one pass of the unpruned model over calibration
//! batches of the checkpoint's own validation data, collected through the
//! same seam as Wanda (`Linear::calib`):
//! - a head: the L2 norm of its attention output (the head's columns of
//!   `o_proj`'s input) over every calibration token; a kv group: the sum of
//!   its query heads';
//! - a SwiGLU channel: the mean `|silu(gate) * up|` (`down_proj`'s input);
//! - an embedding channel: the mean `|RMSNorm output|`, summed over the two
//!   norms of every block (`q_proj`'s and `gate_proj`'s input);
//! - a block: Block Importance, the mean `1 - cos(x_in, x_out)` of its
//!   residual stream (ShortGPT's metric; Minitron's depth ranking).
//!
//! All scores are taken on the original model, as Minitron does (no
//! iterative re-scoring); the slicing itself is `kiln_models::prune_structured`.

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use kiln_models::decoder::Block;
use kiln_models::prune::InputStats;
use kiln_models::prune_structured::{
    block_importance_sum, select_heads, slice_llama, top_k, unsupported, Keep,
};
use kiln_models::{Decoder, ModelConfig};

use crate::error::{Result, TrainerError};
use crate::session::{self, LoadedCheckpoint};
use crate::{adapter, prune};

/// What to keep, from the command's flags (`None`: all of it).
#[derive(Debug, Clone, Default)]
pub struct StructuredOptions {
    /// Query heads per block.
    pub heads: Option<usize>,
    /// Key/value heads per block (whole query groups are dropped).
    pub kv_heads: Option<usize>,
    /// SwiGLU channels per block.
    pub ffn_dim: Option<usize>,
    /// Embedding (residual-stream) channels.
    pub dim: Option<usize>,
    /// Stored blocks.
    pub layers: Option<usize>,
    /// Validation batches the scores are taken on.
    pub calib_batches: usize,
}

/// The resolved sizes to keep.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    heads: usize,
    kv: usize,
    ffn: usize,
    dim: usize,
    layers: usize,
}

impl StructuredOptions {
    /// Checks what can be checked before the checkpoint is read.
    pub fn check_flags(&self) -> Result<()> {
        let flags = [
            ("--heads", self.heads),
            ("--kv-heads", self.kv_heads),
            ("--ffn-dim", self.ffn_dim),
            ("--dim", self.dim),
            ("--layers", self.layers),
        ];
        if flags.iter().all(|(_, v)| v.is_none()) {
            return Err(TrainerError::invalid(
                "--structured",
                "says what to keep: give at least one of --heads, --kv-heads, --ffn-dim, --dim, --layers",
            ));
        }
        for (flag, v) in flags {
            if v == Some(0) {
                return Err(TrainerError::invalid(
                    flag,
                    "0: keep at least one (leave the flag out to keep them all)",
                ));
            }
        }
        if self.calib_batches == 0 {
            return Err(TrainerError::invalid(
                "--calib-batches",
                "0: structured pruning scores on at least one calibration batch",
            ));
        }
        Ok(())
    }

    /// The sizes to keep in `cfg`; every error names the flag and the limit.
    fn sizes(&self, cfg: &ModelConfig) -> Result<Sizes> {
        let (h, kvh) = (cfg.n_heads, cfg.kv_heads());
        let group = h / kvh;
        let at_most = |flag: &str, v: Option<usize>, have: usize, what: &str| match v {
            Some(v) if v > have => Err(TrainerError::invalid(
                flag,
                format!("{v}: the checkpoint has {have} {what}: keep at most {have}"),
            )),
            Some(v) => Ok(v),
            None => Ok(have),
        };
        let kv_flag = at_most(
            "--kv-heads",
            self.kv_heads,
            kvh,
            "key/value heads per block",
        )?;
        let heads = at_most("--heads", self.heads, h, "attention heads per block")?;
        // Without --kv-heads, GQA keeps its kv heads and thins every group
        // evenly; multi-head attention drops a head with its own kv head.
        let (heads, kv) = match (self.heads, self.kv_heads) {
            (Some(_), Some(_)) => (heads, kv_flag),
            (Some(_), None) if group == 1 => (heads, heads),
            (Some(_), None) => (heads, kvh),
            (None, Some(_)) => (kv_flag * group, kv_flag),
            (None, None) => (h, kvh),
        };
        if heads < kv {
            return Err(TrainerError::invalid(
                "--heads",
                format!(
                    "{heads} would leave a key/value group with zero query heads ({kv} kv heads kept, {group} query heads each): keep at least {kv} heads, or drop whole groups with --kv-heads"
                ),
            ));
        }
        if !heads.is_multiple_of(kv) {
            return Err(TrainerError::invalid(
                "--heads",
                format!(
                    "{heads} does not split evenly over the {kv} kv heads kept: give a multiple of {kv} (or change --kv-heads)"
                ),
            ));
        }
        Ok(Sizes {
            heads,
            kv,
            ffn: at_most("--ffn-dim", self.ffn_dim, cfg.ffn_dim, "SwiGLU channels")?,
            dim: at_most("--dim", self.dim, cfg.dim, "embedding channels")?,
            layers: at_most("--layers", self.layers, cfg.n_layers, "blocks")?,
        })
    }
}

/// Activation importance of every prunable unit of the original model.
#[derive(Debug, Clone)]
pub struct Importance {
    /// Per block, per query head: L2 norm of its output.
    pub heads: Vec<Vec<f64>>,
    /// Per block, per SwiGLU channel: mean `|silu(gate) * up|`.
    pub ffn: Vec<Vec<f64>>,
    /// Per embedding channel: mean `|RMSNorm output|` summed over norms.
    pub dim: Vec<f64>,
    /// Per block: mean `1 - cos(x_in, x_out)`.
    pub blocks: Vec<f64>,
    /// Tokens scored.
    pub tokens: usize,
}

/// Scores of `model` (a Llama stack) over `batches`, one forward each.
pub fn importance(model: &mut Decoder<Flex>, batches: &[kiln_data::Batch]) -> Result<Importance> {
    // Per block: o_proj, down_proj, q_proj (input norm), gate_proj (post norm).
    let n = model.layers.len();
    let stats: Vec<[InputStats; 4]> = (0..n).map(|_| Default::default()).collect();
    for (block, s) in model.layers.iter_mut().zip(&stats) {
        let Block::Attention(b) = block else {
            return Err(TrainerError::Internal(
                "structured pruning of a non-attention block".into(),
            ));
        };
        let Some(mlp) = b.mlp.as_mut() else {
            return Err(TrainerError::Internal(
                "structured pruning of a shared FFN".into(),
            ));
        };
        b.self_attn.o_proj.calib = Some(s[0].clone());
        mlp.down_proj.calib = Some(s[1].clone());
        b.self_attn.q_proj.calib = Some(s[2].clone());
        mlp.gate_proj.calib = Some(s[3].clone());
    }
    let device = Default::default();
    let mut bi = vec![0.0f64; n];
    let mut tokens = 0;
    for b in batches {
        let ids: Vec<i64> = b.inputs.iter().map(|&x| x as i64).collect();
        let x = Tensor::<Flex, 2, Int>::from_data(
            TensorData::new(ids, [b.batch_size, b.seq_len]),
            &device,
        );
        let states = model.block_states(x); // n + 1 of [B, T, dim]
        let host: Vec<Vec<f32>> = states
            .into_iter()
            .map(|s| s.into_data().convert::<f32>().into_vec::<f32>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| TrainerError::Internal(format!("block states to host: {e:?}")))?;
        let dim = model.embed_tokens.weight.dims()[1];
        for (i, acc) in bi.iter_mut().enumerate() {
            *acc += block_importance_sum(&host[i], &host[i + 1], dim);
        }
        tokens += b.batch_size * b.seq_len;
    }
    for (_, linear) in model.linears_mut() {
        linear.calib = None;
    }
    let head_dim = model.head_dim;
    let mut imp = Importance {
        heads: Vec::with_capacity(n),
        ffn: Vec::with_capacity(n),
        dim: Vec::new(),
        blocks: bi.iter().map(|s| s / tokens.max(1) as f64).collect(),
        tokens,
    };
    for s in &stats {
        let (sq, rows) = s[0].sums();
        if rows == 0 {
            return Err(TrainerError::Internal(
                "a block saw no calibration input".into(),
            ));
        }
        imp.heads.push(
            sq.chunks_exact(head_dim)
                .map(|c| c.iter().sum::<f64>().sqrt())
                .collect(),
        );
        let mean_abs = |s: &InputStats| {
            let (a, rows) = s.abs_sums();
            a.into_iter()
                .map(|v| v / rows.max(1) as f64)
                .collect::<Vec<f64>>()
        };
        imp.ffn.push(mean_abs(&s[1]));
        for norm in [&s[2], &s[3]] {
            let m = mean_abs(norm);
            if imp.dim.is_empty() {
                imp.dim = vec![0.0; m.len()];
            }
            for (acc, v) in imp.dim.iter_mut().zip(m) {
                *acc += v;
            }
        }
    }
    Ok(imp)
}

/// What to keep of `cfg` at `sizes`, from `imp`.
fn choose(cfg: &ModelConfig, imp: &Importance, sizes: Sizes) -> Keep {
    let layers = top_k(&imp.blocks, sizes.layers);
    Keep {
        heads: layers
            .iter()
            .map(|&l| select_heads(&imp.heads[l], cfg.kv_heads(), sizes.kv, sizes.heads))
            .collect(),
        ffn: layers
            .iter()
            .map(|&l| top_k(&imp.ffn[l], sizes.ffn))
            .collect(),
        dim: top_k(&imp.dim, sizes.dim),
        layers,
    }
}

/// What was kept, for the command's output.
#[derive(Debug, Clone)]
pub struct StructuredReport {
    pub before: ModelConfig,
    pub after: ModelConfig,
    pub keep: Keep,
    pub importance: Importance,
    pub batches: usize,
}

impl StructuredReport {
    /// Blocks (with their importance), per block heads and channels, the
    /// embedding width, parameters before and after, the new `[model]` shape.
    pub fn render(&self) -> String {
        let (b, a, k) = (&self.before, &self.after, &self.keep);
        let list = |v: &[usize]| {
            v.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut out = format!(
            "scored on {} validation batches ({} tokens)\n",
            self.batches, self.importance.tokens
        );
        let bi: Vec<String> = self
            .importance
            .blocks
            .iter()
            .map(|v| format!("{v:.4}"))
            .collect();
        out.push_str(&format!(
            "blocks: kept [{}] of {} (block importance 1 - cos: {})\n",
            list(&k.layers),
            b.n_layers,
            bi.join(" ")
        ));
        for (j, &l) in k.layers.iter().enumerate() {
            out.push_str(&format!(
                "block {l} -> {j}: heads [{}] of {} (kv heads [{}] of {}), ffn {} of {} channels\n",
                list(&k.heads[j].q),
                b.n_heads,
                list(&k.heads[j].kv),
                b.kv_heads(),
                k.ffn[j].len(),
                b.ffn_dim
            ));
        }
        out.push_str(&format!("dim: {} of {} channels\n", k.dim.len(), b.dim));
        let (p0, p1) = (b.num_params(), a.num_params());
        out.push_str(&format!(
            "params: {p0} -> {p1} ({:.1}%)\n",
            100.0 * p1 as f64 / p0.max(1) as f64
        ));
        // The keys the new [model] sets, as a run from it must write them
        // (`[init] from` compares them; an optional key is shown when set).
        let mut keys = format!(
            "dim = {}, n_layers = {}, n_heads = {}",
            a.dim, a.n_layers, a.n_heads
        );
        if let Some(kv) = a.n_kv_heads {
            keys.push_str(&format!(", n_kv_heads = {kv}"));
        }
        if let Some(hd) = a.head_dim {
            keys.push_str(&format!(", head_dim = {hd}"));
        }
        out.push_str(&format!("[model] {keys}, ffn_dim = {}", a.ffn_dim));
        out
    }
}

/// `ckpt` pruned structurally as `opts` says: a full, dense checkpoint with
/// the new `[model]` (a LoRA checkpoint is merged first; masks of an
/// earlier unstructured pruning are sliced along).
pub fn prune_structured(
    ckpt: &LoadedCheckpoint,
    opts: &StructuredOptions,
) -> Result<(LoadedCheckpoint, StructuredReport)> {
    let cfg = &ckpt.config.model;
    if let Some(why) = unsupported(cfg) {
        return Err(TrainerError::invalid("--structured", why));
    }
    let sizes = opts.sizes(cfg)?;
    let merged = adapter::merged_if_adapters(ckpt)?;
    let ckpt = merged.as_ref().unwrap_or(ckpt);
    let batches = prune::calibration_batches(ckpt, opts.calib_batches, "--structured")?;
    let device = Default::default();
    let mut model: Decoder<Flex> = session::build_model(ckpt, &device)?;
    let imp = importance(&mut model, &batches)?;
    let keep = choose(cfg, &imp, sizes);
    let (model_cfg, weights, masks) = slice_llama(cfg, &ckpt.model, ckpt.masks.as_ref(), &keep)?;
    let pruned = ckpt.derived(model_cfg.clone(), weights, masks);
    // The new checkpoint must load as what it claims to be.
    drop(session::build_model::<Flex>(&pruned, &device)?);
    let report = StructuredReport {
        before: cfg.clone(),
        after: model_cfg,
        keep,
        importance: imp,
        batches: batches.len(),
    };
    Ok((pruned, report))
}
