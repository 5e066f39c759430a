/// A set of equally sized images held as `u8`, channel-first (`[N, C, H, W]`), with optional
/// integer labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    /// `N·C·H·W` bytes, image after image.
    pub pixels: Vec<u8>,
    /// One label per image, or empty for unlabelled sets.
    pub labels: Vec<u32>,
    /// Number of images.
    pub len: usize,
    /// Channels per image (1 grey, 3 RGB).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ImageSet {
    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// `true` if the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl ImageSet {
    /// The images (and labels) at `indices`, in that order.
    ///
    /// # Panics
    /// If an index is out of range: indices come from code, not from user files.
    pub fn subset(&self, indices: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        let labels =
            if self.labels.is_empty() { Vec::new() } else { indices.iter().map(|&i| self.labels[i]).collect() };
        ImageSet { pixels, labels, len: indices.len(), ..*self }
    }

    /// A seeded random split into `(train, test)` with `test_len` test images, for sets that
    /// ship without one (image folders, emoji). The same seed gives the same split everywhere.
    pub fn split(&self, test_len: usize, seed: u64) -> (ImageSet, ImageSet) {
        let mut order: Vec<usize> = (0..self.len).collect();
        crate::SplitMix64::new(seed).shuffle(&mut order);
        let test_len = test_len.min(self.len);
        let (test, train) = order.split_at(test_len);
        let (mut train, mut test) = (train.to_vec(), test.to_vec());
        train.sort_unstable();
        test.sort_unstable();
        (self.subset(&train), self.subset(&test))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_a_seeded_partition() {
        let set = ImageSet {
            pixels: (0..10).collect(),
            labels: (0..10).collect(),
            len: 10,
            channels: 1,
            height: 1,
            width: 1,
        };
        let (train, test) = set.split(3, 7);
        assert_eq!((train.len, test.len), (7, 3));
        let mut all: Vec<u32> = train.labels.iter().chain(&test.labels).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(train.pixels, train.labels.iter().map(|&l| l as u8).collect::<Vec<_>>());
        assert_eq!(set.split(3, 7).1, test);
    }
}
