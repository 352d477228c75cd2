//! Writes a PyTorch `.pth` state dict (what `torch.save(dict_of_tensors)`
//! produces and `torch.load` reads, `weights_only` and `mmap` included):
//! a zip of stored entries `archive/data.pkl` (a protocol-2 pickle of
//! `{name: torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False,
//! OrderedDict())}` whose storages are persistent ids
//! `('storage', torch.FloatStorage, key, 'cpu', numel)`), one
//! `archive/data/{key}` of raw little-endian f32 per tensor (64-byte
//! aligned, as torch aligns them for mmap), `archive/byteorder` and
//! `archive/version`. The file is written atomically.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::Path;

use kiln_models::NamedTensor;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::error::{Result, TrainerError};
use crate::fsutil::write_atomic;

/// Pickle protocol-2 opcodes used here.
mod op {
    pub const PROTO: u8 = 0x80;
    pub const EMPTY_DICT: u8 = b'}';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const MARK: u8 = b'(';
    pub const TUPLE: u8 = b't';
    pub const BINUNICODE: u8 = b'X';
    pub const GLOBAL: u8 = b'c';
    pub const BINPERSID: u8 = b'Q';
    pub const BININT: u8 = b'J';
    pub const LONG1: u8 = 0x8a;
    pub const NEWFALSE: u8 = 0x89;
    pub const REDUCE: u8 = b'R';
    pub const SETITEMS: u8 = b'u';
    pub const STOP: u8 = b'.';
}

struct Pickle(Vec<u8>);

impl Pickle {
    fn op(&mut self, code: u8) {
        self.0.push(code);
    }
    fn string(&mut self, s: &str) {
        self.op(op::BINUNICODE);
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
    }
    fn global(&mut self, module: &str, name: &str) {
        self.op(op::GLOBAL);
        self.0.extend(format!("{module}\n{name}\n").as_bytes());
    }
    fn int(&mut self, v: usize) {
        match i32::try_from(v) {
            Ok(small) => {
                self.op(op::BININT);
                self.0.extend(small.to_le_bytes());
            }
            Err(_) => {
                // LONG1: little-endian two's complement, 8 bytes is plenty.
                self.op(op::LONG1);
                self.0.push(8);
                self.0.extend((v as i64).to_le_bytes());
            }
        }
    }
    fn int_tuple(&mut self, values: &[usize]) {
        self.op(op::MARK);
        for &v in values {
            self.int(v);
        }
        self.op(op::TUPLE);
    }
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The pickle of the state dict (tensor `i` in name order is storage `"i"`).
fn state_dict_pickle(tensors: &BTreeMap<String, NamedTensor>) -> Vec<u8> {
    let mut p = Pickle(Vec::new());
    p.op(op::PROTO);
    p.0.push(2);
    p.op(op::EMPTY_DICT);
    p.op(op::MARK);
    for (key, (name, t)) in tensors.iter().enumerate() {
        p.string(name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(op::MARK);
        // Persistent id of the storage.
        p.op(op::MARK);
        p.string("storage");
        p.global("torch", "FloatStorage");
        p.string(&key.to_string());
        p.string("cpu");
        p.int(t.data.len());
        p.op(op::TUPLE);
        p.op(op::BINPERSID);
        p.int(0); // storage offset
        p.int_tuple(&t.shape);
        p.int_tuple(&strides(&t.shape));
        p.op(op::NEWFALSE); // requires_grad
        p.global("collections", "OrderedDict"); // backward hooks
        p.op(op::EMPTY_TUPLE);
        p.op(op::REDUCE);
        p.op(op::TUPLE);
        p.op(op::REDUCE);
    }
    p.op(op::SETITEMS);
    p.op(op::STOP);
    p.0
}

/// The `.pth` bytes of `tensors` (f32).
pub fn pth_bytes(
    tensors: &BTreeMap<String, NamedTensor>,
) -> std::result::Result<Vec<u8>, zip::result::ZipError> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    // Zip64 fields only where an entry needs them: torch's reader (miniz)
    // rejects the zip64 extra field on small entries.
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored)?;
    zip.write_all(&state_dict_pickle(tensors))?;
    zip.start_file("archive/byteorder", stored)?;
    zip.write_all(b"little")?;
    for (key, t) in tensors.values().enumerate() {
        let large = t.data.len() * 4 >= u32::MAX as usize;
        zip.start_file(
            format!("archive/data/{key}"),
            stored.with_alignment(64).large_file(large),
        )?;
        let mut bytes = Vec::with_capacity(t.data.len() * 4);
        for v in &t.data {
            bytes.extend(v.to_le_bytes());
        }
        zip.write_all(&bytes)?;
    }
    zip.start_file("archive/version", stored)?;
    zip.write_all(b"3\n")?;
    Ok(zip.finish()?.into_inner())
}

/// Writes `tensors` as a `.pth` at `path`, atomically.
pub fn save_pth(path: &Path, tensors: &BTreeMap<String, NamedTensor>) -> Result<()> {
    let bytes = pth_bytes(tensors)
        .map_err(|e| TrainerError::Internal(format!("{}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn archive_holds_the_pickle_and_raw_aligned_storages() {
        let mut t = BTreeMap::new();
        t.insert(
            "a.weight".to_string(),
            NamedTensor {
                shape: vec![2, 3],
                data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            },
        );
        t.insert(
            "b".to_string(),
            NamedTensor {
                shape: vec![1, 1, 2],
                data: vec![-1.5, 0.25],
            },
        );
        let bytes = pth_bytes(&t).expect("zip");
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes.clone())).expect("read back");
        let mut raw = Vec::new();
        zip.by_name("archive/data/1")
            .expect("storage of b")
            .read_to_end(&mut raw)
            .expect("read");
        assert_eq!(
            raw,
            [(-1.5f32).to_le_bytes(), 0.25f32.to_le_bytes()].concat()
        );
        let offset = zip
            .by_name("archive/data/0")
            .expect("a")
            .data_start()
            .expect("data offset");
        assert_eq!(offset % 64, 0, "storages are 64-byte aligned for mmap");
        let mut pkl = Vec::new();
        zip.by_name("archive/data.pkl")
            .expect("pickle")
            .read_to_end(&mut pkl)
            .expect("read");
        assert_eq!(&pkl[..2], &[0x80, 2]);
        assert_eq!(*pkl.last().expect("stop"), b'.');
        let text = String::from_utf8_lossy(&pkl);
        for needle in [
            "a.weight",
            "_rebuild_tensor_v2",
            "FloatStorage",
            "OrderedDict",
        ] {
            assert!(text.contains(needle), "{needle}");
        }
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
    }
}
