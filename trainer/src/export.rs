//! `kiln export --format hf`: a folder that `transformers` loads with
//! `AutoModelForCausalLM.from_pretrained` (config.json, model.safetensors,
//! tokenizer.json). `kiln export --format rwkv`: the official RWKV-7 `.pth`
//! (`model.pth`, which the `rwkv` pip package loads as `RWKV("DIR/model")`
//! with `RWKV_V7_ON=1`) and tokenizer.json.

use std::collections::HashMap;
use std::path::Path;

use kiln_models::hf::{export_llama, export_mamba};
use kiln_models::rwkv7::export_rwkv7;
use kiln_models::{Arch, BlockKind};

use crate::error::{Result, TrainerError};
use crate::fsutil::write_atomic;
use crate::session::LoadedCheckpoint;
use crate::torch_pth::save_pth;
use crate::weights;

pub fn hf_config_json(ckpt: &LoadedCheckpoint) -> serde_json::Value {
    let m = &ckpt.config.model;
    if m.arch == Arch::Mamba {
        return mamba_config_json(ckpt);
    }
    let eot = ckpt.tokenizer.eot_id();
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": m.vocab_size,
        "hidden_size": m.dim,
        "intermediate_size": m.ffn_dim,
        "num_hidden_layers": m.effective_layers(),
        "num_attention_heads": m.n_heads,
        "num_key_value_heads": m.kv_heads(),
        "head_dim": m.head_dim(),
        "max_position_embeddings": m.max_seq_len,
        "rms_norm_eps": m.norm_eps,
        "rope_theta": m.rope_theta,
        "rope_parameters": {"rope_theta": m.rope_theta, "rope_type": "default"},
        "tie_word_embeddings": m.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": false,
        "attention_dropout": 0.0,
        "mlp_bias": false,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "dtype": "float32",
        "torch_dtype": "float32",
        "kiln": {"share_repeat": m.share_repeat, "shared_ffn": m.shared_ffn, "n_stored_layers": m.n_layers}
    })
}

/// `MambaConfig` of a pure Mamba stack (the fields `MambaForCausalLM` reads).
fn mamba_config_json(ckpt: &LoadedCheckpoint) -> serde_json::Value {
    let m = &ckpt.config.model;
    let eot = ckpt.tokenizer.eot_id();
    serde_json::json!({
        "architectures": ["MambaForCausalLM"],
        "model_type": "mamba",
        "vocab_size": m.vocab_size,
        "hidden_size": m.dim,
        "state_size": m.d_state,
        "num_hidden_layers": m.effective_layers(),
        "layer_norm_epsilon": m.norm_eps,
        "expand": m.expand,
        "conv_kernel": m.d_conv,
        "time_step_rank": m.resolved_dt_rank(),
        "use_bias": false,
        "use_conv_bias": true,
        "hidden_act": "silu",
        "residual_in_fp32": true,
        "tie_word_embeddings": m.tie_embeddings,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "dtype": "float32",
        "torch_dtype": "float32"
    })
}

pub fn export_hf(ckpt: &LoadedCheckpoint, out: &Path) -> Result<()> {
    let m = &ckpt.config.model;
    let kinds = m.block_kinds();
    let pure = |k: BlockKind| kinds.iter().all(|&b| b == k);
    let tensors = match m.arch {
        Arch::Llama if pure(BlockKind::Attention) => export_llama(m, &ckpt.model),
        Arch::Mamba if pure(BlockKind::Mamba) && m.share_repeat == 1 => export_mamba(&ckpt.model),
        _ => {
            return Err(TrainerError::checkpoint(
                ckpt.dir.join("config.toml"),
                "model.blocks mixes block kinds (or shares Mamba blocks): Hugging Face has no class for this stack; `--format hf` exports pure llama or mamba models",
            ))
        }
    };
    std::fs::create_dir_all(out).map_err(|e| TrainerError::io(out, e))?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    weights::save(&out.join("model.safetensors"), &tensors, Some(meta))?;
    let cfg = serde_json::to_vec_pretty(&hf_config_json(ckpt))
        .map_err(|e| TrainerError::Internal(e.to_string()))?;
    write_atomic(&out.join("config.json"), &cfg)?;
    ckpt.tokenizer.save(&out.join("tokenizer.json"))?;
    Ok(())
}

/// `DIR/model.pth` in the official RWKV-7 layout, and `DIR/tokenizer.json`.
pub fn export_rwkv(ckpt: &LoadedCheckpoint, out: &Path) -> Result<()> {
    let m = &ckpt.config.model;
    let pure = m.block_kinds().iter().all(|&b| b == BlockKind::Rwkv);
    if m.arch != Arch::Rwkv7 || !pure || m.share_repeat != 1 {
        return Err(TrainerError::checkpoint(
            ckpt.dir.join("config.toml"),
            "`--format rwkv` exports pure RWKV-7 stacks (model.arch = \"rwkv7\", every block \"rwkv\", share_repeat = 1): use `--format hf` for llama or mamba models",
        ));
    }
    let mut tensors = export_rwkv7(&ckpt.model);
    // The rwkv package reads an explicit head: a tied one is written out.
    if !tensors.contains_key("head.weight") {
        if let Some(emb) = tensors.get("emb.weight").cloned() {
            tensors.insert("head.weight".to_string(), emb);
        }
    }
    std::fs::create_dir_all(out).map_err(|e| TrainerError::io(out, e))?;
    save_pth(&out.join("model.pth"), &tensors)?;
    ckpt.tokenizer.save(&out.join("tokenizer.json"))?;
    Ok(())
}
