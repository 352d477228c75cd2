//! The GGUF v3 container (ggml's `gguf.c`, the `gguf` pip package's
//! `GGUFWriter`): header, typed key/value metadata, tensor infos, then the
//! tensor data, each aligned to `general.alignment` (32).

use std::path::Path;

use crate::error::Result;
use crate::fsutil::write_atomic;

pub const ALIGNMENT: usize = 32;

/// ggml tensor types written here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q8_0 = 8,
}

/// A metadata value.
#[derive(Debug, Clone)]
pub enum Value {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
    F32Array(Vec<f32>),
}

/// One tensor: its name, ggml dims (`ne[0]` first: the contiguous
/// dimension, i.e. PyTorch's last), type and encoded bytes.
pub struct TensorEntry {
    pub name: String,
    pub dims: Vec<u64>,
    pub kind: GgmlType,
    pub data: Vec<u8>,
}

#[derive(Default)]
pub struct GgufFile {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorEntry>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    // GGUF value types: 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array.
    let tag = |out: &mut Vec<u8>, t: u32| out.extend_from_slice(&t.to_le_bytes());
    match v {
        Value::U32(x) => {
            tag(out, 4);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::I32(x) => {
            tag(out, 5);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::F32(x) => {
            tag(out, 6);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::Bool(x) => {
            tag(out, 7);
            out.push(*x as u8);
        }
        Value::Str(s) => {
            tag(out, 8);
            put_str(out, s);
        }
        Value::StrArray(items) => {
            tag(out, 9);
            tag(out, 8);
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|s| put_str(out, s));
        }
        Value::I32Array(items) => {
            tag(out, 9);
            tag(out, 5);
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        Value::F32Array(items) => {
            tag(out, 9);
            tag(out, 6);
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
    }
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(ALIGNMENT) {
        out.push(0);
    }
}

impl GgufFile {
    pub fn meta(&mut self, key: &str, v: Value) {
        self.metadata.push((key.to_string(), v));
    }

    /// The whole file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            t.dims
                .iter()
                .for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
            out.extend_from_slice(&(t.kind as u32).to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += t.data.len().next_multiple_of(ALIGNMENT) as u64;
        }
        pad(&mut out);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            pad(&mut out);
        }
        out
    }

    /// Written atomically (temp, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<u64> {
        let bytes = self.to_bytes();
        write_atomic(path, &bytes)?;
        Ok(bytes.len() as u64)
    }
}
