//! Supervised training as fastText's `FastText::trainThread` runs it on one
//! thread: the learning rate decays linearly with the tokens seen
//! (`lr * (1 - tokens / (epoch * ntokens))`, refreshed every
//! `lr_update_rate` tokens), one SGD step per line on one of its labels.

use std::path::Path;

use super::dictionary::{Dictionary, Tokens};
use super::model::{update, Matrix, Scratch};
use super::rng::MinStd;
use super::{Args, FastText, FastTextError};

/// Training lines pre-tokenised once: fastText re-reads the file every
/// epoch, but `getLine` is a pure function of the dictionary, so the rows
/// and labels are the same each pass.
struct Lines {
    rows: Vec<i32>,
    labels: Vec<i32>,
    /// Per line: end of its rows, end of its labels, tokens read.
    ends: Vec<(usize, usize, i64)>,
}

impl Lines {
    fn read(bytes: &[u8], dict: &Dictionary) -> Self {
        let mut lines = Self {
            rows: Vec::new(),
            labels: Vec::new(),
            ends: Vec::new(),
        };
        let mut tokens = Tokens::new(bytes);
        let (mut rows, mut labels) = (Vec::new(), Vec::new());
        loop {
            let n = dict.line(&mut tokens, &mut rows, &mut labels);
            if n == 0 {
                break;
            }
            lines.rows.extend_from_slice(&rows);
            lines.labels.extend_from_slice(&labels);
            lines.ends.push((lines.rows.len(), lines.labels.len(), n));
        }
        lines
    }
}

/// libstdc++'s `uniform_int_distribution<int>(0, n - 1)` on minstd_rand.
fn pick(rng: &mut MinStd, n: usize) -> usize {
    let range = 2_147_483_645u64; // max - min
    let urange = n as u64; // (n - 1) + 1
    let scaling = range / urange;
    let past = urange * scaling;
    loop {
        let r = rng.next_u31() - 1;
        if r < past {
            return (r / scaling) as usize;
        }
    }
}

impl FastText {
    /// Trains on a file of `__label__X text` lines. One thread and `seed`
    /// make the result, and [`FastText::to_bytes`], deterministic.
    pub fn train(path: &Path, args: &Args) -> Result<Self, FastTextError> {
        args.validate()?;
        let bytes = std::fs::read(path).map_err(|source| FastTextError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::train_bytes(path, &bytes, args)
    }

    /// [`FastText::train`] on a file already in memory (`path` names it in errors).
    pub fn train_bytes(path: &Path, bytes: &[u8], args: &Args) -> Result<Self, FastTextError> {
        args.validate()?;
        let dict = Dictionary::build(bytes, args);
        if dict.nlabels == 0 {
            return Err(FastTextError::NoLabels {
                path: path.to_path_buf(),
                prefix: args.label.clone(),
            });
        }
        if dict.nwords == 0 {
            return Err(FastTextError::EmptyVocabulary {
                path: path.to_path_buf(),
                min_count: args.min_count,
            });
        }
        let dim = args.dim as usize;
        let mut input = Matrix::zeros(dict.nwords as usize + args.bucket as usize, dim);
        // `input_->uniform(1.0 / dim, thread, seed)`, bound a float32. Its
        // `uniformThread` fills block `t` of ten (size m * n / 10) from
        // minstd_rand(t + seed) for each of `thread` threads: with one
        // thread only the first tenth is random and the rest stays zero.
        // Kiln keeps that, so it trains the same bytes as fastText.
        let bound = f64::from((1.0 / f64::from(args.dim)) as f32);
        let mut init = MinStd::new(args.seed);
        let block = input.data.len() / 10;
        for x in input.data[..block].iter_mut() {
            *x = init.uniform(bound);
        }
        let mut model = Self {
            args: args.clone(),
            output: Matrix::zeros(dict.nlabels as usize, dim),
            input,
            dict,
        };
        model.sgd(&Lines::read(bytes, &model.dict))?;
        Ok(model)
    }

    fn sgd(&mut self, lines: &Lines) -> Result<(), FastTextError> {
        let args = &self.args;
        let total = i64::from(args.epoch) * self.dict.ntokens;
        let mut scratch = Scratch::new(args.dim as usize, self.output.rows);
        // fastText's per-thread state seeds minstd_rand with threadId + seed.
        let mut rng = MinStd::new(args.seed);
        let (mut tokens_seen, mut local) = (0i64, 0i64);
        let mut line = 0;
        while tokens_seen < total {
            let progress = tokens_seen as f32 / total as f32;
            let lr = (args.lr * (1.0 - f64::from(progress))) as f32;
            let (r0, l0) = match line {
                0 => (0, 0),
                i => (lines.ends[i - 1].0, lines.ends[i - 1].1),
            };
            let (r1, l1, n) = lines.ends[line];
            line = (line + 1) % lines.ends.len();
            local += n;
            let (rows, labels) = (&lines.rows[r0..r1], &lines.labels[l0..l1]);
            if !rows.is_empty() && !labels.is_empty() {
                let target = labels[pick(&mut rng, labels.len())] as usize;
                let loss = update(
                    &mut self.input,
                    &mut self.output,
                    rows,
                    target,
                    lr,
                    &mut scratch,
                );
                if !loss.is_finite() {
                    return Err(FastTextError::Diverged { lr: args.lr });
                }
            }
            if local > i64::from(args.lr_update_rate) {
                tokens_seen += local;
                local = 0;
            }
        }
        Ok(())
    }
}
