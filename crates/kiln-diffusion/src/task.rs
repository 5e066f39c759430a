//! Training a [`Diffusion`] model under `kiln-train`: one Adam on the denoising loss, an EMA of the
//! weights (what every diffusion paper samples from), and label dropout for classifier-free
//! guidance when the model is conditional.

use std::ops::Range;
use std::path::Path;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use kiln_core::{ImageBatch, LoadError, PixelRange, Preview, SaveError, StepOutput, Task, read_scalars};
use kiln_optim::{
    Ema, Optim, OptimConfig, OptimError, backward_shards, batch_means, load_train_state, save_train_state,
};
use serde::{Deserialize, Serialize};

use crate::{Diffusion, DiffusionConfig, SamplerConfig};

/// Optimisation and preview settings for a [`DiffusionTask`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiffusionTaskConfig {
    /// The optimizer (Adam 1e-3 by default; the presets' experiments set 2e-4 to 1e-3).
    pub optim: OptimConfig,
    /// Decay of the EMA of the weights that previews and the exported model use (`None`: the
    /// live weights). Warmed up, so early previews are not the random initialisation.
    pub ema_decay: Option<f64>,
    /// Fraction of a conditional model's labels replaced by the null label each step, so it
    /// also learns the unconditional model that guidance needs (Ho & Salimans: 0.1 to 0.2).
    pub label_dropout: f64,
    /// Samples in the `samples` preview (fixed noise; a conditional model's rows cycle classes).
    pub preview_samples: usize,
    /// Sampler steps of the previews (fewer than `kiln sample`'s default, since they recur).
    pub preview_steps: usize,
    /// Slices each batch is cut into for its gradient, stepped at the same time where the
    /// backend can (kiln-cpu: each on its own share of the cores; see
    /// [`kiln_optim::backward_shards`]). The U-Net's GroupNorm and attention work image by image,
    /// so the update is the batch's up to float rounding; a run's numbers depend on this setting,
    /// never on the machine's cores.
    pub shards: usize,
}

impl Default for DiffusionTaskConfig {
    fn default() -> Self {
        Self {
            optim: OptimConfig::default(),
            ema_decay: Some(0.999),
            label_dropout: 0.1,
            preview_samples: 64,
            preview_steps: 20,
            shards: 1,
        }
    }
}

/// Rows (samples) of the `steps` preview strip, and its frames.
const STRIP_ROWS: usize = 8;
const STRIP_FRAMES: usize = 10;
/// Seed of the preview noise: fixed, so every run's grids show the same draws.
const PREVIEW_SEED: u64 = 0xD1FF_0000;

/// A [`Diffusion`] model with its optimizer, its EMA, and the fixed inputs of its previews.
pub struct DiffusionTask<B: AutodiffBackend> {
    config: DiffusionConfig,
    task: DiffusionTaskConfig,
    model: Diffusion<B>,
    optim: Optim<B>,
    ema: Option<Ema<B::InnerBackend, Diffusion<B::InnerBackend>>>,
    /// Fixed initial noise of the previews, `[n, C, H, W]`.
    noise: Tensor<B::InnerBackend, 4>,
    /// Their labels for a conditional model: row `r` of 8 is class `r mod K`.
    labels: Option<Tensor<B::InnerBackend, 1, Int>>,
    device: Device<B>,
}

impl<B: AutodiffBackend> std::fmt::Debug for DiffusionTask<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffusionTask").field("config", &self.config).field("task", &self.task).finish_non_exhaustive()
    }
}

impl<B: AutodiffBackend> DiffusionTask<B> {
    /// A fresh model from `config`, optimised as `task` says over a run of `total_steps` steps.
    pub fn new(
        config: DiffusionConfig,
        task: &DiffusionTaskConfig,
        total_steps: usize,
        device: &Device<B>,
    ) -> Result<Self, OptimError> {
        let model = config.init::<B>(device);
        Self::from_model(config, model, task, total_steps)
    }

    /// Continues training `model` (e.g. loaded with [`Diffusion::load`]) with a fresh optimizer.
    pub fn from_model(
        config: DiffusionConfig,
        model: Diffusion<B>,
        task: &DiffusionTaskConfig,
        total_steps: usize,
    ) -> Result<Self, OptimError> {
        if !(0.0..1.0).contains(&task.label_dropout) {
            return Err(OptimError::Config {
                field: "label_dropout",
                value: task.label_dropout.to_string(),
                reason: "must be in [0, 1)",
            });
        }
        let device = model.devices().first().cloned().unwrap_or_default();
        let inner: Device<B::InnerBackend> = device.clone();
        let n = task.preview_samples.max(1);
        let noise = model.valid().initial_noise(n, PREVIEW_SEED, &inner);
        let classes = model.classes();
        let labels = (classes > 0).then(|| {
            let ids: Vec<i64> = (0..n).map(|i| ((i / 8) % classes) as i64).collect();
            Tensor::from_data(TensorData::new(ids, [n]), &inner)
        });
        if task.shards == 0 {
            return Err(OptimError::Config {
                field: "train.diffusion.shards",
                value: "0".into(),
                reason: "must be at least 1 (1: the whole batch in one pass)",
            });
        }
        let optim = Optim::new(task.optim.clone(), total_steps / task.optim.accumulate.max(1))?;
        let ema = task.ema_decay.map(|d| Ema::new(model.valid(), d).map(Ema::with_warmup)).transpose()?;
        Ok(Self { config, task: task.clone(), model, optim, ema, noise, labels, device })
    }

    /// The model being trained.
    pub fn model(&self) -> &Diffusion<B> {
        &self.model
    }

    /// The weights to sample from: the EMA when there is one, else the live weights.
    pub fn sampling_model(&self) -> Diffusion<B::InnerBackend> {
        match &self.ema {
            Some(ema) => ema.module().clone(),
            None => self.model.valid(),
        }
    }

    /// `labels` with each replaced by the null label with probability `label_dropout`.
    fn drop_labels(&self, labels: Tensor<B, 1, Int>) -> Tensor<B, 1, Int> {
        if self.task.label_dropout == 0.0 {
            return labels;
        }
        let dropped = Tensor::<B, 1>::random(labels.shape(), Distribution::Default, &self.device)
            .lower_elem(self.task.label_dropout); // [B] bool
        labels.mask_fill(dropped, self.model.classes() as i64)
    }
}

impl<B: AutodiffBackend> Task<B> for DiffusionTask<B> {
    type Batch = ImageBatch<B>;

    fn step(&mut self, batch: ImageBatch<B>, _step: usize) -> StepOutput {
        let n = batch.images.dims()[0];
        let labels = (self.model.classes() > 0).then(|| self.drop_labels(batch.labels));
        // Every random draw of the step made here, in the order an unsharded loss makes them:
        // shards on other threads would reach burn's one generator in no fixed order.
        let draws = self.model.loss_draws(n, batch.images.shape(), &batch.images.device());
        let images = &batch.images;
        let shards = backward_shards(&self.model, n, self.task.shards, |model: &Diffusion<B>, rows: Range<usize>| {
            let x = images.clone().narrow(0, rows.start, rows.len()); // [n_s, C, H, W]
            let y = labels.as_ref().map(|l| l.clone().narrow(0, rows.start, rows.len())); // [n_s]
            let out = model.loss_with(x, y, draws.rows(rows));
            (out.loss.clone(), [out.loss, out.mse].map(|t| t.inner()))
        });
        self.model = self.optim.step_shards(self.model.clone(), &shards);
        if let Some(ema) = &mut self.ema {
            ema.update(&self.model.valid());
        }
        let [loss, mse] = batch_means(&shards);
        StepOutput { metrics: read_scalars(vec![("loss", loss), ("mse", mse)]), examples: n }
    }

    /// `samples`: the fixed noise denoised by the default sampler at `preview_steps`, 8 to a row
    /// (a conditional model: one class per row). `steps`: the first [`STRIP_ROWS`] of them over
    /// the trajectory, noise on the left, the sample on the right.
    fn previews(&self) -> Vec<Preview<B::InnerBackend>> {
        let model = self.sampling_model();
        let mut how = SamplerConfig::default_for(&model.process());
        how.steps = self.task.preview_steps.max(1);
        how.frames = STRIP_FRAMES;
        let out = model.denoise(self.noise.clone(), self.labels.clone(), &how);
        let unit = |x: Tensor<B::InnerBackend, 4>| ((x + 1.0) / 2.0).clamp(0.0, 1.0);
        let [n, c, h, w] = out.images.dims();
        let rows = STRIP_ROWS.min(n);
        let mut frames = vec![self.noise.clone().clamp(-1.0, 1.0)];
        frames.extend(out.frames);
        let t = frames.len();
        let strip = Tensor::stack::<5>(frames, 0).narrow(1, 0, rows).swap_dims(0, 1).reshape([rows * t, c, h, w]); // [rows·T, C, H, W]
        vec![Preview::new("samples", unit(out.images), 8), Preview::new("steps", unit(strip), t)]
    }

    fn save(&self, dir: &Path) -> Result<(), SaveError> {
        self.sampling_model().save(&self.config, dir).map_err(|e| match e {
            crate::DiffusionError::Save(e) => e,
            other => SaveError::Encode { path: dir.join(crate::WEIGHTS_FILE), message: other.to_string() },
        })
    }

    /// The exported model (so a checkpoint directory is also something `kiln sample` reads), the
    /// optimizer, and with EMA on, the live weights and the EMA's counter.
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

    fn pixel_range(&self) -> PixelRange {
        PixelRange::MinusOneOne
    }
}
