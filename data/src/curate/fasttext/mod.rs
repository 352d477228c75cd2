//! A fastText-compatible supervised text classifier (issue 16): training on
//! `__label__X text` files, prediction with top-k and a threshold, and
//! fastText's `.bin` format both ways, so DCLM- or FineWeb-Edu-style quality
//! classifiers trained with pip `fasttext` load here and give the same labels
//! and probabilities (tests/reference/fasttext_reference.py is the oracle).
//!
//! Why not the `fasttext` crate (0.8.0, MIT, pure Rust, builds offline)?
//! Evaluated against pip `fasttext` 0.9.2 on tests/fixtures/fasttext: its
//! `predict` appends `</s>` after computing word n-grams, so with
//! `wordNgrams > 1` (DCLM uses 2) the (last word, `</s>`) bigram is missing
//! (probabilities off by ~2e-2), and a line of only out-of-vocabulary words
//! returns no prediction where fastText predicts from `</s>` and its n-grams.
//! It also splits on Unicode-ASCII whitespace rather than fastText's seven
//! bytes, trains with rayon Hogwild threads, and reports a bad `.bin` without
//! the file or offset. Supervised softmax fastText is small enough to own.
//!
//! Training replicates fastText 0.9.2 with one thread: the dictionary order
//! (libstdc++'s unstable `std::sort`), the input initialisation (minstd_rand,
//! only the first tenth random) and the float32 SGD in fastText's operation
//! order, so a Kiln-trained model equals pip fastText's to float rounding.
//!
//! Scope: supervised models with softmax (train and predict), ova / ns
//! (predict); not hierarchical softmax, word-vector models or quantized
//! `.ftz` files (each refused with a typed error).

mod args;
mod binio;
mod classifier;
pub mod dictionary;
mod error;
pub mod metrics;
mod model;
mod rng;
mod stdalgo;
mod topk;
mod train;

#[cfg(test)]
mod tests;

pub use args::{Args, Loss, ModelKind};
pub use classifier::{FastText, Prediction, MAGIC, VERSION};
pub use error::FastTextError;
pub use metrics::roc_auc;
pub use model::Matrix;
