//! Initialisers PyTorch has and burn lacks: `nn.init.orthogonal_`.

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use rayon::prelude::*;

/// A `[rows, cols]` matrix with orthonormal rows (rows <= cols) or columns
/// (rows > cols), times `gain`: torch's `orthogonal_` (QR of a Gaussian
/// matrix with R's diagonal made positive, which is what modified
/// Gram-Schmidt gives). The Gaussian draw uses the backend's seeded RNG.
pub fn orthogonal<B: Backend>(
    rows: usize,
    cols: usize,
    gain: f64,
    device: &B::Device,
) -> Tensor<B, 2> {
    if gain == 0.0 || rows == 0 || cols == 0 {
        return Tensor::zeros([rows, cols], device);
    }
    let g: Tensor<B, 2> = Tensor::random([rows, cols], Distribution::Normal(0.0, 1.0), device);
    let values: Vec<f64> = g
        .into_data()
        .convert::<f64>()
        .into_vec::<f64>()
        .unwrap_or_default();
    // Orthonormalise the vectors of the longer side's length: columns when
    // tall, rows when wide; `vecs[j]` is one such vector.
    let tall = rows > cols;
    let (count, len) = if tall { (cols, rows) } else { (rows, cols) };
    let mut vecs: Vec<Vec<f64>> = (0..count)
        .map(|j| {
            (0..len)
                .map(|i| {
                    if tall {
                        values[i * cols + j]
                    } else {
                        values[j * cols + i]
                    }
                })
                .collect()
        })
        .collect();
    for j in 0..count {
        let (done, rest) = vecs.split_at_mut(j + 1);
        let q = &mut done[j];
        let norm = q.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
        q.iter_mut().for_each(|x| *x /= norm);
        let q = &*q;
        rest.par_iter_mut().for_each(|v| {
            let p: f64 = q.iter().zip(v.iter()).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(q).for_each(|(x, &qi)| *x -= p * qi);
        });
    }
    let mut out = vec![0f32; rows * cols];
    for (j, v) in vecs.iter().enumerate() {
        for (i, &x) in v.iter().enumerate() {
            let at = if tall { i * cols + j } else { j * cols + i };
            out[at] = (x * gain) as f32;
        }
    }
    Tensor::from_data(TensorData::new(out, [rows, cols]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn gram(m: &[f32], rows: usize, cols: usize, by_rows: bool) -> f64 {
        // max |G - gain^2 I| of the row (or column) Gram matrix.
        let (count, len) = if by_rows { (rows, cols) } else { (cols, rows) };
        let at = |v: usize, i: usize| {
            if by_rows {
                m[v * cols + i]
            } else {
                m[i * cols + v]
            }
        };
        let mut worst = 0f64;
        for p in 0..count {
            for q in 0..count {
                let dot: f64 = (0..len).map(|i| at(p, i) as f64 * at(q, i) as f64).sum();
                let want = if p == q { 0.01 } else { 0.0 };
                worst = worst.max((dot - want).abs());
            }
        }
        worst
    }

    #[test]
    fn rows_or_columns_are_orthonormal_times_gain() {
        let dev = Default::default();
        for (rows, cols, by_rows) in [(5, 12, true), (12, 5, false), (7, 7, true)] {
            let m = orthogonal::<Flex>(rows, cols, 0.1, &dev);
            let v = m
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("f32");
            assert!(gram(&v, rows, cols, by_rows) < 1e-6, "{rows}x{cols}");
        }
    }
}
