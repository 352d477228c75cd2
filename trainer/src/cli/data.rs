//! `kiln data prepare` and `kiln tokenizer train`: raw corpora to token
//! shards, and a byte-level BPE trained on the same sources.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_data::{prepare, DataSpec, PrepareOptions, PrepareReport, Progress, SpecTexts, Tokenizer};

/// Prepares `spec_path`; `out`/`tokenizer` override the spec's.
pub fn data_prepare(
    spec_path: &Path,
    out: Option<PathBuf>,
    tokenizer: Option<PathBuf>,
    opts: &PrepareOptions,
) -> anyhow::Result<PrepareReport> {
    let spec = DataSpec::load(spec_path)?;
    let Some(out) = out.or_else(|| spec.out.clone()) else {
        bail!(
            "{}: no output directory: set `out = \"DIR\"` in the spec or pass --out DIR",
            spec_path.display()
        );
    };
    let Some(tok_path) = tokenizer.or_else(|| spec.tokenizer.clone()) else {
        bail!(
            "{}: no tokenizer: set `tokenizer = \"tokenizer.json\"` in the spec or pass \
             --tokenizer (train one with `kiln tokenizer train {}`)",
            spec_path.display(),
            spec_path.display()
        );
    };
    let tokenizer = Tokenizer::from_file(&tok_path)?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut on_progress = |p: &Progress| {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_length(p.disk_bytes_total);
        bar.set_position(p.disk_bytes.min(p.disk_bytes_total));
        bar.set_message(format!(
            "{} docs ({:.0} docs/s) | {:.1} MB/s | {} tokens",
            p.docs,
            p.docs as f64 / secs,
            p.text_bytes as f64 / 1e6 / secs,
            p.tokens
        ));
    };
    let report = prepare(&spec, &out, &tokenizer, opts, &mut on_progress)
        .with_context(|| format!("preparing {}", spec_path.display()))?;
    bar.finish_and_clear();
    Ok(report)
}

/// Trains a tokenizer on the spec's sources, streaming them.
pub fn tokenizer_train(
    spec_path: &Path,
    kind: &str,
    vocab_size: usize,
    max_bytes: Option<u64>,
    out: &Path,
) -> anyhow::Result<Tokenizer> {
    let spec = DataSpec::load(spec_path)?;
    let mut texts = SpecTexts::open(&spec, max_bytes.unwrap_or(u64::MAX), false)?;
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!(
        "training a {kind} tokenizer on {}",
        spec_path.display()
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let tok = match kind {
        "bpe" => Tokenizer::train_bpe_stream(&mut texts, vocab_size),
        "char" => {
            let mut chars = std::collections::BTreeSet::new();
            for t in &mut texts {
                chars.extend(t.chars());
            }
            Tokenizer::train_char(&[chars.into_iter().collect::<String>()])
        }
        other => bail!("--kind {other}: use \"bpe\" (byte-level BPE) or \"char\""),
    };
    spinner.finish_and_clear();
    if let Some(e) = texts.error.take() {
        return Err(e.into());
    }
    let tok = tok?;
    tok.save(out)?;
    Ok(tok)
}

/// Writes `docs` built-in stories as JSONL (`{"text": ...}` per line),
/// streaming: one story in memory at a time. Returns the bytes written.
pub fn write_stories(out: &Path, seed: u64, docs: u64) -> anyhow::Result<u64> {
    use rand::SeedableRng;
    use std::io::Write;
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let bar = ProgressBar::new(docs);
    let mut bytes = 0u64;
    for i in 0..docs {
        let line = serde_json::json!({ "id": i, "text": kiln_data::generate_story(&mut rng) });
        let s = line.to_string();
        w.write_all(s.as_bytes())
            .and_then(|()| w.write_all(b"\n"))
            .with_context(|| format!("writing {}", out.display()))?;
        bytes += s.len() as u64 + 1;
        if i % 10_000 == 0 {
            bar.set_position(i);
        }
    }
    w.flush()
        .with_context(|| format!("writing {}", out.display()))?;
    bar.finish_and_clear();
    Ok(bytes)
}
