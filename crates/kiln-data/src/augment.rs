//! Seeded augmentations applied to `u8` images as a batch is assembled.

use crate::SplitMix64;

/// Random horizontal flips and random crops (after padding by edge replication), as used to
/// train on small sets like CIFAR-10. The identity by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Augment {
    /// Mirror left–right with probability ½.
    pub flip: bool,
    /// Pad each side by this many pixels (repeating the edge) and cut a random window of the
    /// original size: a random shift of up to `crop_padding` pixels each way. 0 disables it.
    pub crop_padding: usize,
}

impl Augment {
    /// Whether this does nothing.
    pub fn is_identity(&self) -> bool {
        !self.flip && self.crop_padding == 0
    }

    /// Appends the augmented copy of `image` (`[C, H, W]`) to `out`, drawing from `rng`.
    pub fn apply(&self, image: &[u8], [c, h, w]: [usize; 3], rng: &mut SplitMix64, out: &mut Vec<u8>) {
        let flip = self.flip && rng.next_u64() & 1 == 1;
        let p = self.crop_padding as i64;
        let (dy, dx) = if p > 0 {
            (rng.below(2 * p as usize + 1) as i64 - p, rng.below(2 * p as usize + 1) as i64 - p)
        } else {
            (0, 0)
        };
        let clamp = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
        for ch in 0..c {
            let plane = &image[ch * h * w..(ch + 1) * h * w];
            for y in 0..h {
                let sy = clamp(y as i64 + dy, h);
                for x in 0..w {
                    let x = if flip { w - 1 - x } else { x };
                    out.push(plane[sy * w + clamp(x as i64 + dx, w)]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_flip_and_crop() {
        let img: Vec<u8> = (0..6).collect(); // [1, 2, 3]
        let mut out = Vec::new();
        Augment::default().apply(&img, [1, 2, 3], &mut SplitMix64::new(0), &mut out);
        assert_eq!(out, img);

        // Over many draws a flip appears and the flipped image is the mirror.
        let flip = Augment { flip: true, crop_padding: 0 };
        let mut rng = SplitMix64::new(3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut o = Vec::new();
            flip.apply(&img, [1, 2, 3], &mut rng, &mut o);
            seen.insert(o);
        }
        assert_eq!(seen, [img.clone(), vec![2, 1, 0, 5, 4, 3]].into_iter().collect());

        // Crops are shifts with repeated edges, same seed same result.
        let crop = Augment { flip: false, crop_padding: 1 };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        crop.apply(&img, [1, 2, 3], &mut SplitMix64::new(9), &mut a);
        crop.apply(&img, [1, 2, 3], &mut SplitMix64::new(9), &mut b);
        assert_eq!(a, b);
        assert!(a.iter().all(|v| img.contains(v)));
        let mut shifted = std::collections::HashSet::new();
        let mut rng = SplitMix64::new(1);
        for _ in 0..50 {
            let mut o = Vec::new();
            crop.apply(&img, [1, 2, 3], &mut rng, &mut o);
            shifted.insert(o);
        }
        assert_eq!(shifted.len(), 9, "3×3 possible shifts");
    }
}
