//! DRAW, the recurrent generator that draws: Gregor et al. 2015, arXiv:1502.04623, for kiln.
//!
//! ```text
//! DrawConfig ──init(&device)──▶ Draw<B> ──loss(x)──▶ DrawLoss { loss, recon, kl }   (nats/image)
//!                                        ──generate(z [T, N, latent])──▶ canvases [T, N, C, H, W]
//! ```
//! An encoder LSTM reads the image (through a Gaussian glimpse, or whole), a decoder LSTM turns a
//! latent per step into a write onto a canvas, and after `T` steps the canvas is the image. The
//! crate is usable on its own: build a [`DrawConfig`] (or take a preset), call `init` on any burn
//! backend's device, train with [`Draw::loss`] (or the [`DrawTask`] that `kiln-train` drives), and
//! save or load it with [`Draw::save`] / [`Draw::load`].
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod draw;
mod lstm;
mod task;

pub use draw::{
    Attention, CONFIG_FILE, Draw, DrawConfig, DrawError, DrawLoss, DrawTrace, FAMILY, FORMAT, Targets, WEIGHTS_FILE,
};
pub use lstm::{LstmCell, LstmCellConfig, LstmCellState};
pub use task::{DrawTask, DrawTaskConfig};

#[cfg(test)]
mod tests;
