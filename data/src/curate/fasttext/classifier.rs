//! [`FastText`]: a supervised model, its `.bin` file (`FastText::saveModel` /
//! `loadModel` in fastText 0.9.2's `src/fasttext.cc`) and prediction.

use std::path::Path;

use super::binio::{Reader, Writer};
use super::dictionary::{Dictionary, Tokens, EOS};
use super::model::{probabilities, std_log, Matrix};
use super::topk::k_best;
use super::{Args, FastTextError, Loss, ModelKind};

/// `FASTTEXT_FILEFORMAT_MAGIC_INT32` and `FASTTEXT_VERSION`.
pub const MAGIC: i32 = 793_712_314;
pub const VERSION: i32 = 12;

/// A supervised fastText model.
#[derive(Debug, Clone)]
pub struct FastText {
    pub args: Args,
    pub dict: Dictionary,
    /// `[nwords + bucket, dim]`: word rows, then hashed n-gram rows.
    pub input: Matrix,
    /// `[nlabels, dim]`.
    pub output: Matrix,
}

/// One predicted label with fastText's probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The full label as in the training file, e.g. `__label__hq`.
    pub label: String,
    pub prob: f32,
}

fn io_err(path: &Path, source: std::io::Error) -> FastTextError {
    FastTextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl FastText {
    /// Reads a `.bin` written by fastText (C++ or pip) or by [`FastText::save`].
    pub fn load(path: &Path) -> Result<Self, FastTextError> {
        let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses a `.bin` image; `path` only names the file in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, FastTextError> {
        let mut r = Reader::new(path, bytes);
        let magic = r.i32("magic number")?;
        if magic != MAGIC {
            return Err(FastTextError::BadMagic {
                path: path.to_path_buf(),
                got: magic,
            });
        }
        let version = r.i32("version")?;
        if !(11..=VERSION).contains(&version) {
            return Err(FastTextError::BadVersion {
                path: path.to_path_buf(),
                got: version,
            });
        }
        let args = read_args(&mut r, version)?;
        let dict = Dictionary::load(&mut r, &args)?;
        let quant_at = r.offset();
        if r.u8("quant flag")? != 0 {
            return Err(FastTextError::Quantized {
                path: path.to_path_buf(),
                offset: quant_at,
            });
        }
        let at = r.offset();
        let input = Matrix::load(&mut r, "input matrix")?;
        let rows = dict.nwords as usize + args.bucket.max(0) as usize;
        if input.dim != args.dim as usize || input.rows != rows {
            let detail = format!(
                "shape [{}, {}], expected [nwords + bucket = {rows}, dim = {}]",
                input.rows, input.dim, args.dim
            );
            return Err(r.corrupt(at, "input matrix", detail));
        }
        r.u8("qout flag")?;
        let at = r.offset();
        let output = Matrix::load(&mut r, "output matrix")?;
        if output.dim != args.dim as usize || output.rows != dict.nlabels as usize {
            let detail = format!(
                "shape [{}, {}], expected [nlabels = {}, dim = {}]",
                output.rows, output.dim, dict.nlabels, args.dim
            );
            return Err(r.corrupt(at, "output matrix", detail));
        }
        Ok(Self {
            args,
            dict,
            input,
            output,
        })
    }

    /// The `.bin` image, byte for byte what fastText's `saveModel` writes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.i32(MAGIC);
        w.i32(VERSION);
        let a = &self.args;
        for v in [a.dim, a.ws, a.epoch, a.min_count, a.neg, a.word_ngrams] {
            w.i32(v);
        }
        w.i32(a.loss as i32);
        w.i32(a.model as i32);
        for v in [a.bucket, a.minn, a.maxn, a.lr_update_rate] {
            w.i32(v);
        }
        w.f64(a.t);
        self.dict.save(&mut w);
        w.u8(0); // quant
        self.input.save(&mut w);
        w.u8(0); // qout
        self.output.save(&mut w);
        w.buf
    }

    /// Writes the `.bin` atomically (a temporary beside it, then a rename),
    /// so an interrupted save never leaves half a model.
    pub fn save(&self, path: &Path) -> Result<(), FastTextError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        std::fs::write(&tmp, self.to_bytes()).map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
    }

    /// The labels in model order (the order of the output rows).
    pub fn labels(&self) -> Vec<String> {
        (0..self.dict.nlabels as usize)
            .map(|i| String::from_utf8_lossy(self.dict.label(i)).into_owned())
            .collect()
    }

    /// Input rows for one document: fastText's `getLine` on `text` + "\n".
    /// Newlines inside `text` count as spaces, so a multi-line document is
    /// one example (as DCLM scores with `text.replace("\n", " ")`).
    pub fn rows(&self, text: &[u8]) -> Vec<i32> {
        let mut tokens = Tokens::new(text)
            .filter(|t| *t != EOS)
            .chain(std::iter::once(EOS));
        let (mut rows, mut labels) = (Vec::new(), Vec::new());
        self.dict.line(&mut tokens, &mut rows, &mut labels);
        rows
    }

    /// The top `k` labels (all if `k` is 0) with probability >= `threshold`,
    /// most probable first: pip fastText's `model.predict(text, k, threshold)`.
    /// Probabilities are fastText's `exp(log(p + 1e-5))`.
    pub fn predict(&self, text: &str, k: usize, threshold: f32) -> Vec<Prediction> {
        self.predict_bytes(text.as_bytes(), k, threshold)
    }

    /// [`FastText::predict`] on raw bytes: fastText hashes bytes, so text
    /// that is not UTF-8 scores as it would in fastText.
    pub fn predict_bytes(&self, text: &[u8], k: usize, threshold: f32) -> Vec<Prediction> {
        let probs = probabilities(&self.input, &self.output, self.args.loss, &self.rows(text));
        let k = if k == 0 { probs.len() } else { k };
        k_best(&probs, k, threshold)
            .into_iter()
            .map(|(log_p, i)| Prediction {
                label: String::from_utf8_lossy(self.dict.label(i)).into_owned(),
                prob: log_p.exp(),
            })
            .collect()
    }

    /// The probability of `label` (e.g. `__label__hq`) for a document, or
    /// `None` when the model has no such label; a quality score for ranking.
    pub fn score(&self, text: &str, label: &str) -> Option<f32> {
        let i =
            (0..self.dict.nlabels as usize).find(|&i| self.dict.label(i) == label.as_bytes())?;
        let probs = probabilities(
            &self.input,
            &self.output,
            self.args.loss,
            &self.rows(text.as_bytes()),
        );
        Some(probs.get(i).map_or(0.0, |&p| std_log(p).exp()))
    }
}

/// `Args::load`: 12 int32 and the double `t`, validated enough that a
/// damaged header is named here rather than as a nonsense matrix shape.
fn read_args(r: &mut Reader, version: i32) -> Result<Args, FastTextError> {
    let at = r.offset();
    let mut v = [0i32; 12];
    for x in v.iter_mut() {
        *x = r.i32("args")?;
    }
    let [dim, ws, epoch, min_count, neg, word_ngrams, loss, model, bucket, minn, maxn, lr_update_rate] =
        v;
    let t = r.f64("args")?;
    let loss =
        Loss::from_i32(loss).ok_or_else(|| r.corrupt(at + 24, "args", format!("loss {loss}")))?;
    let model = ModelKind::from_i32(model)
        .ok_or_else(|| r.corrupt(at + 28, "args", format!("model {model}")))?;
    if dim <= 0 || bucket < 0 {
        return Err(r.corrupt(at, "args", format!("dim {dim}, bucket {bucket}")));
    }
    if model != ModelKind::Supervised {
        let kind = if model == ModelKind::Cbow {
            "cbow"
        } else {
            "skipgram"
        };
        return Err(FastTextError::NotSupervised {
            path: r.path.to_path_buf(),
            kind,
        });
    }
    if loss == Loss::Hs {
        return Err(FastTextError::UnsupportedLoss {
            path: r.path.to_path_buf(),
            loss: loss.name(),
        });
    }
    // fastText's own rule: version-11 supervised models had no char n-grams.
    let maxn = if version == 11 { 0 } else { maxn };
    Ok(Args {
        dim,
        ws,
        epoch,
        min_count,
        neg,
        word_ngrams,
        loss,
        model,
        bucket,
        minn,
        maxn,
        lr_update_rate,
        t,
        ..Args::default()
    })
}
