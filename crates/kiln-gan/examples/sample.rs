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
use kiln_core::{Generative, Interpolation, LatentPath, SampleRequest, interpolate};
use kiln_gan::Generator;

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
    let (config, g) = Generator::<Backend>::load(&dir, &device)?;
    let k = config.num_classes;

    let (images, columns): (Tensor<Backend, 4>, usize) = match strips {
        Some(steps) => {
            let rows = n.map_or(if k > 0 { k } else { 8 }, |n| (n / 8).max(1));
            let classes = if k > 0 { (0..rows).map(|r| class.unwrap_or(r % k)).collect() } else { Vec::new() };
            let walk = Interpolation { rows, steps, path: LatentPath::Spherical, seed, classes, truncation };
            (interpolate(&g, &walk, &device)?, steps)
        }
        None => {
            let classes: Vec<usize> = match (class, k) {
                (Some(c), _) => vec![c; n.unwrap_or(64)],
                (None, 0) => Vec::new(),
                (None, k) => (0..n.unwrap_or(8 * k)).map(|i| i / 8 % k).collect(),
            };
            let count = if classes.is_empty() { n.unwrap_or(64) } else { classes.len() };
            let request = SampleRequest { classes, truncation, ..SampleRequest::new(count, seed) };
            (g.sample(&request, &device)?.images, 8)
        }
    };
    kiln_train::write_grid(images, columns, &out)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
