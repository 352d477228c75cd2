//! Pruning arithmetic (specs.md section 8b): which weights of a projection
//! to zero, as magnitude pruning and Wanda (Sun et al. 2023, "A Simple and
//! Effective Pruning Approach for Large Language Models"; reference
//! implementation locuslab/wanda `lib/prune.py`: `prune_magnitude`,
//! `prune_wanda`), unstructured or N:M. Plus [`InputStats`], the per-input
//! squared norms Wanda's scores need, collected by `Linear::project`.
//!
//! Everything here works on host vectors in Kiln's weight layout
//! `[d_in, d_out]` (element `(i, o)` at `i * d_out + o`); scores are f64 so
//! that `|W_ij| * ||X_j||` rounds once, as the float64 reference does.

use std::sync::{Arc, Mutex};

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Which weights a mask keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// Prune `floor(count * sparsity)` weights of each comparison group.
    Unstructured { sparsity: f64 },
    /// Keep the `n` largest scores of every `m` consecutive inputs of each
    /// output (NVIDIA's 2:4 = keep 2 of 4).
    NOfM { n: usize, m: usize },
}

/// Over which weights scores are compared (unstructured only: N:M always
/// compares within its groups of one output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// All weights of the projection at once (magnitude, as Wanda's baseline).
    Layer,
    /// The inputs of each output separately (Wanda).
    Row,
}

/// `|w|` as scores.
pub fn magnitude_scores(w: &[f32]) -> Vec<f64> {
    w.iter().map(|&x| (x as f64).abs()).collect()
}

/// Wanda's `|W_ij| * ||X_j||_2`: `sq_norms[i]` is the sum of squares of
/// input `i` over the calibration tokens. (Wanda divides by the sample
/// count first; a constant factor per projection changes no comparison
/// within it, and leaving it out keeps the product one rounding.)
pub fn wanda_scores(w: &[f32], d_out: usize, sq_norms: &[f64]) -> Vec<f64> {
    w.iter()
        .enumerate()
        .map(|(k, &x)| (x as f64).abs() * sq_norms[k / d_out].sqrt())
        .collect()
}

/// Indices of `items` (scores) ordered ascending by score, equal scores in
/// their given order: a stable sort, as `torch.sort(..., stable=True)`.
fn ascending(items: &mut [(f64, usize)]) {
    items.sort_by(|a, b| a.0.total_cmp(&b.0));
}

/// The keep-mask (`true` = kept) of `[d_in, d_out]` scores. Ties are broken
/// by position (the earlier one is pruned first) in PyTorch's `[out, in]`
/// order: by output, then input, for [`Grouping::Layer`]; by input within an
/// output otherwise.
pub fn keep_mask(
    scores: &[f64],
    d_in: usize,
    d_out: usize,
    pattern: Pattern,
    grouping: Grouping,
) -> Vec<bool> {
    let mut keep = vec![true; scores.len()];
    let at = |i: usize, o: usize| i * d_out + o;
    match (pattern, grouping) {
        (Pattern::Unstructured { sparsity }, Grouping::Layer) => {
            // Wanda's baseline prunes `|W| <= sorted[k]` (k + 1 weights, more
            // on ties at the threshold); we prune exactly k, the first k of a
            // stable sort, so the reported sparsity is the asked one.
            let mut items: Vec<(f64, usize)> = (0..d_out)
                .flat_map(|o| (0..d_in).map(move |i| (scores[at(i, o)], at(i, o))))
                .collect();
            ascending(&mut items);
            let k = (scores.len() as f64 * sparsity) as usize;
            for &(_, idx) in &items[..k.min(items.len())] {
                keep[idx] = false;
            }
        }
        (Pattern::Unstructured { sparsity }, Grouping::Row) => {
            let k = (d_in as f64 * sparsity) as usize;
            for o in 0..d_out {
                let mut items: Vec<(f64, usize)> =
                    (0..d_in).map(|i| (scores[at(i, o)], at(i, o))).collect();
                ascending(&mut items);
                for &(_, idx) in &items[..k.min(items.len())] {
                    keep[idx] = false;
                }
            }
        }
        (Pattern::NOfM { n, m }, _) => {
            for o in 0..d_out {
                for start in (0..d_in).step_by(m.max(1)) {
                    let end = (start + m).min(d_in);
                    let mut items: Vec<(f64, usize)> =
                        (start..end).map(|i| (scores[at(i, o)], at(i, o))).collect();
                    ascending(&mut items);
                    let prune = (end - start).saturating_sub(n);
                    for &(_, idx) in &items[..prune] {
                        keep[idx] = false;
                    }
                }
            }
        }
    }
    keep
}

/// Sums of squares (and of absolute values) of each input of one projection
/// over every row it saw (calibration for Wanda and structured pruning). Shared by the clones a module makes of its
/// fields; `None` on a `Linear` (the default) costs training nothing.
#[derive(Debug, Clone, Default)]
pub struct InputStats(Arc<Mutex<Stats>>);

#[derive(Debug, Default)]
struct Stats {
    sq_sums: Vec<f64>,
    abs_sums: Vec<f64>,
    rows: usize,
}

impl InputStats {
    /// Adds the squares of `x [rows, d_in]`, per input, in f64 on the host.
    pub fn record<B: Backend>(&self, x: Tensor<B, 2>) {
        let [rows, d_in] = x.dims();
        let Ok(values) = x.into_data().convert::<f32>().into_vec::<f32>() else {
            return;
        };
        self.record_host(&values, rows, d_in);
    }

    /// [`record`](Self::record) on host values `[rows, d_in]`.
    pub fn record_host(&self, x: &[f32], rows: usize, d_in: usize) {
        // A poisoned lock means a panic elsewhere mid-record: the sums
        // are then incomplete either way, and the caller sees that panic.
        let Ok(mut s) = self.0.lock() else {
            return;
        };
        if s.sq_sums.len() != d_in {
            s.sq_sums = vec![0.0; d_in];
            s.abs_sums = vec![0.0; d_in];
        }
        let Stats {
            sq_sums, abs_sums, ..
        } = &mut *s;
        for row in x.chunks_exact(d_in.max(1)).take(rows) {
            for ((sq, abs), &v) in sq_sums.iter_mut().zip(abs_sums.iter_mut()).zip(row) {
                let v = v as f64;
                *sq += v * v;
                *abs += v.abs();
            }
        }
        s.rows += rows;
    }

    /// The per-input sums of squares and the number of rows recorded.
    pub fn sums(&self) -> (Vec<f64>, usize) {
        match self.0.lock() {
            Ok(s) => (s.sq_sums.clone(), s.rows),
            Err(_) => (Vec::new(), 0),
        }
    }

    /// The per-input sums of absolute values and the number of rows recorded.
    pub fn abs_sums(&self) -> (Vec<f64>, usize) {
        match self.0.lock() {
            Ok(s) => (s.abs_sums.clone(), s.rows),
            Err(_) => (Vec::new(), 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_ties_prune_the_earlier_weight_in_torch_order() {
        // [d_in 2, d_out 2]: torch order (o0,i0) (o0,i1) (o1,i0) (o1,i1).
        let scores = [1.0, 1.0, 2.0, 1.0]; // (i0,o0) (i0,o1) (i1,o0) (i1,o1)
        let keep = keep_mask(
            &scores,
            2,
            2,
            Pattern::Unstructured { sparsity: 0.5 },
            Grouping::Layer,
        );
        // Ones in torch order: (o0,i0), (o1,i0), (o1,i1); first two pruned.
        assert_eq!(keep, vec![false, false, true, true]);
    }

    #[test]
    fn n_of_m_keeps_the_largest_per_group() {
        let scores = [4.0, 1.0, 3.0, 2.0, 0.0, 0.0, 5.0, 5.0]; // [d_in 8, d_out 1]
        let keep = keep_mask(&scores, 8, 1, Pattern::NOfM { n: 2, m: 4 }, Grouping::Row);
        assert_eq!(
            keep,
            vec![true, false, true, false, false, false, true, true]
        );
    }
}
