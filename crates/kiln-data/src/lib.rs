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
// Tests may unwrap: a panic is how a test fails. (Library code may not: see the workspace lints.)
#![cfg_attr(test, allow(clippy::unwrap_used))]

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
mod part;
mod png;
mod transform;

pub use archive::{ArchiveKind, ExtractLimits, extract};
pub use augment::Augment;
pub use batch::{Batcher, DeviceBatcher, gather};
// Defined in kiln-core so that model crates need not depend on this crate (its HTTP client,
// archive readers and image codecs); re-exported here beside the batcher that makes them.
pub use cifar::Cifar10;
pub use emoji::{EmojiEntry, EmojiSet, SheetMeta};
pub use error::DataError;
pub use fetch::{
    CacheState, DATA_ENV, FetchOptions, Fetched, cache_state, data_dir, fetch_dataset, fetch_file, sha256_file,
};
pub use folder::{
    CaptionedSet, FolderOptions, ImageFolder, Picture, decode_picture, encode_png, load_picture, load_pictures,
    make_sheet, split_sheet,
};
pub use idx::{IdxArray, encode_idx, read_idx};
pub use images::ImageSet;
pub use kiln_core::{ImageBatch, PixelRange, SplitMix64, standard_normal};
pub use manifest::{DataFormat, Manifest, ManifestFile};
pub use mnist::{Mnist, Split};
pub use part::part_path;
pub use png::{PngCompression, PngError, PngSamples, png_bytes};
pub use transform::{Fit, default_filter, fit_u8, flatten_rgba, resize_u8};

/// A deterministic mini-fuzzer: thousands of corrupted inputs (bytes flipped, truncated,
/// extended) through every parser that reads user files. Each must return `Ok` or a
/// [`DataError`], never panic. (Not a substitute for hours of `cargo fuzz`; it runs in the test
/// suite in a second.)
#[cfg(test)]
mod robustness {
    use std::path::Path;

    use crate::*;

    fn mutate(base: &[u8], rng: &mut SplitMix64) -> Vec<u8> {
        let mut v = base.to_vec();
        match rng.below(4) {
            0 => v.truncate(rng.below(base.len() + 1)),
            1 => v.extend((0..rng.below(64)).map(|_| rng.next_u64() as u8)),
            _ => {}
        }
        for _ in 0..1 + rng.below(8) {
            if !v.is_empty() {
                let i = rng.below(v.len());
                v[i] = rng.next_u64() as u8;
            }
        }
        v
    }

    #[test]
    fn corrupted_inputs_never_panic() {
        let dir = crate::folder::tests::tmp("robust");
        let mut rng = SplitMix64::new(2024);
        let idx = encode_idx(&[3, 4, 4], &[5; 48]);
        let idx_path = dir.join("x.idx");
        let cifar = vec![1u8; 2 * 3073];
        let png = crate::folder::tests::png(6, 5, [10, 200, 30, 128]);
        let opts = FolderOptions::sized(4, 4);
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "d/f.bin", &b"abcd"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let arc = dir.join("a.tar");
        for _ in 0..1500 {
            std::fs::write(&idx_path, mutate(&idx, &mut rng)).unwrap();
            let _ = read_idx(&idx_path);
            let _ = Cifar10::parse(&mutate(&cifar, &mut rng), Path::new("c.bin"));
            let _ = decode_picture(&mutate(&png, &mut rng), Path::new("p.png"), &opts);
        }
        for _ in 0..300 {
            std::fs::write(&arc, mutate(&tar, &mut rng)).unwrap();
            let _ =
                extract(&arc, &dir.join("out"), &ExtractLimits { max_entry_bytes: 1 << 16, max_total_bytes: 1 << 20 });
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
