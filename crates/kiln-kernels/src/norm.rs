//! Batch and group normalisation with a per-image affine transform, for the GANs' batch norm and
//! the diffusion U-Net's group norm.
//!
//! Both are the same computation over different groups of a `[N, C, H, W]` tensor — batch norm
//! takes each channel over the batch and the image, group norm each image's `G` groups of
//! `C / G` channels — followed by `γ`, `β` per image and channel. Composed from tensor ops that
//! is two reductions, a subtraction, a square, a square root, a division and the affine pair
//! forward, and each of those again backward: about twenty passes over the activations per
//! layer. A backend that registers a [`NormKernel`] (kiln-cpu does) runs the whole layer as one
//! autodiff node instead, three passes forward and two backward; every other backend, and
//! inference, runs the composed ops below.

use crate::fused::{self, NormKernel};
use burn::tensor::{Tensor, TensorData, TensorPrimitive, backend::Backend};

/// The fused kernel's result for `x`, if `B` has one that applies: `y` and the per-group mean
/// and (biased) variance.
fn fused<B: Backend>(
    x: &Tensor<B, 4>,
    gamma: &Tensor<B, 2>,
    beta: &Tensor<B, 2>,
    groups: Option<usize>,
    eps: f64,
) -> Option<(Tensor<B, 4>, Vec<f32>, Vec<f32>)> {
    let NormKernel(kernel) = fused::find::<NormKernel<B>>()?;
    let primitive = |t: &Tensor<B, 2>| t.clone().into_primitive().tensor();
    let (y, mean, var) =
        kernel(&x.clone().into_primitive().tensor(), &primitive(gamma), &primitive(beta), groups, eps)?;
    Some((Tensor::from_primitive(TensorPrimitive::Float(y)), mean, var))
}

/// Batch normalisation with the batch's own statistics (training mode): each channel of `x`
/// `[N, C, H, W]` normalised over `N·H·W` values, then scaled by `gamma` and shifted by `beta`,
/// both `[R, C]` with `R` = 1, or `R` = N for a row per image (conditional batch norm).
///
/// Returns `y` and the batch's per-channel mean and biased variance `[C]`, detached, for the
/// running averages.
pub fn batch_norm<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 2>,
    beta: Tensor<B, 2>,
    eps: f64,
) -> (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 1>) {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    if let Some((y, mean, var)) = fused(&x, &gamma, &beta, None, eps) {
        let stat = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [c]), &device);
        return (y, stat(mean), stat(var));
    }
    // The per-channel operands are laid out [N, C, 1, 1] (or [N, C, 1]) rather than left to
    // broadcast from [1, C, 1, 1]: burn-flex has SIMD kernels for a scalar per (n, c) row but
    // walks a batch-broadcast operand element by element. The copies are N·C values.
    let flat = x.clone().reshape([n, c, h * w]);
    let count = (n * h * w) as f64;
    let mean = flat.clone().sum_dim(2).sum_dim(0).div_scalar(count); // [1, C, 1]
    let centred = flat - mean.clone().repeat_dim(0, n); // [N, C, HW]
    let var = centred.square().sum_dim(2).sum_dim(0).div_scalar(count); // [1, C, 1]
    let stats = (mean.clone().detach().reshape([c]), var.clone().detach().reshape([c]));
    let y = normalize_with(x, mean.reshape([c]), var.reshape([c]), gamma, beta, eps);
    (y, stats.0, stats.1)
}

/// `(x − mean)/√(var + eps)·γ + β` with given per-channel statistics `[C]` (batch norm's
/// running averages at inference); `gamma` and `beta` as in [`batch_norm`].
pub fn normalize_with<B: Backend>(
    x: Tensor<B, 4>,
    mean: Tensor<B, 1>,
    var: Tensor<B, 1>,
    gamma: Tensor<B, 2>,
    beta: Tensor<B, 2>,
    eps: f64,
) -> Tensor<B, 4> {
    let [n, c, _, _] = x.dims();
    let rows = gamma.dims()[0];
    let (mean, var) = (mean.reshape([1, c, 1, 1]), var.reshape([1, c, 1, 1]));
    let scale = gamma.reshape([rows, c, 1, 1]) / var.add_scalar(eps).sqrt(); // [R, C, 1, 1]
    let shift = beta.reshape([rows, c, 1, 1]) - mean * scale.clone(); // [R, C, 1, 1]
    let (scale, shift) = if rows == n { (scale, shift) } else { (scale.repeat_dim(0, n), shift.repeat_dim(0, n)) }; // [N, C, 1, 1]
    x * scale + shift // [N, C, H, W]
}

/// Group normalisation (Wu & He 2018): each image's `groups` groups of `C / groups` channels
/// normalised over their values, then `gamma`, `beta` `[C]` per channel when given.
///
/// `groups` must divide `C`.
pub fn group_norm<B: Backend>(
    x: Tensor<B, 4>,
    groups: usize,
    gamma: Option<Tensor<B, 1>>,
    beta: Option<Tensor<B, 1>>,
    eps: f64,
) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let device = x.device();
    let row = |p: Option<Tensor<B, 1>>, fill: f32| {
        p.map(|p| p.reshape([1, c])).unwrap_or_else(|| Tensor::full([1, c], fill, &device))
    };
    if fused::find::<NormKernel<B>>().is_some() {
        let (g, s) = (row(gamma.clone(), 1.0), row(beta.clone(), 0.0));
        if let Some((y, _, _)) = fused(&x, &g, &s, Some(groups), eps) {
            return y;
        }
    }
    let n = c / groups * h * w;
    let grouped = x.reshape([b, groups, n]); // [B, G, C/G·H·W]
    let mean = grouped.clone().sum_dim(2) / n as f64; // [B, G, 1]
    let centered = grouped - mean; // [B, G, n]
    let var = centered.clone().square().sum_dim(2) / n as f64; // [B, G, 1]
    let normed = (centered / var.add_scalar(eps).sqrt()).reshape([b, c, h, w]); // [B, C, H, W]
    // [B, C, 1, 1] operands, for the reason given in `batch_norm`.
    let per_image = |p: Tensor<B, 1>| p.reshape([1, c]).repeat_dim(0, b).reshape([b, c, 1, 1]);
    match (gamma, beta) {
        (Some(scale), Some(shift)) => normed * per_image(scale) + per_image(shift),
        (Some(scale), None) => normed * per_image(scale),
        (None, Some(shift)) => normed + per_image(shift),
        (None, None) => normed,
    }
}
