/// SplitMix64 (Steele, Lea & Flood 2014): a tiny, fast, well-mixed generator.
///
/// kiln's data order depends only on this code and a seed — not on a `rand` version — so a run's
/// batches are the same on every machine and after every dependency upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The whole state: `SplitMix64::new(g.state())` continues exactly where `g` is.
    pub fn state(&self) -> u64 {
        self.state
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (Lemire's multiply-shift; `n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// A uniform number in the open interval (0, 1), from the top 53 bits.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A standard normal number (Box–Muller, one draw per pair of uniforms): the same on every
    /// backend and machine, which is what seeded sampling of a trained model needs.
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// The visiting order of epoch `epoch` over `len` examples: a Fisher–Yates shuffle from a
/// generator seeded by both, so a data stream resumes from `(seed, epoch, batch)` alone. The one
/// epoch order kiln's loaders share (images in kiln-data, token rows in kiln-dalle).
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut mix = SplitMix64::new(seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut rng = SplitMix64::new(mix.next_u64());
    rng.shuffle(&mut order);
    order
}

/// Redraws per entry before a truncated draw gives up and clamps: enough that clamping is
/// vanishingly rare for any usual threshold (τ ≥ 0.1 keeps an entry with probability ≥ 8 % a
/// draw, so 64 misses in a row happen less than once in 10²), and a bound, so a tiny τ cannot hang.
const MAX_REDRAWS: usize = 64;

/// `n` standard normal numbers from `seed` (see [`SplitMix64::normal`]); with `truncation =
/// Some(τ)`, each draw outside `[−τ, τ]` is redrawn (the truncation trick of BigGAN, Brock et al.
/// 2018), at most [`MAX_REDRAWS`] times, then clamped to the interval. `τ` must be positive and
/// finite.
pub fn standard_normal(n: usize, seed: u64, truncation: Option<f64>) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let mut x = rng.normal();
            if let Some(tau) = truncation {
                for _ in 0..MAX_REDRAWS {
                    if x.abs() <= tau {
                        break;
                    }
                    x = rng.normal();
                }
                x = x.clamp(-tau, tau);
            }
            x as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_shuffle_is_a_permutation() {
        let (mut a, mut b) = (SplitMix64::new(7), SplitMix64::new(7));
        assert_eq!(a.next_u64(), b.next_u64());
        let mut v: Vec<usize> = (0..100).collect();
        a.shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn normal_draws_are_standard_and_truncation_holds() {
        let z = standard_normal(20_000, 1, None);
        let mean = z.iter().sum::<f32>() / z.len() as f32;
        let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / z.len() as f32;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");
        let t = standard_normal(5_000, 1, Some(0.5));
        assert!(t.iter().all(|x| x.abs() <= 0.5));
        // Truncated to ±0.5 the variance is far below 1 (about 0.08).
        assert!(t.iter().map(|x| x * x).sum::<f32>() / 5_000.0 < 0.1);
        // A threshold far too small to hit ends in bounded time, inside the interval.
        let tiny = standard_normal(100, 1, Some(1e-30));
        assert!(tiny.iter().all(|x| x.abs() <= 1e-30));
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = SplitMix64::new(1);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[r.below(10)] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
