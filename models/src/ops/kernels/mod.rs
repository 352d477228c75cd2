//! Plain-slice CPU kernels (f32, row-major, rayon over fixed-size chunks so
//! results do not depend on the thread count) behind the Flex implementation
//! of `FusedOps`. Each picks AVX-512, AVX2+FMA or a portable path at run time.

pub mod attention;
pub mod cross_entropy;
pub mod distill;
pub mod fake_quant;
pub mod fast_exp;
pub mod fast_math;
pub mod layout;
pub mod matmul;
pub mod rms_norm;
pub mod selective_scan;
pub mod swiglu;
#[cfg(test)]
mod test_util;
pub mod wkv7;
