//! libstdc++'s `std::sort` (introsort) and binary-heap algorithms, step by
//! step. fastText orders its dictionary with the unstable `std::sort` and its
//! top-k labels with `push_heap` / `sort_heap`; to give equal-count words the
//! same ids (hence the same model bytes) and tied labels the same order as
//! fastText, Kiln must permute exactly as they do.
//! `comp(a, b)` is the C++ "a goes before b" predicate.

/// `std::__push_heap`: sift `value` up from `hole` towards `top`.
fn push_up<T: Copy>(
    h: &mut [T],
    mut hole: usize,
    top: usize,
    value: T,
    comp: &impl Fn(&T, &T) -> bool,
) {
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
fn adjust<T: Copy>(
    h: &mut [T],
    mut hole: usize,
    len: usize,
    value: T,
    comp: &impl Fn(&T, &T) -> bool,
) {
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
    push_up(h, hole, top, value, comp);
}

/// `std::push_heap` after appending `h[len - 1]`.
pub fn push_heap<T: Copy>(h: &mut [T], comp: &impl Fn(&T, &T) -> bool) {
    let last = h.len() - 1;
    let value = h[last];
    push_up(h, last, 0, value, comp);
}

/// `std::__pop_heap(first, last, result)` with `result == last`: the front
/// moves to `h[last]`, and `h[..last]` is a heap again.
pub fn pop_heap_to<T: Copy>(h: &mut [T], last: usize, comp: &impl Fn(&T, &T) -> bool) {
    let value = h[last];
    h[last] = h[0];
    adjust(h, 0, last, value, comp);
}

/// `std::sort_heap`.
pub fn sort_heap<T: Copy>(h: &mut [T], comp: &impl Fn(&T, &T) -> bool) {
    let mut last = h.len();
    while last > 1 {
        last -= 1;
        pop_heap_to(h, last, comp);
    }
}

fn make_heap<T: Copy>(h: &mut [T], comp: &impl Fn(&T, &T) -> bool) {
    let len = h.len();
    if len < 2 {
        return;
    }
    let mut parent = (len - 2) / 2;
    loop {
        let value = h[parent];
        adjust(h, parent, len, value, comp);
        if parent == 0 {
            return;
        }
        parent -= 1;
    }
}

fn median_to_first<T: Copy>(
    v: &mut [T],
    a: usize,
    b: usize,
    c: usize,
    comp: &impl Fn(&T, &T) -> bool,
) {
    let pick = if comp(&v[a], &v[b]) {
        if comp(&v[b], &v[c]) {
            b
        } else if comp(&v[a], &v[c]) {
            c
        } else {
            a
        }
    } else if comp(&v[a], &v[c]) {
        a
    } else if comp(&v[b], &v[c]) {
        c
    } else {
        b
    };
    v.swap(0, pick);
}

/// `std::__unguarded_partition_pivot` on `v`: returns the cut.
fn partition<T: Copy>(v: &mut [T], comp: &impl Fn(&T, &T) -> bool) -> usize {
    let n = v.len();
    median_to_first(v, 1, n / 2, n - 1, comp);
    let (mut first, mut last) = (1, n);
    loop {
        while comp(&v[first], &v[0]) {
            first += 1;
        }
        last -= 1;
        while comp(&v[0], &v[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        v.swap(first, last);
        first += 1;
    }
}

const THRESHOLD: usize = 16;

fn introsort_loop<T: Copy>(v: &mut [T], mut depth: u32, comp: &impl Fn(&T, &T) -> bool) {
    let mut end = v.len();
    while end > THRESHOLD {
        if depth == 0 {
            make_heap(&mut v[..end], comp);
            sort_heap(&mut v[..end], comp);
            return;
        }
        depth -= 1;
        let cut = partition(&mut v[..end], comp);
        introsort_loop(&mut v[cut..end], depth, comp);
        end = cut;
    }
}

/// `std::__unguarded_linear_insert` of `v[i]`.
fn linear_insert<T: Copy>(v: &mut [T], mut i: usize, comp: &impl Fn(&T, &T) -> bool) {
    let value = v[i];
    while comp(&value, &v[i - 1]) {
        v[i] = v[i - 1];
        i -= 1;
    }
    v[i] = value;
}

fn insertion_sort<T: Copy>(v: &mut [T], comp: &impl Fn(&T, &T) -> bool) {
    for i in 1..v.len() {
        if comp(&v[i], &v[0]) {
            let value = v[i];
            v.copy_within(0..i, 1);
            v[0] = value;
        } else {
            linear_insert(v, i, comp);
        }
    }
}

/// `std::sort(first, last, comp)` as libstdc++ implements it.
pub fn sort<T: Copy>(v: &mut [T], comp: impl Fn(&T, &T) -> bool) {
    let n = v.len();
    if n < 2 {
        return;
    }
    introsort_loop(v, 2 * n.ilog2(), &comp);
    if n > THRESHOLD {
        insertion_sort(&mut v[..THRESHOLD], &comp);
        for i in THRESHOLD..n {
            linear_insert(v, i, &comp);
        }
    } else {
        insertion_sort(v, &comp);
    }
}

#[cfg(test)]
mod tests {
    use super::sort;
    use rand::{Rng, SeedableRng};

    #[test]
    fn std_sort_sorts_like_any_sort_on_keys() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        for n in [0, 1, 2, 5, 16, 17, 100, 1000, 5000] {
            let mut v: Vec<(u8, usize)> = (0..n).map(|i| (rng.random_range(0..7), i)).collect();
            let mut want: Vec<u8> = v.iter().map(|x| x.0).collect();
            want.sort_unstable_by(|a, b| b.cmp(a));
            sort(&mut v, |a, b| a.0 > b.0);
            assert_eq!(v.iter().map(|x| x.0).collect::<Vec<_>>(), want, "n = {n}");
        }
    }
}
