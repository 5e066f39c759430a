//! Training a [`Draw`] model under `kiln-train`: one Adam on the negative ELBO (clipped by global
//! norm when asked: 64 steps of two LSTMs can spike), with an optional EMA of the weights for
//! previews and the exported model.

use std::ops::Range;
use std::path::Path;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Device, Tensor};
use kiln_core::{ImageBatch, LoadError, Preview, SaveError, StepOutput, Task, read_scalars};
use kiln_optim::{
    Ema, Optim, OptimConfig, OptimError, backward_shards, batch_means, load_train_state, save_train_state,
};
use serde::{Deserialize, Serialize};

use crate::{Draw, DrawConfig};

/// Optimisation settings for a [`DrawTask`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrawTaskConfig {
    /// The optimizer (Adam 1e-3 by default; experiments add `clip_norm`).
    pub optim: OptimConfig,
    /// Keep an exponential moving average of the weights with this decay and use it for previews
    /// and the exported model.
    pub ema_decay: Option<f64>,
    /// Prior samples in the `samples` preview grid (drawn once, fixed for the run); the first
    /// [`STRIP_ROWS`] of them are the rows of the `steps` strip.
    pub preview_samples: usize,
    /// Slices each batch is cut into for its gradient, stepped through the network at the same
    /// time where the backend can (kiln-cpu: each slice on its own core; see
    /// [`kiln_optim::backward_shards`]). DRAW's ops are small — 64 LSTM steps of a few thousand
    /// floats each — so a second core is wasted splitting each op, and busy with half the batch.
    /// The update is the whole batch's either way, up to float rounding; a run's numbers depend on
    /// this setting, never on the machine's cores.
    pub shards: usize,
}

impl Default for DrawTaskConfig {
    fn default() -> Self {
        Self { optim: OptimConfig::default(), ema_decay: None, preview_samples: 64, shards: 1 }
    }
}

/// Rows (samples) of the `steps` preview strip.
pub const STRIP_ROWS: usize = 8;
/// Seed of the preview latents: fixed, so every run's grids show the same prior draws.
const PREVIEW_SEED: u64 = 0x0D2A_3000;

/// A [`Draw`] model with its optimizer, its EMA, and the fixed latents of its previews.
pub struct DrawTask<B: AutodiffBackend> {
    config: DrawConfig,
    model: Draw<B>,
    optim: Optim<B>,
    ema: Option<Ema<B::InnerBackend, Draw<B::InnerBackend>>>,
    /// Fixed prior latents, so successive grids show the same draws. `[T, n, latent]`.
    noise: Tensor<B::InnerBackend, 3>,
    device: Device<B>,
    /// [`DrawTaskConfig::shards`].
    shards: usize,
}

impl<B: AutodiffBackend> std::fmt::Debug for DrawTask<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrawTask").field("config", &self.config).field("optim", &self.optim).finish_non_exhaustive()
    }
}

impl<B: AutodiffBackend> DrawTask<B> {
    /// A fresh model from `config`, optimised as `task` says over a run of `total_steps` steps
    /// (the schedule's length).
    pub fn new(
        config: DrawConfig,
        task: &DrawTaskConfig,
        total_steps: usize,
        device: &Device<B>,
    ) -> Result<Self, OptimError> {
        let model = config.init::<B>(device);
        Self::from_model(config, model, task, total_steps)
    }

    /// Continues training `model` (e.g. loaded with [`Draw::load`]) with a fresh optimizer.
    pub fn from_model(
        config: DrawConfig,
        model: Draw<B>,
        task: &DrawTaskConfig,
        total_steps: usize,
    ) -> Result<Self, OptimError> {
        if task.shards == 0 {
            return Err(OptimError::Config {
                field: "train.draw.shards",
                value: "0".into(),
                reason: "must be at least 1 (1: the whole batch in one pass)",
            });
        }
        let device = model.devices().first().cloned().unwrap_or_default();
        let inner: Device<B::InnerBackend> = device.clone();
        let noise = model.valid().prior_latents(task.preview_samples.max(1), PREVIEW_SEED, None, &inner);
        let optim = Optim::new(task.optim.clone(), total_steps / task.optim.accumulate.max(1))?;
        let ema = task.ema_decay.map(|d| Ema::new(model.valid(), d)).transpose()?;
        Ok(Self { config, model, optim, ema, noise, device, shards: task.shards })
    }

    /// The model being trained.
    pub fn model(&self) -> &Draw<B> {
        &self.model
    }

    /// The weights to sample from: the EMA when there is one, else the live weights.
    pub fn sampling_model(&self) -> Draw<B::InnerBackend> {
        match &self.ema {
            Some(ema) => ema.module().clone(),
            None => self.model.valid(),
        }
    }
}

impl<B: AutodiffBackend> Task<B> for DrawTask<B> {
    type Batch = ImageBatch<B>;

    fn step(&mut self, batch: ImageBatch<B>, _step: usize) -> StepOutput {
        let n = batch.images.dims()[0];
        // The whole batch's noise, drawn here: shards on other threads would reach burn's one
        // generator in no fixed order.
        let noise = self.model.posterior_noise(n, &batch.images.device()); // [T, N, latent]
        let images = &batch.images;
        let shards = backward_shards(&self.model, n, self.shards, |model: &Draw<B>, rows: Range<usize>| {
            let x = images.clone().narrow(0, rows.start, rows.len()); // [n_s, C, H, W]
            let eps = noise.clone().narrow(1, rows.start, rows.len()); // [T, n_s, latent]
            let out = model.loss_with_noise(x, eps);
            (out.loss.clone(), [out.loss, out.recon, out.kl].map(|t| t.inner()))
        });
        self.model = self.optim.step_shards(self.model.clone(), &shards);
        if let Some(ema) = &mut self.ema {
            ema.update(&self.model.valid());
        }
        let [loss, recon, kl] = batch_means(&shards);
        let metrics = read_scalars(vec![("loss", loss), ("recon", recon), ("kl", kl)]);
        StepOutput { metrics, examples: n }
    }

    /// `samples`: the final canvases of the fixed latents, 8 to a row. `steps`: the first
    /// [`STRIP_ROWS`] of them drawn over time, one row per sample, canvases `σ(c_1) … σ(c_T)`
    /// left to right.
    fn previews(&self) -> Vec<Preview<B::InnerBackend>> {
        let model = self.sampling_model();
        let frames = model.generate(self.noise.clone()); // [T, n, C, H, W]
        let [t, n, c, h, w] = frames.dims();
        let samples = frames.clone().narrow(0, t - 1, 1).reshape([n, c, h, w]); // [n, C, H, W]
        let rows = STRIP_ROWS.min(n);
        let strip = frames.narrow(1, 0, rows).swap_dims(0, 1).reshape([rows * t, c, h, w]); // [rows·T, C, H, W]
        vec![Preview::new("samples", samples, 8), Preview::new("steps", strip, t)]
    }

    fn save(&self, dir: &Path) -> Result<(), SaveError> {
        self.sampling_model().save(&self.config, dir).map_err(|e| match e {
            crate::DrawError::Save(e) => e,
            other => SaveError::Encode { path: dir.join(crate::WEIGHTS_FILE), message: other.to_string() },
        })
    }

    /// The exported model (`draw.json` + `draw.safetensors`, so a checkpoint directory is also
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
