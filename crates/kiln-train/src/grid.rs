//! Image grids: a batch `[N, C, H, W]` in `[0, 1]` laid out row by row as one PNG.

use std::path::Path;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use kiln_core::SaveError;
use kiln_data::{PngCompression, PngSamples, png_bytes};

/// Pixels of background between and around the tiles.
const GAP: usize = 2;

/// Encodes images `[N, C, H, W]` (C = 1 or 3; values clamped to `[0, 1]`) as a PNG grid with
/// `columns` tiles per row on a white background.
pub fn grid_png<B: Backend>(images: Tensor<B, 4>, columns: usize) -> Result<Vec<u8>, String> {
    layout_png(images, columns, GAP)
}

/// Encodes one image `[1, C, H, W]` as a PNG of exactly its size.
pub fn image_png<B: Backend>(image: Tensor<B, 4>) -> Result<Vec<u8>, String> {
    layout_png(image, 1, 0)
}

fn layout_png<B: Backend>(images: Tensor<B, 4>, columns: usize, gap: usize) -> Result<Vec<u8>, String> {
    let [n, c, h, w] = images.dims();
    if c != 1 && c != 3 {
        return Err(format!("a grid needs 1 or 3 channels, got {c}"));
    }
    let columns = columns.clamp(1, n.max(1));
    let rows = n.div_ceil(columns);
    let (gw, gh) = (columns * (w + gap) + gap, rows * (h + gap) + gap);
    let values: Vec<f32> =
        images.clamp(0.0, 1.0).into_data().convert::<f32>().to_vec().map_err(|e| format!("{e:?}"))?;
    let mut canvas = vec![255u8; gw * gh * c];
    for i in 0..n {
        let (x0, y0) = ((i % columns) * (w + gap) + gap, (i / columns) * (h + gap) + gap);
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
}
