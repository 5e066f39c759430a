//! The one PNG encoder of kiln: sample grids, resized images and bundled sprite sheets all go
//! through [`png_bytes`], so colour types, bit depths and the checks on the input live in one
//! place.

use std::borrow::Cow;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};

/// Interleaved samples (`[height, width, channels]`, row by row) at 8 or 16 bits per sample.
#[derive(Clone, Copy, Debug)]
pub enum PngSamples<'a> {
    /// 8-bit samples, 0..=255.
    U8(&'a [u8]),
    /// 16-bit samples, 0..=65535.
    U16(&'a [u16]),
}

impl PngSamples<'_> {
    fn len(&self) -> usize {
        match self {
            PngSamples::U8(s) => s.len(),
            PngSamples::U16(s) => s.len(),
        }
    }
}

/// How hard the encoder works to make the file small. Either way the bytes depend only on the
/// pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PngCompression {
    /// The `image` crate's default: quick, for files written often (preview grids, `kiln resize`).
    #[default]
    Fast,
    /// Slower and smaller, for files committed to the repository (the emoji sprite sheet).
    Best,
}

/// Why [`png_bytes`] could not encode an image.
#[derive(Debug, thiserror::Error)]
pub enum PngError {
    /// PNG knows gray, gray+alpha, RGB and RGBA only.
    #[error("a PNG holds 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels, not {0}")]
    Channels(usize),
    /// The samples do not fill the image exactly.
    #[error("a {width}×{height} image with {channels} channels has {expected} samples, but {found} were given")]
    Length {
        /// Columns.
        width: usize,
        /// Rows.
        height: usize,
        /// Samples per pixel.
        channels: usize,
        /// `width · height · channels`.
        expected: usize,
        /// Samples given.
        found: usize,
    },
    /// A side past PNG's 32-bit limit.
    #[error("a {width}×{height} image is larger than a PNG can hold")]
    TooLarge {
        /// Columns.
        width: usize,
        /// Rows.
        height: usize,
    },
    /// The encoder refused the image (e.g. a side of zero).
    #[error("encoding a PNG: {0}")]
    Encode(String),
}

/// Encodes `samples` as a `width × height` PNG with `channels` channels (1 gray, 2 gray+alpha,
/// 3 RGB, 4 RGBA) at the samples' bit depth.
///
/// ```
/// use kiln_data::{PngCompression, PngSamples, png_bytes};
///
/// // A 2×1 RGB image: one red pixel, one blue.
/// let png = png_bytes(2, 1, 3, PngSamples::U8(&[255, 0, 0, 0, 0, 255]), PngCompression::Fast)?;
/// assert!(png.starts_with(b"\x89PNG"));
/// # Ok::<(), kiln_data::PngError>(())
/// ```
pub fn png_bytes(
    width: usize,
    height: usize,
    channels: usize,
    samples: PngSamples<'_>,
    compression: PngCompression,
) -> Result<Vec<u8>, PngError> {
    use ExtendedColorType as T;
    let colours = match samples {
        PngSamples::U8(_) => [T::L8, T::La8, T::Rgb8, T::Rgba8],
        PngSamples::U16(_) => [T::L16, T::La16, T::Rgb16, T::Rgba16],
    };
    let colour = *colours.get(channels.wrapping_sub(1)).ok_or(PngError::Channels(channels))?;
    let too_large = || PngError::TooLarge { width, height };
    let (w, h) = (u32::try_from(width).map_err(|_| too_large())?, u32::try_from(height).map_err(|_| too_large())?);
    let expected = width.checked_mul(height).and_then(|n| n.checked_mul(channels)).ok_or_else(too_large)?;
    if samples.len() != expected {
        return Err(PngError::Length { width, height, channels, expected, found: samples.len() });
    }
    // The encoder takes 16-bit samples as bytes in native order.
    let bytes: Cow<'_, [u8]> = match samples {
        PngSamples::U8(s) => Cow::Borrowed(s),
        PngSamples::U16(s) => Cow::Owned(s.iter().flat_map(|v| v.to_ne_bytes()).collect()),
    };
    let compression = match compression {
        PngCompression::Fast => CompressionType::Fast,
        PngCompression::Best => CompressionType::Best,
    };
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, compression, FilterType::Adaptive)
        .write_image(&bytes, w, h, colour)
        .map_err(|e| PngError::Encode(e.to_string()))?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_colour_type_and_depth() {
        let (w, h) = (3, 2);
        for channels in 1..=4 {
            let n = w * h * channels;
            let narrow: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            let png = png_bytes(w, h, channels, PngSamples::U8(&narrow), PngCompression::Fast).unwrap();
            let img = image::load_from_memory(&png).unwrap();
            assert_eq!((img.width(), img.height(), img.color().channel_count()), (3, 2, channels as u8));
            assert_eq!(img.color().bytes_per_pixel(), channels as u8);
            assert_eq!(img.as_bytes(), &narrow[..]);

            let deep: Vec<u16> = (0..n).map(|i| (i * 4099 % 65536) as u16).collect();
            let png = png_bytes(w, h, channels, PngSamples::U16(&deep), PngCompression::Best).unwrap();
            let img = image::load_from_memory(&png).unwrap();
            assert_eq!(img.color().bytes_per_pixel(), 2 * channels as u8);
            let back: Vec<u16> = img.as_bytes().chunks(2).map(|b| u16::from_ne_bytes([b[0], b[1]])).collect();
            assert_eq!(back, deep);
        }
    }

    #[test]
    fn refuses_bad_shapes_without_panicking() {
        let err = |r: Result<Vec<u8>, PngError>| r.unwrap_err().to_string();
        let px = [0u8; 12];
        assert_eq!(
            err(png_bytes(2, 2, 5, PngSamples::U8(&px), PngCompression::Fast)),
            "a PNG holds 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels, not 5"
        );
        assert!(err(png_bytes(2, 2, 0, PngSamples::U8(&px), PngCompression::Fast)).ends_with("not 0"));
        assert_eq!(
            err(png_bytes(2, 3, 3, PngSamples::U8(&px), PngCompression::Fast)),
            "a 2×3 image with 3 channels has 18 samples, but 12 were given"
        );
        assert!(err(png_bytes(usize::MAX, 2, 1, PngSamples::U8(&px), PngCompression::Fast)).contains("larger"));
        assert!(err(png_bytes(0, 4, 3, PngSamples::U8(&px), PngCompression::Fast)).contains("samples"));
        assert!(err(png_bytes(0, 4, 3, PngSamples::U8(&[]), PngCompression::Fast)).starts_with("encoding a PNG"));
    }
}
