//! Kiln's model architectures, generic over burn's `Backend`. Models never
//! name a backend or dtype: the trainer picks them.

pub mod adapters;
pub mod config;
pub mod decoder;
pub mod error;
pub mod hf;
pub mod init;
pub mod layers;
pub mod lm;
pub mod mamba;
pub mod naming;
pub mod ops;
pub mod prune;
pub mod prune_structured;
pub mod quant;
pub mod rwkv7;
pub mod stack;

pub use adapters::{is_adapter_name, ProjectionName};
pub use config::{Arch, BlockKind, ModelConfig};
pub use decoder::{Decoder, DecoderCache};
pub use error::ModelError;
pub use layers::{LoraInit, LoraSpec};
pub use lm::{LanguageModel, TrainBackend};
pub use naming::{
    for_each_tensor, load_named_tensors, load_named_tensors_where, named_tensors, param_infos,
    NamedTensor, ParamInfo,
};
pub use ops::FusedOps;
pub use stack::{StackRunner, StackSlot};
