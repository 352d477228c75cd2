//! Instruction tuning data: examples made of role turns, a chat template
//! that renders them, loss masks that train only chosen roles, and padded
//! batches with exact resume.
//!
//! Pipeline: [`read_examples`] (JSONL plain/.gz/.zst or Parquet; per line one
//! of `{"prompt","response"}`, Alpaca `{"instruction","input","output"}` or
//! chat `{"messages":[{"role","content"}]}`) -> [`InstructConfig::template`]
//! -> [`encode`] (ids + per-token train mask, overlong examples dropped or
//! truncated) -> [`InstructSampler`] for training and [`eval_batches`] for
//! held-out examples. A target that takes no loss is [`IGNORE`].
//!
//! Rows hold one example each, right-padded (`layout = "pad"`): packing
//! several examples in a row would let later ones attend to earlier ones,
//! which needs per-example attention masks in the model.

mod encode;
mod error;
mod parse;
pub mod prepared;
mod sampler;
mod template;

pub use encode::{encode, Encoded, InstructReport};
pub use error::InstructError;
pub use parse::{parse_jsonl_str, read_examples, Example, Origin, Turn};
pub use prepared::{is_prepared, load_prepared, save_prepared, PreparedManifest};
pub use sampler::{eval_batches, InstructSampler, InstructSamplerState, IGNORE};
pub use template::{ChatTemplate, InstructConfig, Layout, Overflow, RoleFormat};
