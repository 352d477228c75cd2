//! fastText's input initialisation: `std::minstd_rand(seed)` feeding
//! `std::uniform_real_distribution<double>(-a, a)` as libstdc++ implements
//! them (`generate_canonical` draws two 31-bit values per double).

/// `std::minstd_rand`: x <- 48271 x mod (2^31 - 1).
pub struct MinStd(u64);

impl MinStd {
    /// `minstd_rand(seed)`: the int seed converts to the 64-bit
    /// `uint_fast32_t`, then reduces mod m (libstdc++ maps 0 to 1).
    pub fn new(seed: i32) -> Self {
        let s = (i64::from(seed) as u64) % 2_147_483_647;
        Self(if s == 0 { 1 } else { s })
    }

    pub fn next_u31(&mut self) -> u64 {
        self.0 = self.0 * 48_271 % 2_147_483_647;
        self.0
    }

    /// A double in [0, 1) as `generate_canonical<double, 53>`.
    fn canonical(&mut self) -> f64 {
        let r = 2_147_483_646.0f64; // max - min + 1
        let mut sum = 0.0f64;
        let mut tmp = 1.0f64;
        for _ in 0..2 {
            sum += (self.next_u31() - 1) as f64 * tmp;
            tmp *= r;
        }
        let ret = sum / tmp;
        if ret >= 1.0 {
            1.0 - f64::EPSILON / 2.0
        } else {
            ret
        }
    }

    /// `uniform_real_distribution<>(-a, a)(rng)` stored as float32.
    pub fn uniform(&mut self, a: f64) -> f32 {
        (self.canonical() * (a - -a) + -a) as f32
    }
}
