//! `kiln quantize CHECKPOINT --format q8_0|q4_0|f16|f32 --out model.gguf`:
//! a GGUF file llama.cpp runs with no other input: llama.cpp's tensor names
//! and `llama` metadata (MobileLLM / MobiLlama shapes, GQA, tied
//! embeddings; shared blocks and the shared FFN written as the repeated
//! tensors llama.cpp expects), the tokenizer embedded. Projections are
//! quantised with llama.cpp's exact block arithmetic (`kiln_models::quant`);
//! norms stay f32; the embedding (and an untied head) f16 in the quantised
//! formats, as common GGUF recipes keep them.

mod file;
mod mamba;
mod vocab;

use std::collections::BTreeMap;
use std::path::Path;

use kiln_models::hf::export_llama;
use kiln_models::quant::{encode_q4_0, encode_q8_0, GGUF_BLOCK};
use kiln_models::{Arch, BlockKind, NamedTensor};

pub use file::{GgmlType, GgufFile, TensorEntry, Value};
pub use vocab::{byte_to_unicode, gguf_vocab};

use crate::error::{Result, TrainerError};
use crate::session::LoadedCheckpoint;

/// What `kiln quantize` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufFormat {
    F32,
    F16,
    Q8_0,
    Q4_0,
}

impl GgufFormat {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "f32" => Self::F32,
            "f16" => Self::F16,
            "q8_0" => Self::Q8_0,
            "q4_0" => Self::Q4_0,
            _ => return None,
        })
    }

    /// llama.cpp's `general.file_type` (LLAMA_FTYPE_*).
    fn file_type(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q8_0 => 7,
        }
    }
}

/// HF Llama name -> llama.cpp name.
fn gguf_name(hf: &str) -> Option<String> {
    if hf == "model.embed_tokens.weight" {
        return Some("token_embd.weight".into());
    }
    if hf == "model.norm.weight" {
        return Some("output_norm.weight".into());
    }
    if hf == "lm_head.weight" {
        return Some("output.weight".into());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (n, tail) = rest.split_once('.')?;
    let t = match tail {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{n}.{t}"))
}

/// convert_hf_to_gguf.py's `permute` of q/k rows: HF's rotate-half RoPE
/// pairs (i, i + hd/2) become llama.cpp's adjacent pairs (2i, 2i + 1).
fn permute_rope_rows(t: &NamedTensor, n_head: usize) -> NamedTensor {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let hd = rows / n_head;
    let mut data = vec![0f32; t.data.len()];
    for h in 0..n_head {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let (new, old) = (h * hd + 2 * i + j, h * hd + j * hd / 2 + i);
                data[new * cols..(new + 1) * cols]
                    .copy_from_slice(&t.data[old * cols..(old + 1) * cols]);
            }
        }
    }
    NamedTensor {
        shape: t.shape.clone(),
        data,
    }
}

/// One tensor in `kind` (`[out, in]` rows along the contiguous in-dim).
fn encode(name: &str, t: &NamedTensor, kind: GgmlType) -> TensorEntry {
    let dims: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
    let row = *t.shape.last().unwrap_or(&1);
    let data = match kind {
        GgmlType::F32 => t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => t
            .data
            .iter()
            .flat_map(|&v| burn::tensor::f16::from_f32(v).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => t.data.chunks(row).flat_map(encode_q8_0).collect(),
        GgmlType::Q4_0 => t.data.chunks(row).flat_map(encode_q4_0).collect(),
    };
    TensorEntry {
        name: name.to_string(),
        dims,
        kind,
        data,
    }
}

fn tensor_kind(gname: &str, t: &NamedTensor, format: GgufFormat) -> GgmlType {
    let is_matrix = t.shape.len() == 2;
    let row = *t.shape.last().unwrap_or(&1);
    let embed_or_head = gname == "token_embd.weight" || gname == "output.weight";
    match format {
        _ if !is_matrix => GgmlType::F32,
        GgufFormat::F32 => GgmlType::F32,
        GgufFormat::F16 => GgmlType::F16,
        _ if embed_or_head || !row.is_multiple_of(GGUF_BLOCK) => GgmlType::F16,
        GgufFormat::Q8_0 => GgmlType::Q8_0,
        GgufFormat::Q4_0 => GgmlType::Q4_0,
    }
}

fn general(f: &mut GgufFile, arch: &str, format: GgufFormat) {
    f.meta("general.architecture", Value::Str(arch.into()));
    f.meta("general.name", Value::Str("kiln".into()));
    f.meta("general.file_type", Value::U32(format.file_type()));
    f.meta("general.alignment", Value::U32(file::ALIGNMENT as u32));
}

/// The tokenizer as a `gpt2` vocabulary of the model's size.
fn vocab_metadata(f: &mut GgufFile, ckpt: &LoadedCheckpoint) -> Result<()> {
    let v = gguf_vocab(&ckpt.tokenizer, ckpt.config.model.vocab_size)?;
    let eot = ckpt.tokenizer.eot_id();
    f.meta("tokenizer.ggml.model", Value::Str("gpt2".into()));
    f.meta("tokenizer.ggml.pre", Value::Str("default".into()));
    f.meta("tokenizer.ggml.tokens", Value::StrArray(v.tokens));
    f.meta("tokenizer.ggml.token_type", Value::I32Array(v.types));
    f.meta("tokenizer.ggml.merges", Value::StrArray(v.merges));
    f.meta("tokenizer.ggml.bos_token_id", Value::U32(eot));
    f.meta("tokenizer.ggml.eos_token_id", Value::U32(eot));
    f.meta("tokenizer.ggml.add_bos_token", Value::Bool(false));
    Ok(())
}

/// The GGUF of a full (not adapter) checkpoint of a pure attention stack.
pub fn llama_gguf(ckpt: &LoadedCheckpoint, format: GgufFormat) -> Result<GgufFile> {
    let m = &ckpt.config.model;
    let hf: BTreeMap<String, NamedTensor> = export_llama(m, &ckpt.model);
    let mut f = GgufFile::default();
    general(&mut f, "llama", format);
    let u = |v: usize| Value::U32(v as u32);
    f.meta("llama.context_length", u(m.max_seq_len));
    f.meta("llama.embedding_length", u(m.dim));
    f.meta("llama.block_count", u(m.effective_layers()));
    f.meta("llama.feed_forward_length", u(m.ffn_dim));
    f.meta("llama.rope.dimension_count", u(m.head_dim()));
    f.meta("llama.attention.head_count", u(m.n_heads));
    f.meta("llama.attention.head_count_kv", u(m.kv_heads()));
    if m.n_heads * m.head_dim() != m.dim {
        // Heads that do not tile the embedding (a structurally pruned model):
        // llama.cpp reads their width here instead of dim / n_heads.
        f.meta("llama.attention.key_length", u(m.head_dim()));
        f.meta("llama.attention.value_length", u(m.head_dim()));
    }
    f.meta(
        "llama.attention.layer_norm_rms_epsilon",
        Value::F32(m.norm_eps as f32),
    );
    f.meta("llama.rope.freq_base", Value::F32(m.rope_theta as f32));
    f.meta("llama.vocab_size", u(m.vocab_size));
    vocab_metadata(&mut f, ckpt)?;
    for (name, t) in &hf {
        let Some(gname) = gguf_name(name) else {
            return Err(TrainerError::Internal(format!("no GGUF name for {name}")));
        };
        let t = if gname.ends_with("attn_q.weight") {
            permute_rope_rows(t, m.n_heads)
        } else if gname.ends_with("attn_k.weight") {
            permute_rope_rows(t, m.kv_heads())
        } else {
            t.clone()
        };
        let kind = tensor_kind(&gname, &t, format);
        f.tensors.push(encode(&gname, &t, kind));
    }
    Ok(f)
}

/// Writes `ckpt` as GGUF (llama or mamba); returns the file's size in bytes.
pub fn write_gguf(ckpt: &LoadedCheckpoint, format: GgufFormat, out: &Path) -> Result<u64> {
    let m = &ckpt.config.model;
    let pure = |k: BlockKind| m.block_kinds().iter().all(|&b| b == k);
    let file = match m.arch {
        Arch::Llama if pure(BlockKind::Attention) => llama_gguf(ckpt, format)?,
        Arch::Mamba if pure(BlockKind::Mamba) && m.share_repeat == 1 => {
            mamba::mamba_gguf(ckpt, format)?
        }
        _ => {
            return Err(TrainerError::checkpoint(
                ckpt.dir.join("config.toml"),
                "GGUF export covers pure llama stacks (MobileLLM / MobiLlama shapes) and pure Mamba stacks; RWKV-7 and hybrid stacks are refused",
            ))
        }
    };
    file.save(out)
}
