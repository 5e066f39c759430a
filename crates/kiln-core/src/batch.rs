//! What a batch of images is, shared by the data crate that makes batches and the model crates
//! that consume them (which therefore need not depend on the data crate's downloader and codecs).

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// The value range pixels are mapped to. Explicit, because models disagree: a Bernoulli decoder
/// wants `[0, 1]`, a `tanh` GAN generator `[-1, 1]`; each model's task says which it takes
/// ([`crate::Task::pixel_range`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelRange {
    /// `0 → 0.0`, `255 → 1.0`.
    ZeroOne,
    /// `0 → -1.0`, `255 → 1.0`.
    MinusOneOne,
}

impl PixelRange {
    /// The value an 8-bit pixel maps to.
    pub fn value(self, px: u8) -> f32 {
        match self {
            Self::ZeroOne => px as f32 / 255.0,
            Self::MinusOneOne => px as f32 / 127.5 - 1.0,
        }
    }
}

/// A batch of images with their labels (zeros for unlabelled sets).
#[derive(Debug, Clone)]
pub struct ImageBatch<B: Backend> {
    /// `[N, C, H, W]` in the batcher's [`PixelRange`].
    pub images: Tensor<B, 4>,
    /// `[N]`.
    pub labels: Tensor<B, 1, Int>,
}
