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
use kiln_data::{ImageSet, gather};
use kiln_device::{DeviceInfo, Job};
use kiln_train::{grid_png, image_png};

use crate::experiment::{DataFormat, DataSpec, Experiment};
use crate::family::registry;

/// `kiln sample`: draw samples from a trained model (a conditional model: of the classes asked for).
#[derive(clap::Args, Debug)]
pub struct Sample {
    /// A run directory written by `kiln train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// How many samples. A grid holds at most 4,096; a directory or a .npy file any number
    /// (drawn and written in batches, so memory does not grow with N).
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// A .png file (one grid), a directory (one PNG per sample), or a .npy file (for a
    /// conditional model with `x.labels.npy` beside it: each sample's class, for `kiln eval
    /// --labels`).
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
    /// How a token model draws (a DALL·E or a VQ-VAE prior).
    #[command(flatten)]
    pub tokens: TokenArgs,
    /// How an iterative sampler runs (a diffusion or flow model).
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

/// The knobs of iterative samplers (diffusion and flow models).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SamplerArgs {
    /// Sampler steps (diffusion: DDIM 50 by default, up to the model's T; flow: Heun 25).
    #[arg(long)]
    pub steps: Option<usize>,
    /// The sampler: `ddim` or `ddpm` (ancestral, all T steps by default) for a diffusion model,
    /// `heun` or `euler` for a flow model.
    #[arg(long)]
    pub sampler: Option<String>,
    /// DDIM's η in [0, 1]: 0 deterministic (the default), 1 as noisy as ancestral sampling.
    #[arg(long)]
    pub eta: Option<f64>,
}

/// The knobs of models that draw tokens, shared by `kiln sample` and `kiln generate`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TokenArgs {
    /// Softmax temperature of each token (1 = the model's distribution; lower is safer, less varied).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Draw each token from the k likeliest only.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Draw each token from the smallest set whose probability reaches p (nucleus sampling).
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Classifier-free guidance scale: 1 = plain conditional sampling, above 1 follows the prompt
    /// or class more closely (3 is usual); models trained with caption or label dropout only.
    #[arg(long)]
    pub guidance: Option<f64>,
}

impl TokenArgs {
    /// `request` with these options set.
    fn apply(&self, request: SampleRequest) -> SampleRequest {
        SampleRequest {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            guidance: self.guidance,
            ..request
        }
    }
}

/// `kiln generate`: images from text prompts, one grid row per prompt.
#[derive(clap::Args, Debug)]
pub struct Generate {
    /// A run directory of a text-to-image model (the DALL·E family).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Prompts, e.g. "grinning face"; each gets one row of the grid.
    pub prompts: Vec<String>,
    /// A text file of prompts, one per line (blank lines skipped), after any given as arguments.
    #[arg(long, value_name = "FILE")]
    pub prompts_file: Option<PathBuf>,
    /// Candidates per prompt (the grid's columns).
    #[arg(long, default_value_t = 8)]
    pub n: usize,
    /// The grid to write (.png).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the first prompt's draws; prompt i uses seed + i.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub tokens: TokenArgs,
}

impl Generate {
    /// Every prompt: the arguments, then the file's lines.
    fn all_prompts(&self) -> Result<Vec<String>> {
        let mut prompts = self.prompts.clone();
        if let Some(file) = &self.prompts_file {
            let text = std::fs::read_to_string(file).with_context(|| format!("--prompts-file {}", file.display()))?;
            prompts.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
        }
        ensure!(!prompts.is_empty(), "no prompt: give one or more as arguments, or --prompts-file FILE");
        Ok(prompts)
    }
}

impl Job for Generate {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device, _info: &DeviceInfo) -> Result<()> {
        ensure!(self.n > 0, "--n 0: ask for at least one image per prompt");
        ensure!(has_ext(&self.out, "png"), "--out {}: kiln generate writes one .png grid", self.out.display());
        check_writable(&self.out)?;
        let prompts = self.all_prompts()?;
        let model = registry::open::<B::InnerBackend>(&self.checkpoint, &device)?;
        let mut rows = Vec::with_capacity(prompts.len());
        for (i, prompt) in prompts.iter().enumerate() {
            let request = SampleRequest {
                prompt: Some(prompt.clone()),
                ..SampleRequest::new(self.n, self.seed.wrapping_add(i as u64))
            };
            let samples =
                model.sample(&self.tokens.apply(request), &device).with_context(|| format!("prompt {prompt:?}"))?;
            finite_values(samples.images.clone(), &self.checkpoint, i * self.n)?;
            rows.push(samples.images);
        }
        let grid = Tensor::cat(rows, 0); // [prompts·n, C, H, W]
        write_file(&self.out, &grid_png(grid, self.n).map_err(anyhow::Error::msg)?)?;
        eprintln!("kiln: wrote {} prompts × {} images to {}", prompts.len(), self.n, self.out.display());
        Ok(())
    }
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

/// Samples drawn per call of the model: the memory `kiln sample` needs is this many images (and,
/// for a model that records its process, their frames), whatever `--n` is.
const SAMPLE_BATCH: usize = 256;

/// The largest grid `kiln sample` lays out as one PNG (64×64 tiles of 28×28 is ~3.4 MB of pixels).
const MAX_GRID: usize = 4096;

impl Job for Sample {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device, _info: &DeviceInfo) -> Result<()> {
        ensure!(self.n > 0, "--n 0: ask for at least one sample");
        // The output's kind, checked before any work: a .png grid, a .npy array, or a directory.
        let format = match (self.format, self.out.extension().map(|e| e.to_string_lossy().to_ascii_lowercase())) {
            (_, Some(e)) if e == "npy" => Format::Npy,
            (Format::Npy, _) => bail!("--out {}: --format npy writes a .npy file", self.out.display()),
            (Format::Png, Some(e)) if e != "png" && !self.out.is_dir() => bail!(
                "--out {}: kiln sample writes a .png grid, a .npy array, or PNGs into a directory (a path without \
                 an extension); not .{e}",
                self.out.display()
            ),
            (Format::Png, _) => Format::Png,
        };
        let grid = format == Format::Png && has_ext(&self.out, "png");
        ensure!(
            !grid || self.n <= MAX_GRID,
            "--n {}: a grid holds at most {MAX_GRID} images; write them to a directory (--out DIR/) or a .npy file",
            self.n
        );
        if grid || format == Format::Npy {
            check_writable(&self.out)?;
        } else {
            std::fs::create_dir_all(&self.out)
                .with_context(|| format!("{}: cannot create directory", self.out.display()))?;
            check_writable(&self.out.join("sample-00000.png"))?;
        }
        let model = registry::open::<B::InnerBackend>(&self.checkpoint, &device)?;
        let classes = layout_classes(self.n, COLUMNS, &self.classes, model.card().classes);
        let mut npy = None;
        let (mut grid_images, mut first_frames) = (Vec::new(), None);
        for (b, start) in (0..self.n).step_by(SAMPLE_BATCH).enumerate() {
            let len = SAMPLE_BATCH.min(self.n - start);
            // Batch 0 draws with the seed itself, so N ≤ SAMPLE_BATCH gives what one call would.
            let seed = self.seed.wrapping_add((b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let classes = if classes.is_empty() { Vec::new() } else { classes[start..start + len].to_vec() };
            let request = SampleRequest { classes, truncation: self.truncation, ..SampleRequest::new(len, seed) };
            let request = SampleRequest {
                steps: self.sampler.steps,
                sampler: self.sampler.sampler.clone(),
                eta: self.sampler.eta,
                ..self.tokens.apply(request)
            };
            let samples = model.sample(&request, &device)?;
            let images = samples.images; // [len, C, H, W]
            let values = finite_values(images.clone(), &self.checkpoint, start)?;
            match format {
                Format::Npy => {
                    let writer = match &mut npy {
                        Some(writer) => writer,
                        None => {
                            let [_, c, h, w] = images.dims();
                            npy.insert(NpyWriter::create(&self.out, &[self.n, c, h, w])?)
                        }
                    };
                    writer.append(&values)?;
                }
                Format::Png if grid => {
                    grid_images.push(images);
                    if first_frames.is_none() {
                        first_frames = samples.frames;
                    }
                }
                Format::Png => {
                    for i in 0..len {
                        let png = image_png(images.clone().narrow(0, i, 1)).map_err(anyhow::Error::msg)?;
                        write_file(&self.out.join(format!("sample-{:05}.png", start + i)), &png)?;
                    }
                }
            }
        }
        if let Some(writer) = npy {
            writer.finish()?;
            if !classes.is_empty() {
                // A conditional model's classes, in the samples' order, for `kiln eval --labels`.
                let path = labels_path(&self.out);
                let mut bytes = npy_header("<i8", &[classes.len()]);
                bytes.extend(classes.iter().flat_map(|&c| (c as i64).to_le_bytes()));
                write_file(&path, &bytes)?;
                eprintln!("kiln: wrote the class of each sample to {}", path.display());
            }
        }
        if grid {
            write_file(&self.out, &grid_png(Tensor::cat(grid_images, 0), COLUMNS).map_err(anyhow::Error::msg)?)?;
            if let Some(frames) = first_frames {
                write_frames(&self.out, frames)?;
            }
        }
        eprintln!("kiln: wrote {} samples to {}", self.n, self.out.display());
        Ok(())
    }
}

/// `x.labels.npy` beside `x.npy`: where `kiln sample` writes a conditional model's classes.
pub fn labels_path(samples: &Path) -> PathBuf {
    let stem = samples.file_stem().map_or_else(|| "samples".into(), |s| s.to_string_lossy().into_owned());
    samples.with_file_name(format!("{stem}.labels.npy"))
}

/// Fails now, before minutes of sampling or scoring, if `path` (a file to write) cannot be: its
/// folder (or the nearest one that exists, which atomic writes would create the rest under) must
/// be a directory this process can create files in.
pub fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("--out {}: is a directory; give a file name", path.display());
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut existing = parent;
    while !existing.exists() {
        match existing.parent() {
            Some(up) if !up.as_os_str().is_empty() => existing = up,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    ensure!(existing.is_dir(), "--out {}: {} is not a directory", path.display(), existing.display());
    let probe = existing.join(format!(".kiln-write-check-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => bail!("--out {}: cannot write in {}: {e}", path.display(), existing.display()),
    }
}

/// A `.npy` file written as batches arrive — header first, from the final shape — into a
/// temporary file renamed into place by [`NpyWriter::finish`], so a failure leaves no partial
/// file under the name and memory stays one batch.
struct NpyWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    expected: usize,
    written: usize,
}

impl NpyWriter {
    fn create(path: &Path, shape: &[usize]) -> Result<Self> {
        use std::io::Write;
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(name);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("{}: cannot create directory", parent.display()))?;
        }
        let file = std::fs::File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        let mut file = std::io::BufWriter::new(file);
        file.write_all(&npy_header("<f4", shape)).with_context(|| tmp.display().to_string())?;
        Ok(Self { path: path.to_path_buf(), tmp, file, expected: shape.iter().product(), written: 0 })
    }

    fn append(&mut self, values: &[f32]) -> Result<()> {
        use std::io::Write;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.written += values.len();
        self.file.write_all(&bytes).with_context(|| self.tmp.display().to_string())
    }

    fn finish(mut self) -> Result<()> {
        use std::io::Write;
        ensure!(self.written == self.expected, "internal: wrote {} of {} values", self.written, self.expected);
        self.file.flush().with_context(|| self.tmp.display().to_string())?;
        self.file.get_ref().sync_all().with_context(|| self.tmp.display().to_string())?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("{}: cannot rename into place", self.path.display()))
    }
}

impl Drop for NpyWriter {
    fn drop(&mut self) {
        // After a successful finish the temporary name is gone; otherwise it is ours and useless.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Samples of at most this many images get a strip of their process (rows of the strip PNG).
const STRIP_ROWS: usize = 8;
/// Hundredths of a second each GIF frame shows; the last holds longer so the result is seen.
const GIF_DELAY: u16 = 8;
const GIF_FINAL_DELAY: u16 = 150;

/// For a model whose samples come with the frames of their process (`[T, N, C, H, W]`), writes
/// beside `grid` (`x.png`) `x-steps.png` — up to [`STRIP_ROWS`] samples, one per row, their `T`
/// frames left to right — and `x.gif`, an endlessly looping animation with one frame per step,
/// each the grid of all samples at that step.
fn write_frames<B: Backend>(grid: &Path, frames: Tensor<B, 5>) -> Result<()> {
    let [t, n, c, h, w] = frames.dims();
    let stem = grid.file_stem().unwrap_or_default().to_string_lossy().into_owned();
    let rows = STRIP_ROWS.min(n);
    let strip = frames.clone().narrow(1, 0, rows).swap_dims(0, 1).reshape([rows * t, c, h, w]); // [rows·T, C, H, W]
    let strip_path = grid.with_file_name(format!("{stem}-steps.png"));
    write_file(&strip_path, &grid_png(strip, t).map_err(anyhow::Error::msg)?)?;
    let gif_path = grid.with_extension("gif");
    write_file(&gif_path, &gif_bytes(frames, COLUMNS).with_context(|| gif_path.display().to_string())?)?;
    eprintln!(
        "kiln: wrote {t} frames of the process as {} ({rows} samples by {t} frames) and {} ({t} frames, looping)",
        strip_path.display(),
        gif_path.display()
    );
    Ok(())
}

/// An animated GIF (looping forever) of frames `[T, N, C, H, W]` in `[0, 1]` (C = 1 or 3): frame
/// `t` is the grid of the `N` images at step `t`, `columns` to a row, 2-pixel white gaps as in
/// the PNG grids. Grey images use an exact 256-level grey palette; colour ones are quantised per
/// frame (NeuQuant).
fn gif_bytes<B: Backend>(frames: Tensor<B, 5>, columns: usize) -> Result<Vec<u8>> {
    const GAP: usize = 2;
    let [t, n, c, h, w] = frames.dims();
    ensure!(c == 1 || c == 3, "a GIF needs 1 or 3 channels, got {c}");
    let columns = columns.clamp(1, n.max(1));
    let rows = n.div_ceil(columns);
    let (gw, gh) = (columns * (w + GAP) + GAP, rows * (h + GAP) + GAP);
    let (Ok(gw16), Ok(gh16)) = (u16::try_from(gw), u16::try_from(gh)) else {
        bail!("a {gw}×{gh} grid is larger than a GIF can be (65535 pixels a side); ask for fewer samples");
    };
    let values: Vec<f32> = frames
        .clamp(0.0, 1.0)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| anyhow::anyhow!("reading frames: {e:?}"))?;
    let grey: Vec<u8> = (0..=255u8).flat_map(|v| [v, v, v]).collect();
    let mut out = Vec::new();
    {
        let mut encoder = gif::Encoder::new(&mut out, gw16, gh16, if c == 1 { &grey } else { &[] })?;
        encoder.set_repeat(gif::Repeat::Infinite)?;
        let image = c * h * w;
        for f in 0..t {
            let mut canvas = vec![255u8; gw * gh * c];
            for i in 0..n {
                let (x0, y0) = ((i % columns) * (w + GAP) + GAP, (i / columns) * (h + GAP) + GAP);
                let pixels = &values[(f * n + i) * image..(f * n + i + 1) * image];
                for ch in 0..c {
                    for y in 0..h {
                        for x in 0..w {
                            let v = pixels[(ch * h + y) * w + x];
                            canvas[((y0 + y) * gw + x0 + x) * c + ch] = (v * 255.0).round() as u8;
                        }
                    }
                }
            }
            let mut frame = if c == 1 {
                gif::Frame::from_indexed_pixels(gw16, gh16, canvas, None)
            } else {
                gif::Frame::from_rgb_speed(gw16, gh16, &canvas, 10)
            };
            frame.delay = if f + 1 == t { GIF_FINAL_DELAY } else { GIF_DELAY };
            encoder.write_frame(&frame)?;
        }
    }
    Ok(out)
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

/// The images `kiln reconstruct` shows: the test split's first `n`, or for a one-split set
/// (emoji, a captioned folder) `n` images spread evenly over it (the emoji sheet's first ones are
/// all one category).
fn reconstruct_inputs(data: &DataSpec, n: usize) -> Result<(ImageSet, Vec<usize>)> {
    let loaded = data.load()?;
    let set = (*loaded.test).clone();
    let n = n.min(set.len);
    let picks = if loaded.one_split { (0..n).map(|i| i * set.len / n.max(1)).collect() } else { (0..n).collect() };
    Ok((set, picks))
}

impl Job for Reconstruct {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device, _info: &DeviceInfo) -> Result<()> {
        ensure!(self.n > 0, "--n 0: ask for at least one image");
        ensure!(has_ext(&self.out, "png"), "--out {}: kiln reconstruct writes one .png grid", self.out.display());
        check_writable(&self.out)?;
        let model = registry::open::<B::InnerBackend>(&self.checkpoint, &device)?;
        let exp = match run_experiment(&self.checkpoint) {
            Some(path) => Some(Experiment::load(&path).context("reading the run's data format")?),
            None => None,
        };
        let spec = match (self.data, exp) {
            (Some(dir), Some(exp)) => DataSpec { path: dir, ..exp.data },
            (Some(dir), None) => DataSpec { format: DataFormat::Mnist, path: dir, size: None, augment: None },
            (None, Some(exp)) => exp.data,
            (None, None) => {
                bail!("{}: no experiment.toml to find the run's data in; pass --data DIR", self.checkpoint.display())
            }
        };
        let (set, picks) =
            reconstruct_inputs(&spec, self.n).with_context(|| format!("--data {}", spec.path.display()))?;
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
        ensure!(has_ext(&self.out, "png"), "--out {}: kiln interpolate writes one .png grid", self.out.display());
        check_writable(&self.out)?;
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

/// The values of a batch of samples (`[N, C, H, W]`, the first numbered `first`), refused if any
/// is NaN or infinite: such a picture is a broken model's, and is never written.
fn finite_values<B: Backend>(images: Tensor<B, 4>, checkpoint: &Path, first: usize) -> Result<Vec<f32>> {
    let n = images.dims()[0].max(1);
    let values = to_vec(images)?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        bail!(
            "{}: the model produced a non-finite value (NaN or infinity) in sample {}; its weights are broken \
             (a diverged run?), so nothing was written",
            checkpoint.display(),
            first + i / (values.len() / n).max(1)
        );
    }
    Ok(values)
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

/// The header of a NumPy `.npy` (format 1.0) file of `descr` values (`<f4`: little-endian
/// float32, `<i8`: int64) with the given C-order shape; the values follow it.
fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = shape.iter().map(|d| format!("{d}, ")).collect::<String>();
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned() {
        let bytes = npy_header("<f4", &[2, 1, 3, 3]);
        assert_eq!(&bytes[..6], b"\x93NUMPY");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert_eq!(bytes.len(), 10 + header_len);
    }

    #[test]
    fn npy_written_in_batches_is_whole_or_absent() {
        let dir = std::env::temp_dir().join(format!("kiln-npy-{}", std::process::id()));
        let path = dir.join("x.npy");
        let mut w = NpyWriter::create(&path, &[3, 1, 1, 2]).unwrap();
        w.append(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        w.append(&[5.0, 6.0]).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header_len = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert!(String::from_utf8_lossy(&bytes[..header_len]).contains("'shape': (3, 1, 1, 2, )"));
        assert_eq!(&bytes[header_len..header_len + 4], &1.0f32.to_le_bytes());
        assert_eq!(bytes.len(), header_len + 6 * 4);
        // Dropped before finishing (an error mid-way): no file under the name, no temporary.
        let half = dir.join("half.npy");
        let mut w = NpyWriter::create(&half, &[2, 1, 1, 1]).unwrap();
        w.append(&[1.0]).unwrap();
        drop(w);
        assert!(!half.exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "only x.npy is left");
        assert!(check_writable(&dir.join("new/sub/y.png")).is_ok());
        let err = check_writable(&path.join("y.png")).unwrap_err().to_string();
        assert!(err.contains("x.npy is not a directory"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
