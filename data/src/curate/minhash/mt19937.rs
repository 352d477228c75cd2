//! numpy's legacy `RandomState(seed)` (MT19937), just enough to draw the
//! MinHash permutation parameters exactly as datatrove does:
//! `gen.randint(1, 2**61 - 1, dtype=np.uint64, size=n)` then
//! `gen.randint(0, 2**61 - 1, dtype=np.uint64, size=n)`.
//!
//! Same parameters means the same signatures as datatrove for the same
//! shingles, so signature files could be compared or mixed.

const N: usize = 624;
const M: usize = 397;

pub struct RandomState {
    key: [u32; N],
    pos: usize,
}

impl RandomState {
    /// `mt19937_seed` in numpy: the reference `init_genrand`.
    pub fn new(seed: u32) -> Self {
        let mut key = [0u32; N];
        key[0] = seed;
        for i in 1..N {
            let prev = key[i - 1];
            key[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self { key, pos: N }
    }

    fn refill(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..N {
            let y = (self.key[i] & UPPER) | (self.key[(i + 1) % N] & LOWER);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.key[i] = self.key[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= N {
            self.refill();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// numpy's `mt19937_next64`: high word first.
    fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        (hi << 32) | u64::from(self.next_u32())
    }

    /// `randint(low, high, dtype=np.uint64)` for a range wider than 32 bits,
    /// numpy's legacy masked rejection sampling (`bounded_masked_uint64`).
    pub fn randint_u64(&mut self, low: u64, high: u64) -> u64 {
        let range = high - low - 1; // inclusive span, numpy's `rng`
        let mask = u64::MAX >> range.leading_zeros();
        loop {
            let v = self.next_u64() & mask;
            if v <= range {
                return low + v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RandomState;

    #[test]
    fn reference_mt19937_output() {
        // MT19937 seeded with init_genrand(5489) gives 3499211612 first
        // (the reference implementation's published output).
        let mut rs = RandomState::new(5489);
        assert_eq!(rs.next_u32(), 3_499_211_612);
    }
}
