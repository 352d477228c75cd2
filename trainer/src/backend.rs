//! Picking the burn backend at run time from `training.device`. Work that
//! must run on "whatever backend was chosen" implements [`BackendTask`].

use crate::config::DeviceSpec;
use crate::error::{Result, TrainerError};
use kiln_models::TrainBackend;

pub trait BackendTask {
    type Output;
    fn run<B: TrainBackend>(self, device: B::Device, name: &str) -> Result<Self::Output>;
}

pub type CpuBackend = burn::backend::Autodiff<burn::backend::Flex>;

pub fn dispatch<T: BackendTask>(device: &str, task: T) -> Result<T::Output> {
    match DeviceSpec::parse(device)? {
        DeviceSpec::Cpu => task.run::<CpuBackend>(burn::backend::flex::FlexDevice, device),
        DeviceSpec::Cuda(index) => {
            #[cfg(feature = "cuda")]
            {
                let dev = burn::backend::cuda::CudaDevice::new(index);
                task.run::<burn::backend::Autodiff<burn::backend::Cuda>>(dev, device)
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = index;
                Err(TrainerError::invalid(
                    "training.device",
                    format!("\"{device}\" needs a kiln built with CUDA: `cargo build --release --features cuda` (or use \"cpu\")"),
                ))
            }
        }
        DeviceSpec::Wgpu => {
            #[cfg(feature = "wgpu")]
            {
                task.run::<burn::backend::Autodiff<burn::backend::Wgpu>>(Default::default(), device)
            }
            #[cfg(not(feature = "wgpu"))]
            {
                Err(TrainerError::invalid(
                    "training.device",
                    format!("\"{device}\" needs a kiln built with wgpu: `cargo build --release --features wgpu` (or use \"cpu\")"),
                ))
            }
        }
    }
}
