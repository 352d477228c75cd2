//! GPU backends run the composed versions until device kernels are written
//! (burn's CubeCL backends already fuse element-wise chains).

use super::FusedOps;

#[cfg(feature = "cuda")]
impl FusedOps for burn::backend::Cuda {}

#[cfg(feature = "wgpu")]
impl FusedOps for burn::backend::Wgpu {}
