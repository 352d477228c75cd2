//! Building blocks shared by every architecture: projections, embeddings,
//! RMSNorm, LayerNorm, rotary embeddings, causal attention and the SwiGLU MLP.

pub mod attention;
pub mod embedding;
pub mod fake_quant;
pub mod layer_norm;
pub mod linear;
pub mod lora;
pub mod mlp;
pub mod rms_norm;
pub mod rope;

pub use attention::{Attention, KvCache};
pub use embedding::Embedding;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use lora::{LoraAdapter, LoraInit, LoraSpec};
pub use mlp::SwiGluMlp;
pub use rms_norm::RmsNorm;
pub use rope::Rope;
