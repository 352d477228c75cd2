//! `FusedOps` for burn's Flex CPU backend: the kernels of `kernels/` on
//! contiguous f32 data; anything else (other dtypes) falls back to the
//! composed versions.

use burn::backend::flex::Flex;

use super::FusedOps;

impl FusedOps for Flex {}
