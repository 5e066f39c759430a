//! Training a [`Vae`] under `kiln-train`: one optimizer on the β-weighted negative ELBO, with an
//! optional EMA of the weights for previews and the exported model.

use std::path::Path;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Device, Distribution, Tensor};
use kiln_core::{ImageBatch, LoadError, Preview, SaveError, StepOutput, Task, read_scalars};
use kiln_optim::{Ema, Optim, OptimConfig, OptimError, load_train_state, save_train_state};
use serde::{Deserialize, Serialize};

use crate::{Vae, VaeConfig};

/// Optimisation settings for a [`VaeTask`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaeTaskConfig {
    /// The optimizer (Adam 1e-3 by default, the usual VAE choice).
    pub optim: OptimConfig,
    /// Keep an exponential moving average of the weights with this decay and use it for previews
    /// and the exported model.
    pub ema_decay: Option<f64>,
    /// Prior samples in the `samples` preview grid (drawn once, fixed for the run).
    pub preview_samples: usize,
}

impl Default for VaeTaskConfig {
    fn default() -> Self {
        Self { optim: OptimConfig::default(), ema_decay: None, preview_samples: 64 }
    }
}

/// A [`Vae`] with its optimizer, its EMA, and the fixed inputs of its preview grids.
pub struct VaeTask<B: AutodiffBackend> {
    config: VaeConfig,
    model: Vae<B>,
    optim: Optim<B>,
    ema: Option<Ema<B::InnerBackend, Vae<B::InnerBackend>>>,
    /// Fixed prior samples, so successive `samples` grids show the same latents. `[n, latent]`.
    noise: Tensor<B::InnerBackend, 2>,
    /// A fixed batch of real images for the `reconstructions` grid. `[m, C, S, S]`.
    fixed: Tensor<B::InnerBackend, 4>,
    device: Device<B>,
}

impl<B: AutodiffBackend> std::fmt::Debug for VaeTask<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaeTask").field("config", &self.config).field("optim", &self.optim).finish_non_exhaustive()
    }
}

impl<B: AutodiffBackend> VaeTask<B> {
    /// A fresh model from `config`, optimised as `task` says over a run of `total_steps` steps
    /// (the schedule's length); `fixed` (images in `[0, 1]`, `[m, C, S, S]`, m a multiple of 8) is
    /// reconstructed in every preview.
    pub fn new(
        config: VaeConfig,
        task: &VaeTaskConfig,
        total_steps: usize,
        fixed: Tensor<B::InnerBackend, 4>,
        device: &Device<B>,
    ) -> Result<Self, OptimError> {
        let model = config.init::<B>(device);
        Self::from_model(config, model, task, total_steps, fixed)
    }

    /// Continues training `model` (e.g. loaded with [`Vae::load`]) with a fresh optimizer.
    pub fn from_model(
        config: VaeConfig,
        model: Vae<B>,
        task: &VaeTaskConfig,
        total_steps: usize,
        fixed: Tensor<B::InnerBackend, 4>,
    ) -> Result<Self, OptimError> {
        let inner_device = fixed.device();
        let noise =
            Tensor::random([task.preview_samples, config.latent], Distribution::Normal(0.0, 1.0), &inner_device);
        let optim = Optim::new(task.optim.clone(), total_steps / task.optim.accumulate.max(1))?;
        let ema = task.ema_decay.map(|d| Ema::new(model.valid(), d)).transpose()?;
        let device = model.devices().first().cloned().unwrap_or_default();
        Ok(Self { config, model, optim, ema, noise, fixed, device })
    }

    /// The model being trained.
    pub fn model(&self) -> &Vae<B> {
        &self.model
    }

    /// The weights to sample from: the EMA when there is one, else the live weights.
    pub fn sampling_model(&self) -> Vae<B::InnerBackend> {
        match &self.ema {
            Some(ema) => ema.module().clone(),
            None => self.model.valid(),
        }
    }
}

impl<B: AutodiffBackend> Task<B> for VaeTask<B> {
    type Batch = ImageBatch<B>;

    fn step(&mut self, batch: ImageBatch<B>, _step: usize) -> StepOutput {
        let examples = batch.images.dims()[0];
        let out = self.model.loss(batch.images);
        let grads = out.loss.backward();
        self.model = self.optim.step(self.model.clone(), &grads);
        if let Some(ema) = &mut self.ema {
            ema.update(&self.model.valid());
        }
        let metrics =
            read_scalars(vec![("loss", out.loss.inner()), ("recon", out.recon.inner()), ("kl", out.kl.inner())]);
        StepOutput { metrics, examples }
    }

    fn previews(&self) -> Vec<Preview<B::InnerBackend>> {
        let model = self.sampling_model();
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
            Preview::new("samples", samples, 8),
            Preview::new("reconstructions", pairs.reshape([rows * 2 * cols, c, h, w]), cols)
                .with_row_labels(["input", "reconstruction"]),
        ]
    }

    fn save(&self, dir: &Path) -> Result<(), SaveError> {
        self.sampling_model().save(&self.config, dir).map_err(|e| match e {
            crate::VaeError::Save(e) => e,
            other => SaveError::Encode { path: dir.join(crate::WEIGHTS_FILE), message: other.to_string() },
        })
    }

    /// The exported model (`vae.json` + `vae.safetensors`, so a checkpoint directory is also
    /// something `kiln sample` reads), the optimizer, and with EMA on, the live weights and the
    /// EMA's counter.
    fn save_state(&self, dir: &Path) -> Result<(), SaveError> {
        self.save(dir)?;
        save_train_state(dir, &self.model, &self.optim, self.ema.as_ref())
    }

    fn load_state(&mut self, dir: &Path) -> Result<(), LoadError> {
        self.model = load_train_state(
            dir,
            self.model.clone(),
            crate::WEIGHTS_FILE,
            &mut self.optim,
            self.ema.as_mut(),
            &self.device,
        )?;
        Ok(())
    }

    fn device(&self) -> Device<B> {
        self.device.clone()
    }
}
