//! Fake quantisation of a projection's weight or input on plain f32 slices
//! (the arithmetic is `quant.rs`'s; this file only moves data): the Flex
//! backend runs it on the tensor's own storage, so QAT pays one pass over
//! the values instead of the copies of a host round trip through
//! `TensorData` (which made q8_0 activations cost 1.5-1.9x a plain step).

use rayon::prelude::*;

use crate::quant::{
    fake_quant_act_q8_0, fake_quant_rows, fake_quant_token_int8, ActFormat, WeightFormat,
};

/// What one fake-quantisation call quantises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeQuantTarget {
    /// A projection weight `[d_in, d_out]`: each output column in groups of
    /// `group` consecutive inputs.
    Weight { format: WeightFormat, group: usize },
    /// A projection input `[rows, d_in]`: each row (token) on its own.
    Input(ActFormat),
}

/// A 2-D f32 view: element `(i, j)` at `data[offset + i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl View<'_> {
    /// A row-major contiguous `[rows, cols]` slice.
    pub fn contiguous(data: &[f32], rows: usize, cols: usize) -> View<'_> {
        View {
            data,
            offset: 0,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[self.offset + i * self.row_stride + j * self.col_stride]
    }

    /// The view as `[cols, rows]` row-major (each column made a row).
    fn columns(&self) -> Vec<f32> {
        if self.col_stride == 1 {
            return transpose_tiled(
                &self.data[self.offset..],
                self.rows,
                self.cols,
                self.row_stride,
            );
        }
        let mut out = vec![0f32; self.rows * self.cols];
        out.par_chunks_mut(self.rows.max(1))
            .enumerate()
            .for_each(|(j, col)| {
                for (i, o) in col.iter_mut().enumerate() {
                    *o = self.at(i, j);
                }
            });
        out
    }

    /// The view as `[rows, cols]` row-major.
    fn rows_major(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        out.par_chunks_mut(self.cols.max(1))
            .enumerate()
            .for_each(|(i, row)| {
                for (j, o) in row.iter_mut().enumerate() {
                    *o = self.at(i, j);
                }
            });
        out
    }
}

/// `[cols, rows]` row-major back to `[rows, cols]` row-major.
fn from_columns(t: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    transpose_tiled(t, cols, rows, rows)
}

/// `src [rows, cols]` (rows `row_stride` apart) as `[cols, rows]`, in
/// 32 x 32 tiles so that reads and writes both stay in cache; each task
/// writes 32 output rows.
fn transpose_tiled(src: &[f32], rows: usize, cols: usize, row_stride: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0f32; rows * cols];
    if rows == 0 || cols == 0 {
        return out;
    }
    out.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(tile, block)| {
            let c0 = tile * TILE;
            let width = block.len() / rows; // output rows (input columns) here
            for r0 in (0..rows).step_by(TILE) {
                for r in r0..(r0 + TILE).min(rows) {
                    let line = &src[r * row_stride + c0..r * row_stride + c0 + width];
                    for (j, &v) in line.iter().enumerate() {
                        block[j * rows + r] = v;
                    }
                }
            }
        });
    out
}

/// `(values, mask)` of `x` fake-quantised as `target` says, both row-major
/// `[rows, cols]`; the straight-through mask (1 inside the code range, 0
/// where the value was clamped) is `None` when nothing was clamped.
pub fn fake_quant(x: View<'_>, target: FakeQuantTarget) -> (Vec<f32>, Option<Vec<f32>>) {
    match target {
        FakeQuantTarget::Input(format) => {
            let f = match format {
                ActFormat::None => return (x.rows_major(), None),
                ActFormat::Int8Token => fake_quant_token_int8,
                ActFormat::Q8_0 => fake_quant_act_q8_0,
            };
            let contiguous = x.row_stride == x.cols && x.col_stride == 1;
            let owned;
            let src = if contiguous {
                &x.data[x.offset..x.offset + x.rows * x.cols]
            } else {
                owned = x.rows_major();
                &owned[..]
            };
            let d = x.cols.max(1);
            let mut out = vec![0f32; x.rows * x.cols];
            // Scales come from each row's own maximum: nothing is ever clamped.
            out.par_chunks_mut(d)
                .zip(src.par_chunks(d))
                .for_each(|(o, row)| f(row, o));
            (out, None)
        }
        FakeQuantTarget::Weight { format, group } => {
            // Groups run down each column: quantise the columns as rows. A
            // transposed view (the tied head) is already column-major.
            let cols = x.columns(); // [d_out, d_in]
            let (fq, mask, clamped) = fake_quant_rows(format, &cols, x.rows, group);
            let mask = clamped.then(|| from_columns(&mask, x.rows, x.cols));
            (from_columns(&fq, x.rows, x.cols), mask)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::transposed;

    fn values(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 3.0)
            .collect()
    }

    #[test]
    fn weight_columns_quantise_as_the_transposed_rows() {
        let (d_in, d_out) = (64, 24);
        let w = values(d_in * d_out); // [d_in, d_out]
        let target = FakeQuantTarget::Weight {
            format: WeightFormat::Q4_0,
            group: 32,
        };
        let (fq, mask) = fake_quant(View::contiguous(&w, d_in, d_out), target);
        let rows = transposed(&w, d_in, d_out);
        let (want, want_mask, clamped) = fake_quant_rows(WeightFormat::Q4_0, &rows, d_in, 32);
        assert_eq!(fq, transposed(&want, d_out, d_in));
        assert!(clamped);
        assert_eq!(mask, Some(transposed(&want_mask, d_out, d_in)));
        // The same weight stored [d_out, d_in] and read as a transposed view.
        let view = View {
            data: &rows,
            offset: 0,
            rows: d_in,
            cols: d_out,
            row_stride: 1,
            col_stride: d_in,
        };
        assert_eq!(fake_quant(view, target).0, fq);
    }

    #[test]
    fn tiled_transpose_matches_the_plain_one() {
        for (r, c) in [(1, 1), (33, 70), (64, 32), (5, 100)] {
            let x = values(r * c);
            assert_eq!(
                transpose_tiled(&x, r, c, c),
                transposed(&x, r, c),
                "{r}x{c}"
            );
        }
    }

    #[test]
    fn inputs_quantise_each_row_and_never_clamp() {
        let (rows, d) = (5, 96);
        let x = values(rows * d);
        let (fq, mask) = fake_quant(
            View::contiguous(&x, rows, d),
            FakeQuantTarget::Input(ActFormat::Q8_0),
        );
        assert!(mask.is_none());
        for r in 0..rows {
            let mut want = vec![0f32; d];
            fake_quant_act_q8_0(&x[r * d..(r + 1) * d], &mut want);
            assert_eq!(&fq[r * d..(r + 1) * d], &want[..]);
        }
    }
}
