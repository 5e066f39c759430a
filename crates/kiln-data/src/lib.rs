//! Datasets for kiln.
//!
//! - **Formats:** MNIST/Fashion-MNIST IDX ([`Mnist`]), CIFAR-10 binary batches ([`Cifar10`]),
//!   folders of PNG/JPEG pictures with optional class sub-folders ([`ImageFolder`]), captioned
//!   images ([`CaptionedSet`]) and the bundled emoji sets ([`EmojiSet`]).
//! - **Getting data:** manifests ([`Manifest`], `datasets/*.toml`) and a downloader that verifies
//!   sha256, caches, resumes and never leaves a half-written file ([`fetch_dataset`]); archives
//!   are unpacked by [`extract`], which refuses entries that would escape its folder.
//! - **Batches:** [`Batcher`] draws seeded, epoch-shuffled batches with optional [`Augment`]ations.
//!
//! Images are held as `u8` and turned into `f32` tensors one batch at a time, so a data set costs
//! its size on disk in memory, not four times that. Every parser returns a [`DataError`] that names
//! the file and what was wrong with it; none panics on bad input.
#![warn(missing_docs)]

mod archive;
mod augment;
mod batch;
mod cifar;
mod emoji;
mod error;
mod fetch;
mod folder;
mod idx;
mod images;
mod manifest;
mod mnist;
mod rng;
mod transform;

pub use archive::{ArchiveKind, ExtractLimits, extract};
pub use augment::Augment;
pub use batch::{Batcher, ImageBatch, Range, gather};
pub use cifar::Cifar10;
pub use emoji::{EmojiEntry, EmojiSet, SheetMeta};
pub use error::DataError;
pub use fetch::{
    CacheState, DATA_ENV, FetchOptions, Fetched, cache_state, data_dir, fetch_dataset, fetch_file, part_path,
    sha256_file,
};
pub use folder::{
    CaptionedSet, FolderOptions, ImageFolder, Picture, decode_picture, encode_png, load_picture, load_pictures,
    make_sheet, split_sheet,
};
pub use idx::{IdxArray, encode_idx, read_idx};
pub use images::ImageSet;
pub use manifest::{DataFormat, Manifest, ManifestFile};
pub use mnist::{Mnist, Split};
pub use rng::SplitMix64;
pub use transform::{Fit, default_filter, fit_u8, flatten_rgba, resize_u8};
