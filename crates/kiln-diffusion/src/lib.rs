//! Diffusion and flow-matching image generators for kiln: one U-Net, two ways to turn noise into
//! images.
//!
//! ```text
//! DiffusionConfig ──init(&device)──▶ Diffusion<B> ──loss(x0, labels)──▶ DiffusionLoss { loss, mse }
//!                                                ──denoise(noise, labels, &SamplerConfig)──▶ images + frames
//! ```
//! - **DDPM** (Ho et al. 2020, arXiv:2006.11239): a fixed Markov chain adds Gaussian noise over
//!   `T` steps; the U-Net learns to predict the noise `ε` (or `v`, Salimans & Ho 2022) from the
//!   noised image and the step. Sampled ancestrally (DDPM) or with DDIM (Song et al. 2020,
//!   arXiv:2010.02502) in far fewer steps, deterministic at `η = 0`.
//! - **Rectified flow** (Liu et al. 2022, arXiv:2209.03003; Lipman et al.'s flow matching): the
//!   straight line `x_t = (1 − t)·x0 + t·ε`, the U-Net learns its velocity `ε − x0`, and sampling
//!   integrates the ODE from `t = 1` to `0` (Euler or Heun).
//!
//! A conditional model takes a class per image and is trained with label dropout, so it also
//! learns the unconditional model that classifier-free guidance (Ho & Salimans 2022,
//! arXiv:2207.12598) contrasts with. Images are in `[−1, 1]`. The crate is usable on its own:
//! build a [`DiffusionConfig`] (or take a preset), call `init` on any burn backend's device, train
//! with [`Diffusion::loss`] (or the [`DiffusionTask`] that `kiln-train` drives), sample with
//! [`Diffusion::denoise`], and save or load with [`Diffusion::save`] / [`Diffusion::load`].
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub(crate) mod diffusion;
mod schedule;
mod task;
pub(crate) mod unet;

pub use diffusion::{
    CONFIG_FILE, Diffusion, DiffusionConfig, DiffusionError, DiffusionLoss, FAMILY, FORMAT, LossDraws, Noised,
    Prediction, Process, Sampler, SamplerConfig, Sampling, WEIGHTS_FILE, Weighting,
};
pub use schedule::{BetaSchedule, MAX_BETA, NoiseSchedule};
pub use task::{DiffusionTask, DiffusionTaskConfig};
pub use unet::{UNet, UNetConfig, timestep_features};

#[cfg(test)]
mod tests;
