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
