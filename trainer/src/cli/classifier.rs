//! `kiln classifier train|predict`: a thin shell over
//! `kiln_data::curate::fasttext` (fastText-compatible quality classifiers).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kiln_data::curate::fasttext::{self, FastText};

use super::commands::{emit, ClosedPipe};

#[derive(Subcommand)]
pub enum ClassifierAction {
    /// Train a supervised classifier on `__label__X text` lines (one
    /// example per line, fastText's format) and write a fastText `.bin`.
    Train(ClassifierTrainArgs),
    /// Print the top labels and probabilities for each input line, as
    /// `fasttext predict-prob` does: `__label__a 0.97 __label__b 0.03`.
    Predict(ClassifierPredictArgs),
}

/// Defaults are `fasttext supervised`'s; training runs on one thread, so
/// --seed fixes the model bytes.
#[derive(Args)]
pub struct ClassifierTrainArgs {
    /// Training file: `__label__X text` per line.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the model (fastText `.bin`).
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 100)]
    pub dim: i32,
    #[arg(long, default_value_t = 5)]
    pub epoch: i32,
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Word n-gram length (DCLM uses 2).
    #[arg(long, default_value_t = 1)]
    pub word_ngrams: i32,
    /// Hash buckets for word and char n-grams.
    #[arg(long, default_value_t = 2_000_000)]
    pub bucket: i32,
    /// Char n-gram lengths (0 = off).
    #[arg(long, default_value_t = 0)]
    pub minn: i32,
    #[arg(long, default_value_t = 0)]
    pub maxn: i32,
    /// Words seen fewer times are dropped.
    #[arg(long, default_value_t = 1)]
    pub min_count: i32,
    #[arg(long, default_value_t = 0)]
    pub seed: i32,
    /// Label prefix.
    #[arg(long, default_value = "__label__")]
    pub label: String,
}

#[derive(Args)]
pub struct ClassifierPredictArgs {
    /// A fastText `.bin` (from fastText, pip `fasttext` or `kiln classifier train`).
    #[arg(long)]
    pub model: PathBuf,
    /// Labels per line (0 = all).
    #[arg(long, default_value_t = 1)]
    pub k: usize,
    /// Only labels with probability >= this.
    #[arg(long, default_value_t = 0.0)]
    pub threshold: f32,
    /// Text to classify, one document per line (default: standard input).
    #[arg(long)]
    pub input: Option<PathBuf>,
}

pub fn run(action: ClassifierAction) -> anyhow::Result<()> {
    match action {
        ClassifierAction::Train(a) => train(a),
        ClassifierAction::Predict(a) => predict(a),
    }
}

fn train(a: ClassifierTrainArgs) -> anyhow::Result<()> {
    let args = fasttext::Args {
        dim: a.dim,
        epoch: a.epoch,
        lr: a.lr,
        word_ngrams: a.word_ngrams,
        bucket: a.bucket,
        minn: a.minn,
        maxn: a.maxn,
        min_count: a.min_count,
        seed: a.seed,
        label: a.label,
        ..fasttext::Args::default()
    };
    let start = Instant::now();
    let model = FastText::train(&a.input, &args)?;
    model.save(&a.output)?;
    emit(&format!(
        "{}: {} words, {} labels, {} tokens x {} epochs in {:.2}s",
        a.output.display(),
        model.dict.nwords,
        model.dict.nlabels,
        model.dict.ntokens,
        args.epoch,
        start.elapsed().as_secs_f64()
    ))
}

fn predict(a: ClassifierPredictArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&a.threshold) {
        bail!(
            "--threshold {} is not a probability: use a value in [0, 1]",
            a.threshold
        );
    }
    let model = FastText::load(&a.model)?;
    let mut bytes = Vec::new();
    match &a.input {
        Some(path) => {
            bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
        }
        None => {
            std::io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .context("reading standard input")?;
        }
    }
    // Lines are bytes, not UTF-8: fastText hashes whatever it reads.
    let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in text.split(|&b| b == b'\n').filter(|_| !bytes.is_empty()) {
        let preds = model.predict_bytes(line, a.k, a.threshold);
        let fields: Vec<String> = preds
            .iter()
            .map(|p| format!("{} {}", p.label, p.prob))
            .collect();
        write_line(&mut out, &fields.join(" "))?;
    }
    out.flush().map_err(pipe_error)
}

fn write_line(out: &mut impl Write, line: &str) -> anyhow::Result<()> {
    writeln!(out, "{line}").map_err(pipe_error)
}

/// A closed stdout (`| head`) ends the command quietly, as `emit` does.
fn pipe_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        ClosedPipe.into()
    } else {
        anyhow::Error::new(e).context("writing to stdout")
    }
}
