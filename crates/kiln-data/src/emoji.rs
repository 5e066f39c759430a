//! The bundled emoji sets (`datasets/emoji-32/`, or `emoji-64` built with `--size 64`): the
//! 1,911 Noto emoji of `emoji-datasource-google@16.0.0` on white, with names, short names and
//! categories from `emoji-datasource@16.0.0`, stored as one PNG sheet and a captions JSONL.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::folder::{CaptionedSet, FolderOptions, load_picture, split_sheet};
use crate::{DataError, ImageSet};

/// `dataset.json`: how the sheet is laid out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SheetMeta {
    /// Data set name, e.g. `emoji-32`.
    pub name: String,
    /// The sheet file beside this one.
    pub sheet: String,
    /// The captions file beside this one.
    pub captions: String,
    /// Number of images.
    pub count: usize,
    /// Tile side in pixels.
    pub tile: usize,
    /// Tiles per sheet row.
    pub columns: usize,
    /// Label names: `label` in the captions indexes this.
    pub categories: Vec<String>,
    /// How the images were made, in words.
    pub provenance: String,
}

/// One line of the captions JSONL: one emoji.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmojiEntry {
    /// Position in the sheet (row-major).
    pub index: usize,
    /// Index into [`SheetMeta::categories`].
    pub label: u32,
    /// Category name, e.g. `Smileys & Emotion`.
    pub category: String,
    /// Unicode name, e.g. `GRINNING FACE`.
    pub name: String,
    /// Short names, e.g. `["grinning"]`.
    pub short_names: Vec<String>,
    /// Code points, e.g. `1F600`.
    pub unified: String,
    /// The caption: the name in lower case, e.g. `grinning face`.
    pub text: String,
}

/// An emoji set: images (labels = category), one entry per image, category names.
#[derive(Debug, Clone)]
pub struct EmojiSet {
    /// `[N, 3, tile, tile]`, labels are category indices.
    pub images: ImageSet,
    /// Names and captions, one per image.
    pub entries: Vec<EmojiEntry>,
    /// Category names.
    pub categories: Vec<String>,
}

impl EmojiSet {
    /// Loads a set written by `cargo xtask data emoji` from `dir` (e.g. `datasets/emoji-32`).
    pub fn load(dir: &Path) -> Result<Self, DataError> {
        let meta_path = dir.join("dataset.json");
        let text = std::fs::read_to_string(&meta_path).map_err(DataError::io(&meta_path))?;
        let meta: SheetMeta = serde_json::from_str(&text).map_err(|e| DataError::format(&meta_path, e.to_string()))?;
        let sheet_path = dir.join(&meta.sheet);
        let sheet = load_picture(&sheet_path, &FolderOptions::default())?;
        let mut images = split_sheet(&sheet, [meta.tile, meta.tile], meta.columns, meta.count)
            .map_err(|e| DataError::format(&sheet_path, e.to_string()))?;

        let captions_path = dir.join(&meta.captions);
        let text = std::fs::read_to_string(&captions_path).map_err(DataError::io(&captions_path))?;
        let mut entries = Vec::with_capacity(meta.count);
        for (n, line) in text.lines().enumerate() {
            let e: EmojiEntry = serde_json::from_str(line)
                .map_err(|e| DataError::format(&captions_path, format!("line {}: {e}", n + 1)))?;
            if e.index != n || e.label as usize >= meta.categories.len() {
                return Err(DataError::format(
                    &captions_path,
                    format!("line {}: index {} / label {} out of place", n + 1, e.index, e.label),
                ));
            }
            entries.push(e);
        }
        if entries.len() != meta.count {
            return Err(DataError::Mismatch {
                message: format!(
                    "{} says {} images but {} has {} lines",
                    meta_path.display(),
                    meta.count,
                    captions_path.display(),
                    entries.len()
                ),
            });
        }
        images.labels = entries.iter().map(|e| e.label).collect();
        Ok(Self { images, entries, categories: meta.categories })
    }

    /// The captions, one per image.
    pub fn captions(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.text.clone()).collect()
    }

    /// As a generic [`CaptionedSet`].
    pub fn into_captioned(self) -> CaptionedSet {
        let captions = self.captions();
        CaptionedSet { images: self.images, captions }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_emoji_32_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/emoji-32");
        let set = EmojiSet::load(&dir).unwrap();
        assert_eq!((set.images.len, set.images.channels, set.images.height, set.images.width), (1911, 3, 32, 32));
        assert_eq!(set.categories.len(), 10);
        assert!(set.images.labels.iter().all(|&l| (l as usize) < set.categories.len()));
        let grinning = set.entries.iter().find(|e| e.unified == "1F600").unwrap();
        assert_eq!(grinning.text, "grinning face");
        assert_eq!(set.categories[grinning.label as usize], "Smileys & Emotion");
        // Composited on white: the top-left pixel is white for all but edge-to-edge images
        // (flags, keycaps, some symbols).
        let white_corners = (0..set.images.len).filter(|&i| set.images.image(i)[0] > 240).count();
        assert!(white_corners > 1500, "{white_corners}");
        // And it batches like any other set.
        let mut batcher =
            crate::Batcher::new(std::sync::Arc::new(set.images), 16, crate::PixelRange::MinusOneOne, 0).unwrap();
        let batch = batcher.next_batch::<burn::backend::Flex>(&Default::default());
        assert_eq!(batch.images.dims(), [16, 3, 32, 32]);
    }

    /// A preview of 64 emoji (every 30th), 8 a row, enlarged 4× with nearest neighbours, with
    /// their captions printed: `KILN_EMOJI_GRID=/tmp/emoji-grid.png cargo test --release -p
    /// kiln-data -- --ignored emoji_grid --nocapture`.
    #[test]
    #[ignore]
    fn emoji_grid() {
        use kiln_kernels::resize::{Filter, ResizeOptions};
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/emoji-32");
        let set = EmojiSet::load(&dir).unwrap();
        let picks: Vec<usize> = (0..64).map(|i| i * 30).collect();
        let sheet = crate::make_sheet(&set.images.subset(&picks), 8, [255; 3]);
        let [h, w] = [sheet.height, sheet.width];
        let big =
            crate::resize_u8(&sheet.pixels, 3, [h, w], [4 * h, 4 * w], &ResizeOptions::new(Filter::Nearest)).unwrap();
        let big = crate::Picture { pixels: big, height: 4 * h, width: 4 * w };
        let out = std::env::var("KILN_EMOJI_GRID").unwrap_or_else(|_| "/tmp/emoji-grid.png".into());
        std::fs::write(&out, crate::encode_png(&big).unwrap()).unwrap();
        for (row, chunk) in picks.chunks(8).enumerate() {
            let names: Vec<&str> = chunk.iter().map(|&i| set.entries[i].text.as_str()).collect();
            println!("row {row}: {}", names.join(" | "));
        }
        println!("wrote {out}");
    }
}
