//! Plain-slice CPU kernels (f32, row-major, rayon-parallel) behind the Flex
//! implementation of `FusedOps`.
