//! Convolutional variational autoencoders for kiln.
//!
//! ```text
//! VaeConfig ──init(&device)──▶ Vae<B> ──encode──▶ Posterior { mean, log_var }
//!                                      ◀─decode── z ~ N(0, I), the fitted LatentMixture, or a
//!                                                 posterior sample
//! ```
//! The crate is usable on its own: build a [`VaeConfig`] (or take a preset), call `init` on any
//! burn backend's device, train with [`Vae::loss`] (or the [`VaeTask`] that `kiln-train` drives),
//! and save or load weights as safetensors with [`Vae::save`] / [`Vae::load`]. After training,
//! [`Vae::fit_prior`] fits the [`LatentMixture`] that sampling then draws from ([`prior`] says why).
#![warn(missing_docs)]

pub mod prior;
mod task;
mod vae;

pub use prior::{LatentMixture, PRIOR_FILE};
pub use task::{VaeTask, VaeTaskConfig};
pub use vae::{CONFIG_FILE, FAMILY, FORMAT, Likelihood, Posterior, Vae, VaeConfig, VaeError, VaeLoss, WEIGHTS_FILE};

#[cfg(test)]
mod tests;

/// The README's Rust snippets, run as doc tests: the promise that each model crate is usable on
/// its own is checked, not assumed.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
