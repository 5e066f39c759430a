//! VQ-VAE for kiln: a convolutional autoencoder whose bottleneck is a grid of discrete codes.
//!
//! ```text
//! VqVaeConfig ──init(&device)──▶ VqVae<B> ──encode──▶ indices [N, h, w] (codes of a K-entry book)
//!                                          ◀─decode_indices──
//! ```
//! The crate is usable on its own: build a [`VqVaeConfig`] (or take a preset), call `init` on any
//! burn backend's device, train with [`VqVae::loss`] plus [`VqVae::ema_update`] (or the
//! [`VqVaeTask`] that `kiln-train` drives, which does both), and save or load as safetensors with
//! [`VqVae::save`] / [`VqVae::load`]. A VQ-VAE has no prior of its own: sampling needs a second
//! model trained over its codes.
#![warn(missing_docs)]

mod task;
mod vqvae;

pub use task::{VqVaeTask, VqVaeTaskConfig};
pub use vqvae::{CONFIG_FILE, FAMILY, FORMAT, NO_PRIOR, VqVae, VqVaeConfig, VqVaeError, VqVaeLoss, WEIGHTS_FILE};

#[cfg(test)]
mod tests;
