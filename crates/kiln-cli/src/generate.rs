//! `kiln sample`, `kiln reconstruct`, `kiln interpolate`: a trained model in, images out.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use kiln_data::{Mnist, Range, Split, gather, standard_normal};
use kiln_train::{grid_png, image_png};

use crate::checkpoint::{self, Model};
use crate::device::Job;
use crate::experiment::{DataFormat, Experiment};
use crate::{Format, Walk};

/// `kiln sample`.
pub struct Sample {
    pub checkpoint: PathBuf,
    pub n: usize,
    pub out: PathBuf,
    pub format: Format,
    pub seed: u64,
    /// Classes of a conditional model (grid row by grid row, cycling); empty: every class in turn.
    pub classes: Vec<usize>,
    pub truncation: Option<f64>,
}

/// Images per row of the grids `kiln sample` writes.
const COLUMNS: usize = 8;

impl Job for Sample {
    fn run<B: AutodiffBackend>(self, device: B::Device, _name: &str) -> Result<()> {
        ensure!(self.n > 0, "--n 0: ask for at least one sample");
        let model = checkpoint::load::<B::InnerBackend>(&self.checkpoint, &device)?;
        let labels = model.labels(self.n, COLUMNS, &self.classes)?;
        let z = latents::<B::InnerBackend>(self.n, model.latent(), self.seed, self.truncation, &device)?;
        let images = model.generate(z, &labels)?; // [n, C, S, S]
        match self.format {
            Format::Npy => write_file(&self.out, &npy_f32(&images.dims(), &to_vec(images)?))?,
            Format::Png if has_ext(&self.out, "png") => {
                write_file(&self.out, &grid_png(images, COLUMNS).map_err(anyhow::Error::msg)?)?
            }
            Format::Png => {
                std::fs::create_dir_all(&self.out)
                    .with_context(|| format!("{}: cannot create directory", self.out.display()))?;
                for i in 0..self.n {
                    let png = image_png(images.clone().narrow(0, i, 1)).map_err(anyhow::Error::msg)?;
                    write_file(&self.out.join(format!("sample-{i:05}.png")), &png)?;
                }
            }
        }
        eprintln!("kiln: wrote {} samples to {}", self.n, self.out.display());
        Ok(())
    }
}

/// `kiln reconstruct`.
pub struct Reconstruct {
    pub checkpoint: PathBuf,
    pub data: Option<PathBuf>,
    pub n: usize,
    pub out: PathBuf,
}

impl Job for Reconstruct {
    fn run<B: AutodiffBackend>(self, device: B::Device, _name: &str) -> Result<()> {
        ensure!(self.n > 0, "--n 0: ask for at least one image");
        let vae = match checkpoint::load::<B::InnerBackend>(&self.checkpoint, &device)? {
            Model::Vae(_, vae) => vae,
            Model::Gan(..) => bail!(
                "{}: a GAN has no encoder, so it cannot reconstruct images (try `kiln sample` or `kiln interpolate`)",
                self.checkpoint.display()
            ),
        };
        let dir = match self.data {
            Some(dir) => dir,
            None => {
                let exp = Experiment::load(&self.checkpoint.join("experiment.toml"))
                    .context("finding the run's data (or pass --data DIR)")?;
                ensure!(
                    exp.data.format == DataFormat::Mnist,
                    "the run trained on {:?} data; `kiln reconstruct` reads MNIST-format test images (pass --data DIR)",
                    exp.data.format
                );
                exp.data.path
            }
        };
        let test = Mnist::load(&dir, Split::Test)?;
        let n = self.n.min(test.len);
        let x = gather::<B::InnerBackend>(&test, &(0..n).collect::<Vec<_>>(), Range::ZeroOne, &device).images;
        let recon = vae.reconstruct(x.clone());
        // Rows of 8 originals, each followed by a row of their reconstructions.
        let [_, c, h, w] = x.dims();
        let mut rows = Vec::new();
        for start in (0..n).step_by(8) {
            let len = 8.min(n - start);
            rows.push(x.clone().narrow(0, start, len));
            rows.push(recon.clone().narrow(0, start, len));
        }
        let padded: Vec<Tensor<B::InnerBackend, 4>> = rows
            .into_iter()
            .map(|r| {
                let missing = 8 - r.dims()[0];
                if missing == 0 { r } else { Tensor::cat(vec![r, Tensor::ones([missing, c, h, w], &device)], 0) }
            })
            .collect();
        write_file(&self.out, &grid_png(Tensor::cat(padded, 0), 8).map_err(anyhow::Error::msg)?)?;
        eprintln!("kiln: wrote {n} reconstructions to {}", self.out.display());
        Ok(())
    }
}

/// `kiln interpolate`.
pub struct Interpolate {
    pub checkpoint: PathBuf,
    pub steps: usize,
    pub rows: usize,
    pub path: Walk,
    pub out: PathBuf,
    pub seed: u64,
    /// Classes of a conditional model's strips (cycling); empty: strip `r` has class `r`.
    pub classes: Vec<usize>,
    pub truncation: Option<f64>,
}

impl Job for Interpolate {
    fn run<B: AutodiffBackend>(self, device: B::Device, _name: &str) -> Result<()> {
        ensure!(self.steps >= 2, "--steps {}: a strip needs at least its two endpoints", self.steps);
        ensure!(self.rows > 0, "--rows 0: ask for at least one strip");
        let model = checkpoint::load::<B::InnerBackend>(&self.checkpoint, &device)?;
        // Each strip keeps one class from end to end.
        let labels = model.labels(self.rows * self.steps, self.steps, &self.classes)?;
        let d = model.latent();
        check_truncation(self.truncation)?;
        let ends = standard_normal(2 * self.rows * d, self.seed, self.truncation);
        let mut z = Vec::with_capacity(self.rows * self.steps * d);
        for r in 0..self.rows {
            let (a, b) = (&ends[2 * r * d..(2 * r + 1) * d], &ends[(2 * r + 1) * d..(2 * r + 2) * d]);
            for s in 0..self.steps {
                let t = s as f32 / (self.steps - 1) as f32;
                z.extend(walk(self.path, a, b, t));
            }
        }
        let z = Tensor::<B::InnerBackend, 2>::from_data(TensorData::new(z, [self.rows * self.steps, d]), &device);
        let png = grid_png(model.generate(z, &labels)?, self.steps).map_err(anyhow::Error::msg)?;
        write_file(&self.out, &png)?;
        eprintln!("kiln: wrote {} strips of {} to {}", self.rows, self.steps, self.out.display());
        Ok(())
    }
}

/// A point a fraction `t` of the way from `a` to `b`.
fn walk(path: Walk, a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    let lerp = || a.iter().zip(b).map(|(x, y)| (1.0 - t) * x + t * y).collect();
    match path {
        Walk::Lerp => lerp(),
        Walk::Slerp => {
            let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            let cos = a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (norm(a) * norm(b)).max(1e-12);
            let omega = cos.clamp(-1.0, 1.0).acos();
            if omega.sin().abs() < 1e-6 {
                return lerp(); // (anti)parallel endpoints: the great circle is undefined
            }
            let (wa, wb) = (((1.0 - t) * omega).sin() / omega.sin(), (t * omega).sin() / omega.sin());
            a.iter().zip(b).map(|(x, y)| wa * x + wb * y).collect()
        }
    }
}

/// `n` latents `[n, d]` from `N(0, I)` drawn on the host from `seed` (the same on every
/// backend), truncated to `[−τ, τ]` when asked.
fn latents<B: Backend>(
    n: usize,
    d: usize,
    seed: u64,
    truncation: Option<f64>,
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    check_truncation(truncation)?;
    Ok(Tensor::from_data(TensorData::new(standard_normal(n * d, seed, truncation), [n, d]), device))
}

fn check_truncation(truncation: Option<f64>) -> Result<()> {
    if let Some(tau) = truncation {
        ensure!(tau.is_finite() && tau > 0.0, "--truncation {tau}: must be a positive number (0.5 to 1 is usual)");
    }
    Ok(())
}

fn to_vec<B: Backend>(t: Tensor<B, 4>) -> Result<Vec<f32>> {
    t.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("reading tensor: {e:?}"))
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.is_dir() {
        bail!("{}: is a directory; give a file name", path.display());
    }
    Ok(kiln_core::atomic_write(path, bytes)?)
}

/// A NumPy `.npy` (format 1.0) file of little-endian float32 with the given C-order shape.
fn npy_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let dims = shape.iter().map(|d| format!("{d}, ")).collect::<String>();
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * values.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slerp_and_lerp_hit_the_endpoints() {
        let (a, b) = ([1.0, 0.0], [0.0, 2.0]);
        for path in [Walk::Lerp, Walk::Slerp] {
            assert_eq!(walk(path, &a, &b, 0.0), vec![1.0, 0.0]);
            let end = walk(path, &a, &b, 1.0);
            assert!((end[0]).abs() < 1e-6 && (end[1] - 2.0).abs() < 1e-6, "{end:?}");
        }
        // Halfway along the great circle between orthogonal unit-ish vectors keeps both weights equal.
        let mid = walk(Walk::Slerp, &a, &b, 0.5);
        assert!((mid[0] * 2.0 - mid[1]).abs() < 1e-6, "{mid:?}");
    }

    #[test]
    fn npy_header_is_aligned() {
        let bytes = npy_f32(&[2, 1, 3, 3], &[0.5; 18]);
        assert_eq!(&bytes[..6], b"\x93NUMPY");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert_eq!(bytes.len(), 10 + header_len + 18 * 4);
    }
}
