//! The classifier's tests: parity with pip fastText's golden fixture,
//! deterministic training, clean-vs-noise ROC-AUC, and bad-input errors.

use std::path::{Path, PathBuf};

mod errors;
mod noise;
mod parity;

pub(super) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/fasttext")
        .join(name)
}
