//! Draws a grid of samples, or latent interpolation strips, from a trained generator (the
//! library half of `kiln sample` / `kiln interpolate`), on the CPU (burn-flex).
//!
//! ```text
//! cargo run --release -p kiln-gan --example sample -- <model-dir> <out.png> [options]
//!   model-dir        a run directory or checkpoint (gan.json + generator.safetensors)
//! options:
//!   --n N            images (default 64; for a conditional model without --class: 8 per class)
//!   --class C        only class C (conditional models)
//!   --truncation T   truncated latents, |z_i| ≤ T
//!   --interpolate S  N/8 strips of S images each, z_a → z_b (spherical), one class per strip
//!   --seed S         (default 0)
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend as _;
use kiln_gan::{Generator, LatentPath, SampleRequest};

type Backend = burn_flex::Flex;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, out] = match &args[..args.len().min(2)] {
        [a, b] => [PathBuf::from(a), PathBuf::from(b)],
        _ => bail!("usage: sample <model-dir> <out.png> [options] (see the file's header)"),
    };
    let (mut n, mut class, mut truncation, mut strips, mut seed) = (None, None, None, None, 0u64);
    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--n" => n = Some(value.parse::<usize>()?),
            "--class" => class = Some(value.parse::<usize>()?),
            "--truncation" => truncation = Some(value.parse::<f64>()?),
            "--interpolate" => strips = Some(value.parse::<usize>()?),
            "--seed" => seed = value.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    let device = Default::default();
    Backend::seed(&device, seed);
    let (config, g) = Generator::<Backend>::load(&dir, &device)?;
    let k = config.num_classes;

    let (images, columns): (Tensor<Backend, 4>, usize) = match strips {
        Some(steps) => {
            let rows = n.map_or(if k > 0 { k } else { 8 }, |n| (n / 8).max(1));
            let labels: Option<Vec<usize>> = (k > 0).then(|| (0..rows).map(|r| class.unwrap_or(r % k)).collect());
            let from = g.latent(rows, truncation, &device)?;
            let to = g.latent(rows, truncation, &device)?;
            (g.interpolate(from, to, steps, labels.as_deref(), LatentPath::Spherical)?, steps)
        }
        None => {
            let labels: Option<Vec<usize>> = match (class, k) {
                (Some(c), _) => Some(vec![c; n.unwrap_or(64)]),
                (None, 0) => None,
                (None, k) => Some((0..n.unwrap_or(8 * k)).map(|i| i / 8 % k).collect()),
            };
            let count = labels.as_ref().map_or(n.unwrap_or(64), Vec::len);
            (g.sample_with(&SampleRequest { n: count, labels, truncation }, &device)?, 8)
        }
    };
    kiln_train::write_grid(images, columns, &out)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
