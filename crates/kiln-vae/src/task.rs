//! Training a [`Vae`] under `kiln-train`: one Adam optimizer on the β-weighted negative ELBO.

use std::path::Path;

use burn::config::Config;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Tensor};
use kiln_core::{Preview, SaveError, StepOutput, Task};
use kiln_data::ImageBatch;

use crate::{Vae, VaeConfig};

/// Optimisation settings for a [`VaeTask`].
#[derive(Config, Debug)]
pub struct VaeTaskConfig {
    /// Adam learning rate.
    #[config(default = 1e-3)]
    pub lr: f64,
    /// Adam β₁.
    #[config(default = 0.9)]
    pub beta1: f32,
    /// Adam β₂.
    #[config(default = 0.999)]
    pub beta2: f32,
    /// Prior samples in the `samples` preview grid (drawn once, fixed for the run).
    #[config(default = 64)]
    pub preview_samples: usize,
}

/// A [`Vae`] with its optimizer and the fixed inputs of its preview grids.
pub struct VaeTask<B: AutodiffBackend> {
    config: VaeConfig,
    model: Vae<B>,
    optim: OptimizerAdaptor<Adam, Vae<B>, B>,
    lr: f64,
    /// Fixed prior samples, so successive `samples` grids show the same latents. `[n, latent]`.
    noise: Tensor<B::InnerBackend, 2>,
    /// A fixed batch of real images for the `reconstructions` grid. `[m, C, S, S]`.
    fixed: Tensor<B::InnerBackend, 4>,
}

impl<B: AutodiffBackend> std::fmt::Debug for VaeTask<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaeTask").field("config", &self.config).field("lr", &self.lr).finish_non_exhaustive()
    }
}

impl<B: AutodiffBackend> VaeTask<B> {
    /// A fresh model from `config`, optimised as `task` says; `fixed` (images in `[0, 1]`,
    /// `[m, C, S, S]`, m a multiple of 8) is reconstructed in every preview.
    pub fn new(config: VaeConfig, task: &VaeTaskConfig, fixed: Tensor<B::InnerBackend, 4>, device: &B::Device) -> Self {
        let model = config.init::<B>(device);
        Self::from_model(config, model, task, fixed)
    }

    /// Continues training `model` (e.g. loaded with [`Vae::load`]).
    pub fn from_model(
        config: VaeConfig,
        model: Vae<B>,
        task: &VaeTaskConfig,
        fixed: Tensor<B::InnerBackend, 4>,
    ) -> Self {
        let device = fixed.device();
        let noise = Tensor::random([task.preview_samples, config.latent], Distribution::Normal(0.0, 1.0), &device);
        let optim = AdamConfig::new().with_beta_1(task.beta1).with_beta_2(task.beta2).init();
        Self { config, model, optim, lr: task.lr, noise, fixed }
    }

    /// The model being trained.
    pub fn model(&self) -> &Vae<B> {
        &self.model
    }
}

impl<B: AutodiffBackend> Task<B> for VaeTask<B> {
    type Batch = ImageBatch<B>;

    fn step(&mut self, batch: ImageBatch<B>, _step: usize) -> StepOutput {
        let examples = batch.images.dims()[0];
        let out = self.model.loss(batch.images);
        let grads = GradientsParams::from_grads(out.loss.backward(), &self.model);
        self.model = self.optim.step(self.lr, self.model.clone(), grads);
        // One device→host transfer for all three scalars.
        let values = Tensor::cat(vec![out.loss.inner(), out.recon.inner(), out.kl.inner()], 0)
            .into_data()
            .iter::<f64>()
            .collect::<Vec<_>>();
        StepOutput { metrics: vec![("loss", values[0]), ("recon", values[1]), ("kl", values[2])], examples }
    }

    fn previews(&self) -> Vec<Preview<B::InnerBackend>> {
        let model = self.model.valid();
        let samples = model.decode(self.noise.clone());
        let [m, c, h, w] = self.fixed.dims();
        let cols = 8.min(m);
        let rows = m / cols;
        let originals = self.fixed.clone().narrow(0, 0, rows * cols);
        let recon = model.reconstruct(originals.clone());
        // Interleave rows: originals, then their reconstructions underneath.
        let pairs =
            Tensor::stack::<6>(vec![originals.reshape([rows, cols, c, h, w]), recon.reshape([rows, cols, c, h, w])], 1); // [rows, 2, cols, C, H, W]
        vec![
            Preview { name: "samples", images: samples, columns: 8 },
            Preview { name: "reconstructions", images: pairs.reshape([rows * 2 * cols, c, h, w]), columns: cols },
        ]
    }

    fn save(&self, dir: &Path) -> Result<(), SaveError> {
        self.model.valid().save(&self.config, dir).map_err(|e| match e {
            crate::VaeError::Save(e) => e,
            other => SaveError::Encode { path: dir.join(crate::WEIGHTS_FILE), message: other.to_string() },
        })
    }
}
