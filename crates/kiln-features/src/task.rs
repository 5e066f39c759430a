//! Training a [`FeatureNet`] as a classifier under `kiln-train`.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Device, ElementConversion};
use kiln_core::{ImageBatch, LoadError, PixelRange, Preview, SaveError, StepOutput, Task, read_scalars};
use kiln_data::{ImageSet, gather};
use kiln_optim::{Optim, OptimConfig, load_train_state, save_train_state};

use crate::{FeatureNet, FeatureNetConfig, FeaturesError, WEIGHTS_FILE};

/// A [`FeatureNet`] with its optimizer, minimising cross-entropy on labelled images in `[0, 1]`.
pub struct ClassifierTask<B: AutodiffBackend> {
    config: FeatureNetConfig,
    net: FeatureNet<B>,
    optim: Optim<B>,
    device: Device<B>,
}

impl<B: AutodiffBackend> std::fmt::Debug for ClassifierTask<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifierTask").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<B: AutodiffBackend> ClassifierTask<B> {
    /// A fresh network from `config`, optimised by `optim` over `total_steps` steps.
    pub fn new(
        config: FeatureNetConfig,
        optim: OptimConfig,
        total_steps: usize,
        device: &Device<B>,
    ) -> Result<Self, FeaturesError> {
        config.validate()?;
        let net = config.init::<B>(device);
        let optim = Optim::new(optim.clone(), total_steps / optim.accumulate.max(1))?;
        Ok(Self { config, net, optim, device: device.clone() })
    }

    /// The network, for inference.
    pub fn net(&self) -> FeatureNet<B::InnerBackend> {
        self.net.valid()
    }
}

impl<B: AutodiffBackend> Task<B> for ClassifierTask<B> {
    type Batch = ImageBatch<B>;

    fn step(&mut self, batch: ImageBatch<B>, _step: usize) -> StepOutput {
        let ImageBatch { images, labels } = batch;
        let examples = images.dims()[0];
        let logits = self.net.logits(images); // [N, K]
        let loss = CrossEntropyLossConfig::new().init(&self.device).forward(logits.clone(), labels.clone());
        let grads = loss.backward();
        self.net = self.optim.step(self.net.clone(), &grads);
        let correct = logits.inner().argmax(1).squeeze_dim::<1>(1).equal(labels.inner()).int().sum().float();
        let accuracy = correct.div_scalar(examples as f64);
        StepOutput { metrics: read_scalars(vec![("loss", loss.inner()), ("acc", accuracy)]), examples }
    }

    fn previews(&self) -> Vec<Preview<B::InnerBackend>> {
        Vec::new()
    }

    fn save(&self, dir: &Path) -> Result<(), SaveError> {
        self.net.valid().save(&self.config, dir).map_err(|e| match e {
            FeaturesError::Save(e) => e,
            other => SaveError::Encode { path: dir.join(WEIGHTS_FILE), message: other.to_string() },
        })
    }

    fn save_state(&self, dir: &Path) -> Result<(), SaveError> {
        self.save(dir)?;
        save_train_state(dir, &self.net, &self.optim, None)
    }

    fn load_state(&mut self, dir: &Path) -> Result<(), LoadError> {
        self.net = load_train_state(dir, self.net.clone(), WEIGHTS_FILE, &mut self.optim, None, &self.device)?;
        Ok(())
    }

    fn device(&self) -> Device<B> {
        self.device.clone()
    }
}

/// The share of `set`'s images that `net` puts in their labelled class, in batches of `batch`.
pub fn accuracy<B: Backend>(net: &FeatureNet<B>, set: &ImageSet, batch: usize, device: &B::Device) -> f64 {
    let indices: Vec<usize> = (0..set.len).collect();
    let mut correct = 0i64;
    for chunk in indices.chunks(batch.max(1)) {
        let b = gather::<B>(set, chunk, PixelRange::ZeroOne, device);
        let hits = net.logits(b.images).argmax(1).squeeze_dim::<1>(1).equal(b.labels).int().sum();
        correct += hits.into_scalar().elem::<i64>();
    }
    correct as f64 / set.len.max(1) as f64
}
