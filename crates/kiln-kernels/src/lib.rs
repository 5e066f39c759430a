//! Tensor kernels shared by kiln's models: resampling, pooling, attention, vector quantization,
//! DRAW's filterbanks, spectral normalization and sub-pixel convolution.
//!
//! Everything is generic over burn's `Backend` and differentiable on `Autodiff`. Where PyTorch
//! or PIL define the numbers (resizing, pooling, attention), the tests compare against values
//! they produced (`golden/make_golden.py`). Arguments that can come from a user (sizes, scale
//! factors, window geometry) are checked and reported as [`KernelError`].
#![warn(missing_docs)]

pub mod activation;
pub mod attention;
pub mod draw;
pub mod error;
pub mod fused;
pub mod norm;
pub mod pool;
pub mod resize;
pub mod self_attention;
pub mod spectral;
pub mod upsample;
pub mod vq;

pub use attention::{AttentionMask, SdpaOptions, attention_weights, scaled_dot_product_attention};
pub use error::{KernelError, Result};
pub use pool::{Pool2d, adaptive_avg_pool2d, avg_pool2d, max_pool2d, max_pool2d_with_indices, max_unpool2d};
pub use resize::{Cubic, Filter, ResizeOptions, ResizeTarget, resize};
pub use self_attention::{SelfAttention2d, SelfAttention2dConfig};
pub use spectral::{
    SnConv2d, SnConv2dConfig, SnLinear, SnLinearConfig, SpectralNorm, SpectralNormConfig, largest_singular_value,
};
pub use upsample::{SubPixelConv2d, SubPixelConv2dConfig, icnr, pixel_shuffle, pixel_unshuffle};

#[cfg(test)]
mod tests;
