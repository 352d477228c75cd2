//! Helpers shared by the kernels' unit tests: a tiny deterministic RNG and
//! the relative error against an f64 reference.

/// xorshift64: deterministic inputs without a `rand` dependency in tests.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [-1, 1).
    pub fn unif(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `max |got - want| / max |want|`.
pub fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |a, &b| a.max(b.abs())).max(1e-30);
    let err = got
        .iter()
        .zip(want)
        .fold(0f64, |a, (&g, &w)| a.max((g as f64 - w).abs()));
    err / scale
}
