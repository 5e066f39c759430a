//! Resampling of image batches `[N, C, H, W]`, with PyTorch's and PIL's numbers.
//!
//! Every filter is separable, so a resize is `Y = R_h · X · R_wᵀ` per channel, where `R_h`
//! (`[out_h, in_h]`) and `R_w` (`[out_w, in_w]`) are small weight matrices built on the host from
//! the filter (and applied band by band, skipping their zeros). Applying them as matrix products
//! is exact for all filters — antialiasing
//! included, since an antialiased resize is just a wider filter — differentiable without any
//! backward code of our own (the gradient is `R_hᵀ · G · R_w`), and runs on the backend's GEMM.
//! burn's own `interpolate` has no antialias and no scale-factor coordinate mapping, so it is
//! used only where it gives PyTorch's numbers and is faster (see `burn_interpolate_mode`).
//! Outside autodiff, a backend may register tap loops for the same matrices
//! ([`crate::fused::ResampleKernel`]; kiln-cpu does).
//!
//! The weights follow PyTorch's CPU kernels (`aten/src/ATen/native/cpu/UpSampleKernel.cpp` and
//! `UpSample.h`): `nearest` and `nearest-exact` index arithmetic, `bilinear`/`bicubic` with
//! half-pixel or aligned corners, and the antialiased path of `F.interpolate(antialias=True)`,
//! whose weights are those of PIL's `Image.resize` (`libImaging/Resample.c`). Nearest filters
//! use an index gather instead of a matrix: same numbers, no multiply.

use core::fmt;
use core::str::FromStr;

use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Int, Tensor, TensorData, TensorPrimitive, backend::Backend, module};

use crate::error::{KernelError, Result};
use crate::fused::{self, ResampleKernel};

/// The coefficient `a` of the Keys cubic convolution kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cubic {
    /// `a = -0.75`, PyTorch's `bicubic` without antialias (and OpenCV's `INTER_CUBIC`).
    Torch,
    /// `a = -0.5`, PIL's `BICUBIC`; PyTorch also uses it for `bicubic` with `antialias=True`.
    Pil,
}

impl Cubic {
    /// The kernel coefficient `a`.
    pub fn a(self) -> f64 {
        match self {
            Cubic::Torch => -0.75,
            Cubic::Pil => -0.5,
        }
    }
}

/// A resampling filter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Filter {
    /// PyTorch `nearest`: source index `floor(dst · scale)` (shifts the image by half a pixel).
    Nearest,
    /// PyTorch `nearest-exact`: source index `floor((dst + 0.5) · scale)`, PIL's `NEAREST`.
    NearestExact,
    /// Linear interpolation along each axis (triangle filter).
    Bilinear,
    /// Cubic convolution with the given coefficient.
    Bicubic(Cubic),
    /// Box average over the source cells each output cell covers (PyTorch `area`, that is
    /// `adaptive_avg_pool2d`); antialiased by construction when downscaling.
    Area,
}

impl Filter {
    /// The filter's name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Filter::Nearest => "nearest",
            Filter::NearestExact => "nearest-exact",
            Filter::Bilinear => "bilinear",
            Filter::Bicubic(Cubic::Torch) => "bicubic",
            Filter::Bicubic(Cubic::Pil) => "bicubic-pil",
            Filter::Area => "area",
        }
    }

    /// All filters, in the order the CLI lists them.
    pub const ALL: [Filter; 6] = [
        Filter::Nearest,
        Filter::NearestExact,
        Filter::Bilinear,
        Filter::Bicubic(Cubic::Torch),
        Filter::Bicubic(Cubic::Pil),
        Filter::Area,
    ];
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Filter {
    type Err = KernelError;

    fn from_str(s: &str) -> Result<Self> {
        Filter::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| KernelError::OutOfRange {
            what: "filter",
            allowed: "one of nearest, nearest-exact, bilinear, bicubic, bicubic-pil, area",
            value: s.to_string(),
        })
    }
}

/// What size the output should have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResizeTarget {
    /// An explicit output size.
    Size {
        /// Output height.
        height: usize,
        /// Output width.
        width: usize,
    },
    /// Scale factors; the output size is `floor(input · factor)` and, as in PyTorch with
    /// `recompute_scale_factor=None`, the coordinate mapping uses `1 / factor` rather than
    /// `input / output` (they differ when `input · factor` is not an integer).
    Scale {
        /// Height factor.
        height: f64,
        /// Width factor.
        width: f64,
    },
}

impl ResizeTarget {
    /// The output size `[height, width]` for an input of `[height, width]`.
    pub fn output_size(&self, input: [usize; 2]) -> Result<[usize; 2]> {
        check_positive("input height", input[0])?;
        check_positive("input width", input[1])?;
        match *self {
            ResizeTarget::Size { height, width } => {
                check_positive("output height", height)?;
                check_positive("output width", width)?;
                Ok([height, width])
            }
            ResizeTarget::Scale { height, width } => {
                Ok([scaled_size("height", input[0], height)?, scaled_size("width", input[1], width)?])
            }
        }
    }

    /// The user's scale factors, which PyTorch's coordinate mapping uses when given.
    fn factors(&self) -> [Option<f64>; 2] {
        match *self {
            ResizeTarget::Size { .. } => [None, None],
            ResizeTarget::Scale { height, width } => [Some(height), Some(width)],
        }
    }
}

fn check_positive(what: &'static str, value: usize) -> Result<()> {
    if value == 0 { Err(KernelError::ZeroSize { what, value }) } else { Ok(()) }
}

fn scaled_size(what: &'static str, input: usize, scale: f64) -> Result<usize> {
    if !(scale.is_finite() && scale > 0.0) {
        return Err(KernelError::BadScale { what: "scale factor", value: scale });
    }
    // PyTorch: `math.floor(float(input.size(i + 2)) * scale_factors[i])`.
    let out = (input as f64 * scale).floor();
    if out < 1.0 {
        return Err(KernelError::EmptyOutput { what, input, scale });
    }
    Ok(out as usize)
}

/// How to resample: the filter and PyTorch's two flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResizeOptions {
    /// The filter.
    pub filter: Filter,
    /// Map the centres of the corner pixels onto each other (PyTorch `align_corners=True`)
    /// instead of the corners of the image. Only for bilinear and bicubic.
    pub align_corners: bool,
    /// Widen the filter by the downscaling factor so that it low-passes before sampling
    /// (PyTorch `antialias=True`, PIL's resampling). Only for bilinear and bicubic; it has no
    /// effect on upscaling beyond PIL's treatment of the borders.
    pub antialias: bool,
}

impl ResizeOptions {
    /// Options for `filter` with `align_corners = false` and `antialias = false`, PyTorch's
    /// defaults.
    pub fn new(filter: Filter) -> Self {
        Self { filter, align_corners: false, antialias: false }
    }

    /// Sets `align_corners`.
    pub fn with_align_corners(mut self, align_corners: bool) -> Self {
        self.align_corners = align_corners;
        self
    }

    /// Sets `antialias`.
    pub fn with_antialias(mut self, antialias: bool) -> Self {
        self.antialias = antialias;
        self
    }

    fn validate(&self) -> Result<()> {
        let smooth = matches!(self.filter, Filter::Bilinear | Filter::Bicubic(_));
        if self.align_corners && !smooth {
            return Err(KernelError::Unsupported { option: "align_corners", filter: self.filter.name() });
        }
        if self.antialias && !smooth {
            return Err(KernelError::Unsupported { option: "antialias", filter: self.filter.name() });
        }
        Ok(())
    }
}

/// Resizes a batch of images `[N, C, H, W]` to `[N, C, H', W']`.
///
/// Differentiable on an autodiff backend. Errors on a zero or non-finite size or scale, and on
/// `align_corners`/`antialias` with a filter that has no such option (as PyTorch does).
pub fn resize<B: Backend>(x: Tensor<B, 4>, target: ResizeTarget, options: &ResizeOptions) -> Result<Tensor<B, 4>> {
    options.validate()?;
    let [n, c, h, w] = x.dims();
    let [oh, ow] = target.output_size([h, w])?;
    let [fh, fw] = target.factors();
    let device = x.device();

    let differentiating = B::ad_enabled(&device);
    if let Some(mode) = burn_interpolate_mode(options, target, [h, w], [oh, ow]).filter(|_| !differentiating) {
        let mut burn_options = InterpolateOptions::new(mode);
        burn_options.align_corners = options.align_corners;
        return Ok(module::interpolate(x, [oh, ow], burn_options));
    }

    if matches!(options.filter, Filter::Nearest | Filter::NearestExact) {
        let exact = options.filter == Filter::NearestExact;
        let rows = index_tensor::<B>(&nearest_indices(h, oh, fh, exact), &device);
        let cols = index_tensor::<B>(&nearest_indices(w, ow, fw, exact), &device);
        return Ok(x.select(2, rows).select(3, cols));
    }

    let (mh, mw) = (resample_matrix(h, oh, fh, options)?, resample_matrix(w, ow, fw, options)?);
    // A backend's tap loops (kiln-cpu's), where nothing is differentiated.
    if !differentiating
        && let Some(ResampleKernel(kernel)) = fused::find::<ResampleKernel<B>>()
        && let Some(y) = kernel(&x.clone().into_primitive().tensor(), &mh, &mw, [oh, ow])
    {
        return Ok(Tensor::from_primitive(TensorPrimitive::Float(y)));
    }
    let rh = AxisPlan::new(mh, oh, h);
    let rw = AxisPlan::new(mw, ow, w);
    let p = n * c;
    let x = x.reshape([p, h, w]);
    // Multiply-adds of each order; the first product dominates when one axis shrinks a lot.
    let width_first = p * h * rw.cost + p * ow * rh.cost;
    let height_first = p * w * rh.cost + p * oh * rw.cost;
    let y = if width_first <= height_first {
        let y = rw.apply_last(x.reshape([p * h, w])).reshape([p, h, ow]); // [P, H, W']
        rh.apply_middle(y) // [P, H', W']
    } else {
        let y = rh.apply_middle(x); // [P, H', W]
        rw.apply_last(y.reshape([p * oh, w])).reshape([p, oh, ow])
    };
    Ok(y.reshape([n, c, oh, ow]))
}

/// burn's `interpolate`, where it computes PyTorch's numbers (checked by the golden tests on
/// Flex and NdArray) and is faster than the matrix products: `nearest` at any size, and bilinear
/// and PyTorch bicubic without antialias when neither axis grows (a few taps per output, where
/// a dense or banded product wastes most of its work; on Flex 256 → 64 takes 8 ms instead of 34).
/// Only for an explicit output size: with scale factors PyTorch maps coordinates by
/// `1 / factor`, which burn, given only the output size, does not. And only outside autodiff:
/// some backends lack its backward (NdArray panics on the bicubic one), while the matrix
/// products differentiate everywhere.
fn burn_interpolate_mode(
    options: &ResizeOptions,
    target: ResizeTarget,
    input: [usize; 2],
    output: [usize; 2],
) -> Option<InterpolateMode> {
    if !matches!(target, ResizeTarget::Size { .. }) || options.antialias {
        return None;
    }
    let shrinking = output[0] <= input[0] && output[1] <= input[1];
    match options.filter {
        Filter::Nearest => Some(InterpolateMode::Nearest),
        Filter::Bilinear if shrinking => Some(InterpolateMode::Bilinear),
        Filter::Bicubic(Cubic::Torch) if shrinking => Some(InterpolateMode::Bicubic),
        _ => None,
    }
}

/// One axis of a separable resample, split into bands.
///
/// A resampling matrix is banded: output `o` reads only the few inputs under its filter. A dense
/// product spends most of its multiply-adds on zeros (for 256 → 64 antialiased bilinear, 16 384
/// per row where 576 are non-zero), so the outputs are cut into blocks, each multiplied with only
/// the input columns its rows touch, and the blocks' results concatenated. Every weight the
/// dense matrix holds is still used, so the numbers are the same.
struct AxisPlan {
    /// `(out_start, out_len, in_start, in_len, weights [out_len · in_len])`.
    blocks: Vec<(usize, usize, usize, usize, Vec<f32>)>,
    out: usize,
    /// Multiply-adds per row of the other axes.
    cost: usize,
}

impl AxisPlan {
    fn new(matrix: Vec<f32>, out: usize, input: usize) -> Self {
        // The input columns each output row touches.
        let ranges: Vec<(usize, usize)> = matrix
            .chunks(input)
            .map(|row| {
                let lo = row.iter().position(|&v| v != 0.0).unwrap_or(0);
                let hi = row.iter().rposition(|&v| v != 0.0).map_or(1, |i| i + 1);
                (lo, hi.max(lo + 1))
            })
            .collect();
        let split = |block: usize| -> Vec<(usize, usize, usize, usize)> {
            (0..out)
                .step_by(block)
                .map(|o0| {
                    let len = block.min(out - o0);
                    let lo = ranges[o0..o0 + len].iter().map(|r| r.0).min().unwrap_or(0);
                    let hi = ranges[o0..o0 + len].iter().map(|r| r.1).max().unwrap_or(input);
                    (o0, len, lo, hi - lo)
                })
                .collect()
        };
        // Each extra block costs a product call and a concatenation, and small products run far
        // below the GEMM's peak: price a block as 64 more columns per output row, and keep
        // blocks at 32 rows or more (measured on Flex: smaller blocks were slower than dense).
        let price =
            |blocks: &[(usize, usize, usize, usize)]| -> usize { blocks.iter().map(|b| b.1 * (b.3 + 64)).sum() };
        let mut best = split(out);
        let mut block = out / 2;
        while block >= 32 {
            let candidate = split(block);
            if price(&candidate) < price(&best) {
                best = candidate;
            }
            block /= 2;
        }
        let cost = best.iter().map(|b| b.1 * b.3).sum();
        let blocks = best
            .into_iter()
            .map(|(o0, olen, i0, ilen)| {
                let mut w = Vec::with_capacity(olen * ilen);
                for o in o0..o0 + olen {
                    w.extend_from_slice(&matrix[o * input + i0..o * input + i0 + ilen]);
                }
                (o0, olen, i0, ilen, w)
            })
            .collect();
        Self { blocks, out, cost }
    }

    /// A block's weights, on the device and in the float type of `x`.
    fn weights<B: Backend, const D: usize>(w: &[f32], shape: [usize; 2], x: &Tensor<B, D>) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(w.to_vec(), shape), (&x.device(), x.dtype()))
    }

    /// `[R, in]` → `[R, out]`.
    fn apply_last<B: Backend>(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [rows, input] = x.dims();
        let parts: Vec<Tensor<B, 2>> = self
            .blocks
            .iter()
            .map(|(_, olen, i0, ilen, w)| {
                let w = Self::weights(w, [*olen, *ilen], &x);
                let xs = if *ilen == input { x.clone() } else { x.clone().narrow(1, *i0, *ilen) };
                xs.matmul(w.transpose()) // [R, olen]
            })
            .collect();
        let y = if parts.len() == 1 { parts.into_iter().next().expect("one block") } else { Tensor::cat(parts, 1) };
        debug_assert_eq!(y.dims(), [rows, self.out]);
        y
    }

    /// `[P, in, C]` → `[P, out, C]`.
    fn apply_middle<B: Backend>(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let input = x.dims()[1];
        let parts: Vec<Tensor<B, 3>> = self
            .blocks
            .iter()
            .map(|(_, olen, i0, ilen, w)| {
                let w = Self::weights(w, [*olen, *ilen], &x);
                let xs = if *ilen == input { x.clone() } else { x.clone().narrow(1, *i0, *ilen) };
                w.unsqueeze::<3>().matmul(xs) // [P, olen, C]
            })
            .collect();
        if parts.len() == 1 { parts.into_iter().next().expect("one block") } else { Tensor::cat(parts, 1) }
    }
}

fn index_tensor<B: Backend>(indices: &[i64], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(indices.to_vec(), [indices.len()]), device)
}

/// PyTorch's `compute_scales_value` in the `float` precision of its kernels: `1 / factor` when a
/// factor was given, else `input / output`.
fn nearest_scale(input: usize, output: usize, factor: Option<f64>) -> f32 {
    match factor {
        Some(f) => (1.0 / f) as f32,
        None => input as f32 / output as f32,
    }
}

/// Source indices of PyTorch's `nearest` (`exact = false`) or `nearest-exact` filter.
pub fn nearest_indices(input: usize, output: usize, factor: Option<f64>, exact: bool) -> Vec<i64> {
    let scale = nearest_scale(input, output, factor);
    let offset = if exact { 0.5f32 } else { 0.0 };
    (0..output)
        .map(|i| {
            let src = ((i as f32 + offset) * scale).floor() as i64;
            src.min(input as i64 - 1)
        })
        .collect()
}

/// PyTorch's `area_pixel_compute_scale`.
fn area_pixel_scale(input: usize, output: usize, factor: Option<f64>, align: bool) -> f64 {
    if align {
        if output > 1 { (input as f64 - 1.0) / (output as f64 - 1.0) } else { 0.0 }
    } else {
        match factor {
            Some(f) => 1.0 / f,
            None => input as f64 / output as f64,
        }
    }
}

fn cubic1(x: f64, a: f64) -> f64 {
    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
}

fn cubic2(x: f64, a: f64) -> f64 {
    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
}

/// The resampling matrix `[output, input]` (row-major) of one axis, as `f32`.
///
/// `factor` is the user's scale factor when one was given (see [`ResizeTarget::Scale`]). Each row
/// holds the weights of one output sample; rows of the smooth filters sum to one. Nearest
/// filters give one-hot rows.
pub fn resample_matrix(input: usize, output: usize, factor: Option<f64>, options: &ResizeOptions) -> Result<Vec<f32>> {
    options.validate()?;
    check_positive("input size", input)?;
    check_positive("output size", output)?;
    let mut m = vec![0.0f64; output * input];
    let last = input as i64 - 1;
    let clamp = |i: i64| i.clamp(0, last) as usize;
    match options.filter {
        Filter::Nearest | Filter::NearestExact => {
            let exact = options.filter == Filter::NearestExact;
            for (o, &i) in nearest_indices(input, output, factor, exact).iter().enumerate() {
                m[o * input + i as usize] = 1.0;
            }
        }
        Filter::Area => {
            // adaptive_avg_pool: cell o covers [floor(o·in/out), ceil((o+1)·in/out)).
            for o in 0..output {
                let start = (o * input) / output;
                let end = ((o + 1) * input).div_ceil(output);
                let wgt = 1.0 / (end - start) as f64;
                for i in start..end {
                    m[o * input + i] = wgt;
                }
            }
        }
        Filter::Bilinear | Filter::Bicubic(_) if options.antialias => {
            antialias_weights(&mut m, input, output, factor, options);
        }
        Filter::Bilinear => {
            let scale = area_pixel_scale(input, output, factor, options.align_corners);
            for o in 0..output {
                let src =
                    if options.align_corners { scale * o as f64 } else { (scale * (o as f64 + 0.5) - 0.5).max(0.0) };
                let (i0, t) = guard_index_and_lambda(src, input);
                let i1 = if i0 < last { i0 + 1 } else { i0 };
                m[o * input + clamp(i0)] += 1.0 - t;
                m[o * input + clamp(i1)] += t;
            }
        }
        Filter::Bicubic(cubic) => {
            let a = cubic.a();
            let scale = area_pixel_scale(input, output, factor, options.align_corners);
            for o in 0..output {
                let src = if options.align_corners { scale * o as f64 } else { scale * (o as f64 + 0.5) - 0.5 };
                let (i0, t) = guard_index_and_lambda(src, input);
                let coeffs = [cubic2(t + 1.0, a), cubic1(t, a), cubic1(1.0 - t, a), cubic2(2.0 - t, a)];
                for (k, wgt) in coeffs.into_iter().enumerate() {
                    m[o * input + clamp(i0 - 1 + k as i64)] += wgt;
                }
            }
        }
    }
    Ok(m.into_iter().map(|v| v as f32).collect())
}

/// PyTorch's `guard_index_and_lambda`: the integer part, capped at the last index, and the
/// fractional part clamped to `[0, 1]`.
fn guard_index_and_lambda(src: f64, input: usize) -> (i64, f64) {
    let i = (src.floor() as i64).min(input as i64 - 1);
    let t = (src - i as f64).clamp(0.0, 1.0);
    (i, t)
}

/// PIL's (and PyTorch's `_upsample_*_aa`) weights: the filter stretched by the downscaling
/// factor, centred on each output cell, truncated at the borders and renormalised.
fn antialias_weights(m: &mut [f64], input: usize, output: usize, factor: Option<f64>, options: &ResizeOptions) {
    let (half_width, a) = match options.filter {
        Filter::Bicubic(c) => (2.0, c.a()),
        _ => (1.0, 0.0),
    };
    let filter = |x: f64| -> f64 {
        let x = x.abs();
        match options.filter {
            Filter::Bicubic(_) if x < 1.0 => cubic1(x, a),
            Filter::Bicubic(_) if x < 2.0 => cubic2(x, a),
            Filter::Bicubic(_) => 0.0,
            _ => (1.0 - x).max(0.0),
        }
    };
    let scale = area_pixel_scale(input, output, factor, options.align_corners);
    let (support, inv_scale) = if scale >= 1.0 { (half_width * scale, 1.0 / scale) } else { (half_width, 1.0) };
    for o in 0..output {
        let center = scale * (o as f64 + 0.5);
        // C's `(int64_t)` truncates toward zero; the max with 0 makes that a floor here.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(input as i64).max(0) as usize;
        let row = &mut m[o * input..(o + 1) * input];
        let mut total = 0.0;
        for (i, r) in row.iter_mut().enumerate().take(xmax).skip(xmin) {
            let wgt = filter((i as f64 - center + 0.5) * inv_scale);
            *r = wgt;
            total += wgt;
        }
        if total != 0.0 {
            for r in &mut row[xmin..xmax.max(xmin)] {
                *r /= total;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_filter_name() {
        for f in Filter::ALL {
            assert_eq!(f.name().parse::<Filter>(), Ok(f));
        }
        assert!("lanczos".parse::<Filter>().is_err());
    }

    #[test]
    fn smooth_rows_sum_to_one() {
        for filter in [Filter::Bilinear, Filter::Bicubic(Cubic::Torch), Filter::Bicubic(Cubic::Pil), Filter::Area] {
            for (input, output) in [(7, 3), (3, 7), (16, 5), (5, 16), (1, 4), (4, 1)] {
                for aa in [false, true] {
                    if aa && filter == Filter::Area {
                        continue;
                    }
                    let opts = ResizeOptions::new(filter).with_antialias(aa);
                    let m = resample_matrix(input, output, None, &opts).expect("valid sizes");
                    for row in m.chunks(input) {
                        let s: f32 = row.iter().sum();
                        assert!((s - 1.0).abs() < 1e-6, "{filter} aa={aa} {input}->{output}");
                    }
                }
            }
        }
    }

    #[test]
    fn large_resamples_are_cut_into_bands() {
        let opts = ResizeOptions::new(Filter::Bilinear).with_antialias(true);
        let plan = AxisPlan::new(resample_matrix(256, 64, None, &opts).expect("valid"), 64, 256);
        assert!(plan.blocks.len() > 1);
        assert!(plan.cost < 64 * 256 * 2 / 3, "{}", plan.cost);
        // Every output row is covered once, in order.
        let mut next = 0;
        for b in &plan.blocks {
            assert_eq!(b.0, next);
            next += b.1;
        }
        assert_eq!(next, 64);
    }

    #[test]
    fn rejects_bad_arguments() {
        let opts = ResizeOptions::new(Filter::Bilinear);
        assert!(matches!(resample_matrix(0, 3, None, &opts), Err(KernelError::ZeroSize { .. })));
        let target = ResizeTarget::Scale { height: 0.1, width: 1.0 };
        assert!(matches!(target.output_size([4, 4]), Err(KernelError::EmptyOutput { .. })));
        let target = ResizeTarget::Scale { height: f64::NAN, width: 1.0 };
        assert!(target.output_size([4, 4]).is_err());
        let bad = ResizeOptions::new(Filter::Nearest).with_align_corners(true);
        assert!(matches!(resample_matrix(4, 3, None, &bad), Err(KernelError::Unsupported { .. })));
    }
}
