//! Datasets for kiln.
//!
//! Images are held as `u8` and turned into `f32` tensors one batch at a time, so a data set costs
//! its size on disk in memory, not four times that. Every parser returns a [`DataError`] that names
//! the file and what was wrong with it; none panics on bad input.
#![warn(missing_docs)]

mod batch;
mod error;
mod idx;
mod images;
mod mnist;
mod rng;

pub use batch::{Batcher, ImageBatch, Range, gather};
pub use error::DataError;
pub use idx::{IdxArray, encode_idx, read_idx};
pub use images::ImageSet;
pub use mnist::{Mnist, Split};
pub use rng::SplitMix64;
