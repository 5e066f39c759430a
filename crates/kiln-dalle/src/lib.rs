//! A small DALL·E for kiln: captions to images through one causal transformer over text and
//! image tokens (Ramesh et al. 2021, arXiv:2102.12092).
//!
//! ```text
//! caption ──kiln-bpe──▶ text ids [L] ─┐
//!                                     ├─▶ Dalle (decoder-only transformer) ──▶ image codes [N]
//! image ──kiln-vqvae encode──▶ codes ─┘        (next-token loss; sampled       ──kiln-vqvae──▶ image
//!                                               token by token, KV cache)         decode
//! ```
//! Usable on its own: build a [`DalleConfig`], `init` it on any burn backend's device, train it
//! with [`Dalle::loss`] on [`TokenBatch`]es (or the [`DalleTask`] that `kiln-train` drives, with
//! caption dropout for classifier-free guidance), and draw with [`DalleGenerator::generate`]
//! (temperature, top-k, top-p, guidance; see [`sample`] for the guidance convention). With
//! `text_len = 0` the transformer is an unconditional prior over a VQ-VAE's codes.
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod dalle;
mod generator;
pub mod sample;
mod task;

use std::path::{Path, PathBuf};

pub use dalle::{Dalle, DalleConfig, DalleLoss, KvCache};
pub use generator::{BPE_FILE, CONFIG_FILE, DalleGenerator, FAMILY, FORMAT, VQVAE_DIR, WEIGHTS_FILE, sampling_of};
pub use task::{DalleParts, DalleTask, DalleTaskConfig, TokenBatch, TokenLoader, TokenSet, image_codes};

/// Errors of this crate: invalid configurations and unreadable or unwritable model files.
#[derive(Debug, thiserror::Error)]
pub enum DalleError {
    /// A configuration value is out of range.
    #[error("DALL·E config: {field} = {value}: {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// Its value, as written.
        value: String,
        /// Why it is wrong.
        reason: String,
    },
    /// A model file is missing, unreadable or does not fit.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Writing failed.
    #[error(transparent)]
    Save(#[from] kiln_core::SaveError),
    /// The image tokenizer could not be loaded or saved.
    #[error(transparent)]
    VqVae(#[from] kiln_vqvae::VqVaeError),
    /// The optimizer settings are invalid.
    #[error(transparent)]
    Optim(#[from] kiln_optim::OptimError),
}

impl DalleError {
    pub(crate) fn file(path: &Path, message: impl ToString) -> Self {
        Self::File { path: path.to_path_buf(), message: message.to_string() }
    }
}

#[cfg(test)]
mod tests;
