//! Sub-pixel convolution (Shi et al. 2016, arXiv:1609.05158): pixel shuffle and its inverse,
//! and ICNR initialisation (Aitken et al. 2017, arXiv:1707.02937), which burn lacks.
//!
//! Channel order follows PyTorch's `F.pixel_shuffle`: input channel `c·r² + i·r + j` becomes
//! output pixel `(h·r + i, w·r + j)` of channel `c`.

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Tensor, backend::Backend};

use crate::error::KernelError;

// `Result` is spelled out: burn's `Config` derive expands to code that names `Result`.

/// `[N, C·r², H, W]` → `[N, C, H·r, W·r]`.
pub fn pixel_shuffle<B: Backend>(x: Tensor<B, 4>, r: usize) -> Result<Tensor<B, 4>, KernelError> {
    let [n, cr2, h, w] = x.dims();
    if r == 0 {
        return Err(KernelError::ZeroSize { what: "pixel shuffle factor", value: r });
    }
    if cr2 % (r * r) != 0 {
        return Err(KernelError::ShapeMismatch {
            what: "pixel shuffle channels",
            expected: format!("a multiple of {}", r * r),
            got: cr2.to_string(),
        });
    }
    let c = cr2 / (r * r);
    Ok(x.reshape([n * c, r, r, h, w]) // [N·C, i, j, H, W]
        .permute([0, 3, 1, 4, 2]) // [N·C, H, i, W, j]
        .reshape([n, c, h * r, w * r]))
}

/// `[N, C, H·r, W·r]` → `[N, C·r², H, W]`, the inverse of [`pixel_shuffle`].
pub fn pixel_unshuffle<B: Backend>(x: Tensor<B, 4>, r: usize) -> Result<Tensor<B, 4>, KernelError> {
    let [n, c, hr, wr] = x.dims();
    if r == 0 {
        return Err(KernelError::ZeroSize { what: "pixel unshuffle factor", value: r });
    }
    if hr % r != 0 || wr % r != 0 {
        return Err(KernelError::ShapeMismatch {
            what: "pixel unshuffle spatial size",
            expected: format!("multiples of {r}"),
            got: format!("{hr}×{wr}"),
        });
    }
    let (h, w) = (hr / r, wr / r);
    Ok(x.reshape([n * c, h, r, w, r]) // [N·C, H, i, W, j]
        .permute([0, 2, 4, 1, 3]) // [N·C, i, j, H, W]
        .reshape([n, c * r * r, h, w]))
}

/// An ICNR weight `[C·r², in, kh, kw]`: a kernel `[C, in, kh, kw]` drawn from `init`, each
/// output channel repeated `r²` times in a row, so that the convolution followed by
/// [`pixel_shuffle`] starts out as a nearest-neighbour upsampling of a plain convolution and has
/// no checkerboard artefacts.
pub fn icnr<B: Backend>(
    shape: [usize; 4],
    r: usize,
    init: &Initializer,
    device: &B::Device,
) -> Result<Tensor<B, 4>, KernelError> {
    let [out, cin, kh, kw] = shape;
    if r == 0 || out % (r * r) != 0 {
        return Err(KernelError::ShapeMismatch {
            what: "ICNR output channels",
            expected: format!("a multiple of r² = {}", r * r),
            got: out.to_string(),
        });
    }
    let c = out / (r * r);
    let sub: Tensor<B, 4> = init.init_with([c, cin, kh, kw], Some(cin * kh * kw), Some(c * kh * kw), device).val();
    Ok(sub.unsqueeze_dim::<5>(1).expand([c, r * r, cin, kh, kw]).reshape([out, cin, kh, kw]))
}

/// Configuration of [`SubPixelConv2d`]: a `kernel`×`kernel` "same" convolution to
/// `channels_out · r²` channels, ICNR-initialised, then a pixel shuffle by `r`.
#[derive(Config, Debug)]
pub struct SubPixelConv2dConfig {
    /// Input channels.
    pub channels_in: usize,
    /// Output channels (after the shuffle).
    pub channels_out: usize,
    /// Upscaling factor `r`.
    pub scale: usize,
    /// Kernel size (odd, padded to keep the size).
    #[config(default = 3)]
    pub kernel_size: usize,
    /// Initialiser of the ICNR sub-kernel (Kaiming normal, as the ICNR paper).
    #[config(default = "Initializer::KaimingNormal{gain:core::f64::consts::SQRT_2,fan_out_only:false}")]
    pub initializer: Initializer,
}

impl SubPixelConv2dConfig {
    /// Builds the layer on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<SubPixelConv2d<B>, KernelError> {
        let k = self.kernel_size;
        let out = self.channels_out * self.scale * self.scale;
        let mut conv = Conv2dConfig::new([self.channels_in, out], [k, k])
            .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
            .init(device);
        let weight = icnr([out, self.channels_in, k, k], self.scale, &self.initializer, device)?;
        conv.weight = Param::from_tensor(weight);
        // A zero bias keeps the start an exact nearest-neighbour upsampling.
        conv.bias = Some(Param::from_tensor(Tensor::zeros([out], device)));
        Ok(SubPixelConv2d { conv, scale: self.scale })
    }
}

/// Convolution then pixel shuffle: `[N, in, H, W]` → `[N, out, H·r, W·r]`.
#[derive(Module, Debug)]
pub struct SubPixelConv2d<B: Backend> {
    /// The convolution to `out · r²` channels.
    pub conv: Conv2d<B>,
    scale: usize,
}

impl<B: Backend> SubPixelConv2d<B> {
    /// `[N, in, H, W]` → `[N, out, H·r, W·r]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = self.conv.forward(x); // [N, out·r², H, W]
        let [n, cr2, h, w] = y.dims();
        let r = self.scale;
        let c = cr2 / (r * r);
        // The channel count was checked when the layer was built.
        y.reshape([n * c, r, r, h, w]).permute([0, 3, 1, 4, 2]).reshape([n, c, h * r, w * r])
    }
}
