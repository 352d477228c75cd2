//! Training arguments with fastText's supervised defaults, and the subset a
//! `.bin` stores (`Args::save` in fastText's `args.cc`: 12 int32 then `t`).

use super::FastTextError;

/// fastText's `loss_name` (the enum's integer is what a `.bin` stores).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    Hs = 1,
    Ns = 2,
    Softmax = 3,
    Ova = 4,
}

impl Loss {
    pub fn from_i32(v: i32) -> Option<Self> {
        match v {
            1 => Some(Self::Hs),
            2 => Some(Self::Ns),
            3 => Some(Self::Softmax),
            4 => Some(Self::Ova),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hs => "hs",
            Self::Ns => "ns",
            Self::Softmax => "softmax",
            Self::Ova => "ova",
        }
    }
}

/// fastText's `model_name`: only `Supervised` models classify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Cbow = 1,
    SkipGram = 2,
    Supervised = 3,
}

impl ModelKind {
    pub fn from_i32(v: i32) -> Option<Self> {
        match v {
            1 => Some(Self::Cbow),
            2 => Some(Self::SkipGram),
            3 => Some(Self::Supervised),
            _ => None,
        }
    }
}

/// Supervised training arguments. Defaults are `fasttext supervised`'s
/// (specs.md section 11), except `thread`: Kiln trains on one thread so that a
/// seed fixes the model bytes (fastText's Hogwild threads race).
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    pub dim: i32,
    pub epoch: i32,
    pub lr: f64,
    /// Token-count interval between learning-rate updates.
    pub lr_update_rate: i32,
    pub word_ngrams: i32,
    pub bucket: i32,
    /// Char n-gram lengths; `maxn = 0` turns char n-grams off.
    pub minn: i32,
    pub maxn: i32,
    pub min_count: i32,
    pub min_count_label: i32,
    pub seed: i32,
    pub label: String,
    pub loss: Loss,
    pub model: ModelKind,
    // Stored in a .bin but unused by supervised softmax training.
    pub ws: i32,
    pub neg: i32,
    pub t: f64,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            dim: 100,
            epoch: 5,
            lr: 0.1,
            lr_update_rate: 100,
            word_ngrams: 1,
            bucket: 2_000_000,
            minn: 0,
            maxn: 0,
            min_count: 1,
            min_count_label: 0,
            seed: 0,
            label: "__label__".into(),
            loss: Loss::Softmax,
            model: ModelKind::Supervised,
            ws: 5,
            neg: 5,
            t: 1e-4,
        }
    }
}

fn bad(field: &'static str, got: impl ToString, fix: &'static str) -> FastTextError {
    FastTextError::BadArg {
        field,
        got: got.to_string(),
        fix,
    }
}

impl Args {
    /// Rejects arguments fastText would crash or silently misbehave on.
    pub fn validate(&self) -> Result<(), FastTextError> {
        if !(1..=10_000).contains(&self.dim) {
            return Err(bad(
                "dim",
                self.dim,
                "use 1..=10000 (fastText's default is 100)",
            ));
        }
        if self.epoch < 1 {
            return Err(bad("epoch", self.epoch, "use at least 1 (default 5)"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(bad(
                "lr",
                self.lr,
                "use a positive learning rate (default 0.1)",
            ));
        }
        if self.lr_update_rate < 1 {
            return Err(bad(
                "lr_update_rate",
                self.lr_update_rate,
                "use at least 1 (default 100)",
            ));
        }
        if !(1..=10).contains(&self.word_ngrams) {
            return Err(bad(
                "word_ngrams",
                self.word_ngrams,
                "use 1..=10 (DCLM uses 2)",
            ));
        }
        if self.bucket < 0 || (self.bucket == 0 && (self.word_ngrams > 1 || self.maxn > 0)) {
            return Err(bad(
                "bucket",
                self.bucket,
                "use a positive bucket count when word_ngrams > 1 or maxn > 0 (default 2000000)",
            ));
        }
        if self.maxn > 0 && !(1..=self.maxn).contains(&self.minn) {
            return Err(bad(
                "minn",
                self.minn,
                "char n-grams need 1 <= minn <= maxn (e.g. 3 and 6)",
            ));
        }
        if self.min_count < 1 {
            return Err(bad("min_count", self.min_count, "use at least 1"));
        }
        if self.label.is_empty() {
            return Err(bad(
                "label",
                "\"\"",
                "use a non-empty label prefix such as __label__",
            ));
        }
        if self.loss != Loss::Softmax || self.model != ModelKind::Supervised {
            return Err(bad(
                "loss",
                self.loss.name(),
                "Kiln trains supervised softmax models",
            ));
        }
        Ok(())
    }
}
