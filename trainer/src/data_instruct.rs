//! `[data.instruct]`: instruction data (prompt/response, Alpaca or chat
//! JSONL/Parquet) rendered with the run's chat template, loss only on the
//! trained roles, one example per padded row.

use std::sync::Arc;

use kiln_data::instruct::{
    encode, eval_batches, read_examples, Example, InstructConfig, InstructSampler,
};
use kiln_data::Tokenizer;

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

/// The data of an instruction-tuning run on `world`'s rank.
pub fn load_instruct(
    cfg: &mut RunConfig,
    icfg: &InstructConfig,
    resumed_tokenizer: Option<&Tokenizer>,
    world: World,
) -> Result<RunData> {
    icfg.validate()?;
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
    let seq_len = cfg.seq_len();
    let t = cfg.training.clone();
    let (train, report) = encode(&train_ex, &tokenizer, icfg, seq_len)?;
    if world.is_leader() {
        eprintln!("kiln: instruct train: {report}");
    }
    let (val, val_report) = encode(&val_ex, &tokenizer, icfg, seq_len)?;
    if world.is_leader() {
        eprintln!("kiln: instruct val: {val_report}");
    }
    let mut val_batches = eval_batches(&val, seq_len, t.batch_size);
    val_batches.truncate(t.eval_batches);
    let sampler = InstructSampler::new(
        Arc::new(train),
        seq_len,
        t.batch_size,
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
