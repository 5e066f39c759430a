//! Seeded, epoch-shuffled batches of an [`ImageSet`] as tensors.

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::{Augment, DataError, ImageSet, SplitMix64};

/// The value range pixels are mapped to. Explicit, because models disagree: a Bernoulli decoder
/// wants `[0, 1]`, a `tanh` GAN generator `[-1, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// `0 → 0.0`, `255 → 1.0`.
    ZeroOne,
    /// `0 → -1.0`, `255 → 1.0`.
    MinusOneOne,
}

impl Range {
    fn map(self, px: u8) -> f32 {
        match self {
            Range::ZeroOne => px as f32 / 255.0,
            Range::MinusOneOne => px as f32 / 127.5 - 1.0,
        }
    }
}

/// A batch of images with their labels (zeros for unlabelled sets).
#[derive(Debug, Clone)]
pub struct ImageBatch<B: Backend> {
    /// `[N, C, H, W]` in the batcher's [`Range`].
    pub images: Tensor<B, 4>,
    /// `[N]`.
    pub labels: Tensor<B, 1, Int>,
}

/// Endless batches of a data set: each epoch visits every image once in a fresh order drawn from a
/// seeded generator, and the last incomplete batch of an epoch is dropped (so every step sees the
/// same batch size).
#[derive(Debug, Clone)]
pub struct Batcher {
    set: Arc<ImageSet>,
    batch_size: usize,
    range: Range,
    rng: SplitMix64,
    order: Vec<usize>,
    cursor: usize,
    epoch: usize,
    augment: Augment,
    augment_rng: SplitMix64,
}

impl Batcher {
    /// Batches of `batch_size` from `set`, shuffled from `seed`.
    pub fn new(set: Arc<ImageSet>, batch_size: usize, range: Range, seed: u64) -> Result<Self, DataError> {
        if batch_size == 0 || batch_size > set.len {
            return Err(DataError::Mismatch {
                message: format!("batch size {batch_size} must be between 1 and the data set's {} images", set.len),
            });
        }
        let mut rng = SplitMix64::new(seed);
        let mut order: Vec<usize> = (0..set.len).collect();
        rng.shuffle(&mut order);
        // Augmentations draw from their own stream, so turning them on leaves the order alone.
        let augment_rng = SplitMix64::new(seed ^ 0xA5A5_5A5A_D00D_F00D);
        Ok(Self { set, batch_size, range, rng, order, cursor: 0, epoch: 0, augment: Augment::default(), augment_rng })
    }

    /// Applies `augment` to every image of every batch (seeded from the batcher's seed).
    pub fn with_augment(mut self, augment: Augment) -> Self {
        self.augment = augment;
        self
    }

    /// Completed passes over the data.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// The next batch, reshuffling at each epoch boundary.
    pub fn next_batch<B: Backend>(&mut self, device: &B::Device) -> ImageBatch<B> {
        if self.cursor + self.batch_size > self.order.len() {
            self.rng.shuffle(&mut self.order);
            self.cursor = 0;
            self.epoch += 1;
        }
        let idx = &self.order[self.cursor..self.cursor + self.batch_size];
        self.cursor += self.batch_size;
        if self.augment.is_identity() {
            return gather(&self.set, idx, self.range, device);
        }
        let set = &self.set;
        let mut pixels = Vec::with_capacity(idx.len() * set.image_len());
        for &i in idx {
            self.augment.apply(set.image(i), [set.channels, set.height, set.width], &mut self.augment_rng, &mut pixels);
        }
        to_batch(set, &pixels, idx, self.range, device)
    }
}

/// The images at `indices` as one batch, in order (for fixed preview batches and evaluation).
///
/// # Panics
/// If an index is out of range: indices come from code, not from user files.
pub fn gather<B: Backend>(set: &ImageSet, indices: &[usize], range: Range, device: &B::Device) -> ImageBatch<B> {
    let mut pixels = Vec::with_capacity(indices.len() * set.image_len());
    for &i in indices {
        pixels.extend_from_slice(set.image(i));
    }
    to_batch(set, &pixels, indices, range, device)
}

/// `u8` pixels of the images at `indices` (already gathered, maybe augmented) as a batch.
fn to_batch<B: Backend>(
    set: &ImageSet,
    pixels: &[u8],
    indices: &[usize],
    range: Range,
    device: &B::Device,
) -> ImageBatch<B> {
    let pixels: Vec<f32> = pixels.iter().map(|&p| range.map(p)).collect();
    let labels: Vec<i64> = if set.labels.is_empty() {
        vec![0; indices.len()]
    } else {
        indices.iter().map(|&i| i64::from(set.labels[i])).collect()
    };
    let shape = [indices.len(), set.channels, set.height, set.width];
    ImageBatch {
        images: Tensor::from_data(TensorData::new(pixels, shape), device),
        labels: Tensor::from_data(TensorData::new(labels, [indices.len()]), device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::Flex;

    #[test]
    fn augmented_batches_are_seeded_and_keep_the_order() {
        let set = Arc::new(ImageSet {
            pixels: (0..4 * 2 * 3).map(|i| i as u8).collect(),
            labels: vec![0, 1, 2, 3],
            len: 4,
            channels: 1,
            height: 2,
            width: 3,
        });
        let dev = Default::default();
        let aug = Augment { flip: true, crop_padding: 1 };
        let mut plain = Batcher::new(set.clone(), 2, Range::ZeroOne, 4).unwrap();
        let mut a = Batcher::new(set.clone(), 2, Range::ZeroOne, 4).unwrap().with_augment(aug);
        let mut b = Batcher::new(set, 2, Range::ZeroOne, 4).unwrap().with_augment(aug);
        let mut differs = false;
        for _ in 0..6 {
            let (p, x, y) = (plain.next_batch::<B>(&dev), a.next_batch::<B>(&dev), b.next_batch::<B>(&dev));
            assert_eq!(p.labels.into_data(), x.labels.clone().into_data());
            assert_eq!(x.images.dims(), [2, 1, 2, 3]);
            let (xi, yi) = (x.images.into_data(), y.images.into_data());
            differs |= xi != p.images.into_data();
            assert_eq!(xi, yi);
        }
        assert!(differs);
    }

    fn set(len: usize) -> Arc<ImageSet> {
        Arc::new(ImageSet {
            pixels: (0..len).map(|i| i as u8).collect(),
            labels: (0..len as u32).collect(),
            len,
            channels: 1,
            height: 1,
            width: 1,
        })
    }

    #[test]
    fn epochs_cover_every_image_once_and_drop_the_remainder() {
        let mut b = Batcher::new(set(10), 3, Range::ZeroOne, 5).unwrap();
        let dev = Default::default();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let batch = b.next_batch::<B>(&dev);
            seen.extend(batch.labels.into_data().convert::<i64>().to_vec::<i64>().unwrap());
        }
        assert_eq!(b.epoch(), 0);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 9);
        let _ = b.next_batch::<B>(&dev);
        assert_eq!(b.epoch(), 1);
    }

    #[test]
    fn ranges_and_labels_line_up() {
        let s =
            Arc::new(ImageSet { pixels: vec![0, 255], labels: vec![4, 2], len: 2, channels: 1, height: 1, width: 1 });
        let dev = Default::default();
        let b = gather::<B>(&s, &[1, 0], Range::MinusOneOne, &dev);
        assert_eq!(b.images.into_data().to_vec::<f32>().unwrap(), vec![1.0, -1.0]);
        assert_eq!(b.labels.into_data().convert::<i64>().to_vec::<i64>().unwrap(), vec![2, 4]);
    }

    #[test]
    fn same_seed_same_batches() {
        let dev = Default::default();
        let mut a = Batcher::new(set(50), 8, Range::ZeroOne, 11).unwrap();
        let mut b = Batcher::new(set(50), 8, Range::ZeroOne, 11).unwrap();
        for _ in 0..10 {
            let x = a.next_batch::<B>(&dev).labels.into_data();
            let y = b.next_batch::<B>(&dev).labels.into_data();
            assert_eq!(x, y);
        }
        assert!(Batcher::new(set(5), 6, Range::ZeroOne, 0).is_err());
    }
}
