//! DRAW's Gaussian read and write attention (Gregor et al. 2015, "DRAW: A Recurrent Neural
//! Network For Image Generation", arXiv:1502.04623, section 3.2).
//!
//! An `N × N` grid of Gaussian filters, centred at `(g_X, g_Y)` with stride `δ` and variance
//! `σ²`, is applied separably: `read = γ · F_Y · x · F_Xᵀ` and
//! `write = (1/γ) · F_Yᵀ · w · F_X`. The five parameters come from a linear layer of the
//! decoder state. Coordinates follow the paper: pixel positions `a = 1..=A`, filter positions
//! `i = 1..=N`, so `g̃ = 0` centres the grid on the image.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, TensorPrimitive, backend::Backend};

use crate::fused::{self, FilterbankKernel};

/// The attention parameters of a batch, each `[B]`.
#[derive(Debug, Clone)]
pub struct FilterbankParams<B: Backend> {
    /// Grid centre, x (in pixels, `1..=A`).
    pub gx: Tensor<B, 1>,
    /// Grid centre, y (in pixels, `1..=B`).
    pub gy: Tensor<B, 1>,
    /// Isotropic variance of the Gaussians.
    pub sigma2: Tensor<B, 1>,
    /// Stride between filter centres.
    pub delta: Tensor<B, 1>,
    /// Intensity: `read` multiplies by it, `write` divides by it.
    pub gamma: Tensor<B, 1>,
}

impl<B: Backend> FilterbankParams<B> {
    /// Maps the raw linear output `[B, 5]` = `(g̃_X, g̃_Y, log σ², log δ̃, log γ)` to parameters
    /// for an image of `width` × `height` (`A` × `B` in the paper) and an `n` × `n` grid (eq.
    /// 22–24): `g_X = (A+1)/2 · (g̃_X + 1)`, `δ = (max(A, B) − 1)/(N − 1) · δ̃`.
    ///
    /// # Panics
    /// If `raw` is not `[B, 5]`.
    pub fn from_raw(raw: Tensor<B, 2>, width: usize, height: usize, n: usize) -> Self {
        let [b, five] = raw.dims();
        assert_eq!(five, 5, "DRAW attention parameters must be [B, 5]");
        let col = |i: usize| raw.clone().slice([0..b, i..i + 1]).reshape([b]);
        let a = width as f64;
        let bb = height as f64;
        let gx = col(0).add_scalar(1.0).mul_scalar((a + 1.0) / 2.0);
        let gy = col(1).add_scalar(1.0).mul_scalar((bb + 1.0) / 2.0);
        let sigma2 = col(2).exp();
        // With a 1×1 grid the stride is irrelevant; avoid dividing by N − 1 = 0.
        let stride_unit = (a.max(bb) - 1.0) / (n.max(2) as f64 - 1.0);
        let delta = col(3).exp().mul_scalar(stride_unit);
        let gamma = col(4).exp();
        Self { gx, gy, sigma2, delta, gamma }
    }
}

/// The filterbank matrices of a batch.
#[derive(Debug, Clone)]
pub struct Filterbanks<B: Backend> {
    /// `F_X`, `[B, N, A]` (rows sum to 1).
    pub fx: Tensor<B, 3>,
    /// `F_Y`, `[B, N, B]` (rows sum to 1).
    pub fy: Tensor<B, 3>,
}

/// Builds `F_X` `[B, N, width]` and `F_Y` `[B, N, height]` (eq. 25–26):
/// `F[i, a] ∝ exp(−(a − μ_i)² / 2σ²)` with `μ_i = g + (i − N/2 − 0.5)·δ`, each row normalised
/// to sum 1. A filter centred far off the image (possible when `δ̃ > 1` stretches the grid past
/// the borders) underflows to a row of zeros: `eps` bounds the divisor so that such a row stays
/// zero instead of becoming NaN.
pub fn filterbanks<B: Backend>(
    params: &FilterbankParams<B>,
    width: usize,
    height: usize,
    n: usize,
    eps: f64,
) -> Filterbanks<B> {
    let fx = axis_filterbank(&params.gx, &params.delta, &params.sigma2, width, n, eps);
    let fy = axis_filterbank(&params.gy, &params.delta, &params.sigma2, height, n, eps);
    Filterbanks { fx, fy }
}

fn axis_filterbank<B: Backend>(
    centre: &Tensor<B, 1>,
    delta: &Tensor<B, 1>,
    sigma2: &Tensor<B, 1>,
    size: usize,
    n: usize,
    eps: f64,
) -> Tensor<B, 3> {
    // A backend's one-node filterbank (kiln-cpu's): the composed one below is about fourteen
    // autodiff nodes per axis, and DRAW builds four axes per step.
    if let Some(FilterbankKernel(kernel)) = fused::find::<FilterbankKernel<B>>() {
        let p = |t: &Tensor<B, 1>| t.clone().into_primitive().tensor();
        if let Some(f) = kernel(&p(centre), &p(delta), &p(sigma2), n, size, eps) {
            return Tensor::from_primitive(TensorPrimitive::Float(f));
        }
    }
    let device = centre.device();
    let b = centre.dims()[0];
    // (i − N/2 − 0.5) for i = 1..=N.
    let offsets: Vec<f32> = (1..=n).map(|i| (i as f64 - n as f64 / 2.0 - 0.5) as f32).collect();
    let offsets = Tensor::<B, 1>::from_floats(offsets.as_slice(), &device).reshape([1, n, 1]);
    let positions: Vec<f32> = (1..=size).map(|a| a as f32).collect();
    let positions = Tensor::<B, 1>::from_floats(positions.as_slice(), &device).reshape([1, 1, size]);
    let mu = centre.clone().reshape([b, 1, 1]) + offsets * delta.clone().reshape([b, 1, 1]); // [B, N, 1]
    let two_var = sigma2.clone().reshape([b, 1, 1]).mul_scalar(2.0);
    let f = (positions - mu).square().neg().div(two_var).exp(); // [B, N, size]
    let z = f.clone().sum_dim(2).clamp_min(eps);
    f / z
}

/// Glimpse `γ · F_Y · x · F_Xᵀ`: `x` `[B, C, H, W]` → `[B, C, N, N]`.
pub fn read<B: Backend>(x: Tensor<B, 4>, banks: &Filterbanks<B>, gamma: Tensor<B, 1>) -> Tensor<B, 4> {
    let b = x.dims()[0];
    let fy = banks.fy.clone().unsqueeze_dim::<4>(1); // [B, 1, N, H]
    let fxt = banks.fx.clone().swap_dims(1, 2).unsqueeze_dim::<4>(1); // [B, 1, W, N]
    fy.matmul(x).matmul(fxt) * gamma.reshape([b, 1, 1, 1])
}

/// Write `(1/γ) · F_Yᵀ · w · F_X`: `w` `[B, C, N, N]` → `[B, C, H, W]`.
pub fn write<B: Backend>(w: Tensor<B, 4>, banks: &Filterbanks<B>, gamma: Tensor<B, 1>) -> Tensor<B, 4> {
    let b = w.dims()[0];
    let fyt = banks.fy.clone().swap_dims(1, 2).unsqueeze_dim::<4>(1); // [B, 1, H, N]
    let fx = banks.fx.clone().unsqueeze_dim::<4>(1); // [B, 1, N, W]
    fyt.matmul(w).matmul(fx) / gamma.reshape([b, 1, 1, 1])
}

/// Configuration of [`DrawAttention`]: one linear head from the decoder state to the five
/// parameters, for `width` × `height` images and `glimpse` × `glimpse` patches.
#[derive(Config, Debug)]
pub struct DrawAttentionConfig {
    /// Size of the decoder state `h_dec`.
    pub hidden: usize,
    /// Image width `A`.
    pub width: usize,
    /// Image height `B`.
    pub height: usize,
    /// Grid size `N`.
    pub glimpse: usize,
    /// Guard for the row normalisation of the filterbanks.
    #[config(default = 1e-8)]
    pub eps: f64,
}

impl DrawAttentionConfig {
    /// Builds the module on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> DrawAttention<B> {
        DrawAttention {
            params: LinearConfig::new(self.hidden, 5).init(device),
            width: self.width,
            height: self.height,
            glimpse: self.glimpse,
            eps: self.eps,
        }
    }
}

/// DRAW's read/write attention driven by a decoder state.
#[derive(Module, Debug)]
pub struct DrawAttention<B: Backend> {
    /// `W(h_dec)` → `(g̃_X, g̃_Y, log σ², log δ̃, log γ)`.
    pub params: Linear<B>,
    width: usize,
    height: usize,
    glimpse: usize,
    eps: f64,
}

impl<B: Backend> DrawAttention<B> {
    /// The parameters and filterbanks for decoder state `h` `[B, hidden]`.
    pub fn attend(&self, h: Tensor<B, 2>) -> (FilterbankParams<B>, Filterbanks<B>) {
        let params = FilterbankParams::from_raw(self.params.forward(h), self.width, self.height, self.glimpse);
        let banks = filterbanks(&params, self.width, self.height, self.glimpse, self.eps);
        (params, banks)
    }

    /// Reads an `N × N` glimpse: `x` `[B, C, H, W]`, `h` `[B, hidden]` → `[B, C, N, N]`.
    pub fn read(&self, x: Tensor<B, 4>, h: Tensor<B, 2>) -> Tensor<B, 4> {
        let (params, banks) = self.attend(h);
        read(x, &banks, params.gamma)
    }

    /// Writes an `N × N` patch onto the canvas: `w` `[B, C, N, N]`, `h` `[B, hidden]` →
    /// `[B, C, H, W]`.
    pub fn write(&self, w: Tensor<B, 4>, h: Tensor<B, 2>) -> Tensor<B, 4> {
        let (params, banks) = self.attend(h);
        write(w, &banks, params.gamma)
    }
}
