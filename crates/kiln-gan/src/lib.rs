//! Generative adversarial networks for kiln: DCGAN, a class-conditional GAN with a projection
//! discriminator, and a self-attention GAN, with the losses and penalties people use.
//!
//! ```text
//! GanConfig ──init_generator(&device)──────▶ Generator<B>     generate(z, y) ∈ [-1, 1]
//!           ──init_discriminator(&device)──▶ Discriminator<B> forward(x, y) → logits [N]
//! GanTaskConfig + GanConfig ──GanTask::new──▶ GanTask<B>: kiln_core::Task (driven by kiln_train::fit)
//! Generator::load(dir) ──▶ kiln_core::Generative: sample(&SampleRequest) · interpolate · card()
//! ```
//!
//! - **Architectures** ([`GanConfig`]): DCGAN (Radford et al. 2015, arXiv:1511.06434) at 28, 32
//!   and 64 pixels, the 64×64 preset matching pytorch/examples' `dcgan`; conditional generation
//!   with conditional batch norm in G and a projection discriminator (Miyato & Koyama 2018,
//!   arXiv:1802.05637); a SAGAN variant (Zhang et al. 2018, arXiv:1805.08318) with kiln-kernels'
//!   `SelfAttention2d` in both networks and spectral norm.
//! - **Losses** ([`GanLoss`]): non-saturating BCE, hinge, least squares, Wasserstein; **penalties**
//!   ([`Penalty`]): R1 on reals and WGAN-GP, optionally lazy.
//! - **Training** ([`GanTask`], [`GanTaskConfig`]): `n_critic`, TTUR (two [`kiln_optim::Optim`]s),
//!   an EMA generator for sampling, fixed-noise grids (one row per class for a conditional model),
//!   and a mode-collapse signal in the metrics.
//!
//! ```
//! use burn::backend::{Autodiff, Flex};
//! use kiln_gan::{GanConfig, GanTask, GanTaskConfig, Generator, Penalty};
//! use kiln_core::Task;
//!
//! // A class-conditional MNIST GAN, shrunk so the example runs in milliseconds.
//! let config = GanConfig::cgan28().with_ngf(4).with_ndf(4);
//! let settings = GanTaskConfig { penalty: Penalty::R1 { gamma: 0.1 }, ..GanTaskConfig::dcgan() };
//! let device = Default::default();
//! let mut task = GanTask::<Autodiff<Flex>>::new(config, settings, 100, &device)?;
//! let batch = kiln_core::ImageBatch {
//!     images: burn::tensor::Tensor::zeros([8, 1, 28, 28], &device),
//!     labels: burn::tensor::Tensor::from_ints([0, 1, 2, 3, 4, 5, 6, 7], &device),
//! };
//! let out = task.step(batch, 0);
//! assert_eq!(out.metrics[0].0, "d_loss");
//!
//! // Sampling: eight sevens from the (EMA) generator, images in [0, 1].
//! let sevens = task.sampler().sample_class(&[7; 8], &device)?;
//! assert_eq!(sevens.dims(), [8, 1, 28, 28]);
//! # let dir = std::env::temp_dir().join(format!("kiln-gan-doc-{}", std::process::id()));
//! task.save(&dir)?;
//! let (_, g) = Generator::<Flex>::load(&dir, &device)?;
//! assert_eq!(g.num_classes(), 10);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Metrics of a step
//! `d_loss` (the headline, without the penalty), `g_loss`, `d_real_acc` and `d_fake_acc` (the
//! share of real/fake images D puts on the right side of [`GanLoss::threshold`]), `d_real` and
//! `d_fake` (mean outputs; their gap estimates the Wasserstein distance for a WGAN critic),
//! `diversity` (mean pairwise distance of the step's fakes over that of its reals, within classes
//! for a conditional model — near 1 is healthy, a fall towards 0 is mode collapse; see
//! [`task::diversity`]), and `penalty` when one is set. All come back in one device→host transfer.
//!
//! # Second derivatives (R1, WGAN-GP) on burn 0.21
//! A gradient penalty needs `∇θ ‖∇ₓD(x)‖²`. burn gets second derivatives by nesting autodiff:
//! [`gradient_penalty`] lifts the discriminator from the training backend `B` onto `Autodiff<B>`
//! and runs the input-gradient pass there, so that pass is itself recorded by `B`. That works
//! when every op on the path from the image to the logit has a backward written in ops that are
//! themselves differentiable. What was checked, on burn-flex (`tests::double_backward` and the
//! penalty tests):
//!
//! - **Correct second derivatives** (penalty value and its parameter gradient against central
//!   finite differences, to 0.2 % and 2 %): `conv2d` (through `module::conv2d`), `leaky_relu`
//!   (`mask_where`), batch norm written out in element-wise ops, sums and means, `sqrt`,
//!   `matmul`, `reshape`/`swap_dims`, kiln-kernels' `SpectralNorm` (power iteration on detached
//!   weights) and `SelfAttention2d` (1×1 convolutions, matmul, `exp`, a detached `max_dim`), and the
//!   projection's class embedding as a product with a one-hot code.
//! - **Runs** (no panic): a linear layer written as `matmul`, and `nn::Embedding` on a branch that
//!   only parameters feed, once the lifted parameters are `no_grad` (see below).
//! - **Panics** (burn-autodiff 0.21 `ops/module.rs` implements these backward ops as
//!   `panic!("Can't differentiate …")`): `module::linear` — so `nn::Linear` and kiln-kernels'
//!   `SnLinear` — on the input's path (`linear_x_backward`); `avg_pool2d` on the input's path
//!   (tested), and by the same source `max_pool2d(_with_indices)`, `adaptive_avg_pool2d`,
//!   `interpolate` and `deform_conv2d`; `nn::Embedding` when its weight needs a gradient in the
//!   outer pass (`embedding_backward`).
//!
//! So this crate's discriminator is all-convolutional, sums instead of pooling, and applies its
//! class embedding as a product with a one-hot code. The lifted copy's parameters are marked
//! `no_grad`, so its backward computes the input gradient only: that skips the weight-gradient
//! half of the outer backward and never calls a weight-gradient op (like `embedding_backward`). Every
//! architecture [`GanConfig`] can describe can therefore be penalised; what
//! [`GanTaskConfig::validate`] refuses is WGAN-GP with a batch-norm critic, for a statistical
//! reason (batch norm couples the images whose gradient norms WGAN-GP penalises one by one).
//! (burn's gradient checkpointing, `Autodiff<B, BalancedCheckpointing>`, recomputes activations to
//! save memory; it is no second-derivative mechanism and is not used here.)
#![warn(missing_docs)]

mod config;
mod discriminator;
mod generator;
mod layers;
mod loss;
pub mod task;

pub use config::{CONFIG_FILE, DISCRIMINATOR_FILE, FAMILY, FORMAT, GENERATOR_FILE, GanConfig, GanError, Norm};
pub use discriminator::{DiscBlock, Discriminator};
pub use generator::{GenBlock, Generator, to_unit};
pub use layers::{BatchNorm, Conv, ConvConfig, ConvKind, one_hot};
pub use loss::{GanLoss, Penalty, PenaltyOutput, gradient_penalty, interpolates, softplus};
pub use task::{GanTask, GanTaskConfig, LIVE_GENERATOR_FILE, diversity};

#[cfg(test)]
mod tests;
