//! Memory-bound helpers: the `[b, t, h, d] <-> [b, h, t, d]` transpose around
//! the attention kernel, and rotary embeddings applied in place of a copy.

use rayon::prelude::*;

/// Rows of `d` floats handled per rayon task (fixed, so work splits the same
/// way whatever the thread count).
const ROWS_PER_TASK: usize = 256;

/// `[d0, d1, d2, d3] -> [d0, d2, d1, d3]` (swap the two middle dims).
pub fn swap_middle(x: &[f32], dims: [usize; 4]) -> Vec<f32> {
    let [d0, d1, d2, d3] = dims;
    assert_eq!(
        x.len(),
        d0 * d1 * d2 * d3,
        "swap_middle: length does not match dims"
    );
    let mut out = vec![0.0f32; x.len()];
    if d3 == 0 {
        return out;
    }
    // One output row (a, j, i) = input row (a, i, j).
    out.par_chunks_mut(d3 * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, chunk)| {
            let first = task * ROWS_PER_TASK;
            for (r, row) in chunk.chunks_mut(d3).enumerate() {
                let idx = first + r;
                let (a, rest) = (idx / (d2 * d1), idx % (d2 * d1));
                let (j, i) = (rest / d1, rest % d1);
                let src = ((a * d1 + i) * d2 + j) * d3;
                row.copy_from_slice(&x[src..src + d3]);
            }
        });
    out
}

/// Rotate-half rotary embedding of `x [b, t, h, d]` with `cos, sin [t, d/2]`:
/// `y1 = x1 c - x2 s`, `y2 = x2 c + x1 s`; `inverse` uses `-s` (the transpose).
#[allow(clippy::too_many_arguments)]
pub fn rope(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    b: usize,
    t: usize,
    h: usize,
    d: usize,
    inverse: bool,
) -> Vec<f32> {
    let half = d / 2;
    assert_eq!(x.len(), b * t * h * d, "rope: length does not match dims");
    assert!(
        cos.len() >= t * half && sin.len() >= t * half,
        "rope: tables shorter than the sequence"
    );
    let mut out = vec![0.0f32; x.len()];
    if d == 0 {
        return out;
    }
    let sign = if inverse { -1.0f32 } else { 1.0 };
    out.par_chunks_mut(d * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, chunk)| {
            let first = task * ROWS_PER_TASK;
            for (r, row) in chunk.chunks_mut(d).enumerate() {
                let idx = first + r; // row (bi, ti, hi)
                let ti = (idx / h) % t;
                let src = &x[idx * d..idx * d + d];
                let (c, s) = (
                    &cos[ti * half..ti * half + half],
                    &sin[ti * half..ti * half + half],
                );
                let (y1, y2) = row.split_at_mut(half);
                for i in 0..half {
                    let (x1, x2, si) = (src[i], src[half + i], sign * s[i]);
                    y1[i] = x1 * c[i] - x2 * si;
                    y2[i] = x2 * c[i] + x1 * si;
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_middle_moves_rows() {
        let dims = [2, 3, 4, 5];
        let x: Vec<f32> = (0..120).map(|i| i as f32).collect();
        let y = swap_middle(&x, dims);
        for a in 0..2 {
            for i in 0..3 {
                for j in 0..4 {
                    for e in 0..5 {
                        assert_eq!(
                            y[((a * 4 + j) * 3 + i) * 5 + e],
                            x[((a * 3 + i) * 4 + j) * 5 + e]
                        );
                    }
                }
            }
        }
        assert_eq!(swap_middle(&y, [2, 4, 3, 5]), x);
    }

    #[test]
    fn inverse_rope_undoes_rope() {
        let (b, t, h, d) = (2, 7, 3, 8);
        let x: Vec<f32> = (0..b * t * h * d)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let ang: Vec<f32> = (0..t * d / 2).map(|i| i as f32 * 0.37).collect();
        let (c, s): (Vec<f32>, Vec<f32>) = ang.iter().map(|a| (a.cos(), a.sin())).unzip();
        let y = rope(&x, &c, &s, b, t, h, d, false);
        let back = rope(&y, &c, &s, b, t, h, d, true);
        let err = x
            .iter()
            .zip(&back)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-6, "{err}");
    }
}
