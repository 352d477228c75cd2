//! Quantisation arithmetic shared by fake quantisation (QAT, `Linear`) and
//! the GGUF writer: symmetric int8 / int4 with per-channel or per-group
//! scales (as `torch.fake_quantize_per_channel_affine`), and llama.cpp's q8_0
//! and q4_0 blocks of 32 (ggml's `quantize_row_q8_0_ref` / `q4_0_ref`, whose
//! scale is stored as f16 and used as such when dequantising).
//!
//! Groups run along the input dimension of a projection: in Kiln's
//! `[d_in, d_out]` layout, down each column; in PyTorch's / GGUF's
//! `[out, in]` rows, along each row.

use burn::tensor::f16;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// GGUF's block size for q8_0 and q4_0.
pub const GGUF_BLOCK: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    Int8,
    Int4,
    /// llama.cpp's q8_0: blocks of 32, `d = amax / 127`, `q = roundf(x / d)`.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// llama.cpp's q4_0: blocks of 32, `d = max / -8`, `q = min(15, trunc(x / d + 8.5))`.
    #[serde(rename = "q4_0")]
    Q4_0,
}

impl WeightFormat {
    pub fn bits(self) -> u32 {
        match self {
            WeightFormat::Int8 | WeightFormat::Q8_0 => 8,
            WeightFormat::Int4 | WeightFormat::Q4_0 => 4,
        }
    }

    pub fn is_gguf_block(self) -> bool {
        matches!(self, WeightFormat::Q8_0 | WeightFormat::Q4_0)
    }
}

/// Dynamic fake quantisation of a projection's input, per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ActFormat {
    #[default]
    None,
    /// Symmetric int8 per token (row): `s = amax / 127`, round half to even
    /// (torchao's "8da4w" activations, made symmetric).
    #[serde(rename = "int8_token")]
    Int8Token,
    /// llama.cpp's CPU path: activations as q8_0 blocks of 32 along the row
    /// ([`fake_quant_act_q8_0`]).
    #[serde(rename = "q8_0")]
    Q8_0,
}

/// How one projection is fake-quantised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantSpec {
    pub weights: WeightFormat,
    /// Elements per scale along the input dimension; `None` = the whole
    /// input dimension (per output channel). GGUF formats always use 32.
    pub group: Option<usize>,
    pub activations: ActFormat,
}

impl QuantSpec {
    /// The group length over an input dimension of `n_in`.
    pub fn group_len(&self, n_in: usize) -> usize {
        if self.weights.is_gguf_block() {
            GGUF_BLOCK
        } else {
            self.group.unwrap_or(n_in)
        }
    }
}

/// Quantise-dequantise one group of `x` into `out`, and write the
/// straight-through mask (1 where the rounded value was inside the range, 0
/// where it was clamped) into `mask`. Returns whether anything was clamped.
pub fn fake_quant_group(
    format: WeightFormat,
    x: &[f32],
    out: &mut [f32],
    mask: &mut [f32],
) -> bool {
    match format {
        WeightFormat::Int8 | WeightFormat::Int4 => {
            let qmax = ((1i32 << (format.bits() - 1)) - 1) as f32;
            let qmin = -qmax - 1.0;
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if amax == 0.0 { 1.0 } else { amax / qmax };
            affine_group(x, s, qmin, qmax, out, mask)
        }
        WeightFormat::Q8_0 => {
            let (d, id) = q8_0_scale(x);
            let dh = f16::from_f32(d).to_f32();
            for ((o, m), &v) in out.iter_mut().zip(mask.iter_mut()).zip(x) {
                // C `roundf`: half away from zero (Rust's `round`); the code
                // is an integer, so -0 is +0 (`+ 0.0`).
                *o = (round_half_away(v * id) + 0.0) * dh;
                *m = 1.0;
            }
            false
        }
        WeightFormat::Q4_0 => {
            let (d, id) = q4_0_scale(x);
            let dh = f16::from_f32(d).to_f32();
            let mut clamped = false;
            for ((o, m), &v) in out.iter_mut().zip(mask.iter_mut()).zip(x) {
                // `(int8_t)(x * id + 8.5f)`: truncation toward zero.
                let q = trunc(v * id + 8.5);
                let inside = q <= 15.0;
                clamped |= !inside;
                *o = (q.min(15.0) - 8.0) * dh;
                *m = if inside { 1.0 } else { 0.0 };
            }
            clamped
        }
    }
}

/// Round half to even, as `f32::round_ties_even` but inlined and branch
/// free: adding and removing 1.5 x 2^23 rounds under the default (to
/// nearest, ties to even) mode, exact for |x| < 2^22. Every caller's codes
/// are within +-128.5 or clamped to such a range afterwards, where a larger
/// |x| still lands beyond the clamp with its sign. Without SSE4.1 the std
/// version is a libm call per element (and a branch to it made LLVM call it
/// for every element), which dominated activation fake quantisation.
#[inline(always)]
fn round_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// C's `truncf` for |x| < 2^31 (codes here are within +-17), as a
/// conversion instruction: without SSE4.1 `f32::trunc` is a libm call per
/// element. NaN becomes 0.
#[inline(always)]
fn trunc(x: f32) -> f32 {
    (x as i32) as f32
}

/// C's `roundf` (half away from zero) for |x| < 2^31, branch free: the
/// fraction `x - trunc(x)` is exact, and a half or more moves one step away
/// from zero.
#[inline(always)]
fn round_half_away(x: f32) -> f32 {
    let t = trunc(x);
    let up = ((x - t).abs() >= 0.5) as i32 as f32;
    t + up.copysign(x)
}

/// A q8_0 block's f32 scale `d = amax / 127` and the `1 / d` codes use.
fn q8_0_scale(x: &[f32]) -> (f32, f32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    (d, if d != 0.0 { 1.0 / d } else { 0.0 })
}

/// A q4_0 block's f32 scale `d = max / -8` (`max`: the first element of
/// largest magnitude, with its sign) and `1 / d`.
fn q4_0_scale(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    (d, if d != 0.0 { 1.0 / d } else { 0.0 })
}

/// `torch.fake_quantize_per_channel_affine` with zero point 0 and scale `s`
/// on one group of `bits`-bit codes; returns whether anything was clamped.
pub fn fake_quant_affine(x: &[f32], s: f32, bits: u32, out: &mut [f32], mask: &mut [f32]) -> bool {
    let qmax = ((1i32 << (bits - 1)) - 1) as f32;
    affine_group(x, s, -qmax - 1.0, qmax, out, mask)
}

fn affine_group(
    x: &[f32],
    s: f32,
    qmin: f32,
    qmax: f32,
    out: &mut [f32],
    mask: &mut [f32],
) -> bool {
    let inv = 1.0 / s;
    let mut clamped = false;
    for ((o, m), &v) in out.iter_mut().zip(mask.iter_mut()).zip(x) {
        let q = round_even(v * inv);
        let inside = (qmin..=qmax).contains(&q);
        clamped |= !inside;
        // Integer codes: -0 is +0 (`+ 0.0`), as in torch's int arithmetic.
        *o = (q.clamp(qmin, qmax) + 0.0) * s;
        *m = if inside { 1.0 } else { 0.0 };
    }
    clamped
}

/// Fake quantisation of rows of `x` (`[rows, len]`, groups of `group`
/// along each row): `(values, mask, any clamped)`.
pub fn fake_quant_rows(
    format: WeightFormat,
    x: &[f32],
    len: usize,
    group: usize,
) -> (Vec<f32>, Vec<f32>, bool) {
    let mut out = vec![0f32; x.len()];
    let mut mask = vec![0f32; x.len()];
    let group = group.clamp(1, len.max(1));
    let clamped = out
        .par_chunks_mut(len.max(1))
        .zip(mask.par_chunks_mut(len.max(1)))
        .zip(x.par_chunks(len.max(1)))
        .map(|((o, m), row)| {
            let mut any = false;
            for ((og, mg), xg) in o
                .chunks_mut(group)
                .zip(m.chunks_mut(group))
                .zip(row.chunks(group))
            {
                any |= fake_quant_group(format, xg, og, mg);
            }
            any
        })
        .reduce(|| false, |a, b| a || b);
    (out, mask, clamped)
}

/// llama.cpp's CPU quantisation of a matmul's activations (`quantize_row_q8_0`
/// on x86): q8_0 blocks of 32 with `id = 127 / amax` and round half to even
/// (the SIMD conversion), dequantised with the f16 scale. (The reference
/// `quantize_row_q8_0_ref` that weights use rounds half away from zero.)
pub fn fake_quant_act_q8_0(row: &[f32], out: &mut [f32]) {
    for (o, x) in out.chunks_mut(GGUF_BLOCK).zip(row.chunks(GGUF_BLOCK)) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let dh = f16::from_f32(d).to_f32();
        for (o, &v) in o.iter_mut().zip(x) {
            *o = (round_even(v * id) + 0.0) * dh;
        }
    }
}

/// Per-token symmetric int8 of one row (activations).
pub fn fake_quant_token_int8(row: &[f32], out: &mut [f32]) {
    let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    let s = if amax == 0.0 { 1.0 } else { amax / 127.0 };
    let inv = 1.0 / s;
    for (o, &v) in out.iter_mut().zip(row) {
        *o = (round_even(v * inv).clamp(-128.0, 127.0) + 0.0) * s;
    }
}

/// One row (a multiple of 32 values) as GGUF q8_0 blocks: per block the
/// f16 scale `d` (little-endian) and 32 `i8` codes; 34 bytes a block.
pub fn encode_q8_0(row: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(row.len() / GGUF_BLOCK * 34);
    for x in row.chunks(GGUF_BLOCK) {
        let (d, id) = q8_0_scale(x);
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(x.iter().map(|&v| ((v * id).round() as i8) as u8));
    }
    out
}

/// One row as GGUF q4_0 blocks: the f16 scale, then 16 bytes whose low
/// nibble holds code `j` and high nibble code `j + 16`; 18 bytes a block.
pub fn encode_q4_0(row: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(row.len() / GGUF_BLOCK * 18);
    for x in row.chunks(GGUF_BLOCK) {
        let (d, id) = q4_0_scale(x);
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        let code = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        let half = GGUF_BLOCK / 2;
        out.extend((0..half).map(|j| code(x[j]) | (code(x[j + half]) << 4)));
    }
    out
}

/// `[r, c]` row-major -> `[c, r]`.
pub fn transposed(x: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = x[i * c + j];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_extremes_map_to_the_ends_of_the_code_range() {
        // The signed max (-2) becomes q = 0 -> -8 d = -2; +2 would be q = 16,
        // clamped to 15, so its straight-through gradient is zero.
        let x = [-2.0f32, 1.0, 0.0, 2.0];
        let (mut out, mut mask) = ([0f32; 4], [0f32; 4]);
        assert!(fake_quant_group(
            WeightFormat::Q4_0,
            &x,
            &mut out,
            &mut mask
        ));
        assert_eq!(out[0], -2.0);
        assert_eq!(mask, [1.0, 1.0, 1.0, 0.0]);
        assert_eq!(out[3], 7.0 * 0.25);
    }

    #[test]
    fn int_formats_use_ties_to_even_and_q8_0_half_away() {
        let x = [127.0f32, 0.5, 1.5, -2.5];
        let (mut out, mut mask) = ([0f32; 4], [0f32; 4]);
        fake_quant_group(WeightFormat::Int8, &x, &mut out, &mut mask);
        assert_eq!(out, [127.0, 0.0, 2.0, -2.0]);
        fake_quant_group(WeightFormat::Q8_0, &x, &mut out, &mut mask);
        assert_eq!(out, [127.0, 1.0, 2.0, -3.0]);
    }

    #[test]
    fn inlined_trunc_and_roundf_equal_std() {
        let mut x = -20.0f32;
        while x <= 20.0 {
            for v in [x, x + 0.5, x - 0.5, x + 1e-6, x - 1e-6] {
                assert_eq!(trunc(v), v.trunc(), "{v}");
                assert_eq!(round_half_away(v), v.round(), "{v}");
            }
            x += 0.125;
        }
        assert_eq!(round_half_away(0.49999997), 0.0);
        assert_eq!(round_half_away(-2.5), -3.0);
    }

    #[test]
    fn codes_far_outside_the_range_still_clamp_to_its_ends() {
        // The branch-free rounding is inexact beyond 2^22; clamping hides it.
        let x = [1e30f32, -1e30, 3e6, -5e4];
        let (mut out, mut mask) = ([0f32; 4], [0f32; 4]);
        assert!(fake_quant_affine(&x, 1e-3, 8, &mut out, &mut mask));
        assert_eq!(
            out,
            [127.0 * 1e-3, -128.0 * 1e-3, 127.0 * 1e-3, -128.0 * 1e-3]
        );
        assert_eq!(mask, [0.0; 4]);
    }
}
