//! Training a [`VqVae`] under `kiln-train`: Adam on the encoder and decoder, and inside the same
//! step the EMA codebook update and dead-code restarts (which no optimizer sees).

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Device, Tensor, TensorData};
use kiln_core::{ImageBatch, LoadError, Preview, SaveError, StepOutput, Task, read_scalars};
use kiln_kernels::vq;
use kiln_optim::{Optim, OptimConfig, load_train_state, save_train_state};
use serde::{Deserialize, Serialize};

use crate::{VqVae, VqVaeConfig};

/// Training settings of a [`VqVaeTask`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VqVaeTaskConfig {
    /// The optimizer of the encoder and decoder (Adam; the paper and Sonnet use 2e-4 to 3e-4,
    /// kiln's short CPU runs take 1e-3 — see the experiment files).
    pub optim: OptimConfig,
    /// Decay γ of the codebook's moving averages (0.99 in the paper's appendix A.1).
    pub decay: f64,
    /// Laplace smoothing ε of the EMA cluster sizes (Sonnet's 1e-5).
    pub epsilon: f64,
    /// Restart a code whose EMA count falls below this (`None`: never). With γ = 0.99 a code
    /// that stops being chosen decays from count 1 to 0.1 in about 230 steps — long enough
    /// not to kill codes that are merely rare, short enough to revive the unused ones of a
    /// few-minute run.
    pub restart_threshold: Option<f64>,
    /// Variance of the training pixels (in `[0, 1]` units), computed once from the data:
    /// `nmse = recon_mse / data_variance`, the figure Sonnet's example reports.
    pub data_variance: f64,
}

impl Default for VqVaeTaskConfig {
    fn default() -> Self {
        Self {
            optim: OptimConfig::default(),
            decay: 0.99,
            epsilon: 1e-5,
            restart_threshold: Some(0.1),
            data_variance: 1.0,
        }
    }
}

impl VqVaeTaskConfig {
    /// Checks the fields the optimizer does not; errors name the field.
    pub fn validate(&self) -> Result<(), crate::VqVaeError> {
        let bad = |field, value: f64, reason: &str| {
            Err(crate::VqVaeError::Config { field, value: value.to_string(), reason: reason.into() })
        };
        if !(self.decay > 0.0 && self.decay < 1.0) {
            return bad("decay", self.decay, "must be in (0, 1) (the paper uses 0.99)");
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return bad("epsilon", self.epsilon, "must be finite and > 0");
        }
        if let Some(t) = self.restart_threshold
            && !(t.is_finite() && t > 0.0)
        {
            return bad("restart_threshold", t, "must be finite and > 0 (leave it out for no restarts)");
        }
        if !(self.data_variance.is_finite() && self.data_variance > 0.0) {
            return bad("data_variance", self.data_variance, "must be finite and > 0");
        }
        Ok(())
    }
}

/// Height of the `codes` histogram image in pixels.
const HISTOGRAM_HEIGHT: usize = 96;

/// A [`VqVae`] with its optimizer and the fixed batch of its reconstruction grid.
pub struct VqVaeTask<B: AutodiffBackend> {
    config: VqVaeConfig,
    settings: VqVaeTaskConfig,
    model: VqVae<B>,
    optim: Optim<B>,
    /// A fixed batch of real images for the `reconstructions` grid. `[m, C, S, S]`.
    fixed: Tensor<B::InnerBackend, 4>,
    device: Device<B>,
}

impl<B: AutodiffBackend> std::fmt::Debug for VqVaeTask<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VqVaeTask")
            .field("config", &self.config)
            .field("settings", &self.settings)
            .field("optim", &self.optim)
            .finish_non_exhaustive()
    }
}

impl<B: AutodiffBackend> VqVaeTask<B> {
    /// A fresh model from `config`, trained as `settings` say over `total_steps` steps (the
    /// schedule's length); `fixed` (images in `[0, 1]`, `[m, C, S, S]`) is reconstructed in every
    /// preview.
    pub fn new(
        config: VqVaeConfig,
        settings: &VqVaeTaskConfig,
        total_steps: usize,
        fixed: Tensor<B::InnerBackend, 4>,
        device: &Device<B>,
    ) -> Result<Self, crate::VqVaeError> {
        config.validate()?;
        settings.validate()?;
        let model = config.init::<B>(device);
        let optim = Optim::new(settings.optim.clone(), total_steps / settings.optim.accumulate.max(1))?;
        Ok(Self { config, settings: settings.clone(), model, optim, fixed, device: device.clone() })
    }

    /// The model being trained.
    pub fn model(&self) -> &VqVae<B> {
        &self.model
    }

    /// The trained model without autodiff, for evaluation and export.
    pub fn trained(&self) -> VqVae<B::InnerBackend> {
        self.model.valid()
    }

    /// The `codes` preview: the EMA cluster size of every code as a bar chart `[1, 3, H, W]`,
    /// bars **sorted from most to least used** (the shape of the usage distribution is what
    /// matters; index order is arbitrary), each bar `max(1, 512 / K)` pixels wide, height
    /// proportional to the count over the largest. Live codes are drawn dark blue, codes below
    /// the restart threshold red (a one-pixel red stub marks a code of count ~0).
    pub fn code_histogram(&self) -> Tensor<B::InnerBackend, 4> {
        let sizes: Vec<f32> = self.model.cluster_size().inner().into_data().iter::<f32>().collect();
        histogram_image(&sizes, self.settings.restart_threshold.unwrap_or(0.0) as f32, &self.fixed.device())
    }
}

pub(crate) fn histogram_image<B: burn::tensor::backend::Backend>(
    sizes: &[f32],
    threshold: f32,
    device: &B::Device,
) -> Tensor<B, 4> {
    let mut sorted = sizes.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let bar = (512 / sorted.len().max(1)).max(1);
    let (h, w) = (HISTOGRAM_HEIGHT, bar * sorted.len());
    let max = sorted.first().copied().unwrap_or(0.0).max(1e-12);
    let mut pixels = vec![1.0f32; 3 * h * w];
    for (k, &size) in sorted.iter().enumerate() {
        let dead = size < threshold;
        let height = ((size / max) * h as f32).round().clamp(1.0, h as f32) as usize;
        let colour = if dead { [0.85, 0.1, 0.1] } else { [0.1, 0.2, 0.6] };
        for y in h - height..h {
            for x in k * bar..(k + 1) * bar {
                for (c, value) in colour.iter().enumerate() {
                    pixels[(c * h + y) * w + x] = *value;
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(pixels, [1, 3, h, w]), device)
}

impl<B: AutodiffBackend> Task<B> for VqVaeTask<B> {
    type Batch = ImageBatch<B>;

    fn step(&mut self, batch: ImageBatch<B>, _step: usize) -> StepOutput {
        let examples = batch.images.dims()[0];
        let out = self.model.loss(batch.images);
        let grads = out.loss.backward();
        let model = self.optim.step(self.model.clone(), &grads);
        let [n, h, w] = out.indices.dims();
        let s = &self.settings;
        self.model =
            model.ema_update(out.latents, out.indices.reshape([n * h * w]), s.decay, s.epsilon, s.restart_threshold);
        let mse = out.recon_mse.inner();
        let counts = out.counts.inner();
        let metrics = read_scalars(vec![
            ("loss", out.loss.inner()),
            ("recon_mse", mse.clone()),
            ("nmse", mse.clone().div_scalar(s.data_variance)),
            // Pixels in [0, 1]: PSNR = 10·log10(1 / MSE), of this batch's MSE.
            ("psnr", mse.log().mul_scalar(-10.0 / std::f64::consts::LN_10)),
            ("perplexity", vq::perplexity(counts.clone())),
            ("usage", vq::usage(counts)),
        ]);
        StepOutput { metrics, examples }
    }

    fn previews(&self) -> Vec<Preview<B::InnerBackend>> {
        let model = self.trained();
        let [m, c, h, w] = self.fixed.dims();
        let cols = 8.min(m);
        let rows = m / cols;
        let originals = self.fixed.clone().narrow(0, 0, rows * cols);
        let recon = model.reconstruct(originals.clone());
        // Interleave rows: originals, then their reconstructions underneath.
        let pairs =
            Tensor::stack::<6>(vec![originals.reshape([rows, cols, c, h, w]), recon.reshape([rows, cols, c, h, w])], 1); // [rows, 2, cols, C, H, W]
        vec![
            Preview::new("reconstructions", pairs.reshape([rows * 2 * cols, c, h, w]), cols)
                .with_row_labels(["input", "reconstruction"]),
            Preview::new("codes", self.code_histogram(), 1),
        ]
    }

    fn save(&self, dir: &Path) -> Result<(), SaveError> {
        self.trained().save(&self.config, dir).map_err(|e| match e {
            crate::VqVaeError::Save(e) => e,
            other => SaveError::Encode { path: dir.join(crate::WEIGHTS_FILE), message: other.to_string() },
        })
    }

    /// The exported model (its weights file holds the codebook and its EMA statistics, so it is
    /// also the codebook's training state) and the optimizer.
    fn save_state(&self, dir: &Path) -> Result<(), SaveError> {
        self.save(dir)?;
        save_train_state(dir, &self.model, &self.optim, None)
    }

    fn load_state(&mut self, dir: &Path) -> Result<(), LoadError> {
        self.model =
            load_train_state(dir, self.model.clone(), crate::WEIGHTS_FILE, &mut self.optim, None, &self.device)?;
        Ok(())
    }

    fn device(&self) -> Device<B> {
        self.device.clone()
    }
}
