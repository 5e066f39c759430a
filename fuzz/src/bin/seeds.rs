//! Writes the seed corpora of the fuzz targets: `cargo run --release --bin seeds [DIR]` fills
//! `DIR/{idx,cifar,folder,sheet}/` (default `corpus/`) with small valid inputs. Nothing here is
//! committed: the seeds are made from kiln-data's own encoders and the `image` crate.

use std::io::{Cursor, Write};
use std::path::Path;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("writing to a Vec");
    enc.finish().expect("writing to a Vec")
}

fn encode(img: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format).expect("encoding a seed picture");
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("writing a seed");
}

fn main() {
    let root = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    let root = Path::new(&root);
    let dirs = ["idx", "cifar", "folder", "sheet"].map(|t| root.join(t));
    for d in &dirs {
        std::fs::create_dir_all(d).expect("creating a corpus folder");
    }
    let [idx, cifar, folder, sheet] = &dirs;

    // IDX: images, labels, a 1-D and a 4-D array; each raw and gzip-compressed.
    let ramp: Vec<u8> = (0..=255).collect();
    let arrays: [(&[usize], &[u8]); 4] =
        [(&[3, 4, 4], &ramp[..48]), (&[5], &[0, 1, 2, 3, 9]), (&[1], &[7]), (&[2, 1, 2, 3], &ramp[100..112])];
    for (i, (dims, data)) in arrays.iter().enumerate() {
        let bytes = kiln_data::encode_idx(dims, data);
        write(idx, &format!("raw{i}"), &bytes);
        write(idx, &format!("gz{i}"), &gzip(&bytes));
    }

    // CIFAR-10: one and two records.
    let mut record = vec![3u8; 3073];
    for (i, b) in record.iter_mut().enumerate().skip(1) {
        *b = (i * 7) as u8;
    }
    write(cifar, "one", &record);
    let mut two = record.clone();
    two.extend_from_slice(&record);
    two[3073] = 9;
    write(cifar, "two", &two);

    // Pictures: PNGs of several colour types and depths, baseline JPEGs in grey and colour;
    // each behind a few 4-byte option prefixes (see `kiln_data_fuzz::folder_options`).
    let rgba =
        image::RgbaImage::from_fn(6, 5, |x, y| image::Rgba([x as u8 * 40, y as u8 * 50, 90, (x * y * 20) as u8]));
    let rgb = image::RgbImage::from_fn(9, 4, |x, y| image::Rgb([x as u8 * 25, 200, y as u8 * 60]));
    let grey = image::GrayImage::from_fn(5, 7, |x, y| image::Luma([(x * 30 + y * 5) as u8]));
    let grey_alpha = image::GrayAlphaImage::from_fn(3, 3, |x, y| image::LumaA([(x * 80) as u8, (y * 100) as u8]));
    let rgb16 = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(4, 3, |x, y| {
        image::Rgb([x as u16 * 9000, y as u16 * 20000, 65535])
    });
    let pictures: Vec<(&str, Vec<u8>)> = vec![
        ("rgba.png", encode(&rgba.clone().into(), image::ImageFormat::Png)),
        ("rgb.png", encode(&rgb.clone().into(), image::ImageFormat::Png)),
        ("grey.png", encode(&grey.clone().into(), image::ImageFormat::Png)),
        ("grey_alpha.png", encode(&grey_alpha.into(), image::ImageFormat::Png)),
        ("rgb16.png", encode(&rgb16.into(), image::ImageFormat::Png)),
        ("rgb.jpg", encode(&rgb.into(), image::ImageFormat::Jpeg)),
        ("grey.jpg", encode(&grey.into(), image::ImageFormat::Jpeg)),
        (
            "big.jpg",
            encode(
                &image::RgbImage::from_fn(33, 17, |x, y| image::Rgb([x as u8 * 7, y as u8 * 13, 128])).into(),
                image::ImageFormat::Jpeg,
            ),
        ),
    ];
    // Keep the size; resize to 8×8 center-crop (default filter); 3×17 pad (bilinear);
    // 64×1 stretch (area).
    let prefixes: [[u8; 4]; 4] = [[0, 0, 0, 255], [0x31, 7, 7, 255], [0x13, 2, 16, 0], [0x2d, 63, 0, 128]];
    for (name, bytes) in &pictures {
        for (i, prefix) in prefixes.iter().enumerate() {
            let mut input = prefix.to_vec();
            input.extend_from_slice(bytes);
            write(folder, &format!("{i}-{name}"), &input);
        }
    }

    // Sheets: a 4×6 sheet of 2×2 tiles, 3 columns, 6 tiles; and one with a huge column count.
    write(sheet, "ok", &[4, 6, 2, 2, 3, 6, 1, 2, 3, 4, 5, 6, 7, 8]);
    let mut huge = vec![4, 6, 2, 2, 0xff];
    huge.extend_from_slice(&(1u64 << 63).to_le_bytes());
    huge.extend_from_slice(&[6, 1, 2, 3]);
    write(sheet, "huge", &huge);
    println!("seeds written under {}", root.display());
}
