//! `kiln sample`, `kiln reconstruct`, `kiln interpolate`: a trained model in, images out.
//!
//! Every family answers through `kiln_core::Generative`, so these commands never ask which family
//! a model is: the model checks the request and names the option it cannot honour.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::ValueEnum;
use kiln_core::{Interpolation, LatentPath, PixelRange, SampleRequest};
use kiln_data::{EmojiSet, ImageSet, Mnist, Split, gather};
use kiln_device::{DeviceInfo, Job};
use kiln_train::{grid_png, image_png};

use crate::experiment::{DataFormat, Experiment};
use crate::family::registry;

/// `kiln sample`: draw samples from a trained model (a conditional model: of the classes asked for).
#[derive(clap::Args, Debug)]
pub struct Sample {
    /// A run directory written by `kiln train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// How many samples.
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// A .png file (one grid), a directory (one PNG per sample), or a .npy file.
    #[arg(long)]
    pub out: PathBuf,
    /// Output format; `npy` writes one float32 array [N, C, H, W] in [0, 1].
    #[arg(long, value_enum, default_value_t = Format::Png)]
    pub format: Format,
    /// Seed of the sampling noise (the same seed gives the same samples on every backend).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Class(es) of a conditional model, e.g. `--class 7` or `--class 0,3` (grid rows cycle
    /// through them); by default every class in turn.
    #[arg(long = "class", value_delimiter = ',')]
    pub classes: Vec<usize>,
    /// Truncation trick: redraw latent entries outside [-T, T] (BigGAN); less variety, cleaner images.
    #[arg(long)]
    pub truncation: Option<f64>,
}

/// Output formats of `kiln sample`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// PNG: a grid for a .png path, one file per sample for a directory.
    Png,
    /// NumPy .npy, float32 [N, C, H, W].
    Npy,
}

/// Images per row of the grids `kiln sample` writes.
const COLUMNS: usize = 8;

/// The class of each of `n` images laid out `per_row` to a grid row: row `r` takes the `r`-th
/// of `wanted` (cycling), or class `r mod k` when none are wanted. Empty when nothing is wanted
/// of an unconditional model; the model checks what is asked.
fn layout_classes(n: usize, per_row: usize, wanted: &[usize], k: usize) -> Vec<usize> {
    if wanted.is_empty() && k == 0 {
        return Vec::new();
    }
    let per_row = per_row.max(1);
    (0..n)
        .map(|i| {
            let row = i / per_row;
            if wanted.is_empty() { row % k } else { wanted[row % wanted.len()] }
        })
        .collect()
}

impl Job for Sample {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device, _info: &DeviceInfo) -> Result<()> {
        ensure!(self.n > 0, "--n 0: ask for at least one sample");
        let model = registry::open::<B::InnerBackend>(&self.checkpoint, &device)?;
        let classes = layout_classes(self.n, COLUMNS, &self.classes, model.card().classes);
        let request = SampleRequest { classes, truncation: self.truncation, ..SampleRequest::new(self.n, self.seed) };
        let images = model.sample(&request, &device)?.images; // [n, C, H, W]
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

/// `kiln reconstruct`: held-out images, each row followed by its reconstruction.
#[derive(clap::Args, Debug)]
pub struct Reconstruct {
    /// A run directory written by `kiln train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Data directory in the run's data format (default: the one the run trained on, from its
    /// experiment.toml; without one, an MNIST-format directory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// How many test images (a multiple of 8 reads best).
    #[arg(long, default_value_t = 32)]
    pub n: usize,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// The run's experiment file: in the run directory, or two levels up from one of its checkpoints
/// (`RUN/checkpoints/step-N`).
fn run_experiment(checkpoint: &Path) -> Option<PathBuf> {
    [checkpoint.join("experiment.toml"), checkpoint.join("../../experiment.toml")].into_iter().find(|p| p.is_file())
}

/// The images `kiln reconstruct` shows: MNIST's test split (its first `n`), or for emoji, whose
/// set has one split, `n` images spread evenly over the sheet (its first ones are all one
/// category).
fn reconstruct_inputs(format: DataFormat, dir: &Path, n: usize) -> Result<(ImageSet, Vec<usize>)> {
    Ok(match format {
        DataFormat::Mnist => {
            let test = Mnist::load(dir, Split::Test)?;
            let n = n.min(test.len);
            (test, (0..n).collect())
        }
        DataFormat::Emoji => {
            let set = EmojiSet::load(dir)?.images;
            let n = n.min(set.len);
            let picks = (0..n).map(|i| i * set.len / n).collect();
            (set, picks)
        }
    })
}

impl Job for Reconstruct {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device, _info: &DeviceInfo) -> Result<()> {
        ensure!(self.n > 0, "--n 0: ask for at least one image");
        let model = registry::open::<B::InnerBackend>(&self.checkpoint, &device)?;
        let exp = match run_experiment(&self.checkpoint) {
            Some(path) => Some(Experiment::load(&path).context("reading the run's data format")?),
            None => None,
        };
        let (format, dir) = match (self.data, exp) {
            (Some(dir), exp) => (exp.map_or(DataFormat::Mnist, |e| e.data.format), dir),
            (None, Some(exp)) => (exp.data.format, exp.data.path),
            (None, None) => {
                bail!("{}: no experiment.toml to find the run's data in; pass --data DIR", self.checkpoint.display())
            }
        };
        let (set, picks) =
            reconstruct_inputs(format, &dir, self.n).with_context(|| format!("--data {}", dir.display()))?;
        let n = picks.len();
        let x = gather::<B::InnerBackend>(&set, &picks, PixelRange::ZeroOne, &device).images;
        let recon = model.reconstruct(x.clone()).with_context(|| self.checkpoint.display().to_string())?;
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

/// `kiln interpolate`: walk between pairs of prior latents, one decoded strip per pair.
#[derive(clap::Args, Debug)]
pub struct Interpolate {
    /// A run directory written by `kiln train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Images per strip, endpoints included.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Strips (pairs of latents).
    #[arg(long, default_value_t = 4)]
    pub rows: usize,
    /// lerp (straight line) or slerp (great circle: stays where the prior has its mass).
    #[arg(long, value_enum, default_value_t = Walk::Slerp)]
    pub path: Walk,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the endpoint latents.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Class(es) of a conditional model, e.g. `--class 7` or `--class 0,3` (strips cycle
    /// through them); by default strip r has class r.
    #[arg(long = "class", value_delimiter = ',')]
    pub classes: Vec<usize>,
    /// Truncation trick: redraw latent entries outside [-T, T] (BigGAN); less variety, cleaner images.
    #[arg(long)]
    pub truncation: Option<f64>,
}

/// Interpolation paths, as `--path` spells them.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// Linear interpolation.
    Lerp,
    /// Spherical linear interpolation.
    Slerp,
}

impl Job for Interpolate {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device, _info: &DeviceInfo) -> Result<()> {
        let model = registry::open::<B::InnerBackend>(&self.checkpoint, &device)?;
        let classes = layout_classes(self.rows, 1, &self.classes, model.card().classes);
        let path = match self.path {
            Walk::Lerp => LatentPath::Linear,
            Walk::Slerp => LatentPath::Spherical,
        };
        let walk = Interpolation {
            rows: self.rows,
            steps: self.steps,
            path,
            seed: self.seed,
            classes,
            truncation: self.truncation,
        };
        let images = kiln_core::interpolate(model.as_ref(), &walk, &device)
            .with_context(|| self.checkpoint.display().to_string())?;
        write_file(&self.out, &grid_png(images, self.steps).map_err(anyhow::Error::msg)?)?;
        eprintln!("kiln: wrote {} strips of {} to {}", self.rows, self.steps, self.out.display());
        Ok(())
    }
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
    fn npy_header_is_aligned() {
        let bytes = npy_f32(&[2, 1, 3, 3], &[0.5; 18]);
        assert_eq!(&bytes[..6], b"\x93NUMPY");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert_eq!(bytes.len(), 10 + header_len + 18 * 4);
    }
}
