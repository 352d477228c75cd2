//! Little-endian reads over a `.bin` held in memory, tracking the byte offset
//! so a truncated or corrupt file is reported where it breaks. fastText writes
//! raw native-endian C++ values; every platform it ships on is little-endian.

use std::path::Path;

use super::FastTextError;

pub(crate) struct Reader<'a> {
    pub path: &'a Path,
    pub bytes: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(path: &'a Path, bytes: &'a [u8]) -> Self {
        Self {
            path,
            bytes,
            pos: 0,
        }
    }

    pub fn offset(&self) -> u64 {
        self.pos as u64
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FastTextError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(FastTextError::Truncated {
                path: self.path.to_path_buf(),
                offset: self.bytes.len() as u64,
                what,
                len: self.bytes.len() as u64,
            });
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], FastTextError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32, FastTextError> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }

    pub fn i64(&mut self, what: &'static str) -> Result<i64, FastTextError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    pub fn f64(&mut self, what: &'static str) -> Result<f64, FastTextError> {
        Ok(f64::from_le_bytes(self.array(what)?))
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, FastTextError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A C string: bytes up to (not including) the next NUL.
    pub fn cstr(&mut self, what: &'static str) -> Result<&'a [u8], FastTextError> {
        let rest = &self.bytes[self.pos..];
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(FastTextError::Truncated {
                path: self.path.to_path_buf(),
                offset: self.bytes.len() as u64,
                what,
                len: self.bytes.len() as u64,
            });
        };
        let s = &rest[..len];
        self.pos += len + 1;
        Ok(s)
    }

    /// `n` float32 values.
    pub fn f32s(&mut self, n: usize, what: &'static str) -> Result<Vec<f32>, FastTextError> {
        let nbytes = n.saturating_mul(4);
        let raw = self.take(nbytes, what)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub fn corrupt(&self, at: u64, what: &'static str, detail: String) -> FastTextError {
        FastTextError::Corrupt {
            path: self.path.to_path_buf(),
            offset: at,
            what,
            detail,
        }
    }
}

/// Appends little-endian values to a byte buffer (the whole `.bin` is built in
/// memory, then written atomically).
#[derive(Default)]
pub(crate) struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn cstr(&mut self, s: &[u8]) {
        self.buf.extend_from_slice(s);
        self.buf.push(0);
    }
    pub fn f32s(&mut self, v: &[f32]) {
        self.buf.reserve(v.len() * 4);
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
    }
}
