//! SplitMix64 (Steele, Lea & Flood 2014): a 64-bit state, one add and a mixing function per draw.
//! Plenty for drawing KID subsets and reservoir slots reproducibly from a seed, and small enough
//! that the crate need not depend on `rand` (whose streams may change between major versions,
//! which would silently change every KID reported with a given seed).

/// The generator. Equal seeds give equal streams on every platform.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    #[cfg(test)]
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..bound` without modulo bias: the high half of a 64 × 64-bit product, with the
    /// few draws that would favour small results rejected (Lemire 2019). `bound` must be > 0.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        // 2^64 mod bound: products whose low half falls under it would be over-represented.
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// `count` distinct indices from `0..len`, uniformly (a partial Fisher–Yates shuffle).
    pub(crate) fn sample_without_replacement(&mut self, len: usize, count: usize) -> Vec<usize> {
        debug_assert!(count <= len);
        let mut pool: Vec<usize> = (0..len).collect();
        for i in 0..count {
            let j = i + self.below((len - i) as u64) as usize;
            pool.swap(i, j);
        }
        pool.truncate(count);
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_outputs_match_the_reference_stream() {
        // Seed 1234567: the published reference outputs (Rosetta Code, "Pseudo-random
        // numbers/Splitmix64", from Vigna's splitmix64.c).
        let mut rng = SplitMix64::new(1234567);
        let got: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(got, vec![6457827717110365317, 3203168211198807973, 9817491932198370423]);
    }

    #[test]
    fn below_is_roughly_uniform_and_in_range() {
        let mut rng = SplitMix64::new(9);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[rng.below(7) as usize] += 1;
        }
        for c in counts {
            assert!((9_400..10_600).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn samples_are_distinct() {
        let mut rng = SplitMix64::new(5);
        let mut s = rng.sample_without_replacement(100, 100);
        s.sort_unstable();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
    }
}
