//! Folders of PNG/JPEG pictures, optionally sorted into class sub-folders, and captioned sets.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use kiln_kernels::resize::ResizeOptions;

use crate::png::{PngCompression, PngSamples, png_bytes};
use crate::transform::{Fit, default_filter, fit_u8, flatten_rgba};
use crate::{DataError, ImageSet};

/// How pictures of any size and colour type become one [`ImageSet`] of RGB images.
#[derive(Debug, Clone, Copy)]
pub struct FolderOptions {
    /// Resize every picture to `[height, width]`; `None` keeps sizes, which must then agree.
    pub size: Option<[usize; 2]>,
    /// How to keep the aspect ratio when resizing.
    pub fit: Fit,
    /// What transparency is composited over, and what padding is filled with.
    pub background: [u8; 3],
    /// The resampler (default: antialiased PIL bicubic).
    pub filter: ResizeOptions,
}

impl Default for FolderOptions {
    fn default() -> Self {
        Self { size: None, fit: Fit::CenterCrop, background: [255, 255, 255], filter: default_filter() }
    }
}

impl FolderOptions {
    /// Options that resize every picture to `height × width` (center-crop, white background).
    pub fn sized(height: usize, width: usize) -> Self {
        Self { size: Some([height, width]), ..Self::default() }
    }
}

/// A decoded picture: channel-first RGB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    /// `[3, height, width]`.
    pub pixels: Vec<u8>,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// Decodes a PNG or JPEG (detected from its bytes) to RGB on `options.background`, resized as
/// `options` says.
pub fn load_picture(path: &Path, options: &FolderOptions) -> Result<Picture, DataError> {
    let bytes = std::fs::read(path).map_err(DataError::io(path))?;
    decode_picture(&bytes, path, options)
}

/// The most pixels a picture may have (2²⁶, e.g. 8192 × 8192): checked against the size in its
/// header before anything is decoded, so that a small file declaring a huge picture (JPEG
/// decoders fill in truncated data; a PNG of zeros compresses 1000:1) costs no memory.
const MAX_PIXELS: u64 = 1 << 26;

/// [`load_picture`] on bytes already read; `path` is only used in messages.
pub fn decode_picture(bytes: &[u8], path: &Path, options: &FolderOptions) -> Result<Picture, DataError> {
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::format(path, format!("cannot read image: {e}")))?;
    if !matches!(reader.format(), Some(image::ImageFormat::Png | image::ImageFormat::Jpeg)) {
        return Err(DataError::format(path, "not a PNG or JPEG file"));
    }
    let corrupt = |e: image::ImageError| DataError::format(path, format!("corrupt image: {e}"));
    // The decoders are third-party code that has panicked on corrupt files (zune-jpeg 0.5's AVX2
    // IDCT unwraps an out-of-range slice: found by `fuzz/`, zune-image issue 361); such a panic
    // is caught here and reported as a corrupt file. (The panic hook still prints it.)
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let decoder = reader.into_decoder().map_err(corrupt)?;
        let (w, h) = image::ImageDecoder::dimensions(&decoder);
        if u64::from(w) * u64::from(h) > MAX_PIXELS {
            return Err(DataError::format(
                path,
                format!("picture is {h}×{w}: more than the {MAX_PIXELS} pixels a data-set picture may have"),
            ));
        }
        image::DynamicImage::from_decoder(decoder).map_err(corrupt)
    }));
    let img = decoded.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(DataError::format(path, format!("corrupt image: the decoder panicked: {what}")))
    })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let rgb = flatten_rgba(img.to_rgba8().as_raw(), options.background);
    let pixels = match options.size {
        Some(size) if size != [h, w] => fit_u8(&rgb, 3, [h, w], size, options.fit, options.background, &options.filter)
            .map_err(|e| {
                DataError::format(path, format!("cannot fit the {h}×{w} picture into {}×{}: {e}", size[0], size[1]))
            })?,
        _ => rgb,
    };
    let [height, width] = options.size.unwrap_or([h, w]);
    Ok(Picture { pixels, height, width })
}

fn is_picture(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(DataError::io(dir))? {
        let entry = entry.map_err(DataError::io(dir))?;
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with('.') {
            entries.push(entry.path());
        }
    }
    entries.sort();
    Ok(entries)
}

/// A folder of pictures loaded as one [`ImageSet`].
#[derive(Debug, Clone)]
pub struct ImageFolder {
    /// `[N, 3, H, W]`; labels index [`ImageFolder::classes`] (empty without class folders).
    pub set: ImageSet,
    /// Class names (the sub-folder names, sorted), or empty for a flat folder.
    pub classes: Vec<String>,
    /// The file of each image, in order.
    pub files: Vec<PathBuf>,
}

impl ImageFolder {
    /// Loads `dir`: either PNG/JPEG files directly in it (unlabelled), or one sub-folder per class
    /// (`dir/cat/*.png`, `dir/dog/*.jpg`; labels follow the sorted folder names). Hidden files are
    /// skipped, as are files that are not `.png`/`.jpg`/`.jpeg`.
    pub fn load(dir: &Path, options: &FolderOptions) -> Result<Self, DataError> {
        if !dir.is_dir() {
            return Err(DataError::Missing { path: dir.to_path_buf(), message: "no such directory".into() });
        }
        let entries = sorted_entries(dir)?;
        let subdirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
        let (mut files, mut labels, mut classes) = (Vec::new(), Vec::new(), Vec::new());
        if subdirs.is_empty() {
            files.extend(entries.iter().filter(|p| is_picture(p)).cloned());
        } else {
            for (label, sub) in subdirs.iter().enumerate() {
                classes.push(sub.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
                for file in sorted_entries(sub)?.into_iter().filter(|p| is_picture(p)) {
                    files.push(file);
                    labels.push(label as u32);
                }
            }
        }
        if files.is_empty() {
            return Err(DataError::Missing {
                path: dir.to_path_buf(),
                message: "empty: no .png, .jpg or .jpeg files here or in its sub-folders".into(),
            });
        }
        let set = load_pictures(&files, labels, options)?;
        Ok(Self { set, classes, files })
    }
}

/// Loads `files` into one RGB [`ImageSet`]; without a target size they must all have the size of
/// the first.
pub fn load_pictures(files: &[PathBuf], labels: Vec<u32>, options: &FolderOptions) -> Result<ImageSet, DataError> {
    let mut pixels = Vec::new();
    let mut first: Option<(usize, usize)> = None;
    for file in files {
        let p = load_picture(file, options)?;
        match first {
            None => first = Some((p.height, p.width)),
            Some((h, w)) if (h, w) != (p.height, p.width) => {
                return Err(DataError::Mismatch {
                    message: format!(
                        "mixed sizes: {} is {h}×{w} but {} is {}×{} (give a target size to resize them)",
                        files[0].display(),
                        file.display(),
                        p.height,
                        p.width
                    ),
                });
            }
            Some(_) => {}
        }
        pixels.extend_from_slice(&p.pixels);
    }
    let (height, width) = first.unwrap_or((0, 0));
    Ok(ImageSet { pixels, labels, len: files.len(), channels: 3, height, width })
}

/// One line of a `captions.jsonl`.
#[derive(Debug, Clone, serde::Deserialize)]
struct CaptionLine {
    file: String,
    text: String,
    #[serde(default)]
    label: Option<u32>,
}

/// Images with a text caption each, for text-to-image models.
#[derive(Debug, Clone)]
pub struct CaptionedSet {
    /// The images; labels as given in the captions file, or empty.
    pub images: ImageSet,
    /// One caption per image.
    pub captions: Vec<String>,
}

impl CaptionedSet {
    /// Loads `dir/captions.jsonl`, one JSON object a line, `{"file": "a.png", "text": "a red
    /// apple"}` with an optional integer `"label"`; `file` is relative to `dir`.
    pub fn load(dir: &Path, options: &FolderOptions) -> Result<Self, DataError> {
        let index = dir.join("captions.jsonl");
        let text = std::fs::read_to_string(&index).map_err(DataError::io(&index))?;
        let (mut files, mut captions, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let entry: CaptionLine =
                serde_json::from_str(line).map_err(|e| DataError::format(&index, format!("line {}: {e}", n + 1)))?;
            let rel = Path::new(&entry.file);
            if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(DataError::format(
                    &index,
                    format!("line {}: file {:?} leaves the folder", n + 1, entry.file),
                ));
            }
            files.push(dir.join(rel));
            captions.push(entry.text);
            labels.extend(entry.label);
        }
        if files.is_empty() {
            return Err(DataError::Missing { path: index, message: "empty: no captioned images listed".into() });
        }
        if !labels.is_empty() && labels.len() != files.len() {
            return Err(DataError::format(&index, "some lines have a \"label\" and some do not"));
        }
        let images = load_pictures(&files, labels, options)?;
        Ok(Self { images, captions })
    }
}

/// Cuts a sheet of equally sized tiles (row-major, `columns` per row) into `count` images.
pub fn split_sheet(sheet: &Picture, tile: [usize; 2], columns: usize, count: usize) -> Result<ImageSet, DataError> {
    let [th, tw] = tile;
    let rows = count.div_ceil(columns.max(1));
    // Checked: the tile size, columns and count come from a user's `dataset.json`, and a product
    // that wrapped around would pass the test and then index past the sheet.
    let fits = |n: usize, side: usize, room: usize| n.checked_mul(side).is_some_and(|need| need <= room);
    if th == 0 || tw == 0 || columns == 0 || !fits(columns, tw, sheet.width) || !fits(rows, th, sheet.height) {
        return Err(DataError::Mismatch {
            message: format!(
                "a {}×{} sheet cannot hold {count} tiles of {th}×{tw} in {columns} columns",
                sheet.height, sheet.width
            ),
        });
    }
    let plane = sheet.height * sheet.width;
    let mut pixels = Vec::with_capacity(count * 3 * th * tw);
    for i in 0..count {
        let (y0, x0) = ((i / columns) * th, (i % columns) * tw);
        for c in 0..3 {
            for y in 0..th {
                let s = c * plane + (y0 + y) * sheet.width + x0;
                pixels.extend_from_slice(&sheet.pixels[s..s + tw]);
            }
        }
    }
    Ok(ImageSet { pixels, labels: Vec::new(), len: count, channels: 3, height: th, width: tw })
}

/// Lays `set`'s images out as one RGB sheet, `columns` per row, unused tiles `background`
/// (the inverse of [`split_sheet`]); greyscale sets are repeated into three channels.
pub fn make_sheet(set: &ImageSet, columns: usize, background: [u8; 3]) -> Picture {
    let (th, tw) = (set.height, set.width);
    let rows = set.len.div_ceil(columns.max(1));
    let (height, width) = (rows * th, columns * tw);
    let plane = height * width;
    let mut pixels = vec![0u8; 3 * plane];
    for c in 0..3 {
        pixels[c * plane..(c + 1) * plane].fill(background[c]);
    }
    for i in 0..set.len {
        let img = set.image(i);
        let (y0, x0) = ((i / columns) * th, (i % columns) * tw);
        for c in 0..3 {
            let src_c = c.min(set.channels - 1);
            for y in 0..th {
                let s = src_c * th * tw + y * tw;
                let d = c * plane + (y0 + y) * width + x0;
                pixels[d..d + tw].copy_from_slice(&img[s..s + tw]);
            }
        }
    }
    Picture { pixels, height, width }
}

/// Encodes channel-first RGB as a PNG, compressed as hard as the encoder goes: it writes the
/// sprite sheets committed under `datasets/` (same pixels, same bytes, as their `SHA256SUMS` need).
pub fn encode_png(picture: &Picture) -> Result<Vec<u8>, DataError> {
    let plane = picture.height * picture.width;
    let mut hwc = Vec::with_capacity(3 * plane);
    for i in 0..plane {
        hwc.extend([picture.pixels[i], picture.pixels[plane + i], picture.pixels[2 * plane + i]]);
    }
    Ok(png_bytes(picture.width, picture.height, 3, PngSamples::U8(&hwc), PngCompression::Best)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-data-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub(crate) fn png(w: u32, h: u32, rgba: [u8; 4]) -> Vec<u8> {
        let img = image::RgbaImage::from_pixel(w, h, image::Rgba(rgba));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn class_folders_become_labels_and_pictures_are_resized() {
        let d = tmp("folder");
        for (class, colour) in [("b_dog", [0, 0, 255, 255]), ("a_cat", [255, 0, 0, 128])] {
            std::fs::create_dir_all(d.join(class)).unwrap();
            std::fs::write(d.join(class).join("1.png"), png(8, 6, colour)).unwrap();
            std::fs::write(d.join(class).join("notes.txt"), "skip me").unwrap();
        }
        let grey = image::GrayImage::from_pixel(5, 5, image::Luma([40]));
        grey.save(d.join("b_dog").join("2.jpg")).unwrap();
        let f = ImageFolder::load(&d, &FolderOptions::sized(4, 4)).unwrap();
        assert_eq!(f.classes, vec!["a_cat", "b_dog"]);
        assert_eq!(f.set.labels, vec![0, 1, 1]);
        assert_eq!((f.set.len, f.set.channels, f.set.height, f.set.width), (3, 3, 4, 4));
        // Half-transparent red on white: (255, 127, 127).
        assert_eq!(&f.set.image(0)[..1], &[255]);
        assert_eq!(&f.set.image(0)[16..17], &[127]);
        // Greyscale JPEG becomes three equal channels.
        let g = f.set.image(2);
        assert!((i32::from(g[0]) - 40).abs() <= 2 && g[0] == g[16] && g[16] == g[32], "{:?}", &g[..3]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn folder_errors_name_the_file() {
        let d = tmp("folder-err");
        let err = ImageFolder::load(&d, &FolderOptions::default()).unwrap_err().to_string();
        assert_eq!(err, format!("{}: empty: no .png, .jpg or .jpeg files here or in its sub-folders", d.display()));

        std::fs::write(d.join("a.png"), png(4, 4, [1, 2, 3, 255])).unwrap();
        std::fs::write(d.join("b.png"), png(4, 5, [1, 2, 3, 255])).unwrap();
        let err = ImageFolder::load(&d, &FolderOptions::default()).unwrap_err().to_string();
        assert!(
            err.starts_with("mixed sizes: ") && err.contains("a.png is 4×4 but") && err.contains("b.png is 5×4"),
            "{err}"
        );
        // With a target size the same folder loads.
        assert_eq!(ImageFolder::load(&d, &FolderOptions::sized(3, 3)).unwrap().set.len, 2);

        let mut bad = png(4, 4, [1, 2, 3, 255]);
        bad.truncate(bad.len() - 20);
        bad[40] ^= 0xff;
        std::fs::write(d.join("c.png"), &bad).unwrap();
        let err = ImageFolder::load(&d, &FolderOptions::sized(3, 3)).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: corrupt image: ", d.join("c.png").display())), "{err}");

        let missing = d.join("nope.png");
        let err = load_picture(&missing, &FolderOptions::default()).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: ", missing.display())) && err.contains("No such file"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn captions_and_sheets_round_trip() {
        let d = tmp("captions");
        std::fs::write(d.join("x.png"), png(2, 2, [9, 9, 9, 255])).unwrap();
        std::fs::write(d.join("y.png"), png(2, 2, [200, 9, 9, 255])).unwrap();
        std::fs::write(
            d.join("captions.jsonl"),
            "{\"file\": \"x.png\", \"text\": \"grey\"}\n{\"file\": \"y.png\", \"text\": \"red\"}\n",
        )
        .unwrap();
        let c = CaptionedSet::load(&d, &FolderOptions::default()).unwrap();
        assert_eq!(c.captions, vec!["grey", "red"]);
        assert_eq!(c.images.image(1)[0], 200);
        std::fs::write(d.join("captions.jsonl"), "{\"file\": \"../x.png\", \"text\": \"a\"}\n").unwrap();
        let err = CaptionedSet::load(&d, &FolderOptions::default()).unwrap_err().to_string();
        assert!(err.contains("captions.jsonl: line 1: file \"../x.png\" leaves the folder"), "{err}");

        let sheet = make_sheet(&c.images, 3, [255; 3]);
        assert_eq!((sheet.height, sheet.width), (2, 6));
        let back = split_sheet(&sheet, [2, 2], 3, 2).unwrap();
        assert_eq!(back.pixels, c.images.pixels);
        let png = encode_png(&sheet).unwrap();
        assert_eq!(decode_picture(&png, Path::new("s.png"), &FolderOptions::default()).unwrap(), sheet);
        assert!(split_sheet(&sheet, [2, 2], 3, 4).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Found by `fuzz/` (target `folder`, an out-of-memory at 690 MB): a 781-byte JPEG of a
    /// 25 × 16417 strip, center-cropped to 8 × 8, was first resampled to 8 × 5253, whose dense
    /// weight matrix is 5253 × 16417 `f64`s. The same strip as a PNG, and the same crop.
    #[test]
    fn elongated_picture_is_refused_not_resampled_into_gigabytes() {
        let strip = png(16417, 25, [40, 80, 120, 255]);
        let err = decode_picture(&strip, Path::new("strip.png"), &FolderOptions::sized(8, 8)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "strip.png: cannot fit the 25×16417 picture into 8×8: resize: resizing must be at most 2^25 \
             (33554432) elements in each resampling matrix and plane, got 25×16417 to 8×5253, 86238501 elements"
        );
        // Stretching it, or keeping its size, is cheap and still works.
        let opts = FolderOptions { fit: crate::Fit::Stretch, ..FolderOptions::sized(8, 8) };
        assert_eq!(
            decode_picture(&strip, Path::new("strip.png"), &opts).unwrap().pixels,
            [40u8; 64].into_iter().chain([80; 64]).chain([120; 64]).collect::<Vec<_>>()
        );
        assert_eq!(decode_picture(&strip, Path::new("strip.png"), &FolderOptions::default()).unwrap().width, 16417);
    }

    /// The fuzzer's input itself (less its 4 option bytes, which asked for 8 × 8, center-crop,
    /// the default filter): a 777-byte JPEG whose frame header declares 25 × 16417.
    #[test]
    fn fuzz_found_elongated_jpeg_is_refused() {
        let hex = concat!(
            "ffd8ffe000104a46494600010200000100010000ffc00011080019402103011100021101031101ffdb00430008060607060508070707",
            "0909080a0c140decf4f4f3e6edecf0141d1a1f1e1d1a1c1c20242e2720222c231c1c283729ac30313434341f27393d38323c2e333432",
            "ffdb0043010909090c0b0c180d0d1832215c213232323232323232323232323232323232323232323232323232323232323232323232",
            "323232323232323232323232323232ffc4001f0000010501010101010100000000000000000102030405060708090a0bffc400b51000",
            "02010303020403050504040000017d01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a",
            "161718191a25262728292a3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a83848586",
            "8788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6292726251e1d1c22e5",
            "e6e7e8e9100ef2f3f4f5f6f7f8f9faffc4001f0100030101010101010101010000000000000102030405060708090a0bffc400b51100",
            "020102040403040705040400010277000102031104052131b7ffffff0000000000000000ffffffffffffffffffffffffffffffffffff",
            "ffffffffff18191a262728292a35363738393a434445464748494a535455565758595a636465666768696a737475767778797a828384",
            "85868788898a92939495969798999aa2a3a4a5a6a7a8a9aab5b3b4b5b6b7b8b9bab3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5",
            "d6d7dad9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9faffda000c03010002110311003f00f308748e9f2d7d44b127050c59a10e91d3",
            "e5ae69624f66862cd18748e9f2d73cb127b1431668c3a47482090a161718191a25262728292a3435363738393a434445464748494a53",
            "5455565758595a636465666768696a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6",
            "b7b8b9bac2c3d03321ed5cf23d9a05aac8ee3fffd9",
        );
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let err = decode_picture(&bytes, Path::new("fuzz.jpg"), &FolderOptions::sized(8, 8)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("fuzz.jpg: cannot fit the 25×16417 picture into 8×8: resize: resizing must be at most"),
            "{err}"
        );
    }

    /// Found by `fuzz/` (target `folder`): a 611-byte 17 × 33 JPEG whose third component claims
    /// 4 × 1 sampling, on which zune-jpeg 0.5.15's AVX2 IDCT panics. Where that code runs, the
    /// panic must come back as an error naming the file; elsewhere the file may decode.
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    fn avx2() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
    }

    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    fn avx2() -> bool {
        false
    }

    #[test]
    fn decoder_panic_is_a_corrupt_image_error() {
        let hex = concat!(
            "ffd8ffe000104a46494600010200000100010000ffc00011080011002103011100021101034101ffdb00430008060607060508070707",
            "0909080a0c140d0c0b0b0c1912130f141d1a1f1e1d1a1c1c20242e2720222c231c1c2836292c30313434341f27393d38323c2e333432",
            "ffdb0043010909090cfcf3180d0d183221241c2132310707ffff3232323232323232323232310707ffffd8ffe000104a464946000102",
            "00000100010000ffc0000b080007000501011100ffdb0043008686868686868686868686868686868686868686868686868686868686",
            "86868686868686868686868686868678868686868686868686868686868686868686868686868686868686868634313c2e333432ffc4",
            "001f0000010501010101010100000000000000000102030405060708090a0bffc400b5100002010303020403050504040000017d0102",
            "070004112d3f008089504e470d0a1a0a00000d0a1a0a0000000d4948445200000003020000030804191a25262728292a343536373838",
            "3a434445464748494a535455565758595a636465666768696a7374757b7778797a838485868789504e4788898a92939495969798999a",
            "a2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c2c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8",
            "f9faffda0008010100003f00c2f04588fec41d3b57ffd9ffffffffffffffffffffffffffffffffffffffffffffffff18191a2627f2f3",
            "f4f5f6f7f8f9d8ffe000104a46494600010200000100010000ffc00011080011002103011100021101031101ffdb0043000806060706",
            "05080707070909faffda000c030108000a",
        );
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        match decode_picture(&bytes, Path::new("fuzz.jpg"), &FolderOptions::sized(8, 8)) {
            Err(e) => assert!(e.to_string().starts_with("fuzz.jpg: corrupt image: "), "{e}"),
            Ok(p) => assert!(!avx2(), "decoded to {}×{}", p.height, p.width),
        }
    }

    /// A PNG header declaring 100000 × 1000 one-bit pixels (with 64 bytes of data): refused from
    /// the header, before a 100-megapixel buffer (400 MB as RGBA) is allocated.
    #[test]
    fn huge_declared_picture_is_refused_from_its_header() {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            let mut crc = flate2::Crc::new();
            crc.update(kind);
            crc.update(data);
            out.extend_from_slice(&crc.sum().to_be_bytes());
        }
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = 100_000u32.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&1000u32.to_be_bytes());
        ihdr.extend_from_slice(&[1, 0, 0, 0, 0]); // 1-bit greyscale, no interlace
        chunk(&mut bytes, b"IHDR", &ihdr);
        // The start of the first row, so that the decoder finds its first IDAT chunk.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut z, &[0; 64]).unwrap();
        chunk(&mut bytes, b"IDAT", &z.finish().unwrap());
        chunk(&mut bytes, b"IEND", &[]);
        let err = decode_picture(&bytes, Path::new("huge.png"), &FolderOptions::sized(8, 8)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "huge.png: picture is 1000×100000: more than the 67108864 pixels a data-set picture may have"
        );
    }

    /// Found by `fuzz/` (target `sheet`): `columns × tile` wrapped around to 0 (a panic on
    /// overflow in debug builds, an index past the sheet in release ones).
    #[test]
    fn split_sheet_rejects_layouts_whose_size_overflows() {
        let sheet = Picture { pixels: vec![7; 3 * 4 * 6], height: 4, width: 6 };
        let err = split_sheet(&sheet, [2, 2], 1 << 63, 6).unwrap_err().to_string();
        assert_eq!(err, "a 4×6 sheet cannot hold 6 tiles of 2×2 in 9223372036854775808 columns");
        let err = split_sheet(&sheet, [usize::MAX, 1], 1, 2).unwrap_err().to_string();
        assert!(err.starts_with("a 4×6 sheet cannot hold 2 tiles of "), "{err}");
        assert!(split_sheet(&sheet, [1, 1], 2, usize::MAX).is_err());
        assert_eq!(split_sheet(&sheet, [2, 2], 3, 6).unwrap().len, 6);
    }
}
