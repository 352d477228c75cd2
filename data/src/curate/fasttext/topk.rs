//! fastText's `Loss::findKBest`: the top k (log-probability, label) pairs
//! through libstdc++'s heap algorithms, so that labels with equal
//! probabilities (an underflowed softmax gives several exact zeros) come out
//! in the same order as in pip fastText.

use super::model::std_log;
use super::stdalgo::{pop_heap_to, push_heap, sort_heap};

type Pair = (f32, usize);

/// The heap's comparator, `comparePairs`: a min-heap on the log-probability.
fn comp(a: &Pair, b: &Pair) -> bool {
    a.0 > b.0
}

/// The `k` most probable labels with probability >= `threshold`, as
/// (log(p + 1e-5), label index), most probable first.
pub fn k_best(probs: &[f32], k: usize, threshold: f32) -> Vec<Pair> {
    if k == 0 {
        return Vec::new();
    }
    let mut heap: Vec<Pair> = Vec::with_capacity(k + 1);
    for (i, &p) in probs.iter().enumerate() {
        if p < threshold {
            continue;
        }
        let log_p = std_log(p);
        if heap.len() == k && log_p < heap[0].0 {
            continue;
        }
        heap.push((log_p, i));
        push_heap(&mut heap, &comp);
        if heap.len() > k {
            let last = heap.len() - 1;
            pop_heap_to(&mut heap, last, &comp);
            heap.pop();
        }
    }
    sort_heap(&mut heap, &comp);
    heap
}

#[cfg(test)]
mod tests {
    use super::k_best;

    #[test]
    fn k_best_sorts_descending_and_filters() {
        let probs = [0.1, 0.6, 0.05, 0.25];
        let got: Vec<usize> = k_best(&probs, 4, 0.0).iter().map(|p| p.1).collect();
        assert_eq!(got, [1, 3, 0, 2]);
        let got: Vec<usize> = k_best(&probs, 2, 0.0).iter().map(|p| p.1).collect();
        assert_eq!(got, [1, 3]);
        let got: Vec<usize> = k_best(&probs, 4, 0.1).iter().map(|p| p.1).collect();
        assert_eq!(got, [1, 3, 0]);
        assert!(k_best(&probs, 0, 0.0).is_empty());
    }
}
