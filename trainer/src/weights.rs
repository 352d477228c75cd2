//! safetensors files <-> named host tensors, written atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use kiln_models::NamedTensor;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{Result, TrainerError};
use crate::fsutil::write_atomic;

/// Serialises f32 tensors (sorted by name) with optional string metadata.
pub fn to_bytes(
    tensors: &BTreeMap<String, NamedTensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let raw: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                t.shape.clone(),
            )
        })
        .collect();
    let views = raw
        .iter()
        .map(|(k, bytes, shape)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| TrainerError::Internal(format!("tensor {k}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, &metadata)
        .map_err(|e| TrainerError::Internal(format!("safetensors: {e}")))
}

pub fn save(
    path: &Path,
    tensors: &BTreeMap<String, NamedTensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    write_atomic(path, &to_bytes(tensors, metadata)?)
}

/// Reads every tensor of a safetensors file as f32 (F32, F16 and BF16 accepted).
pub fn load(path: &Path) -> Result<BTreeMap<String, NamedTensor>> {
    let bytes = std::fs::read(path).map_err(|e| TrainerError::io(path, e))?;
    from_bytes(&bytes, path)
}

pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, NamedTensor>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        TrainerError::checkpoint(
            path,
            format!("not a readable safetensors file ({e}): the file is truncated or corrupt"),
        )
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::BF16 => view.data().chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect(),
            Dtype::F16 => view.data().chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
            other => {
                return Err(TrainerError::checkpoint(
                    path,
                    format!("tensor `{name}` has dtype {other:?}; only F32, F16 and BF16 weights can be loaded"),
                ))
            }
        };
        out.insert(
            name,
            NamedTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // subnormal: normalise
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}
