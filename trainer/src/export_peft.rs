//! `kiln export --format peft`: a LoRA checkpoint's adapters as Hugging Face
//! `peft` writes them (`adapter_config.json` + `adapter_model.safetensors`),
//! to load with `PeftModel.from_pretrained` over the base's `--format hf`
//! export. Names: `base_model.model.<HF module>.lora_A.weight` `[r, in]` and
//! `lora_B.weight` `[out, r]` (Kiln stores the transposes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use kiln_models::hf::{export_llama, transpose};
use kiln_models::{is_adapter_name, Arch, BlockKind, NamedTensor};

use crate::error::{Result, TrainerError};
use crate::fsutil::write_atomic;
use crate::session::LoadedCheckpoint;
use crate::weights;

/// Mamba modules whose adapters Hugging Face cannot use: peft refuses LoRA
/// on `out_proj` (and `conv1d`), and transformers' `MambaMixer` multiplies
/// by `dt_proj.weight` directly, so a `dt_proj` adapter would load and be
/// silently ignored.
const PEFT_MAMBA_REFUSED: [&str; 3] = ["out_proj", "conv1d", "dt_proj"];

pub fn export_peft(ckpt: &LoadedCheckpoint, out: &Path) -> Result<()> {
    let cfg_path = ckpt.dir.join("config.toml");
    let refuse = |why: &str| Err(TrainerError::checkpoint(&cfg_path, why.to_string()));
    let Some(adapter) = &ckpt.config.adapter else {
        return refuse("has no [adapter]: `--format peft` exports LoRA adapters; export the model itself with `--format hf`");
    };
    if !adapter.trainable.is_empty() {
        return refuse("trains whole tensors beside its adapters (adapter.trainable), which Kiln does not write in peft's modules_to_save layout: merge with `kiln merge` and export `--format hf`");
    }
    let m = &ckpt.config.model;
    let pure = |k: BlockKind| m.block_kinds().iter().all(|&b| b == k);
    let adapters: BTreeMap<String, NamedTensor> = ckpt
        .model
        .iter()
        .filter(|(n, _)| is_adapter_name(n))
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    let hf = match m.arch {
        // Shared blocks and the shared FFN expand to per-layer copies, as
        // in the base's HF export; every 2-D tensor is transposed.
        Arch::Llama if pure(BlockKind::Attention) => export_llama(m, &adapters),
        Arch::Mamba if pure(BlockKind::Mamba) && m.share_repeat == 1 => {
            if let Some(bad) = adapters.keys().find(|n| {
                PEFT_MAMBA_REFUSED
                    .iter()
                    .any(|r| n.contains(&format!(".{r}.lora.")))
            }) {
                return Err(TrainerError::checkpoint(
                    &cfg_path,
                    format!("adapts {bad}, which Hugging Face cannot apply (peft refuses Mamba's out_proj; transformers bypasses dt_proj adapters): train with targets in_proj x_proj for a peft export, or merge (`kiln merge`) and export `--format hf`"),
                ));
            }
            adapters.iter().map(|(n, t)| (n.clone(), transpose(t))).collect()
        }
        _ => return refuse("`--format peft` exports adapters of pure llama or mamba stacks (what transformers has classes for)"),
    };
    let mut tensors = BTreeMap::new();
    let mut modules = BTreeSet::new();
    for (name, t) in hf {
        let (module, factor) = match (name.strip_suffix(".lora.a"), name.strip_suffix(".lora.b")) {
            (Some(m), _) => (m.to_string(), "lora_A"),
            (None, Some(m)) => (m.to_string(), "lora_B"),
            _ => continue,
        };
        tensors.insert(format!("base_model.model.{module}.{factor}.weight"), t);
        modules.insert(module);
    }
    std::fs::create_dir_all(out).map_err(|e| TrainerError::io(out, e))?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    weights::save(&out.join("adapter_model.safetensors"), &tensors, Some(meta))?;
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": adapter.r,
        "lora_alpha": adapter.alpha,
        "lora_dropout": adapter.dropout,
        "use_rslora": adapter.rslora,
        // Full module names: peft matches a target by name or name suffix,
        // so exactly these modules get adapters.
        "target_modules": modules.into_iter().collect::<Vec<_>>(),
        "bias": "none",
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "base_model_name_or_path": null,
        "use_dora": false,
    });
    let bytes =
        serde_json::to_vec_pretty(&config).map_err(|e| TrainerError::Internal(e.to_string()))?;
    write_atomic(&out.join("adapter_config.json"), &bytes)?;
    Ok(())
}
