//! Optimizer state tensors to and from host copies (checkpoints).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use kiln_models::NamedTensor;

pub fn to_named<B: Backend>(t: &Tensor<B, 1>) -> NamedTensor {
    let data = t
        .clone()
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default();
    NamedTensor {
        shape: vec![data.len()],
        data,
    }
}

pub fn from_named<B: Backend>(t: &NamedTensor, device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(t.data.clone(), [t.data.len()]), device)
}
