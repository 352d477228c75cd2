//! A curation recipe (`kiln curate RECIPE.toml`): the sources (the same
//! `[[source]]` tables as a `kiln data prepare` spec), the stages in order
//! and the keep expression.
//!
//! ```toml
//! out = "curated"          # relative to this file
//! part_docs = 10000        # documents per part: the unit of resume
//! keep = "gopher_quality.keep && !minhash.duplicate && language.score >= 0.65"
//!
//! [[source]]
//! domain = "web"
//! paths = ["raw/web/*.jsonl.gz"]
//!
//! [[stage]]
//! kind = "gopher_quality"  # then the filter's own parameters
//! min_doc_words = 50
//!
//! [[stage]]
//! kind = "language"
//! name = "lang"            # attribute namespace; default: the kind
//! ```
//!
//! Loading checks everything before anything is written: TOML, stage kinds
//! and their fields, thresholds, the bad-words list, the keep expression and
//! that every source path matches files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::error::CurateError;
use super::filters::{BadWordsConfig, C4Quality, GopherQuality, GopherRepetition, LanguageFilter};
use super::keep::{self, Expr, Schema, Type};
use super::minhash::{MinHasher, MinhashConfig};
use super::ranked::{ClassifierScorer, DocScorer, RankRule, RankedStage, ScorerFactory};
use super::stage::{Stage, StageKind, KINDS};
use crate::error::DataError;
use crate::prepare::DataSpec;
use crate::sources::{resolve_files, SourceFile, SourceSpec};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    out: Option<PathBuf>,
    #[serde(default = "default_part_docs")]
    part_docs: u64,
    keep: Option<String>,
    #[serde(rename = "source", default)]
    sources: Vec<SourceSpec>,
    #[serde(rename = "stage", default)]
    stages: Vec<RawStage>,
}

fn default_part_docs() -> u64 {
    10_000
}

#[derive(Deserialize)]
struct RawStage {
    kind: Option<String>,
    name: Option<String>,
    #[serde(flatten)]
    params: toml::Table,
}

/// A loaded, checked recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The recipe file, for messages.
    pub path: PathBuf,
    pub out: Option<PathBuf>,
    pub part_docs: u64,
    /// The keep expression as written (or the default: every stage's keep).
    pub keep_src: String,
    pub keep: Expr,
    pub sources: Vec<SourceSpec>,
    /// `[sources][files]`, resolved at load time.
    pub files: Vec<Vec<SourceFile>>,
    pub stages: Vec<Stage>,
}

impl Recipe {
    /// Reads and checks `path`; relative paths are taken from its directory.
    pub fn load(path: &Path) -> Result<Recipe, CurateError> {
        Self::load_with(path, None)
    }

    /// [`Recipe::load`] with the stage kinds `factory` builds (the trainer's
    /// `perplexity`).
    pub fn load_with(
        path: &Path,
        factory: Option<&dyn ScorerFactory>,
    ) -> Result<Recipe, CurateError> {
        let text = std::fs::read_to_string(path).map_err(|e| CurateError::Recipe {
            path: path.to_path_buf(),
            field: "file".into(),
            message: format!("{e}: check the path of the recipe"),
        })?;
        Self::parse(&text, path, factory)
    }

    /// Parses recipe `text` as if read from `path`.
    pub fn parse(
        text: &str,
        path: &Path,
        factory: Option<&dyn ScorerFactory>,
    ) -> Result<Recipe, CurateError> {
        let err = |field: &str, message: String| CurateError::Recipe {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        let raw: RawRecipe = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().replace('\n', " ");
            let at = e
                .span()
                .map(|s| {
                    let line = text.as_bytes()[..s.start.min(text.len())]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count()
                        + 1;
                    format!("line {line}")
                })
                .unwrap_or_else(|| "TOML".into());
            err(
                &at,
                format!("{msg}: fix the recipe's TOML (see README, `kiln curate`)"),
            )
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        if raw.part_docs == 0 {
            return Err(err("part_docs", "0 must be at least 1, e.g. 10000".into()));
        }
        if raw.sources.is_empty() {
            return Err(err(
                "source",
                "no [[source]] tables: add at least one, as in a `kiln data prepare` spec".into(),
            ));
        }
        let mut spec = DataSpec {
            out: None,
            tokenizer: None,
            val_fraction: 0.0,
            split_seed: 0,
            shard_tokens: 1,
            sources: raw.sources,
        };
        spec.rebase(&base);
        spec.validate(path)?;
        if raw.stages.is_empty() {
            return Err(err("stage", format!("no [[stage]] tables: add at least one, e.g. kind = \"gopher_quality\" (kinds: {})", KINDS.join(", "))));
        }
        let mut stages = Vec::new();
        let mut names = BTreeSet::new();
        for (i, s) in raw.stages.into_iter().enumerate() {
            let stage = build_stage(i, s, &base, path, factory)?;
            if !names.insert(stage.name.clone()) {
                return Err(err(
                    &format!("stage[{i}].name"),
                    format!(
                        "\"{}\" is used by two stages: give one a different `name = \"...\"`",
                        stage.name
                    ),
                ));
            }
            stages.push(stage);
        }
        let keep_src = raw.keep.unwrap_or_else(|| {
            stages
                .iter()
                .map(|s| format!("{}.keep", s.name))
                .collect::<Vec<_>>()
                .join(" && ")
        });
        let schema = StageSchema(&stages);
        let keep = keep::parse(&keep_src, &schema).map_err(|e| CurateError::Keep {
            path: path.to_path_buf(),
            expr: keep_src.clone(),
            at: e.at,
            message: e.message,
        })?;
        let mut files = Vec::new();
        for s in &spec.sources {
            files.push(resolve_files(s).map_err(|e| {
                let message = match e {
                    DataError::NotFound { path } => format!(
                        "{} not found: fix the path (relative paths are taken from the recipe's \
                         directory)",
                        path.display()
                    ),
                    other => other.to_string(),
                };
                err(&format!("source \"{}\".paths", s.domain), message)
            })?);
        }
        Ok(Recipe {
            path: path.to_path_buf(),
            out: raw
                .out
                .map(|o| if o.is_relative() { base.join(o) } else { o }),
            part_docs: raw.part_docs,
            keep_src,
            keep,
            sources: spec.sources,
            files,
            stages,
        })
    }
}

struct StageSchema<'a>(&'a [Stage]);

impl Schema for StageSchema<'_> {
    fn stage(&self, name: &str) -> Result<usize, String> {
        self.0.iter().position(|s| s.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.0.iter().map(|s| s.name.as_str()).collect();
            format!(
                "no stage is named `{name}`: the recipe's stages are {}",
                known.join(", ")
            )
        })
    }

    fn field(&self, stage: usize, field: &str) -> Result<Type, String> {
        let s = &self.0[stage];
        let fields = s.kind.fields();
        fields
            .iter()
            .find(|f| f.0 == field)
            .map(|f| f.1)
            .ok_or_else(|| {
                let known: Vec<&str> = fields.iter().map(|f| f.0).collect();
                format!(
                    "stage `{}` ({}) has no attribute `{field}`: it has {}",
                    s.name,
                    s.kind.kind_name(),
                    known.join(", ")
                )
            })
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && n != "true"
        && n != "false"
}

/// One `[[stage]]` table to a configured, checked stage.
fn build_stage(
    i: usize,
    raw: RawStage,
    base: &Path,
    path: &Path,
    factory: Option<&dyn ScorerFactory>,
) -> Result<Stage, CurateError> {
    let err = |field: String, message: String| CurateError::Recipe {
        path: path.to_path_buf(),
        field,
        message,
    };
    let Some(kind) = raw.kind else {
        return Err(err(
            format!("stage[{i}]"),
            format!("no `kind`: set kind = one of {}", KINDS.join(", ")),
        ));
    };
    let here = format!("stage[{i}] ({kind})");
    fn conf<T: serde::de::DeserializeOwned>(params: toml::Table) -> Result<T, String> {
        toml::Value::Table(params)
            .try_into::<T>()
            .map_err(|e| e.message().trim().replace('\n', " "))
    }
    let fields_err = |m: String| err(here.clone(), format!("{m}: fix or remove the field"));
    let kind = match kind.as_str() {
        "gopher_quality" => StageKind::GopherQuality(conf(raw.params).map_err(fields_err)?),
        "gopher_repetition" => StageKind::GopherRepetition(conf(raw.params).map_err(fields_err)?),
        "c4" => StageKind::C4(conf(raw.params).map_err(fields_err)?),
        "fineweb" => StageKind::FineWeb(conf(raw.params).map_err(fields_err)?),
        "language" => StageKind::Language(conf(raw.params).map_err(fields_err)?),
        "bad_words" => {
            let mut c: BadWordsConfig = conf(raw.params).map_err(fields_err)?;
            if c.path.is_relative() {
                c.path = base.join(&c.path);
            }
            let list = c.load().map_err(|e| err(here.clone(), e.to_string()))?;
            StageKind::BadWords(c, list)
        }
        "exact_dedup" => {
            if let Some(k) = raw.params.keys().next() {
                return Err(err(
                    here,
                    format!("unknown field `{k}`: exact_dedup takes no parameters"),
                ));
            }
            StageKind::ExactDedup
        }
        "minhash" => {
            let c: MinhashConfig = conf(raw.params).map_err(fields_err)?;
            let hasher = MinHasher::new(c.clone()).map_err(|e| err(here.clone(), e.to_string()))?;
            StageKind::Minhash(c, hasher)
        }
        "classifier" => {
            let mut params = raw.params;
            let rule = rank_rule(&mut params, true).map_err(|m| err(here.clone(), m))?;
            let scorer = classifier_scorer(&params, base).map_err(|m| err(here.clone(), m))?;
            StageKind::Ranked(RankedStage {
                kind: "classifier",
                params: serde_json::to_value(&params).unwrap_or_default(),
                rule,
                scorer,
            })
        }
        other => {
            let built = factory.and_then(|f| {
                let kind = f.kinds().into_iter().find(|k| *k == other)?;
                Some((f, kind))
            });
            let Some((f, kind)) = built else {
                let message = if other == "perplexity" {
                    "\"perplexity\" needs a model: run the recipe with `kiln curate`".to_string()
                } else {
                    format!("unknown stage \"{other}\": use one of {}", KINDS.join(", "))
                };
                return Err(err(format!("stage[{i}].kind"), message));
            };
            let mut params = raw.params;
            let rule = rank_rule(&mut params, false).map_err(|m| err(here.clone(), m))?;
            let scorer = f
                .build(kind, &params, base)
                .map_err(|m| err(here.clone(), m))?;
            StageKind::Ranked(RankedStage {
                kind,
                params: serde_json::to_value(&params).unwrap_or_default(),
                rule,
                scorer,
            })
        }
    };
    check_ranges(&kind).map_err(|(field, msg)| err(format!("stage[{i}].{field}"), msg))?;
    let name = raw.name.unwrap_or_else(|| kind.kind_name().to_string());
    if !valid_name(&name) {
        return Err(err(
            format!("stage[{i}].name"),
            format!("\"{name}\" must be letters, digits and '_', starting with a letter (it names the stage in `keep`)"),
        ));
    }
    Ok(Stage { name, kind })
}

/// (field, message) of the first threshold out of its range.
fn check_ranges(kind: &StageKind) -> Result<(), (String, String)> {
    let frac = |field: &str, v: Option<f64>| match v {
        Some(x) if !(0.0..=1.0).contains(&x) => Err((
            field.to_string(),
            format!("{x} is out of range: a fraction must be in [0, 1]"),
        )),
        _ => Ok(()),
    };
    let nonneg = |field: &str, v: f64| {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err((
                field.to_string(),
                format!("{v} is out of range: must be a number >= 0"),
            ))
        }
    };
    match kind {
        StageKind::Ranked(r) => r.rule.validate(),
        StageKind::GopherQuality(g) => check_gopher_quality(g, frac, nonneg),
        StageKind::GopherRepetition(g) => check_gopher_repetition(g, frac),
        StageKind::C4(c) => check_c4(c),
        StageKind::FineWeb(f) => {
            frac("line_punct_thr", Some(f.line_punct_thr))?;
            frac("short_line_thr", Some(f.short_line_thr))?;
            frac("char_duplicates_ratio", Some(f.char_duplicates_ratio))?;
            nonneg("new_line_ratio", f.new_line_ratio)
        }
        StageKind::Language(l) => check_language(l),
        _ => Ok(()),
    }
}

type RangeResult = Result<(), (String, String)>;

fn check_gopher_quality(
    g: &GopherQuality,
    frac: impl Fn(&str, Option<f64>) -> RangeResult,
    nonneg: impl Fn(&str, f64) -> RangeResult,
) -> RangeResult {
    frac("max_symbol_word_ratio", g.max_symbol_word_ratio)?;
    frac("max_bullet_lines_ratio", g.max_bullet_lines_ratio)?;
    frac("max_ellipsis_lines_ratio", g.max_ellipsis_lines_ratio)?;
    frac("max_non_alpha_words_ratio", g.max_non_alpha_words_ratio)?;
    for (f, v) in [
        ("min_avg_word_length", g.min_avg_word_length),
        ("max_avg_word_length", g.max_avg_word_length),
    ] {
        if let Some(v) = v {
            nonneg(f, v)?;
        }
    }
    if let (Some(lo), Some(hi)) = (g.min_doc_words, g.max_doc_words) {
        if lo > hi && hi != 0 {
            return Err((
                "min_doc_words".into(),
                format!("{lo} is above max_doc_words {hi}: no document could pass"),
            ));
        }
    }
    if let (Some(lo), Some(hi)) = (g.min_avg_word_length, g.max_avg_word_length) {
        if lo > hi && hi != 0.0 {
            return Err((
                "min_avg_word_length".into(),
                format!("{lo} is above max_avg_word_length {hi}: no document could pass"),
            ));
        }
    }
    Ok(())
}

fn check_gopher_repetition(
    g: &GopherRepetition,
    frac: impl Fn(&str, Option<f64>) -> RangeResult,
) -> RangeResult {
    frac("dup_line_frac", g.dup_line_frac)?;
    frac("dup_para_frac", g.dup_para_frac)?;
    frac("dup_line_char_frac", g.dup_line_char_frac)?;
    frac("dup_para_char_frac", g.dup_para_char_frac)?;
    for (field, list) in [
        ("top_n_grams", &g.top_n_grams),
        ("dup_n_grams", &g.dup_n_grams),
    ] {
        for &(n, f) in list {
            if n == 0 {
                return Err((
                    field.into(),
                    "an n-gram size of 0: use n >= 1, e.g. [[2, 0.2]]".into(),
                ));
            }
            frac(field, Some(f))?;
        }
    }
    Ok(())
}

fn check_c4(c: &C4Quality) -> RangeResult {
    for (field, v) in [
        ("min_num_sentences", c.min_num_sentences),
        ("min_words_per_line", c.min_words_per_line),
        ("max_word_length", c.max_word_length),
    ] {
        if v < -1 {
            return Err((
                field.into(),
                format!("{v} is out of range: use a count >= 0, or -1 to turn the rule off"),
            ));
        }
    }
    Ok(())
}

fn check_language(l: &LanguageFilter) -> RangeResult {
    l.validate().map_err(|e| {
        let field = match e {
            super::filters::FilterError::MinConfidence { .. } => "min_confidence",
            _ => "languages",
        };
        (field.to_string(), e.to_string())
    })
}

/// Takes a ranked stage's decision fields out of `params`: `threshold` or
/// `top_percent`, or CCNet-style buckets (`cuts`, `keep`; perplexity only).
fn rank_rule(params: &mut toml::Table, higher_is_better: bool) -> Result<RankRule, String> {
    let num = |v: toml::Value, field: &str| match v {
        toml::Value::Float(x) => Ok(x),
        toml::Value::Integer(x) => Ok(x as f64),
        other => Err(format!("`{field}` = {other} must be a number")),
    };
    let threshold = params
        .remove("threshold")
        .map(|v| num(v, "threshold"))
        .transpose()?;
    let top_percent = params
        .remove("top_percent")
        .map(|v| num(v, "top_percent"))
        .transpose()?;
    let (cuts, buckets, keep_default) = if higher_is_better {
        (Vec::new(), vec!["all".to_string()], vec!["all".to_string()])
    } else {
        (
            vec![30.0, 60.0],
            vec!["head".into(), "middle".into(), "tail".into()],
            vec!["head".into(), "middle".into()],
        )
    };
    let cuts = match params.remove("cuts") {
        Some(toml::Value::Array(a)) if !higher_is_better => a
            .into_iter()
            .map(|v| num(v, "cuts"))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) if higher_is_better => {
            return Err(
                "`cuts` applies to perplexity buckets only: use threshold or top_percent".into(),
            )
        }
        Some(other) => return Err(format!("`cuts` = {other} must be a list, e.g. [30, 60]")),
        None => cuts,
    };
    if cuts.len() != 2 && !higher_is_better {
        return Err(format!(
            "`cuts` = {cuts:?} must give two percentiles (head / middle / tail), e.g. [30, 60]"
        ));
    }
    let keep_buckets = match params.remove("keep") {
        Some(toml::Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s),
                other => Err(format!(
                    "`keep` holds {other}: list bucket names, e.g. [\"head\"]"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(format!("`keep` = {other} must be a list, e.g. [\"head\"]")),
        None => keep_default,
    };
    if higher_is_better && threshold.is_none() && top_percent.is_none() {
        return Err(
            "a classifier stage needs `threshold` (e.g. 0.5) or `top_percent` (e.g. 10)".into(),
        );
    }
    Ok(RankRule {
        higher_is_better,
        threshold,
        top_percent,
        cuts,
        buckets,
        keep_buckets,
    })
}

/// `model` (a fastText `.bin`) and `label` of a classifier stage.
fn classifier_scorer(params: &toml::Table, base: &Path) -> Result<Arc<dyn DocScorer>, String> {
    for k in params.keys() {
        if k != "model" && k != "label" {
            return Err(format!(
                "unknown field `{k}`: a classifier stage takes model, label, threshold or top_percent"
            ));
        }
    }
    let model = match params.get("model") {
        Some(toml::Value::String(s)) => base.join(s),
        _ => return Err("no `model`: set model = \"quality.bin\" (a fastText .bin)".into()),
    };
    let label = match params.get("label") {
        Some(toml::Value::String(s)) => s.clone(),
        _ => {
            return Err(
                "no `label`: set label = \"__label__hq\" (the label whose probability ranks)"
                    .into(),
            )
        }
    };
    let bytes =
        std::fs::read(&model).map_err(|e| format!("{}: {e}: fix `model`", model.display()))?;
    let ft = super::fasttext::FastText::from_bytes(&model, &bytes).map_err(|e| e.to_string())?;
    let labels = ft.labels();
    if !labels.contains(&label) {
        return Err(format!(
            "label \"{label}\" is not one of the model's labels {labels:?}"
        ));
    }
    use sha2::Digest;
    let sha256 = crate::dataset::hex(&sha2::Sha256::digest(&bytes));
    Ok(Arc::new(ClassifierScorer {
        model: ft,
        label,
        sha256,
        path: model.display().to_string(),
    }))
}
