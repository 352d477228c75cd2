//! Scalars to TensorBoard (`RUN_DIR/tb/`) and `RUN_DIR/metrics.jsonl`. A sink
//! that fails is reported once and switched off: logging never stops training.

pub mod tensorboard;

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use tensorboard::EventWriter;

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub struct MetricsLogger {
    tb: Option<EventWriter>,
    jsonl: Option<BufWriter<File>>,
}

fn warn_once(what: &str, err: &dyn std::fmt::Display) {
    eprintln!("warning: cannot write {what} ({err}); training continues without it");
}

impl MetricsLogger {
    pub fn open(run_dir: &Path, tensorboard: bool, jsonl: bool) -> Self {
        let tb = if tensorboard {
            EventWriter::create(&run_dir.join("tb"), now())
                .map_err(|e| warn_once("TensorBoard events", &e))
                .ok()
        } else {
            None
        };
        let jsonl = if jsonl {
            let path = run_dir.join("metrics.jsonl");
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map(BufWriter::new)
                .map_err(|e| warn_once(&path.display().to_string(), &e))
                .ok()
        } else {
            None
        };
        Self { tb, jsonl }
    }

    /// A logger that writes nothing (bench, eval).
    pub fn disabled() -> Self {
        Self {
            tb: None,
            jsonl: None,
        }
    }

    pub fn scalar(&mut self, step: u64, tag: &str, value: f64) {
        let wall = now();
        if let Some(tb) = self.tb.as_mut() {
            if let Err(e) = tb.scalar(tag, step, value as f32, wall) {
                warn_once("TensorBoard events", &e);
                self.tb = None;
            }
        }
        if let Some(f) = self.jsonl.as_mut() {
            let line = serde_json::json!({"step": step, "tag": tag, "value": json_number(value), "wall_time": wall});
            if let Err(e) = writeln!(f, "{line}") {
                warn_once("metrics.jsonl", &e);
                self.jsonl = None;
            }
        }
    }

    pub fn flush(&mut self) {
        if let Some(tb) = self.tb.as_mut() {
            if let Err(e) = tb.flush() {
                warn_once("TensorBoard events", &e);
                self.tb = None;
            }
        }
        if let Some(f) = self.jsonl.as_mut() {
            if let Err(e) = f.flush() {
                warn_once("metrics.jsonl", &e);
                self.jsonl = None;
            }
        }
    }
}

/// JSON has no NaN/inf: write them as strings, as Python's reader expects.
fn json_number(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else if v.is_nan() {
        serde_json::json!("NaN")
    } else if v > 0.0 {
        serde_json::json!("Infinity")
    } else {
        serde_json::json!("-Infinity")
    }
}

impl Drop for MetricsLogger {
    fn drop(&mut self) {
        self.flush();
    }
}
