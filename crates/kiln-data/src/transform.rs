//! Host-side image operations on `u8` pixels: flattening alpha onto a background, resizing with
//! kiln-kernels' resampling weights, and fitting to a target size by cropping or padding.
//!
//! Resizing uses the very weight matrices of [`kiln_kernels::resize`] (PyTorch's and PIL's
//! numbers), applied here in `f32` on the CPU so that loading a data set needs no backend and
//! gives the same bytes on every machine.

use kiln_kernels::KernelError;
use kiln_kernels::resize::{Cubic, Filter, ResizeOptions, resample_matrix};

use crate::DataError;

/// How an image whose aspect ratio differs from the target's is made to fit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fit {
    /// Scale so the image covers the target, then cut the overhang equally on both sides.
    #[default]
    CenterCrop,
    /// Scale so the image fits inside the target, then centre it on the background colour.
    Pad,
    /// Scale each axis independently (distorts the aspect ratio).
    Stretch,
}

/// The default resampler: PIL's bicubic (`a = -0.5`) with antialiasing, what `Image.resize`
/// and `F.interpolate(mode="bicubic", antialias=True)` do.
pub fn default_filter() -> ResizeOptions {
    ResizeOptions::new(Filter::Bicubic(Cubic::Pil)).with_antialias(true)
}

/// Interleaved RGBA (`[H, W, 4]`) composited over an opaque `background`, as channel-first RGB
/// (`[3, H, W]`). Uses integer arithmetic with rounding, so the result is exact and portable.
pub fn flatten_rgba(rgba: &[u8], background: [u8; 3]) -> Vec<u8> {
    let n = rgba.len() / 4;
    let mut out = vec![0u8; 3 * n];
    for (i, px) in rgba.chunks_exact(4).enumerate() {
        let a = u32::from(px[3]);
        for c in 0..3 {
            let v = u32::from(px[c]) * a + u32::from(background[c]) * (255 - a);
            out[c * n + i] = ((v + 127) / 255) as u8;
        }
    }
    out
}

/// The most elements any one buffer of [`resize_u8`] may have: each resampling matrix
/// (`out × in` along one axis, built in `f64`), the intermediate `out_h × w` rows and an output
/// plane. 2²⁵ lets an 8192 × 8192 picture be resized to 4096 × 4096, while an extreme aspect
/// ratio center-cropped to a small square (a 25 × 16417 strip resampled to 8 × 5253 before the
/// crop: 86 million weights, 690 MB) is refused instead of exhausting memory.
const MAX_RESIZE_ELEMENTS: usize = 1 << 25;

fn check_resize_cost([h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> Result<(), DataError> {
    let biggest = [oh.checked_mul(h), ow.checked_mul(w), oh.checked_mul(w), oh.checked_mul(ow)]
        .into_iter()
        .try_fold(0usize, |acc, n| n.map(|n| acc.max(n)));
    if biggest.is_none_or(|n| n > MAX_RESIZE_ELEMENTS) {
        return Err(DataError::Resize(KernelError::OutOfRange {
            what: "resizing",
            allowed: "at most 2^25 (33554432) elements in each resampling matrix and plane",
            value: format!(
                "{h}×{w} to {oh}×{ow}, {}",
                biggest.map_or_else(|| "more than usize::MAX".into(), |n| format!("{n} elements"))
            ),
        }));
    }
    Ok(())
}

/// Resizes channel-first `u8` images `[C, H, W]` to `[C, out_h, out_w]` with the resampling
/// matrices of kiln-kernels; values are rounded to nearest and clamped to `0..=255` (bicubic
/// overshoots at edges).
pub fn resize_u8(
    pixels: &[u8],
    channels: usize,
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
    options: &ResizeOptions,
) -> Result<Vec<u8>, DataError> {
    if [h, w] == [oh, ow] {
        return Ok(pixels.to_vec());
    }
    check_resize_cost([h, w], [oh, ow])?;
    let rh = resample_matrix(h, oh, None, options)?; // [oh, h]
    let rw = resample_matrix(w, ow, None, options)?; // [ow, w]
    // Where each row of R_w is nonzero: a filter's support, a few pixels wide when upscaling and
    // about 4 · w / ow when downscaling, of a row w long.
    let spans: Vec<(usize, usize)> = rw
        .chunks_exact(w)
        .map(|r| match r.iter().position(|&k| k != 0.0) {
            Some(start) => (start, w - r.iter().rev().position(|&k| k != 0.0).unwrap_or(0)),
            None => (0, 0),
        })
        .collect();
    let mut out = vec![0u8; channels * oh * ow];
    let mut rows = vec![0f32; oh * w];
    for c in 0..channels {
        let plane = &pixels[c * h * w..(c + 1) * h * w];
        // rows = R_h · X: [oh, w]
        rows.fill(0.0);
        for o in 0..oh {
            for i in 0..h {
                let k = rh[o * h + i];
                if k != 0.0 {
                    let src = &plane[i * w..(i + 1) * w];
                    for (r, &x) in rows[o * w..(o + 1) * w].iter_mut().zip(src) {
                        *r += k * f32::from(x);
                    }
                }
            }
        }
        // out = rows · R_wᵀ: [oh, ow], each dot product over the nonzero span of its weights only
        // (the same sum: the terms left out are zeros at either end).
        let dst = &mut out[c * oh * ow..(c + 1) * oh * ow];
        for o in 0..oh {
            let row = &rows[o * w..(o + 1) * w];
            for (q, &(start, end)) in spans.iter().enumerate() {
                let weights = &rw[q * w + start..q * w + end];
                let v: f32 = weights.iter().zip(&row[start..end]).map(|(k, x)| k * x).sum();
                dst[o * ow + q] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(out)
}

/// Resizes `[C, H, W]` to exactly `[C, target_h, target_w]`, keeping the aspect ratio as `fit`
/// says; padding uses `background` (its first channel for greyscale).
pub fn fit_u8(
    pixels: &[u8],
    channels: usize,
    [h, w]: [usize; 2],
    [th, tw]: [usize; 2],
    fit: Fit,
    background: [u8; 3],
    options: &ResizeOptions,
) -> Result<Vec<u8>, DataError> {
    let (sy, sx) = (th as f64 / h as f64, tw as f64 / w as f64);
    let scale = match fit {
        Fit::Stretch => return resize_u8(pixels, channels, [h, w], [th, tw], options),
        Fit::CenterCrop => sy.max(sx),
        Fit::Pad => sy.min(sx),
    };
    // The scaled size, snapped to the target on the axis that decided the scale.
    let sh = if (scale - sy).abs() < 1e-12 { th } else { ((h as f64 * scale).round() as usize).max(1) };
    let sw = if (scale - sx).abs() < 1e-12 { tw } else { ((w as f64 * scale).round() as usize).max(1) };
    let scaled = resize_u8(pixels, channels, [h, w], [sh, sw], options)?;
    let mut out = vec![0u8; channels * th * tw];
    for c in 0..channels {
        out[c * th * tw..(c + 1) * th * tw].fill(background[c.min(2)]);
    }
    // Copy the overlap of the scaled image centred on the target.
    let (copy_h, copy_w) = (sh.min(th), sw.min(tw));
    let (src_y, src_x) = ((sh - copy_h) / 2, (sw - copy_w) / 2);
    let (dst_y, dst_x) = ((th - copy_h) / 2, (tw - copy_w) / 2);
    for c in 0..channels {
        for y in 0..copy_h {
            let s = c * sh * sw + (src_y + y) * sw + src_x;
            let d = c * th * tw + (dst_y + y) * tw + dst_x;
            out[d..d + copy_w].copy_from_slice(&scaled[s..s + copy_w]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_stays_constant_and_identity_is_exact() {
        let img = vec![77u8; 3 * 10 * 14];
        let out = resize_u8(&img, 3, [10, 14], [4, 5], &default_filter()).unwrap();
        assert!(out.iter().all(|&v| v == 77));
        let ramp: Vec<u8> = (0..64).collect();
        assert_eq!(resize_u8(&ramp, 1, [8, 8], [8, 8], &default_filter()).unwrap(), ramp);
    }

    #[test]
    fn halving_averages_like_pil() {
        // A 2x2 checker of 0/255 blocks of 2x2 pixels halves to the blocks' values exactly with
        // an area filter, and close to them with antialiased bicubic.
        let mut img = vec![0u8; 16];
        for y in 0..4 {
            for x in 0..4 {
                img[y * 4 + x] = if (y / 2 + x / 2) % 2 == 0 { 255 } else { 0 };
            }
        }
        let area = resize_u8(&img, 1, [4, 4], [2, 2], &ResizeOptions::new(Filter::Area)).unwrap();
        assert_eq!(area, vec![255, 0, 0, 255]);
    }

    /// The second pass sums each output over the nonzero span of its weights only: the bytes must
    /// be those of the full dense product, for every filter, up and down.
    #[test]
    fn sparse_second_pass_matches_the_dense_product() {
        let mut rng = crate::SplitMix64::new(5);
        let (h, w) = (7, 29);
        let img: Vec<u8> = (0..2 * h * w).map(|_| rng.next_u64() as u8).collect();
        let mut filters: Vec<ResizeOptions> = Filter::ALL.into_iter().map(ResizeOptions::new).collect();
        filters.push(default_filter());
        for options in filters {
            for (oh, ow) in [(3, 5), (7, 64), (11, 29), (2, 1)] {
                let rh = resample_matrix(h, oh, None, &options).unwrap();
                let rw = resample_matrix(w, ow, None, &options).unwrap();
                let mut dense = Vec::new();
                for c in 0..2 {
                    let plane = &img[c * h * w..(c + 1) * h * w];
                    let mut rows = vec![0f32; oh * w];
                    for o in 0..oh {
                        for i in 0..h {
                            let k = rh[o * h + i];
                            if k != 0.0 {
                                for x in 0..w {
                                    rows[o * w + x] += k * f32::from(plane[i * w + x]);
                                }
                            }
                        }
                    }
                    for o in 0..oh {
                        for q in 0..ow {
                            let v: f32 = (0..w).map(|x| rw[q * w + x] * rows[o * w + x]).sum();
                            dense.push(v.round().clamp(0.0, 255.0) as u8);
                        }
                    }
                }
                assert_eq!(resize_u8(&img, 2, [h, w], [oh, ow], &options).unwrap(), dense, "{options:?} {oh}×{ow}");
            }
        }
    }

    #[test]
    fn resizes_too_costly_for_memory_are_refused() {
        let err = resize_u8(&[0; 16417], 1, [1, 16417], [8, 5253], &default_filter()).unwrap_err().to_string();
        assert!(err.contains("got 1×16417 to 8×5253, 86238501 elements"), "{err}");
        let err = resize_u8(&[0; 4], 1, [2, 2], [usize::MAX, 3], &default_filter()).unwrap_err().to_string();
        assert!(err.contains("more than usize::MAX"), "{err}");
        assert_eq!(resize_u8(&[9; 2048], 1, [1, 2048], [1, 8192], &default_filter()).unwrap(), vec![9; 8192]);
    }

    #[test]
    fn flatten_on_white_and_fit() {
        // Transparent → background, opaque → colour, half → blend.
        let rgba = [10, 20, 30, 0, 10, 20, 30, 255, 0, 0, 0, 128];
        let rgb = flatten_rgba(&rgba, [255, 255, 255]);
        assert_eq!(rgb, vec![255, 10, 127, 255, 20, 127, 255, 30, 127]);
        // A 2x4 image padded into 4x4: one background row above and below.
        let img = vec![9u8; 8];
        let out = fit_u8(&img, 1, [2, 4], [4, 4], Fit::Pad, [1, 1, 1], &default_filter()).unwrap();
        assert_eq!(&out[..4], &[1; 4]);
        assert_eq!(&out[4..12], &[9; 8]);
        assert_eq!(&out[12..], &[1; 4]);
        // Center-crop of a 2x4 into 2x2 keeps the middle columns.
        let img: Vec<u8> = vec![1, 2, 3, 4, 5, 6, 7, 8];
        let out = fit_u8(&img, 1, [2, 4], [2, 2], Fit::CenterCrop, [0; 3], &default_filter()).unwrap();
        assert_eq!(out, vec![2, 3, 6, 7]);
    }
}
