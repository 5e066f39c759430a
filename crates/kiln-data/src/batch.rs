//! Seeded, epoch-shuffled batches of an [`ImageSet`] as tensors.

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use kiln_core::{Loader, LoaderPosition};

use crate::{Augment, DataError, ImageBatch, ImageSet, PixelRange, SplitMix64};

/// Endless batches of a data set: each epoch visits every image once in a fresh order drawn from a
/// seeded generator, and the last incomplete batch of an epoch is dropped (so every step sees the
/// same batch size).
///
/// Epoch `e`'s order depends only on the seed and `e`, so a [`LoaderPosition`] of three numbers
/// (epoch, batch, augmentation generator) is enough to continue the stream in another process.
#[derive(Debug, Clone)]
pub struct Batcher {
    set: Arc<ImageSet>,
    batch_size: usize,
    range: PixelRange,
    seed: u64,
    order: Vec<usize>,
    cursor: usize,
    epoch: usize,
    augment: Augment,
    augment_rng: SplitMix64,
    /// `(rank, world)`: this process's share of a data-parallel run (`(0, 1)` alone).
    shard: (usize, usize),
}

impl Batcher {
    /// Batches of `batch_size` from `set`, shuffled from `seed`.
    pub fn new(set: Arc<ImageSet>, batch_size: usize, range: PixelRange, seed: u64) -> Result<Self, DataError> {
        if batch_size == 0 || batch_size > set.len {
            return Err(DataError::Mismatch {
                message: format!("batch size {batch_size} must be between 1 and the data set's {} images", set.len),
            });
        }
        let order = epoch_order(set.len, seed, 0);
        // Augmentations draw from their own stream, so turning them on leaves the order alone.
        let augment_rng = SplitMix64::new(seed ^ 0xA5A5_5A5A_D00D_F00D);
        Ok(Self {
            set,
            batch_size,
            range,
            seed,
            order,
            cursor: 0,
            epoch: 0,
            augment: Augment::default(),
            augment_rng,
            shard: (0, 1),
        })
    }

    /// Rank `rank`'s share of a data-parallel run of `world` processes: every rank walks the same
    /// stream of *global* batches of `world × batch_size` images (same order, same augmentation
    /// draws) and takes the `rank`-th `batch_size` of each. So the ranks' batches of one step are,
    /// in rank order, the micro-batches a single process with `accumulate = world` would take
    /// (exactly, when an epoch's batches of `batch_size` divide by `world`), and the position —
    /// the same on every rank — resumes them all.
    pub fn with_shard(mut self, rank: usize, world: usize) -> Result<Self, DataError> {
        let global = self.batch_size.saturating_mul(world);
        if world == 0 || rank >= world || global > self.set.len {
            return Err(DataError::Mismatch {
                message: format!(
                    "rank {rank} of {world} with batches of {}: the {world} ranks' batches ({global} images) must fit \
                     in the data set's {} images",
                    self.batch_size, self.set.len
                ),
            });
        }
        self.shard = (rank, world);
        Ok(self)
    }

    /// Images per step over all ranks.
    fn global_batch(&self) -> usize {
        self.batch_size * self.shard.1
    }

    /// Batches in one epoch (the incomplete last one is dropped).
    pub fn batches_per_epoch(&self) -> usize {
        self.set.len / self.global_batch()
    }

    /// Where the stream stands.
    pub fn position(&self) -> LoaderPosition {
        LoaderPosition {
            epoch: self.epoch as u64,
            batch: (self.cursor / self.global_batch()) as u64,
            rng: self.augment_rng.state(),
        }
    }

    /// Continues from `position` as if every earlier batch had been taken. A batch index past the
    /// end of an epoch moves to the start of the next one, as taking another batch would.
    pub fn seek(&mut self, position: LoaderPosition) {
        self.epoch = position.epoch as usize;
        self.order = epoch_order(self.set.len, self.seed, self.epoch);
        self.cursor = (position.batch as usize).saturating_mul(self.global_batch()).min(self.order.len());
        self.augment_rng = SplitMix64::new(position.rng);
    }

    /// This batcher as a [`Loader`] of tensors on `device`.
    pub fn on<B: Backend>(self, device: &B::Device) -> DeviceBatcher<B> {
        DeviceBatcher { batcher: self, device: device.clone() }
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
        let global = self.global_batch();
        if self.cursor + global > self.order.len() {
            self.epoch += 1;
            self.order = epoch_order(self.set.len, self.seed, self.epoch);
            self.cursor = 0;
        }
        let all = &self.order[self.cursor..self.cursor + global];
        self.cursor += global;
        let (rank, b) = (self.shard.0, self.batch_size);
        let idx = &all[rank * b..(rank + 1) * b];
        if self.augment.is_identity() {
            return gather(&self.set, idx, self.range, device);
        }
        let set = &self.set;
        let mut pixels = Vec::with_capacity(idx.len() * set.image_len());
        // Other ranks' images are augmented too, into a scratch buffer, so every rank's
        // generator stays where a single process's would be.
        let mut scratch = Vec::new();
        for (k, &i) in all.iter().enumerate() {
            let out = if k / b == rank { &mut pixels } else { &mut scratch };
            self.augment.apply(set.image(i), [set.channels, set.height, set.width], &mut self.augment_rng, out);
            scratch.clear();
        }
        to_batch(set, &pixels, idx, self.range, device)
    }
}

/// Epoch `epoch`'s order (kiln-core's, shared with the other loaders).
fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    kiln_core::epoch_order(len, seed, epoch as u64)
}

/// A [`Batcher`] bound to a device: the [`Loader`] the trainer pulls from.
#[derive(Debug, Clone)]
pub struct DeviceBatcher<B: Backend> {
    /// The stream of indices and augmentations.
    pub batcher: Batcher,
    device: B::Device,
}

impl<B: Backend> Loader for DeviceBatcher<B> {
    type Batch = ImageBatch<B>;

    fn next_batch(&mut self) -> ImageBatch<B> {
        self.batcher.next_batch(&self.device)
    }

    fn batches_per_epoch(&self) -> usize {
        self.batcher.batches_per_epoch()
    }

    fn position(&self) -> LoaderPosition {
        self.batcher.position()
    }

    fn seek(&mut self, position: LoaderPosition) {
        self.batcher.seek(position);
    }
}

/// The images at `indices` as one batch, in order (for fixed preview batches and evaluation).
///
/// # Panics
/// If an index is out of range: indices come from code, not from user files.
pub fn gather<B: Backend>(set: &ImageSet, indices: &[usize], range: PixelRange, device: &B::Device) -> ImageBatch<B> {
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
    range: PixelRange,
    device: &B::Device,
) -> ImageBatch<B> {
    let pixels: Vec<f32> = pixels.iter().map(|&p| range.value(p)).collect();
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
    fn shards_of_a_data_parallel_run_are_the_micro_batches_of_one_process_in_rank_order() {
        let len = 12;
        let set = Arc::new(ImageSet {
            pixels: (0..len * 2 * 3).map(|i| (i * 7 % 251) as u8).collect(),
            labels: (0..len as u32).collect(),
            len,
            channels: 1,
            height: 2,
            width: 3,
        });
        let dev = Default::default();
        let aug = Augment { flip: true, crop_padding: 1 };
        let one = || Batcher::new(set.clone(), 3, PixelRange::ZeroOne, 9).unwrap().with_augment(aug);
        let mut single = one();
        let mut ranks: Vec<Batcher> = (0..2).map(|r| one().with_shard(r, 2).unwrap()).collect();
        assert_eq!(ranks[0].batches_per_epoch(), 2);
        // Five steps: over two epoch boundaries (12 images, 6 a step).
        for step in 0..5 {
            for (r, rank) in ranks.iter_mut().enumerate() {
                let (want, got) = (single.next_batch::<B>(&dev), rank.next_batch::<B>(&dev));
                assert_eq!(want.labels.into_data(), got.labels.into_data(), "step {step}, rank {r}");
                assert_eq!(want.images.into_data(), got.images.into_data(), "step {step}, rank {r}");
            }
            assert_eq!(ranks[0].position(), ranks[1].position(), "every rank stands at the same place");
        }
        // A rank resumed from the shared position continues its own share.
        let mut resumed = one().with_shard(1, 2).unwrap();
        resumed.seek(ranks[0].position());
        assert_eq!(resumed.next_batch::<B>(&dev).labels.into_data(), ranks[1].next_batch::<B>(&dev).labels.into_data());
        assert!(one().with_shard(2, 2).is_err());
        assert!(Batcher::new(set.clone(), 7, PixelRange::ZeroOne, 9).unwrap().with_shard(0, 2).is_err());
    }

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
        let mut plain = Batcher::new(set.clone(), 2, PixelRange::ZeroOne, 4).unwrap();
        let mut a = Batcher::new(set.clone(), 2, PixelRange::ZeroOne, 4).unwrap().with_augment(aug);
        let mut b = Batcher::new(set, 2, PixelRange::ZeroOne, 4).unwrap().with_augment(aug);
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
    fn a_seeked_batcher_continues_the_same_stream_across_epochs() {
        let dev = Default::default();
        let aug = Augment { flip: true, crop_padding: 0 };
        let make = || Batcher::new(set(10), 3, PixelRange::ZeroOne, 9).unwrap().with_augment(aug).on::<B>(&dev);
        let mut whole = make();
        let all: Vec<_> = (0..8).map(|_| whole.next_batch().images.into_data()).collect();
        let mut first = make();
        for _ in 0..4 {
            first.next_batch();
        }
        let position = first.position();
        assert_eq!(position.epoch, 1, "3 batches per epoch: the 4th starts epoch 1");
        let mut resumed = make();
        resumed.seek(position);
        for expected in &all[4..] {
            assert_eq!(&resumed.next_batch().images.into_data(), expected);
        }
        assert_eq!(resumed.batches_per_epoch(), 3);
    }

    #[test]
    fn epochs_cover_every_image_once_and_drop_the_remainder() {
        let mut b = Batcher::new(set(10), 3, PixelRange::ZeroOne, 5).unwrap();
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
        let b = gather::<B>(&s, &[1, 0], PixelRange::MinusOneOne, &dev);
        assert_eq!(b.images.into_data().to_vec::<f32>().unwrap(), vec![1.0, -1.0]);
        assert_eq!(b.labels.into_data().convert::<i64>().to_vec::<i64>().unwrap(), vec![2, 4]);
    }

    #[test]
    fn same_seed_same_batches() {
        let dev = Default::default();
        let mut a = Batcher::new(set(50), 8, PixelRange::ZeroOne, 11).unwrap();
        let mut b = Batcher::new(set(50), 8, PixelRange::ZeroOne, 11).unwrap();
        for _ in 0..10 {
            let x = a.next_batch::<B>(&dev).labels.into_data();
            let y = b.next_batch::<B>(&dev).labels.into_data();
            assert_eq!(x, y);
        }
        assert!(Batcher::new(set(5), 6, PixelRange::ZeroOne, 0).is_err());
    }
}
