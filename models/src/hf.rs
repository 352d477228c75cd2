//! Hugging Face Llama layout: export expands shared blocks and the shared FFN
//! into per-layer copies and transposes projections to `[out, in]`; import
//! folds them back and checks the copies really are equal.

use std::collections::BTreeMap;

use crate::naming::NamedTensor;
use crate::{ModelConfig, ModelError};

/// Projections are stored `[in, out]` here and `[out, in]` in PyTorch.
fn is_projection(name: &str, shape: &[usize]) -> bool {
    shape.len() == 2 && !name.contains("embed_tokens")
}

pub fn transpose(t: &NamedTensor) -> NamedTensor {
    let (r, c) = (t.shape[0], t.shape[1]);
    let mut data = vec![0.0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            data[j * r + i] = t.data[i * c + j];
        }
    }
    NamedTensor {
        shape: vec![c, r],
        data,
    }
}

fn to_hf_layout(name: &str, t: &NamedTensor) -> NamedTensor {
    if is_projection(name, &t.shape) {
        transpose(t)
    } else {
        t.clone()
    }
}

/// Checkpoint tensors (stored blocks) -> HF tensors (one per effective layer).
pub fn export_llama(
    cfg: &ModelConfig,
    ckpt: &BTreeMap<String, NamedTensor>,
) -> BTreeMap<String, NamedTensor> {
    let mut out = BTreeMap::new();
    let repeat = cfg.share_repeat;
    for (name, t) in ckpt {
        let hf = to_hf_layout(name, t);
        if let Some(rest) = name.strip_prefix("model.layers.") {
            let (idx, tail) = rest.split_once('.').unwrap_or((rest, ""));
            let Ok(block) = idx.parse::<usize>() else {
                continue;
            };
            for r in 0..repeat {
                out.insert(
                    format!("model.layers.{}.{tail}", block * repeat + r),
                    hf.clone(),
                );
            }
        } else if let Some(tail) = name.strip_prefix("model.shared_mlp.") {
            for l in 0..cfg.effective_layers() {
                out.insert(format!("model.layers.{l}.mlp.{tail}"), hf.clone());
            }
        } else {
            out.insert(name.clone(), hf);
        }
    }
    out
}

fn take_copy(
    hf: &BTreeMap<String, NamedTensor>,
    first: &str,
    copies: impl Iterator<Item = String>,
    source: &str,
) -> Result<NamedTensor, ModelError> {
    let t = hf.get(first).ok_or_else(|| ModelError::MissingTensor {
        name: first.to_string(),
        source_desc: source.to_string(),
        hint: "is this a Llama checkpoint with the configured number of layers?".into(),
    })?;
    for other in copies {
        let o = hf.get(&other).ok_or_else(|| ModelError::MissingTensor {
            name: other.clone(),
            source_desc: source.to_string(),
            hint: "is this a Llama checkpoint with the configured number of layers?".into(),
        })?;
        let max_diff = if o.shape == t.shape {
            o.data
                .iter()
                .zip(&t.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max)
        } else {
            f32::INFINITY
        };
        if max_diff > 0.0 {
            return Err(ModelError::SharedMismatch {
                name: other,
                other: first.to_string(),
                max_diff,
            });
        }
    }
    Ok(t.clone())
}

/// HF tensors -> checkpoint tensors for `cfg` (the inverse of [`export_llama`]).
pub fn import_llama(
    cfg: &ModelConfig,
    hf: &BTreeMap<String, NamedTensor>,
    source: &str,
) -> Result<BTreeMap<String, NamedTensor>, ModelError> {
    let mut out = BTreeMap::new();
    let repeat = cfg.share_repeat;
    let layers = cfg.effective_layers();
    const ATTN: [&str; 6] = [
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
        "self_attn.o_proj.weight",
        "input_layernorm.weight",
        "post_attention_layernorm.weight",
    ];
    const MLP: [&str; 3] = [
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
    ];
    let mut put = |name: String, t: NamedTensor| {
        let t = to_hf_layout(&name, &t); // transposing is its own inverse
        out.insert(name, t);
    };
    for block in 0..cfg.n_layers {
        let per_block: Vec<&str> = if cfg.shared_ffn {
            ATTN.to_vec()
        } else {
            ATTN.iter().chain(MLP.iter()).copied().collect()
        };
        for tail in per_block {
            let first = format!("model.layers.{}.{tail}", block * repeat);
            let copies = (1..repeat).map(|r| format!("model.layers.{}.{tail}", block * repeat + r));
            put(
                format!("model.layers.{block}.{tail}"),
                take_copy(hf, &first, copies, source)?,
            );
        }
    }
    if cfg.shared_ffn {
        for tail in MLP {
            let first = format!("model.layers.0.{tail}");
            let copies = (1..layers).map(|l| format!("model.layers.{l}.{tail}"));
            let name = format!("model.shared_mlp.{}", tail.trim_start_matches("mlp."));
            put(name, take_copy(hf, &first, copies, source)?);
        }
    }
    for name in ["model.embed_tokens.weight", "model.norm.weight"] {
        put(
            name.to_string(),
            take_copy(hf, name, std::iter::empty(), source)?,
        );
    }
    if !cfg.tie_embeddings {
        put(
            "lm_head.weight".to_string(),
            take_copy(hf, "lm_head.weight", std::iter::empty(), source)?,
        );
    }
    Ok(out)
}

/// Mamba projections stored `[in, out]` here, `[out, in]` in PyTorch; conv1d,
/// A_log, D, biases and norms share the Hugging Face layout already.
fn is_mamba_projection(name: &str) -> bool {
    [
        "in_proj.weight",
        "x_proj.weight",
        "dt_proj.weight",
        "out_proj.weight",
    ]
    .iter()
    .any(|s| name.ends_with(s))
}

/// Checkpoint tensors of an `arch = "mamba"` model -> `MambaForCausalLM`
/// tensors: the names are already Hugging Face's, projections are transposed.
/// Its own inverse (see [`import_mamba`]).
pub fn export_mamba(ckpt: &BTreeMap<String, NamedTensor>) -> BTreeMap<String, NamedTensor> {
    ckpt.iter()
        .map(|(name, t)| {
            let t = if is_mamba_projection(name) && t.shape.len() == 2 {
                transpose(t)
            } else {
                t.clone()
            };
            (name.clone(), t)
        })
        .collect()
}

/// `MambaForCausalLM` tensors -> checkpoint tensors (shapes and names are
/// checked when they are loaded into the model).
pub fn import_mamba(hf: &BTreeMap<String, NamedTensor>) -> BTreeMap<String, NamedTensor> {
    let mut out = export_mamba(hf);
    // A tied head may be saved explicitly by some writers: it is the embedding.
    if let (Some(head), Some(emb)) = (
        out.get("lm_head.weight"),
        out.get("backbone.embeddings.weight"),
    ) {
        if head == emb {
            out.remove("lm_head.weight");
        }
    }
    out
}
