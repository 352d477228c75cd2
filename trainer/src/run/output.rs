//! What a run shows and writes besides checkpoints: the progress bar, log
//! lines (stderr and `train.log`), TensorBoard / JSONL scalars and the run's
//! shared files. Only the leader rank writes; other ranks get a silent
//! [`RunOutput`] so that N processes never race on one run directory.

use std::io::Write;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{Result, TrainerError};
use crate::fsutil::write_atomic;
use crate::metrics::MetricsLogger;
use crate::world::World;

pub struct RunOutput {
    /// None on non-leader ranks: nothing is written or shown.
    leader: Option<Leader>,
}

struct Leader {
    log_file: Option<std::fs::File>,
    bar: ProgressBar,
    metrics: MetricsLogger,
}

impl RunOutput {
    /// Opens the run directory's sinks on the leader; a silent output elsewhere.
    pub fn open(
        world: World,
        run_dir: &Path,
        tensorboard: bool,
        jsonl: bool,
        max_steps: u64,
        step: u64,
    ) -> Result<Self> {
        if !world.is_leader() {
            return Ok(Self { leader: None });
        }
        std::fs::create_dir_all(run_dir).map_err(|e| TrainerError::io(run_dir, e))?;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run_dir.join("train.log"))
            .ok();
        let bar = ProgressBar::new(max_steps).with_position(step);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Ok(Self {
            leader: Some(Leader {
                log_file,
                bar,
                metrics: MetricsLogger::open(run_dir, tensorboard, jsonl),
            }),
        })
    }

    pub fn is_leader(&self) -> bool {
        self.leader.is_some()
    }

    /// A line on stderr (above the bar) and in `train.log`.
    pub fn line(&mut self, msg: &str) {
        let Some(l) = self.leader.as_mut() else {
            return;
        };
        if l.bar.is_hidden() {
            // A closed stderr (e.g. piped into `head`) must not stop training.
            let _ = writeln!(std::io::stderr(), "{msg}");
        } else {
            l.bar.println(msg);
        }
        l.log_to_file(msg);
    }

    /// A line in `train.log` only.
    pub fn file_line(&mut self, msg: &str) {
        if let Some(l) = self.leader.as_mut() {
            l.log_to_file(msg);
        }
    }

    pub fn scalar(&mut self, step: u64, tag: &str, value: f64) {
        if let Some(l) = self.leader.as_mut() {
            l.metrics.scalar(step, tag, value);
        }
    }

    pub fn flush(&mut self) {
        if let Some(l) = self.leader.as_mut() {
            l.metrics.flush();
        }
    }

    pub fn progress(&mut self, step: u64, msg: Option<String>) {
        if let Some(l) = self.leader.as_mut() {
            if let Some(m) = msg {
                l.bar.set_message(m);
            }
            l.bar.set_position(step);
        }
    }

    /// Ends the bar: cleared on a finished run, left on screen otherwise.
    pub fn finish(&mut self, cleared: bool) {
        if let Some(l) = self.leader.as_mut() {
            if cleared {
                l.bar.finish_and_clear();
            } else {
                l.bar.abandon();
            }
            l.metrics.flush();
        }
    }

    /// A shared file of the run (config, tokenizer, plan), written atomically.
    pub fn shared_file(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        if self.is_leader() {
            write_atomic(path, bytes)?;
        }
        Ok(())
    }
}

impl Leader {
    fn log_to_file(&mut self, msg: &str) {
        if let Some(f) = self.log_file.as_mut() {
            if writeln!(f, "{msg}").is_err() {
                let _ = writeln!(
                    std::io::stderr(),
                    "warning: cannot write train.log; training continues"
                );
                self.log_file = None;
            }
        }
    }
}
