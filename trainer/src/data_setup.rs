//! From a run config to a tokenizer, training batches and validation sets:
//! in-memory text (`data.train`, the built-in stories) or prepared shards
//! (`data.datasets`, `data.spec`) mixed by `data.mixture`.

use std::path::Path;
use std::sync::Arc;

use kiln_data::dataset::DomainData;
use kiln_data::instruct::InstructSampler;
use kiln_data::mixture::{eval_batches_from_stream, MixtureDomain};
use kiln_data::{
    eval_batches, generate_corpus, prepare, read_documents_counted, tokenizer_hash, Batch,
    BatchSampler, DataError, DataSpec, Dataset, MixtureSampler, PrepareOptions, SpecTexts,
    TextFormat, TokenSplit, Tokenizer,
};

use crate::config::{RunConfig, TokenizerKindConfig};
use crate::error::{Result, TrainerError};
use crate::state::TrainerState;
use crate::world::World;

fn format_of(cfg: &RunConfig) -> Option<TextFormat> {
    match cfg.data.format.as_deref() {
        Some("jsonl") => Some(TextFormat::Jsonl),
        Some("text") => Some(TextFormat::Text),
        _ => None,
    }
}

/// Documents of `path`; files whose invalid UTF-8 was replaced are reported
/// on stderr (replaced and counted, not fatal).
fn read_reporting(cfg: &RunConfig, path: &Path) -> Result<Vec<String>> {
    let (docs, repairs) = read_documents_counted(path, format_of(cfg), &cfg.data.text_field)?;
    for (file, offset) in &repairs {
        eprintln!(
            "warning: {}: invalid UTF-8 from byte offset {offset} replaced with U+FFFD",
            file.display()
        );
    }
    if !repairs.is_empty() {
        eprintln!(
            "warning: invalid UTF-8 replaced in {} file(s) of {}",
            repairs.len(),
            path.display()
        );
    }
    Ok(docs)
}

/// Documents of the training source: a file/directory, or the built-in stories.
pub fn train_documents(cfg: &RunConfig) -> Result<Vec<String>> {
    match &cfg.data.train {
        Some(path) => read_reporting(cfg, path),
        None => Ok(generate_corpus(
            cfg.data.stories_seed,
            cfg.data.stories_docs,
        )),
    }
}

/// The run's tokenizer: an existing tokenizer.json, or one trained on `docs`.
pub fn build_tokenizer(cfg: &RunConfig, docs: &[String]) -> Result<Tokenizer> {
    if let Some(path) = &cfg.tokenizer.path {
        return Ok(Tokenizer::from_file(path)?);
    }
    Ok(match cfg.tokenizer.kind {
        TokenizerKindConfig::Char => Tokenizer::train_char(docs)?,
        TokenizerKindConfig::Bpe => Tokenizer::train_bpe(docs, cfg.tokenizer.vocab_size)?,
    })
}

/// Fills `model.vocab_size` from the tokenizer (or checks it is large enough).
pub fn resolve_vocab(cfg: &mut RunConfig, tokenizer: &Tokenizer) -> Result<()> {
    let n = tokenizer.vocab_size();
    if cfg.model.vocab_size == 0 {
        cfg.model.vocab_size = n;
    } else if cfg.model.vocab_size < n {
        return Err(TrainerError::invalid(
            "model.vocab_size",
            format!("{} is smaller than the tokenizer's {n} tokens: raise it or leave it out (0 = from the tokenizer)", cfg.model.vocab_size),
        ));
    }
    cfg.model.validate()?;
    Ok(())
}

/// Tokenised train and validation streams.
pub fn token_split(cfg: &RunConfig, tokenizer: &Tokenizer, docs: &[String]) -> Result<TokenSplit> {
    let split = match &cfg.data.val {
        Some(val) => {
            let val_docs = read_reporting(cfg, val)?;
            TokenSplit {
                train: tokenizer.encode_docs(docs)?,
                val: tokenizer.encode_docs(&val_docs)?,
            }
        }
        None => TokenSplit::from_tokens(tokenizer.encode_docs(docs)?, cfg.data.val_fraction)?,
    };
    split.check_seq_len(cfg.seq_len())?;
    Ok(split)
}

/// The run's training batches: random windows of one in-memory stream, or
/// a weighted mixture over prepared shards.
// One per run: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum TrainStream {
    Tokens(BatchSampler),
    Mixture(MixtureSampler),
    /// Instruction examples, one per padded row (`[data.instruct]`).
    Instruct(InstructSampler),
}

impl TrainStream {
    pub fn next_batch(&mut self) -> Batch {
        match self {
            TrainStream::Tokens(s) => s.next_batch(),
            TrainStream::Mixture(s) => s.next_batch(),
            TrainStream::Instruct(s) => s.next_batch(),
        }
    }

    /// Share of the samples drawn so far that came from each domain (all
    /// ranks), for the `data/share/<domain>` metric; empty for in-memory text.
    pub fn domain_shares(&self) -> Vec<(String, f64)> {
        match self {
            TrainStream::Tokens(_) | TrainStream::Instruct(_) => Vec::new(),
            TrainStream::Mixture(s) => {
                let st = s.state();
                let n = st.samples.max(1) as f64;
                st.domains
                    .into_iter()
                    .zip(st.cursors)
                    .map(|(d, c)| (d, c as f64 / n))
                    .collect()
            }
        }
    }

    /// Saves the sampler's state into the trainer state.
    pub fn save_into(&self, state: &mut TrainerState) {
        match self {
            TrainStream::Tokens(s) => state.sampler = Some(s.state()),
            TrainStream::Mixture(s) => state.mixture = Some(s.state()),
            TrainStream::Instruct(s) => state.instruct = Some(s.state()),
        }
    }

    /// Continues from a checkpoint's sampler state.
    pub fn restore(&mut self, state: &TrainerState, reweight: bool) -> Result<()> {
        match (self, &state.sampler, &state.mixture, &state.instruct) {
            (TrainStream::Tokens(s), Some(saved), _, _) => Ok(s.restore(saved)?),
            (TrainStream::Mixture(s), _, Some(saved), _) => Ok(s.restore(saved, reweight)?),
            (TrainStream::Instruct(s), _, _, Some(saved)) => Ok(s.restore(saved)?),
            _ => Err(TrainerError::invalid(
                "data",
                "the checkpoint's data sampler is of another kind than this run's [data] \
                 (in-memory text, prepared shards or instruction data): resume with the same config",
            )),
        }
    }
}

/// Fixed validation batches of one domain (`None`: the single stream of an
/// in-memory run).
pub struct ValSet {
    pub domain: Option<String>,
    pub batches: Vec<Batch>,
}

/// Everything the loop needs from `[data]` and `[tokenizer]`.
pub struct RunData {
    pub tokenizer: Tokenizer,
    pub train: TrainStream,
    pub val: Vec<ValSet>,
}

/// Builds the tokenizer (or takes the resumed one), resolves the vocabulary
/// into `cfg`, and sets up train and validation data. For `data.spec` the
/// sources are prepared into `RUN_DIR/data` and `cfg` is rewritten to read
/// that dataset, so the saved config resumes without preparing again.
pub fn load_run_data(
    cfg: &mut RunConfig,
    run_dir: &Path,
    resumed_tokenizer: Option<&Tokenizer>,
) -> Result<RunData> {
    load_rank_data(cfg, run_dir, resumed_tokenizer, World::SINGLE)
}

/// [`load_run_data`] for one rank of a data-parallel world: every rank
/// draws its own disjoint share of each step's samples.
pub fn load_rank_data(
    cfg: &mut RunConfig,
    run_dir: &Path,
    resumed_tokenizer: Option<&Tokenizer>,
    world: World,
) -> Result<RunData> {
    let (rank, size) = (world.rank, world.size);
    let t = cfg.training.clone();
    let seq_len = cfg.seq_len();
    if let Some(icfg) = cfg.data.instruct.clone() {
        return crate::data_instruct::load_instruct(cfg, &icfg, resumed_tokenizer, world);
    }
    if !cfg.data.uses_shards() {
        let docs = train_documents(cfg)?;
        let tokenizer = match resumed_tokenizer {
            Some(t) => t.clone(),
            None => build_tokenizer(cfg, &docs)?,
        };
        resolve_vocab(cfg, &tokenizer)?;
        let split = token_split(cfg, &tokenizer, &docs)?;
        drop(docs);
        let val = vec![ValSet {
            domain: None,
            batches: eval_batches(&split.val, seq_len, t.batch_size, t.eval_batches),
        }];
        let sampler = BatchSampler::new(
            Arc::new(split.train),
            seq_len,
            t.batch_size,
            t.seed,
            rank,
            size,
        )?;
        return Ok(RunData {
            tokenizer,
            train: TrainStream::Tokens(sampler),
            val,
        });
    }
    if let Some(spec_path) = cfg.data.spec.clone() {
        let out = run_dir.join("data");
        let tokenizer = match resumed_tokenizer {
            Some(t) => t.clone(),
            None => spec_tokenizer(cfg, &spec_path)?,
        };
        let spec = DataSpec::load(&spec_path)?;
        eprintln!(
            "kiln: preparing {} into {}",
            spec_path.display(),
            out.display()
        );
        let report = prepare(
            &spec,
            &out,
            &tokenizer,
            &PrepareOptions::default(),
            &mut |_| {},
        )?;
        eprint!("{}", report.render());
        cfg.data.spec = None;
        // Absolute, so that `--resume` works from any directory.
        cfg.data.datasets = vec![std::fs::canonicalize(&out).unwrap_or(out)];
    }
    let tokenizer = match resumed_tokenizer {
        Some(t) => t.clone(),
        None => dataset_tokenizer(cfg)?,
    };
    resolve_vocab(cfg, &tokenizer)?;
    let hash = tokenizer_hash(&tokenizer)?;
    let mut domains: Vec<DomainData> = Vec::new();
    for dir in &cfg.data.datasets {
        for d in Dataset::open(dir, Some(&hash))?.domains {
            if domains.iter().any(|x| x.name == d.name) {
                return Err(TrainerError::invalid(
                    "data.datasets",
                    format!(
                        "domain \"{}\" appears in two datasets: rename one in its data spec",
                        d.name
                    ),
                ));
            }
            domains.push(d);
        }
    }
    let available = || {
        domains
            .iter()
            .map(|d| format!("\"{}\"", d.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for name in cfg.data.mixture.keys() {
        if !domains.iter().any(|d| &d.name == name) {
            return Err(DataError::UnknownDomain {
                domain: name.clone(),
                available: available(),
            }
            .into());
        }
    }
    let mut val = Vec::new();
    let mut mix = Vec::new();
    for d in domains {
        let weight = if cfg.data.mixture.is_empty() {
            d.train.len() as f64
        } else {
            cfg.data.mixture.get(&d.name).copied().unwrap_or(0.0)
        };
        let batches = eval_batches_from_stream(&d.val, seq_len, t.batch_size, t.eval_batches);
        if !batches.is_empty() {
            val.push(ValSet {
                domain: Some(d.name.clone()),
                batches,
            });
        }
        if weight > 0.0 {
            mix.push(MixtureDomain {
                name: d.name,
                tokens: Arc::new(d.train),
                weight,
            });
        }
    }
    // batch_size is the global batch; each rank takes its share.
    let sampler = MixtureSampler::new(mix, seq_len, t.batch_size / size, t.seed, rank, size)?;
    Ok(RunData {
        tokenizer,
        train: TrainStream::Mixture(sampler),
        val,
    })
}

/// `tokenizer.path`, or the first dataset's own tokenizer.json.
fn dataset_tokenizer(cfg: &RunConfig) -> Result<Tokenizer> {
    if let Some(path) = &cfg.tokenizer.path {
        return Ok(Tokenizer::from_file(path)?);
    }
    match cfg.data.datasets.first() {
        Some(dir) => Ok(Dataset::tokenizer(dir)?),
        None => Err(TrainerError::invalid("data.datasets", "is empty")),
    }
}

/// The tokenizer for raw sources prepared on the fly: `tokenizer.path`, the
/// spec's `tokenizer`, or one trained on the sources per `[tokenizer]`.
pub fn spec_tokenizer(cfg: &RunConfig, spec_path: &Path) -> Result<Tokenizer> {
    if let Some(path) = &cfg.tokenizer.path {
        return Ok(Tokenizer::from_file(path)?);
    }
    let spec = DataSpec::load(spec_path)?;
    if let Some(path) = &spec.tokenizer {
        return Ok(Tokenizer::from_file(path)?);
    }
    let mut texts = SpecTexts::open(&spec, u64::MAX, false)?;
    let tok = match cfg.tokenizer.kind {
        TokenizerKindConfig::Bpe => {
            let tok = Tokenizer::train_bpe_stream(&mut texts, cfg.tokenizer.vocab_size);
            if let Some(e) = texts.error.take() {
                return Err(e.into());
            }
            tok?
        }
        TokenizerKindConfig::Char => {
            // The char vocabulary is the set of chars: collect it, not the text.
            let mut chars = std::collections::BTreeSet::new();
            for t in &mut texts {
                chars.extend(t.chars());
            }
            if let Some(e) = texts.error.take() {
                return Err(e.into());
            }
            Tokenizer::train_char(&[chars.into_iter().collect::<String>()])?
        }
    };
    Ok(tok)
}

/// The tokenizer a config will train with, for `kiln config check`.
pub fn plan_tokenizer(cfg: &RunConfig) -> Result<Tokenizer> {
    if let Some(spec) = &cfg.data.spec {
        return spec_tokenizer(cfg, spec);
    }
    if !cfg.data.datasets.is_empty() {
        return dataset_tokenizer(cfg);
    }
    let docs = train_documents(cfg)?;
    build_tokenizer(cfg, &docs)
}
