//! `[data.instruct]`: instruction data (prompt/response, Alpaca or chat
//! JSONL/Parquet) rendered with the run's chat template, loss only on the
//! trained roles, one example per padded row.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_data::instruct::{
    encode, eval_batches, is_prepared, load_prepared, read_examples, save_prepared, Encoded,
    Example, InstructConfig, InstructSampler,
};
use kiln_data::{tokenizer_hash, Tokenizer};

use crate::config::RunConfig;
use crate::data_setup::{build_tokenizer, resolve_vocab, RunData, TrainStream, ValSet};
use crate::error::{Result, TrainerError};
use crate::world::World;

/// Train and validation examples: `data.train` (required), `data.val` or the
/// last `data.val_fraction` of the training examples.
fn examples(cfg: &RunConfig) -> Result<(Vec<Example>, Vec<Example>)> {
    let Some(train) = &cfg.data.train else {
        return Err(TrainerError::invalid(
            "data.train",
            "is not set: [data.instruct] reads an instruction file (JSONL with prompt/response, Alpaca or chat messages; or Parquet)",
        ));
    };
    let mut train_ex = read_examples(train)?;
    let val_ex = match &cfg.data.val {
        Some(v) => read_examples(v)?,
        None => {
            let n_val = ((train_ex.len() as f64) * cfg.data.val_fraction).round() as usize;
            let n_val = n_val.clamp(1, train_ex.len().saturating_sub(1).max(1));
            if train_ex.len() < 2 {
                return Err(TrainerError::invalid(
                    "data.train",
                    format!("{} holds {} example: at least 2 are needed to hold one out (or set data.val)", train.display(), train_ex.len()),
                ));
            }
            train_ex.split_off(train_ex.len() - n_val)
        }
    };
    Ok((train_ex, val_ex))
}

/// A prepared directory given as `data.datasets = [DIR]`.
fn prepared_dir(cfg: &RunConfig) -> Option<PathBuf> {
    match cfg.data.datasets.as_slice() {
        [dir] if is_prepared(dir) => Some(dir.clone()),
        _ => None,
    }
}

/// Encoded train / val examples from `kiln data prepare-instruct` output,
/// checked against the run's tokenizer and `seq_len`.
fn prepared(
    dir: &Path,
    tokenizer: &Tokenizer,
    seq_len: usize,
) -> Result<(Vec<Encoded>, Vec<Encoded>)> {
    let (train, val, m) = load_prepared(dir)?;
    let ours = tokenizer_hash(tokenizer)?;
    if m.tokenizer_sha256 != ours {
        return Err(TrainerError::invalid(
            "data.datasets",
            format!(
                "{} was encoded with tokenizer {}, this run's is {ours}: prepare it again with this run's tokenizer",
                dir.display(),
                m.tokenizer_sha256
            ),
        ));
    }
    if m.seq_len != seq_len {
        return Err(TrainerError::invalid(
            "data.seq_len",
            format!(
                "{seq_len}, but {} was prepared for {}: prepare it again or set data.seq_len = {}",
                dir.display(),
                m.seq_len,
                m.seq_len
            ),
        ));
    }
    Ok((train, val))
}

/// The data of an instruction-tuning run on `world`'s rank: instruction
/// files, or a prepared directory (`data.datasets = [DIR]`).
pub fn load_instruct(
    cfg: &mut RunConfig,
    icfg: &InstructConfig,
    resumed_tokenizer: Option<&Tokenizer>,
    world: World,
) -> Result<RunData> {
    icfg.validate()?;
    if let Some(dir) = prepared_dir(cfg) {
        let tokenizer = match (resumed_tokenizer, &cfg.tokenizer.path) {
            (Some(t), _) => t.clone(),
            (None, Some(p)) => Tokenizer::from_file(p)?,
            (None, None) => {
                return Err(TrainerError::invalid(
                    "data.datasets",
                    "prepared instruction data needs the tokenizer it was encoded with: set [init] from or tokenizer.path",
                ))
            }
        };
        resolve_vocab(cfg, &tokenizer)?;
        let (train, val) = prepared(&dir, &tokenizer, cfg.seq_len())?;
        return batches(cfg, tokenizer, train, val, world);
    }
    let (train_ex, val_ex) = examples(cfg)?;
    let template = icfg.template()?;
    let tokenizer = match resumed_tokenizer {
        Some(t) => t.clone(),
        None => {
            // A fresh tokenizer learns the rendered text, template included.
            let texts = train_ex
                .iter()
                .map(|e| template.render(e))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            build_tokenizer(cfg, &texts)?
        }
    };
    resolve_vocab(cfg, &tokenizer)?;
    let (train, val) = encode_both(cfg, icfg, &tokenizer, &train_ex, &val_ex, world.is_leader())?;
    batches(cfg, tokenizer, train, val, world)
}

fn encode_both(
    cfg: &RunConfig,
    icfg: &InstructConfig,
    tokenizer: &Tokenizer,
    train_ex: &[Example],
    val_ex: &[Example],
    report: bool,
) -> Result<(Vec<Encoded>, Vec<Encoded>)> {
    let seq_len = cfg.seq_len();
    let (train, r) = encode(train_ex, tokenizer, icfg, seq_len)?;
    if report {
        eprintln!("kiln: instruct train: {r}");
    }
    let (val, r) = encode(val_ex, tokenizer, icfg, seq_len)?;
    if report {
        eprintln!("kiln: instruct val: {r}");
    }
    Ok((train, val))
}

/// Padded training batches and validation batches of encoded examples.
fn batches(
    cfg: &RunConfig,
    tokenizer: Tokenizer,
    train: Vec<Encoded>,
    val: Vec<Encoded>,
    world: World,
) -> Result<RunData> {
    let (seq_len, t) = (cfg.seq_len(), cfg.training.clone());
    let mut val_batches = eval_batches(&val, seq_len, t.batch_size);
    val_batches.truncate(t.eval_batches);
    // batch_size is the global batch; each rank takes its share.
    let sampler = InstructSampler::new(
        Arc::new(train),
        seq_len,
        t.batch_size / world.size.max(1),
        t.seed,
        world.rank,
        world.size,
    )?;
    Ok(RunData {
        tokenizer,
        train: TrainStream::Instruct(sampler),
        val: vec![ValSet {
            domain: None,
            batches: val_batches,
        }],
    })
}

/// `kiln data prepare-instruct CONFIG --out DIR`: the config's instruction
/// files encoded with its tokenizer (`[init] from`'s or `tokenizer.path`)
/// and template, saved for `data.datasets = [DIR]`.
pub fn prepare_instruct(cfg: &RunConfig, out: &Path) -> Result<PathBuf> {
    let Some(icfg) = &cfg.data.instruct else {
        return Err(TrainerError::invalid(
            "data.instruct",
            "is not set: prepare-instruct encodes instruction data with its template",
        ));
    };
    icfg.validate()?;
    let tokenizer =
        match (&cfg.init, &cfg.tokenizer.path) {
            (Some(init), _) => crate::session::load_checkpoint(&init.from)?.tokenizer,
            (None, Some(p)) => Tokenizer::from_file(p)?,
            (None, None) => return Err(TrainerError::invalid(
                "tokenizer.path",
                "is not set and there is no [init] from: prepared examples need a fixed tokenizer",
            )),
        };
    let (train_ex, val_ex) = examples(cfg)?;
    let (train, val) = encode_both(cfg, icfg, &tokenizer, &train_ex, &val_ex, true)?;
    Ok(save_prepared(
        out,
        &train,
        &val,
        &tokenizer_hash(&tokenizer)?,
        cfg.seq_len(),
    )?)
}
