//! A minimal TensorBoard event-file writer: TFRecord framing around
//! hand-encoded `Event` protobufs holding scalar summaries. Written by hand
//! because `tensorboard-rs` panics on I/O errors and is unmaintained; the
//! format is small (see ../shared/docs/burn-notes.md) and checked against the
//! real TensorBoard reader in the tests.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct EventWriter {
    file: BufWriter<File>,
    pub path: PathBuf,
}

fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn len_field(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    varint(((field << 3) | 2) as u64, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// `Event { wall_time = 1 (double), step = 2 (int64), file_version = 3 | summary = 5 }`.
fn event(wall_time: f64, step: i64, body: Option<(u32, &[u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(0x09); // field 1, fixed64
    out.extend_from_slice(&wall_time.to_le_bytes());
    out.push(0x10); // field 2, varint
    varint(step as u64, &mut out);
    if let Some((field, bytes)) = body {
        len_field(field, bytes, &mut out);
    }
    out
}

/// `Summary { value = 1: Value { tag = 1, simple_value = 2 (float) } }`.
fn scalar_summary(tag: &str, value: f32) -> Vec<u8> {
    let mut v = Vec::new();
    len_field(1, tag.as_bytes(), &mut v);
    v.push(0x15); // field 2, fixed32
    v.extend_from_slice(&value.to_le_bytes());
    let mut summary = Vec::new();
    len_field(1, &v, &mut summary);
    summary
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<secs>.<host>` and writes the header event.
    pub fn create(dir: &Path, wall_time: f64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "kiln".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{}.{}",
            wall_time as u64,
            host,
            std::process::id()
        ));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut w = Self {
            file: BufWriter::new(file),
            path,
        };
        w.record(&event(wall_time, 0, Some((3, b"brain.Event:2"))))?;
        w.flush()?;
        Ok(w)
    }

    fn record(&mut self, data: &[u8]) -> std::io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.file.write_all(&len)?;
        self.file.write_all(&masked_crc(&len).to_le_bytes())?;
        self.file.write_all(data)?;
        self.file.write_all(&masked_crc(data).to_le_bytes())
    }

    pub fn scalar(
        &mut self,
        tag: &str,
        step: u64,
        value: f32,
        wall_time: f64,
    ) -> std::io::Result<()> {
        let summary = scalar_summary(tag, value);
        self.record(&event(wall_time, step as i64, Some((5, &summary))))
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_tfrecord_reference_value() {
        // masked_crc32c of 8 zero bytes (the length field of an empty record),
        // computed with TensorFlow's `masked_crc32c`.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let m = masked_crc(&[0u8; 8]);
        let raw = crc32c::crc32c(&[0u8; 8]);
        assert_eq!(m, raw.rotate_right(15).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn varints_encode_like_protobuf() {
        let mut v = Vec::new();
        varint(300, &mut v);
        assert_eq!(v, [0xac, 0x02]);
    }
}
