//! `kiln curate RECIPE.toml`: a progress bar with rates around
//! `kiln_data::curate::curate`, and the closing summary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_data::curate::{curate, CurateOptions, CurateProgress, CurateSummary, Phase, Recipe};

/// Test hook (not for users): abort like a kill once this many documents
/// were scored in this run, to test resume.
const ABORT_ENV: &str = "KILN_CURATE_ABORT_AFTER_DOCS";

pub fn run(recipe_path: &Path, out: Option<PathBuf>) -> anyhow::Result<CurateSummary> {
    // Everything is checked here, before a byte is written.
    let recipe = Recipe::load_with(recipe_path, Some(&kiln_trainer::perplexity::ModelScorers))?;
    let abort_after_docs = std::env::var(ABORT_ENV).ok().and_then(|v| v.parse().ok());
    let opts = CurateOptions {
        out,
        abort_after_docs,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} {bar:30} {bytes}/{total_bytes} {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut phase = None;
    let mut started = Instant::now();
    let mut on_progress = |p: &CurateProgress| {
        if phase != Some(p.phase) {
            phase = Some(p.phase);
            started = Instant::now();
            bar.set_prefix(match p.phase {
                Phase::Score => "score ",
                Phase::Dedup => "dedup ",
                Phase::Select => "select",
            });
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_length(p.disk_bytes_total);
        bar.set_position(p.disk_bytes.min(p.disk_bytes_total));
        bar.set_message(format!(
            "{} docs ({:.0} docs/s)",
            p.docs,
            p.docs as f64 / secs
        ));
    };
    let summary = curate(&recipe, &opts, &mut on_progress)
        .with_context(|| format!("curating {}", recipe_path.display()))?;
    bar.finish_and_clear();
    Ok(summary)
}

/// Kept / read totals, per-stage drops and scoring rates, for the terminal.
pub fn render(s: &CurateSummary) -> String {
    let (read, kept) = s.report.total();
    let mut out = format!(
        "kept {} of {} documents ({} of {} words); {} parts scored, {} reused from an earlier run\n",
        kept.docs, read.docs, kept.words, read.words, s.parts_scored, s.parts_reused
    );
    for (st, t) in s.report.stages.iter().zip(&s.timings) {
        let rate = if t.cpu_seconds > 0.0 {
            format!(
                "{:.0} docs/s per core ({} docs scored in {:.2} cpu-s)",
                t.docs as f64 / t.cpu_seconds,
                t.docs,
                t.cpu_seconds
            )
        } else {
            "reused".to_string()
        };
        out.push_str(&format!(
            "  {:<20} dropped {:>8} docs  {rate}\n",
            st.name, st.dropped.docs
        ));
    }
    out.push_str(&format!(
        "wrote {} (kept/, attributes/, REPORT.md) in {:.1} s",
        s.out.display(),
        s.seconds
    ));
    out
}
