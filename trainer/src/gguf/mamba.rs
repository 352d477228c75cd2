//! Mamba-1 stacks as llama.cpp's `mamba` architecture (the layout
//! convert_hf_to_gguf.py's `MambaModel` writes): `A = -exp(A_log)`, the
//! depthwise conv squeezed to `[d_inner, K]`, SSM and norm tensors in f32.

use std::collections::BTreeMap;

use kiln_models::hf::export_mamba;
use kiln_models::NamedTensor;

use super::{encode, tensor_kind, vocab_metadata, GgufFile, GgufFormat, Value};
use crate::error::{Result, TrainerError};
use crate::session::LoadedCheckpoint;

/// HF Mamba name -> llama.cpp name.
fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "backbone.embeddings.weight" => return Some("token_embd.weight".into()),
        "backbone.norm_f.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("backbone.layers.")?;
    let (n, tail) = rest.split_once('.')?;
    let t = match tail {
        "norm.weight" => "attn_norm.weight",
        "mixer.in_proj.weight" => "ssm_in.weight",
        "mixer.conv1d.weight" => "ssm_conv1d.weight",
        "mixer.conv1d.bias" => "ssm_conv1d.bias",
        "mixer.x_proj.weight" => "ssm_x.weight",
        "mixer.dt_proj.weight" => "ssm_dt.weight",
        "mixer.dt_proj.bias" => "ssm_dt.bias",
        "mixer.A_log" => "ssm_a",
        "mixer.D" => "ssm_d",
        "mixer.out_proj.weight" => "ssm_out.weight",
        _ => return None,
    };
    Some(format!("blk.{n}.{t}"))
}

pub fn mamba_gguf(ckpt: &LoadedCheckpoint, format: GgufFormat) -> Result<GgufFile> {
    let m = &ckpt.config.model;
    if m.expand != 2 {
        return Err(TrainerError::checkpoint(
            ckpt.dir.join("config.toml"),
            format!(
                "model.expand = {}: llama.cpp's mamba reads d_inner = 2 x dim only",
                m.expand
            ),
        ));
    }
    let hf: BTreeMap<String, NamedTensor> = export_mamba(&ckpt.model);
    let mut f = GgufFile::default();
    super::general(&mut f, "mamba", format);
    let u = |v: usize| Value::U32(v as u32);
    f.meta("mamba.context_length", u(m.max_seq_len));
    f.meta("mamba.embedding_length", u(m.dim));
    // Unused by mamba, but llama.cpp reads them when loading.
    f.meta("mamba.feed_forward_length", u(0));
    f.meta("mamba.attention.head_count", u(0));
    f.meta("mamba.block_count", u(m.effective_layers()));
    f.meta("mamba.ssm.conv_kernel", u(m.d_conv));
    f.meta("mamba.ssm.inner_size", u(m.d_inner()));
    f.meta("mamba.ssm.state_size", u(m.d_state));
    f.meta("mamba.ssm.time_step_rank", u(m.resolved_dt_rank()));
    f.meta("mamba.ssm.dt_b_c_rms", Value::Bool(false));
    f.meta(
        "mamba.attention.layer_norm_rms_epsilon",
        Value::F32(m.norm_eps as f32),
    );
    vocab_metadata(&mut f, ckpt)?;
    for (name, t) in &hf {
        let Some(gname) = gguf_name(name) else {
            return Err(TrainerError::Internal(format!("no GGUF name for {name}")));
        };
        let t = if name.ends_with(".A_log") {
            NamedTensor {
                shape: t.shape.clone(),
                data: t.data.iter().map(|v| -v.exp()).collect(),
            }
        } else if name.ends_with("conv1d.weight") {
            NamedTensor {
                shape: vec![t.shape[0], *t.shape.last().unwrap_or(&1)],
                data: t.data.clone(),
            }
        } else {
            t.clone()
        };
        // The SSM's own tensors stay f32 (llama.cpp's ssm ops read f32).
        let ssm_f32 =
            gname.contains("ssm_conv1d") || gname.ends_with("ssm_a") || gname.ends_with("ssm_d");
        let kind = if ssm_f32 {
            super::GgmlType::F32
        } else {
            tensor_kind(&gname, &t, format)
        };
        f.tensors.push(encode(&gname, &t, kind));
    }
    Ok(f)
}
