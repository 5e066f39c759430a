//! The bodies of kiln-data's fuzz targets, shared by the libFuzzer binaries in `fuzz_targets/`
//! and by anything that wants to replay an input without libFuzzer.
//!
//! Each body feeds the input to one parser and checks more than "no panic":
//! - `Ok` values are self-consistent (lengths agree with the dimensions they come with);
//! - every `Err` from a file parser names the file (all of them here are called with a path
//!   whose name is unlikely to appear by accident in a message).

use std::io::Write;
use std::path::Path;

use kiln_data::{Cifar10, DataError, Fit, FolderOptions, IdxArray, Picture, decode_picture, split_sheet};
use kiln_kernels::resize::{Cubic, Filter, ResizeOptions};

fn assert_names(err: &DataError, path: &Path) {
    let msg = err.to_string();
    let name = path.to_string_lossy();
    assert!(msg.contains(name.as_ref()), "error does not name {name}: {msg}");
}

fn idx_outcome(bytes: &[u8], path: &Path) -> Result<IdxArray, String> {
    match IdxArray::parse(bytes, path) {
        Ok(a) => {
            let n = a.dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
            assert_eq!(n, Some(a.data.len()), "dims {:?} do not match {} data bytes", a.dims, a.data.len());
            Ok(a)
        }
        Err(e) => {
            assert_names(&e, path);
            Err(e.to_string())
        }
    }
}

/// IDX, raw and gzip. The input is parsed as it is (raw IDX, or a possibly corrupt gzip stream
/// when it starts with the gzip magic), then gzip-compressed by the harness and parsed again:
/// the compressed path must give exactly the same array or the same message as the raw one.
pub fn idx(data: &[u8]) {
    let path = Path::new("fuzz-input.idx");
    let raw = idx_outcome(data, path);
    if data.starts_with(&[0x1f, 0x8b]) {
        return;
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("writing to a Vec");
    let gz = enc.finish().expect("writing to a Vec");
    let gzipped = idx_outcome(&gz, path);
    assert_eq!(raw, gzipped, "raw and gzip-compressed parses disagree");
}

/// CIFAR-10 binary batches.
pub fn cifar(data: &[u8]) {
    let path = Path::new("fuzz-input.bin");
    match Cifar10::parse(data, path) {
        Ok(set) => {
            assert_eq!(set.len * 3073, data.len());
            assert_eq!(set.pixels.len(), set.len * set.image_len());
            assert_eq!(set.labels.len(), set.len);
            assert!(set.labels.iter().all(|&l| l <= 9));
        }
        Err(e) => assert_names(&e, path),
    }
}

/// The folder options a fuzz input's first 4 bytes select: keep the size or resize to
/// 1..=64 × 1..=64, one of the three fits, a background, and one of several valid filters.
pub fn folder_options(head: [u8; 4]) -> FolderOptions {
    let [a, b, c, d] = head;
    let size = if a & 1 == 0 { None } else { Some([1 + usize::from(b % 64), 1 + usize::from(c % 64)]) };
    let fit = match (a >> 1) % 3 {
        0 => Fit::CenterCrop,
        1 => Fit::Pad,
        _ => Fit::Stretch,
    };
    let filter = match (a >> 3) % 8 {
        0 => ResizeOptions::new(Filter::Nearest),
        1 => ResizeOptions::new(Filter::NearestExact),
        2 => ResizeOptions::new(Filter::Bilinear),
        3 => ResizeOptions::new(Filter::Bilinear).with_antialias(true).with_align_corners(true),
        4 => ResizeOptions::new(Filter::Bicubic(Cubic::Torch)).with_align_corners(true),
        5 => ResizeOptions::new(Filter::Area),
        _ => kiln_data::default_filter(),
    };
    FolderOptions { size, fit, background: [d, d.wrapping_mul(7), d ^ 0x5a], filter }
}

/// PNG/JPEG decoding, colour conversion and resizing: the first 4 bytes pick the options
/// ([`folder_options`]), the rest is the picture.
///
/// zune-jpeg 0.5.15 panics on some corrupt JPEGs (zune-image issue 361); `decode_picture` catches
/// that and returns an error, but libfuzzer-sys's panic hook aborts on every panic, caught or not.
/// So panics raised inside zune-jpeg are let through the hook to unwind (into `decode_picture`'s
/// `catch_unwind`); any other panic, or one that escapes `decode_picture`, is still a crash.
pub fn folder(data: &[u8]) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.location().is_some_and(|l| l.file().contains("/zune-jpeg-")) {
                previous(info);
            }
        }));
    });
    let Some((head, picture)) = data.split_first_chunk::<4>() else { return };
    let options = folder_options(*head);
    let path = Path::new("fuzz-input.png");
    match decode_picture(picture, path, &options) {
        Ok(p) => {
            assert_eq!(p.pixels.len(), 3 * p.height * p.width);
            if let Some([h, w]) = options.size {
                assert_eq!([p.height, p.width], [h, w]);
            }
        }
        Err(e) => assert_names(&e, path),
    }
}

fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = N.min(data.len());
    out[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    out
}

/// A size for [`sheet`]: mostly small, sometimes any `u64` (to reach the overflows).
fn size(data: &mut &[u8]) -> usize {
    let [sel] = take::<1>(data);
    if sel < 0xe0 { usize::from(sel % 40) } else { u64::from_le_bytes(take::<8>(data)) as usize }
}

/// `split_sheet` with a tile size, column and tile count as a `dataset.json` could give them,
/// on a small consistent sheet.
pub fn sheet(mut data: &[u8]) {
    let [sh, sw] = take::<2>(&mut data);
    let (height, width) = (usize::from(sh % 48), usize::from(sw % 48));
    let (th, tw, columns, count) = (size(&mut data), size(&mut data), size(&mut data), size(&mut data));
    let pixels: Vec<u8> =
        (0..3 * height * width).map(|i| data.get(i % data.len().max(1)).copied().unwrap_or(i as u8)).collect();
    let picture = Picture { pixels, height, width };
    if let Ok(set) = split_sheet(&picture, [th, tw], columns, count) {
        assert_eq!(set.len, count);
        assert_eq!(set.pixels.len(), count * 3 * th * tw);
    }
}
