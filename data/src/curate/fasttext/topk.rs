//! fastText's `Loss::findKBest`: the top k (log-probability, label) pairs
//! through libstdc++'s binary-heap algorithms, replicated step by step so
//! that labels with equal probabilities (an underflowed softmax gives
//! several exact zeros) come out in the same order as in pip fastText.

type Pair = (f32, usize);

/// The heap's comparator, `comparePairs`: a min-heap on the log-probability.
fn comp(a: &Pair, b: &Pair) -> bool {
    a.0 > b.0
}

/// `std::__push_heap`.
fn push_up(h: &mut [Pair], mut hole: usize, top: usize, value: Pair) {
    while hole > top {
        let parent = (hole - 1) / 2;
        if !comp(&h[parent], &value) {
            break;
        }
        h[hole] = h[parent];
        hole = parent;
    }
    h[hole] = value;
}

/// `std::__adjust_heap` on `h[..len]`.
fn adjust(h: &mut [Pair], mut hole: usize, len: usize, value: Pair) {
    let top = hole;
    let mut child = hole;
    while len >= 1 && child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if comp(&h[child], &h[child - 1]) {
            child -= 1;
        }
        h[hole] = h[child];
        hole = child;
    }
    if len.is_multiple_of(2) && len >= 2 && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        h[hole] = h[child - 1];
        hole = child - 1;
    }
    push_up(h, hole, top, value);
}

/// `std::__pop_heap(first, last, result)` with `result = last`: moves the
/// front to `h[last]` and re-heaps `h[..last]`.
fn pop_to(h: &mut [Pair], last: usize) {
    let value = h[last];
    h[last] = h[0];
    adjust(h, 0, last, value);
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
        let log_p = (p + 1e-5).ln();
        if heap.len() == k && log_p < heap[0].0 {
            continue;
        }
        heap.push((log_p, i));
        let last = heap.len() - 1;
        let value = heap[last];
        push_up(&mut heap, last, 0, value);
        if heap.len() > k {
            let last = heap.len() - 1;
            pop_to(&mut heap, last);
            heap.pop();
        }
    }
    // `std::sort_heap`: repeatedly pop the smallest to the back.
    let mut last = heap.len();
    while last > 1 {
        last -= 1;
        pop_to(&mut heap, last);
    }
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
