//! Image grids: a batch `[N, C, H, W]` in `[0, 1]` laid out row by row as one PNG, optionally
//! with a caption band above (what the grid is, at which step) and a label left of each row.

use std::path::Path;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use kiln_core::SaveError;
use kiln_data::{PngCompression, PngSamples, png_bytes};

use crate::font::{Canvas, GLYPH_H, LINE_H, text_width};

/// Pixels of background between and around the tiles.
const GAP: usize = 2;
/// Colour of label text (dark grey, so it reads on the white background of either a grey or an
/// RGB grid).
const INK: [u8; 3] = [30, 30, 30];

/// Text drawn around a grid by [`labelled_grid_png`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GridLabels {
    /// Written in a band above the grid, e.g. `"samples  step 1200"`; empty: no band.
    pub caption: String,
    /// Written left of the grid's rows, repeating down them: `["input", "reconstruction"]`
    /// marks a grid whose rows alternate; empty: no labels.
    pub rows: Vec<String>,
}

/// Font scale for tiles `tile_h` pixels high: 1 (7-pixel text) for MNIST-sized tiles, 2 from
/// 64 pixels up, so the text keeps a readable size next to the images.
fn font_scale(tile_h: usize) -> usize {
    if tile_h >= 64 { 2 } else { 1 }
}

/// Height of the caption band above a labelled grid of tiles `tile_h` pixels high.
pub(crate) fn caption_band(tile_h: usize) -> usize {
    let scale = font_scale(tile_h);
    (LINE_H + 6) * scale
}

/// Encodes images `[N, C, H, W]` (C = 1 or 3; values clamped to `[0, 1]`) as a PNG grid with
/// `columns` tiles per row on a white background.
pub fn grid_png<B: Backend>(images: Tensor<B, 4>, columns: usize) -> Result<Vec<u8>, String> {
    layout_png(images, columns, GAP, &GridLabels::default())
}

/// [`grid_png`] with `labels`: the caption in a band above the grid, the row labels in a column
/// left of it (the image widens to fit a caption longer than the grid).
pub fn labelled_grid_png<B: Backend>(
    images: Tensor<B, 4>,
    columns: usize,
    labels: &GridLabels,
) -> Result<Vec<u8>, String> {
    layout_png(images, columns, GAP, labels)
}

/// Encodes one image `[1, C, H, W]` as a PNG of exactly its size.
pub fn image_png<B: Backend>(image: Tensor<B, 4>) -> Result<Vec<u8>, String> {
    layout_png(image, 1, 0, &GridLabels::default())
}

fn layout_png<B: Backend>(
    images: Tensor<B, 4>,
    columns: usize,
    gap: usize,
    labels: &GridLabels,
) -> Result<Vec<u8>, String> {
    let [n, c, h, w] = images.dims();
    if c != 1 && c != 3 {
        return Err(format!("a grid needs 1 or 3 channels, got {c}"));
    }
    let columns = columns.clamp(1, n.max(1));
    let rows = n.div_ceil(columns);
    let (tiles_w, tiles_h) = (columns * (w + gap) + gap, rows * (h + gap) + gap);
    // Room for the text: a band on top, a column on the left, both empty without labels.
    let scale = font_scale(h);
    let pad = 3 * scale;
    let band = if labels.caption.is_empty() { 0 } else { caption_band(h) };
    let left = match labels.rows.iter().map(|l| text_width(l, scale)).max() {
        Some(widest) => widest + 2 * pad,
        None => 0,
    };
    let caption_w = if band > 0 { text_width(&labels.caption, scale) + 2 * pad } else { 0 };
    let (gw, gh) = ((left + tiles_w).max(caption_w), band + tiles_h);
    let values: Vec<f32> =
        images.clamp(0.0, 1.0).into_data().convert::<f32>().to_vec().map_err(|e| format!("{e:?}"))?;
    let mut canvas = vec![255u8; gw * gh * c];
    let mut text = Canvas { pixels: &mut canvas, width: gw, channels: c };
    text.text(pad, pad, &labels.caption, scale, INK);
    if !labels.rows.is_empty() {
        for row in 0..rows {
            let label = &labels.rows[row % labels.rows.len()];
            let y = band + gap + row * (h + gap) + h.saturating_sub(GLYPH_H * scale) / 2;
            text.text(left - pad - text_width(label, scale), y, label, scale, INK);
        }
    }
    for i in 0..n {
        let (x0, y0) = (left + (i % columns) * (w + gap) + gap, band + (i / columns) * (h + gap) + gap);
        for ch in 0..c {
            let plane = &values[(i * c + ch) * h * w..(i * c + ch + 1) * h * w];
            for y in 0..h {
                for x in 0..w {
                    canvas[((y0 + y) * gw + x0 + x) * c + ch] = (plane[y * w + x] * 255.0).round() as u8;
                }
            }
        }
    }
    png_bytes(gw, gh, c, PngSamples::U8(&canvas), PngCompression::Fast).map_err(|e| e.to_string())
}

/// Writes [`grid_png`] of `images` to `path` atomically.
pub fn write_grid<B: Backend>(images: Tensor<B, 4>, columns: usize, path: &Path) -> Result<(), SaveError> {
    let png = grid_png(images, columns).map_err(|message| SaveError::Encode { path: path.to_path_buf(), message })?;
    kiln_core::atomic_write(path, &png)
}

/// Writes [`labelled_grid_png`] of `images` to `path` atomically.
pub fn write_labelled_grid<B: Backend>(
    images: Tensor<B, 4>,
    columns: usize,
    labels: &GridLabels,
    path: &Path,
) -> Result<(), SaveError> {
    let png = labelled_grid_png(images, columns, labels)
        .map_err(|message| SaveError::Encode { path: path.to_path_buf(), message })?;
    kiln_core::atomic_write(path, &png)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    type B = burn::backend::Flex;

    #[test]
    fn grid_places_tiles_and_decodes_back() {
        // Two 1×2×2 images: all black and all white, two columns.
        let data = TensorData::new(vec![0.0f32, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], [2, 1, 2, 2]);
        let png = grid_png(Tensor::<B, 4>::from_data(data, &Default::default()), 2).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_luma8();
        assert_eq!(img.dimensions(), (2 * (2 + GAP as u32) + GAP as u32, 2 + 2 * GAP as u32));
        assert_eq!(img.get_pixel(GAP as u32, GAP as u32).0, [0]);
        assert_eq!(img.get_pixel(2 * GAP as u32 + 2, GAP as u32).0, [255]);
        assert_eq!(img.get_pixel(0, 0).0, [255]);
        let one = image_png(Tensor::<B, 4>::zeros([1, 3, 5, 4], &Default::default())).unwrap();
        assert_eq!(image::load_from_memory(&one).unwrap().to_rgb8().dimensions(), (4, 5));
        assert!(grid_png(Tensor::<B, 4>::zeros([1, 2, 5, 4], &Default::default()), 1).is_err());
    }

    /// Counts pixels darker than mid-grey in rows `ys` and columns `xs` of a grey image.
    fn dark(img: &image::GrayImage, xs: std::ops::Range<u32>, ys: std::ops::Range<u32>) -> usize {
        ys.flat_map(|y| xs.clone().map(move |x| (x, y))).filter(|&(x, y)| img.get_pixel(x, y).0[0] < 128).count()
    }

    #[test]
    fn a_caption_adds_a_band_of_dark_text_above_and_row_labels_a_column_left() {
        // Four white 1×10×10 tiles in two rows: every dark pixel is text.
        let white = || Tensor::<B, 4>::ones([4, 1, 10, 10], &Default::default());
        let plain = image::load_from_memory(&grid_png(white(), 2).unwrap()).unwrap().to_luma8();
        let (pw, ph) = plain.dimensions();
        assert_eq!(dark(&plain, 0..pw, 0..ph), 0);

        let caption = GridLabels { caption: "samples  step 1200".into(), rows: Vec::new() };
        let png = labelled_grid_png(white(), 2, &caption).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_luma8();
        let band = caption_band(10) as u32;
        // Wider than the bare grid only because the caption is; taller by exactly the band.
        assert_eq!(img.dimensions(), (text_width(&caption.caption, 1) as u32 + 6, ph + band));
        assert!(dark(&img, 0..img.width(), 0..band) > 40, "the caption band has text");
        assert_eq!(dark(&img, 0..img.width(), band..img.height()), 0, "and the tiles are untouched");

        let rows = GridLabels { caption: "step 7".into(), rows: vec!["input".into(), "reconstruction".into()] };
        let png = labelled_grid_png(white(), 2, &rows).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_luma8();
        let left = text_width("reconstruction", 1) as u32 + 6;
        assert_eq!(img.dimensions(), (left + pw, ph + band));
        // Each row's label sits beside its row: "input" is shorter, so it ends further right.
        let row = |r: u32| band + GAP as u32 + r * (10 + GAP as u32)..band + (r + 1) * (10 + GAP as u32);
        assert!(dark(&img, 0..left, row(0)) > 10 && dark(&img, 0..left, row(1)) > dark(&img, 0..left, row(0)));
        assert_eq!(dark(&img, left..img.width(), band..img.height()), 0);

        // RGB tiles take the same text; big tiles a bigger font.
        let rgb = Tensor::<B, 4>::ones([2, 3, 64, 64], &Default::default());
        let img = image::load_from_memory(&labelled_grid_png(rgb, 2, &caption).unwrap()).unwrap().to_rgb8();
        assert_eq!(img.height(), (64 + 2 * GAP + caption_band(64)) as u32);
        assert_eq!(caption_band(64), 2 * caption_band(10));
        assert!(img.pixels().any(|p| p.0 == INK));
    }
}
