//! Stochastic rounding of f32 to bf16 (bf16-pure updates): round up with
//! probability equal to the discarded fraction, so that small updates are
//! not lost on average (Zamirai et al. 2020; Gupta et al. 2015).

use burn::tensor::bf16;
use rand::RngCore;
use rand_chacha::ChaCha8Rng;

/// Adds 16 random bits below bf16's precision, then truncates: the value
/// rounds up with probability (discarded bits) / 2^16. Non-finite values
/// keep round-to-nearest.
pub fn round_to_bf16(values: &[f32], rng: &mut ChaCha8Rng) -> Vec<bf16> {
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                return bf16::from_f32(v);
            }
            let noise = rng.next_u32() & 0xFFFF;
            let bits = v.to_bits().wrapping_add(noise);
            let out = bf16::from_bits((bits >> 16) as u16);
            // Carrying into the exponent of the largest finite values: keep nearest.
            if out.is_finite() {
                out
            } else {
                bf16::from_f32(v)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mean_of_rounded_values_is_unbiased() {
        // 1 + 2^-10 lies between two bf16 values (spacing 2^-7): nearest
        // rounding always returns 1.0; stochastic rounding keeps the mean.
        let x = 1.0f32 + 2f32.powi(-10);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 20_000;
        let out = round_to_bf16(&vec![x; n], &mut rng);
        let mean: f64 = out.iter().map(|b| b.to_f32() as f64).sum::<f64>() / n as f64;
        assert_eq!(bf16::from_f32(x).to_f32(), 1.0);
        assert!((mean - x as f64).abs() < 2e-4, "mean {mean} vs {x}");
        for b in &out {
            let f = b.to_f32();
            assert!(f == 1.0 || f == 1.0 + 2f32.powi(-7), "{f}");
        }
    }

    #[test]
    fn exact_and_negative_values() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let out = round_to_bf16(&[0.0, -2.0, 1.5, f32::INFINITY, -0.75], &mut rng);
        let back: Vec<f32> = out.iter().map(|b| b.to_f32()).collect();
        assert_eq!(back, vec![0.0, -2.0, 1.5, f32::INFINITY, -0.75]);
    }
}
