//! Strided 2-D f32 GEMM into a fresh, unzeroed buffer.
//!
//! burn-flex's own matmul makes the same `gemm` call, but allocates its
//! output as a zero-filled `Vec<u8>` and then copies it once more to reach
//! cubecl's 16-byte alignment (`Bytes::from_bytes_vec`): two serial passes
//! over every output, ~10% of an 8M-model training step on 2 cores. Here the
//! output is written by the GEMM only.

/// A 2-D operand: `data[offset + i * row_stride + j * col_stride]` is element
/// `(i, j)`. Transposed views are just swapped strides.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: isize,
    pub col_stride: isize,
}

impl Operand<'_> {
    /// Whether every element the strides address lies inside `data`.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = |n: usize, s: isize| (n as isize - 1) * s;
        let (r, c) = (
            last(self.rows, self.row_stride),
            last(self.cols, self.col_stride),
        );
        let lo = self.offset as isize + r.min(0) + c.min(0);
        let hi = self.offset as isize + r.max(0) + c.max(0);
        lo >= 0 && (hi as usize) < self.data.len()
    }
}

// Below this many multiply-adds one thread is faster (burn-flex's threshold).
const PARALLEL_THRESHOLD: usize = 192 * 192 * 192;

/// `a [m, k] @ b [k, n]` as a row-major `[m, n]` vector, or None when the
/// shapes disagree or a stride leaves its buffer.
pub fn matmul(a: Operand<'_>, b: Operand<'_>) -> Option<Vec<f32>> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || !a.in_bounds() || !b.in_bounds() {
        return None;
    }
    if m == 0 || n == 0 || k == 0 {
        return Some(vec![0.0; m * n]);
    }
    let parallelism = if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_THRESHOLD {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: both operands were bounds-checked above for every (row, col)
    // their strides reach; `out` has capacity m * n, which `gemm` writes in
    // full (read_dst = false: the destination is never read) before set_len.
    unsafe {
        let a_ptr = a.data.as_ptr().add(a.offset);
        let b_ptr = b.data.as_ptr().add(b.offset);
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,          // dst column stride
            n as isize, // dst row stride
            false,      // read_dst
            a_ptr,
            a.col_stride,
            a.row_stride,
            b_ptr,
            b.col_stride,
            b.row_stride,
            0.0, // alpha (dst scale, unused without read_dst)
            1.0, // beta (product scale)
            false,
            false,
            false,
            parallelism,
        );
        out.set_len(m * n);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
            })
            .collect()
    }

    fn dense(data: &[f32], rows: usize, cols: usize) -> Operand<'_> {
        Operand {
            data,
            offset: 0,
            rows,
            cols,
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    #[test]
    fn matches_naive_for_plain_and_transposed_operands() {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (33, 17, 65), (200, 64, 300)] {
            let (a, b) = (values(m * k, 1), values(k * n, 7));
            let want = naive(&a, &b, m, k, n);
            let got = matmul(dense(&a, m, k), dense(&b, k, n)).unwrap();
            let diff = want
                .iter()
                .zip(&got)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(diff < 1e-4, "plain {m}x{k}x{n}: max diff {diff}");

            // The same product from bt = b^T stored [n, k], read transposed.
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let view = Operand {
                data: &bt,
                offset: 0,
                rows: k,
                cols: n,
                row_stride: 1,
                col_stride: k as isize,
            };
            let got = matmul(dense(&a, m, k), view).unwrap();
            let diff = want
                .iter()
                .zip(&got)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(diff < 1e-4, "transposed {m}x{k}x{n}: max diff {diff}");
        }
    }

    #[test]
    fn rejects_mismatched_shapes_and_out_of_bounds_strides() {
        let a = values(6, 1);
        assert!(matmul(dense(&a, 2, 3), dense(&a, 2, 3)).is_none());
        let wide = Operand {
            data: &a,
            offset: 1,
            rows: 2,
            cols: 3,
            row_stride: 3,
            col_stride: 1,
        };
        assert!(matmul(dense(&a, 3, 2), wide).is_none());
    }
}
