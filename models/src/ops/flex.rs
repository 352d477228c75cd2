//! `FusedOps` for burn's Flex CPU backend (kernels arrive in `kernels/`).

use burn::backend::flex::Flex;

use super::FusedOps;

impl FusedOps for Flex {}
