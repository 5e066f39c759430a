//! `kiln resize`: resize PNG/JPEG images with kiln-kernels' resampling (PyTorch's and PIL's
//! filters), writing PNGs.
//!
//! Each image is resized on its own as a `[1, C, H, W]` tensor in `[0, 1]`, keeping its channels
//! (gray, gray+alpha, RGB, RGBA) and bit depth (8 or 16 bits). Images with alpha are resampled
//! premultiplied, as PIL does, so that fully transparent pixels do not bleed their colour into
//! the edges; nearest filters copy pixels and need no such care. Outputs are written to a
//! temporary file beside the target and renamed over it, so a failed or interrupted run never
//! leaves a truncated PNG behind.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail, ensure};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::{ColorType, DynamicImage};
use kiln_data::{PngCompression, PngSamples, png_bytes};
use kiln_kernels::{Filter, ResizeOptions, ResizeTarget, resize};

/// Arguments of `kiln resize`.
#[derive(clap::Args, Debug)]
pub struct ResizeArgs {
    /// Images to resize (PNG or JPEG).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where to write: a `.png` file when there is one input, otherwise a directory that gets
    /// one `<stem>.png` per input (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Output size as WIDTHxHEIGHT, e.g. 64x64.
    #[arg(long, conflicts_with = "scale", required_unless_present = "scale")]
    pub size: Option<Size>,
    /// Scale factor, one for both axes (0.5) or WIDTHxHEIGHT factors (0.5x0.25); the output is
    /// floor(input · factor), as in PyTorch.
    #[arg(long)]
    pub scale: Option<Scale>,
    /// Filter: nearest, nearest-exact, bilinear, bicubic (a = -0.75, PyTorch), bicubic-pil
    /// (a = -0.5, PIL) or area (box average).
    #[arg(long, default_value = "bilinear")]
    pub filter: Filter,
    /// Low-pass before downscaling (PyTorch's antialias=True, PIL's resize); bilinear and
    /// bicubic only.
    #[arg(long)]
    pub antialias: bool,
    /// Align the centres of the corner pixels (PyTorch's align_corners=True); bilinear and
    /// bicubic only.
    #[arg(long)]
    pub align_corners: bool,
}

/// An output size, `WIDTHxHEIGHT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| format!("{s:?}: expected WIDTHxHEIGHT, e.g. 64x64"))?;
        let parse = |v: &str, what: &str| -> std::result::Result<usize, String> {
            match v.trim().parse::<usize>() {
                Ok(0) | Err(_) => Err(format!("{s:?}: {what} must be a positive integer")),
                Ok(n) => Ok(n),
            }
        };
        Ok(Size { width: parse(w, "width")?, height: parse(h, "height")? })
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// Scale factors, `F` or `FWxFH`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    /// Width factor.
    pub width: f64,
    /// Height factor.
    pub height: f64,
}

impl FromStr for Scale {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let parse = |v: &str| -> std::result::Result<f64, String> {
            match v.trim().parse::<f64>() {
                Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
                _ => Err(format!("{s:?}: a scale factor must be a positive number")),
            }
        };
        match s.split_once(['x', 'X']) {
            Some((w, h)) => Ok(Scale { width: parse(w)?, height: parse(h)? }),
            None => {
                let f = parse(s)?;
                Ok(Scale { width: f, height: f })
            }
        }
    }
}

/// The largest output `kiln resize` makes, in pixels: 100 megapixels (10,000 × 10,000). The
/// resize runs on float tensors, so one such RGBA image is 1.6 GB per buffer and a few buffers are
/// alive at once; beyond this a typo (`--size 640000x480`) would exhaust memory instead of failing.
pub const MAX_OUTPUT_PIXELS: usize = 100_000_000;

/// Refuses an output of `width`×`height` beyond [`MAX_OUTPUT_PIXELS`] (or PNG's 2³¹ − 1 a side).
fn check_output_size(width: usize, height: usize, what: &str) -> Result<()> {
    let pixels = width.saturating_mul(height);
    ensure!(
        pixels <= MAX_OUTPUT_PIXELS && width <= i32::MAX as usize && height <= i32::MAX as usize,
        "{what}: a {width}x{height} output is {pixels} pixels; kiln resize makes at most {MAX_OUTPUT_PIXELS} \
         (100 megapixels, several GB of float buffers)"
    );
    ensure!(width > 0 && height > 0, "{what}: the output would be {width}x{height}, an empty image");
    Ok(())
}

/// Runs `kiln resize` on `device`.
pub fn run<B: Backend>(args: &ResizeArgs, device: &B::Device) -> Result<()> {
    let target = match (args.size, args.scale) {
        (Some(size), None) => {
            // Checked before any input is read.
            check_output_size(size.width, size.height, &format!("--size {size}"))?;
            ResizeTarget::Size { height: size.height, width: size.width }
        }
        (None, Some(scale)) => ResizeTarget::Scale { height: scale.height, width: scale.width },
        _ => bail!("give exactly one of --size and --scale"),
    };
    let options = ResizeOptions::new(args.filter).with_antialias(args.antialias).with_align_corners(args.align_corners);
    let outputs = output_paths(&args.inputs, &args.out)?;
    // Every error below names the file it concerns.
    for (input, output) in args.inputs.iter().zip(&outputs) {
        resize_file::<B>(input, output, target, &options, device)?;
    }
    match outputs.as_slice() {
        [one] => eprintln!("kiln: wrote {}", one.display()),
        many => eprintln!("kiln: wrote {} images into {}", many.len(), args.out.display()),
    }
    Ok(())
}

/// One output path per input: `out` itself for a single input and a `.png` `out`, else
/// `out/<stem>.png`, refusing two inputs that would write the same file.
fn output_paths(inputs: &[PathBuf], out: &Path) -> Result<Vec<PathBuf>> {
    let is_png = out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if let Some(ext) = out.extension().filter(|_| !is_png && !out.is_dir()) {
        bail!(
            "--out {}: kiln resize writes .png files (one .png, or a directory of them); not .{}",
            out.display(),
            ext.to_string_lossy()
        );
    }
    if is_png {
        ensure!(
            inputs.len() == 1,
            "{}: a .png output takes one input, got {}; give a directory instead",
            out.display(),
            inputs.len()
        );
        return Ok(vec![out.to_path_buf()]);
    }
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create output directory", out.display()))?;
    let mut seen = HashSet::new();
    inputs
        .iter()
        .map(|input| {
            let stem = input.file_stem().with_context(|| format!("{}: no file name", input.display()))?;
            let path = out.join(Path::new(stem).with_extension("png"));
            ensure!(seen.insert(path.clone()), "{}: another input also writes {}", input.display(), path.display());
            Ok(path)
        })
        .collect()
}

fn resize_file<B: Backend>(
    input: &Path,
    output: &Path,
    target: ResizeTarget,
    options: &ResizeOptions,
    device: &B::Device,
) -> Result<()> {
    let img = image::ImageReader::open(input)
        .with_context(|| format!("{}: cannot open", input.display()))?
        .with_guessed_format()
        .with_context(|| format!("{}: cannot read", input.display()))?
        .decode()
        .with_context(|| format!("{}: not a readable PNG or JPEG image", input.display()))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    if let ResizeTarget::Scale { height: fh, width: fw } = target {
        let out = |n: usize, f: f64| (n as f64 * f).floor().min(usize::MAX as f64) as usize;
        check_output_size(
            out(width, fw),
            out(height, fh),
            &format!("{}: scaled from {width}x{height}", input.display()),
        )?;
    }
    let deep = matches!(img.color(), ColorType::L16 | ColorType::La16 | ColorType::Rgb16 | ColorType::Rgba16)
        || matches!(img.color(), ColorType::Rgb32F | ColorType::Rgba32F);
    let (channels, pixels) = to_f32(&img);
    let has_alpha = channels == 2 || channels == 4;
    let premultiply = has_alpha && !matches!(options.filter, Filter::Nearest | Filter::NearestExact);

    // Interleaved HWC in [0, 1] → [1, C, H, W].
    let x = Tensor::<B, 3>::from_data(TensorData::new(pixels, [height, width, channels]), device)
        .permute([2, 0, 1])
        .unsqueeze::<4>();
    let x = if premultiply { multiply_alpha(x) } else { x };
    let y = resize(x, target, options).with_context(|| format!("{}: {width}x{height} image", input.display()))?;
    let y = if premultiply { divide_alpha(y) } else { y };
    let [_, _, oh, ow] = y.dims();
    let hwc = y.squeeze_dim::<3>(0).permute([1, 2, 0]).clamp(0.0, 1.0);
    let values = hwc
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{}: reading the resized image: {e:?}", input.display()))?;
    write_png(output, &values, ow as u32, oh as u32, channels, deep)
}

/// The image as interleaved `f32` in `[0, 1]`, keeping gray/alpha channels.
fn to_f32(img: &DynamicImage) -> (usize, Vec<f32>) {
    let color = img.color();
    match (color.has_color(), color.has_alpha()) {
        (false, false) => (1, img.to_luma32f().into_raw()),
        (false, true) => (2, img.to_luma_alpha32f().into_raw()),
        (true, false) => (3, img.to_rgb32f().into_raw()),
        (true, true) => (4, img.to_rgba32f().into_raw()),
    }
}

fn split_alpha<B: Backend>(x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [n, c, h, w] = x.dims();
    let color = x.clone().slice([0..n, 0..c - 1, 0..h, 0..w]);
    let alpha = x.slice([0..n, c - 1..c, 0..h, 0..w]);
    (color, alpha)
}

fn multiply_alpha<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let (color, alpha) = split_alpha(x);
    Tensor::cat(vec![color * alpha.clone(), alpha], 1)
}

fn divide_alpha<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let (color, alpha) = split_alpha(x);
    // Where alpha is 0 the colour is 0 too; any finite divisor keeps it 0.
    let safe = alpha.clone().clamp_min(1e-6);
    Tensor::cat(vec![color / safe, alpha], 1)
}

/// Writes `values` (interleaved, `[0, 1]`) as an 8- or 16-bit PNG, atomically.
fn write_png(path: &Path, values: &[f32], width: u32, height: u32, channels: usize, deep: bool) -> Result<()> {
    let (width, height) = (width as usize, height as usize);
    let png = if deep {
        let samples: Vec<u16> = values.iter().map(|v| (v * 65535.0).round() as u16).collect();
        png_bytes(width, height, channels, PngSamples::U16(&samples), PngCompression::Fast)
    } else {
        let samples: Vec<u8> = values.iter().map(|v| (v * 255.0).round() as u8).collect();
        png_bytes(width, height, channels, PngSamples::U8(&samples), PngCompression::Fast)
    }
    .with_context(|| format!("{}: cannot encode PNG", path.display()))?;
    kiln_core::atomic_write(path, &png)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_and_scales() {
        assert_eq!("64x32".parse::<Size>(), Ok(Size { width: 64, height: 32 }));
        assert!("0x32".parse::<Size>().is_err());
        assert!("64".parse::<Size>().is_err());
        assert_eq!("0.5".parse::<Scale>(), Ok(Scale { width: 0.5, height: 0.5 }));
        assert_eq!("2x0.25".parse::<Scale>(), Ok(Scale { width: 2.0, height: 0.25 }));
        assert!("-1".parse::<Scale>().is_err());
        assert!("nan".parse::<Scale>().is_err());
    }
}
