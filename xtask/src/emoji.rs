//! `cargo xtask data emoji [--size 32|64] [--from DIR]`: rebuilds `datasets/emoji-<size>/`.
//!
//! The 1,911 emoji of Google's Noto set as packaged by `emoji-datasource-google@16.0.0` (64×64
//! RGBA PNGs), with names, short names and categories from `emoji-datasource@16.0.0`
//! (`emoji.json`), in the package's own sort order. Each is composited on white and resized with
//! kiln-kernels' antialiased PIL bicubic (`a = -0.5`, the filter widened by the downscaling
//! factor: what `PIL.Image.resize(..., BICUBIC)` does), then laid out 64 to a row in one RGB PNG
//! sheet, with one JSON line of captions per emoji. Both npm tarballs are checked against pinned
//! sha256s, and the output is byte-for-byte reproducible.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use kiln_data::{EmojiEntry, FolderOptions, SheetMeta, encode_png, load_pictures, make_sheet};
use serde_json::Value;

use crate::data::sha256_hex;
use crate::{root, run};

const IMAGES_PKG: &str = "emoji-datasource-google@16.0.0";
const IMAGES_TGZ: &str = "emoji-datasource-google-16.0.0.tgz";
const IMAGES_SHA256: &str = "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438";
const META_PKG: &str = "emoji-datasource@16.0.0";
const META_TGZ: &str = "emoji-datasource-16.0.0.tgz";
const META_SHA256: &str = "2006725061dc0098daa832d65f854a7bec0740af2eb47cb5b23d89f7e2c849f9";
const COUNT: usize = 1911;
const COLUMNS: usize = 64;
const APACHE_2: &str = include_str!("../../datasets/emoji-32/LICENSE-Apache-2.0.txt");

pub fn run_emoji(args: &[&str]) -> Result<()> {
    let (mut size, mut from) = (32usize, None);
    let mut it = args.iter();
    while let Some(&arg) = it.next() {
        match (arg, it.next()) {
            ("--size", Some(v)) => size = v.parse().with_context(|| format!("--size {v}: not a number"))?,
            ("--from", Some(v)) => from = Some(PathBuf::from(v)),
            _ => {
                bail!("data emoji: unknown arguments {args:?} (--size 32|64, --from DIR holding the two npm tarballs)")
            }
        }
    }
    ensure!((8..=64).contains(&size), "--size {size}: must be between 8 and 64 (the source is 64×64)");

    let work = std::env::temp_dir().join(format!("kiln-xtask-emoji-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let tarballs = match from {
        Some(dir) => dir,
        None => {
            let w = work.to_string_lossy().to_string();
            run("npm", &["pack", "--silent", "--pack-destination", &w, IMAGES_PKG, META_PKG])?;
            work.clone()
        }
    };
    let images_dir = unpack(&tarballs.join(IMAGES_TGZ), IMAGES_SHA256, &work.join("images"))?;
    let meta_dir = unpack(&tarballs.join(META_TGZ), META_SHA256, &work.join("meta"))?;

    let json_path = meta_dir.join("package/emoji.json");
    let all: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(&json_path).with_context(|| format!("reading {}", json_path.display()))?,
    )
    .with_context(|| format!("parsing {}", json_path.display()))?;
    let mut emoji: Vec<&Value> = all.iter().filter(|e| e["has_img_google"] == Value::Bool(true)).collect();
    emoji.sort_by_key(|e| e["sort_order"].as_u64().unwrap_or(u64::MAX));
    ensure!(emoji.len() == COUNT, "emoji.json lists {} emoji with Google images, expected {COUNT}", emoji.len());

    let mut categories: Vec<String> = Vec::new();
    let mut entries = Vec::with_capacity(COUNT);
    let mut files = Vec::with_capacity(COUNT);
    for (index, e) in emoji.iter().enumerate() {
        let str_of = |k: &str| e[k].as_str().map(str::to_string);
        let unified = str_of("unified").context("an emoji without `unified`")?;
        let image = str_of("image").with_context(|| format!("{unified}: no `image`"))?;
        let category = str_of("category").with_context(|| format!("{unified}: no `category`"))?;
        let short_names: Vec<String> = e["short_names"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        // A few emoji (flags, some sequences) have no Unicode name: fall back to the short name.
        let name = str_of("name")
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| short_names.first().cloned().unwrap_or_default().replace('_', " ").to_uppercase());
        let label = match categories.iter().position(|c| *c == category) {
            Some(i) => i,
            None => {
                categories.push(category.clone());
                categories.len() - 1
            }
        } as u32;
        files.push(images_dir.join("package/img/google/64").join(&image));
        let text = name.to_lowercase();
        entries.push(EmojiEntry { index, label, category, name, short_names, unified, text });
    }

    let options = FolderOptions::sized(size, size); // white background, antialiased PIL bicubic
    let set = load_pictures(&files, entries.iter().map(|e| e.label).collect(), &options)?;
    let sheet = make_sheet(&set, COLUMNS, [255, 255, 255]);
    let png = encode_png(&sheet)?;

    let name = format!("emoji-{size}");
    let meta = SheetMeta {
        name: name.clone(),
        sheet: "emoji.png".into(),
        captions: "captions.jsonl".into(),
        count: COUNT,
        tile: size,
        columns: COLUMNS,
        categories,
        provenance: format!(
            "{IMAGES_PKG} img/google/64/*.png (Noto Emoji, Apache-2.0) composited on white, resized \
             64→{size} with antialiased PIL bicubic (kiln-kernels); names from {META_PKG} emoji.json (MIT); \
             built by `cargo xtask data emoji --size {size}`"
        ),
    };
    let mut captions = String::new();
    for e in &entries {
        captions.push_str(&serde_json::to_string(e)?);
        captions.push('\n');
    }
    let mit = std::fs::read_to_string(meta_dir.join("package/LICENSE")).context("emoji-datasource has no LICENSE")?;

    let out = root().join("datasets").join(&name);
    std::fs::create_dir_all(&out)?;
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("emoji.png", png),
        ("captions.jsonl", captions.into_bytes()),
        ("dataset.json", (serde_json::to_string_pretty(&meta)? + "\n").into_bytes()),
        ("LICENSE-Apache-2.0.txt", APACHE_2.as_bytes().to_vec()),
        ("LICENSE-MIT-emoji-datasource.txt", mit.into_bytes()),
        ("NOTICE.md", notice(size).into_bytes()),
    ];
    let mut sums = String::new();
    for (file, bytes) in &files {
        std::fs::write(out.join(file), bytes).with_context(|| format!("writing {}", out.join(file).display()))?;
        sums.push_str(&format!("{}  {file}\n", sha256_hex(bytes)));
    }
    std::fs::write(out.join("SHA256SUMS"), &sums)?;
    let _ = std::fs::remove_dir_all(&work);
    print!("wrote {} ({} emoji, {size}×{size}):\n{sums}", out.display(), COUNT);
    Ok(())
}

/// Checks a tarball's sha256 and unpacks it (with kiln-data's safe extractor) into `dest`.
fn unpack(tgz: &Path, sha256: &str, dest: &Path) -> Result<PathBuf> {
    let bytes = std::fs::read(tgz).with_context(|| format!("reading {}", tgz.display()))?;
    let digest = sha256_hex(&bytes);
    ensure!(digest == sha256, "{} has sha256 {digest}, expected {sha256}", tgz.display());
    kiln_data::extract(tgz, dest, &kiln_data::ExtractLimits::default())?;
    Ok(dest.to_path_buf())
}

fn notice(size: usize) -> String {
    format!(
        "# emoji-{size}: attribution and licences\n\n\
         - **Images:** Noto Emoji by Google (<https://github.com/googlefonts/noto-emoji>), as \
         packaged by `{IMAGES_PKG}` (sha256 of the npm tarball `{IMAGES_SHA256}`). Licensed under \
         the Apache License, Version 2.0 (`LICENSE-Apache-2.0.txt`). Modified: composited on a white \
         background and resized from 64×64 to {size}×{size}.\n\
         - **Names, short names and categories:** emoji-data by Cal Henderson and contributors \
         (<https://github.com/iamcal/emoji-data>), `{META_PKG}` `emoji.json` (sha256 of the npm \
         tarball `{META_SHA256}`). MIT licence (`LICENSE-MIT-emoji-datasource.txt`).\n\n\
         Rebuilt byte for byte by `cargo xtask data emoji --size {size}`.\n"
    )
}
