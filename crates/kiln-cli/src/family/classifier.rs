//! The classifier family (`kiln-features`): the small networks whose features score generators
//! (`cargo xtask features` trains them). Not a generator; its evaluation is accuracy. It also
//! provides `kiln eval` with its feature extractors.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use kiln_core::Generative;
use kiln_features::{ClassifierTask, FeatureNet, FeatureNetConfig, accuracy};
use kiln_optim::OptimConfig;
use serde::{Deserialize, Serialize};

use super::Family;
use crate::experiment::{Experiment, overlay, strict};
use crate::train::{DataInfo, TrainRun};

/// The adapter.
pub struct Classifier;

/// `[model]` of a classifier experiment: its shape; the classes come from the data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    /// Channels of each stride-2 convolution (default [32, 64, 128]).
    #[serde(skip_serializing_if = "Option::is_none")]
    widths: Option<Vec<usize>>,
    /// Width of the feature layer (default 128).
    #[serde(skip_serializing_if = "Option::is_none")]
    feature_dim: Option<usize>,
}

/// What a classifier run trains from.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    model: FeatureNetConfig,
    optim: OptimConfig,
}

impl Family for Classifier {
    const NAME: &'static str = kiln_features::FAMILY;
    const ABOUT: &'static str = "feature-network classifier (kiln-features): the extractors `kiln eval` scores with";
    const GENERATOR: bool = false;
    const FORMAT: u32 = kiln_features::FORMAT;
    const LEGACY_FILE: Option<&'static str> = Some(kiln_features::CONFIG_FILE);
    type Resolved = Resolved;

    fn resolve(exp: &Experiment, data: Option<&DataInfo>) -> Result<Resolved> {
        anyhow::ensure!(
            exp.family_settings()?.is_none(),
            "[train.classifier]: a classifier is trained by [train.optim]; it has no table of its own"
        );
        let spec: Spec = strict(&exp.model_settings(), "model")?;
        // Checked before the data is loaded, with a placeholder shape.
        let (channels, size, classes) = match data {
            Some(d) => {
                let [c, h, w] = d.image;
                ensure!(h == w, "{}: images are {h}×{w}; the classifier takes square images", exp.data.path.display());
                let k = d
                    .classes
                    .with_context(|| format!("{}: the images have no labels to classify", exp.data.path.display()))?;
                (c, h, k)
            }
            None => (1, 8, 2),
        };
        let base = FeatureNetConfig::new(channels, size, classes);
        let model = overlay(&base, &spec, "model")?;
        model.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        Ok(Resolved { model, optim: exp.train.optim.clone().unwrap_or_default() })
    }

    fn train<B: AutodiffBackend>(run: TrainRun<'_>, resolved: Resolved, device: &B::Device) -> Result<()> {
        let image = [resolved.model.channels, resolved.model.image_size, resolved.model.image_size];
        run.prepare::<B>(Self::NAME, image, &resolved, device)?;
        let Resolved { model: config, optim } = resolved;
        let mut task = ClassifierTask::<B>::new(config, optim, run.exp.train.steps, device)?;
        let summary = run.fit(&mut task, device)?;
        let inner: burn::tensor::Device<B::InnerBackend> = device.clone();
        let net = task.net();
        // A one-split set's accuracy is on the training images, and says so.
        let split = if run.data.test_is_train { "train" } else { "test" };
        let acc = accuracy(&net, &run.test, 256, &inner);
        let train_acc = accuracy(&net, &run.train, 256, &inner);
        run.write_eval(
            &serde_json::json!({ "split": split, "images": run.test.len, "accuracy": acc, "train_accuracy": train_acc }),
        )?;
        run.report(&summary, &format!("; {split} accuracy {:.2} %", 100.0 * acc));
        Ok(())
    }

    fn open<B: Backend>(dir: &Path, _device: &B::Device) -> Result<Box<dyn Generative<B>>> {
        anyhow::bail!(
            "{}: a classifier generates no images; it is a feature network for `kiln eval --extractor {}`",
            dir.display(),
            dir.display()
        )
    }
}

/// One of the classifiers as `kiln eval`'s feature extractor.
pub struct Extractor<B: Backend> {
    net: FeatureNet<B>,
    /// `[C, S, S]` of the images it takes.
    pub image: [usize; 3],
    /// Width of its features.
    pub feature_dim: usize,
    /// Classes its head predicts.
    pub classes: usize,
    /// Where its weights came from: `built-in` (the copy in this binary) or their directory.
    pub source: String,
}

impl<B: Backend> Extractor<B> {
    /// The bundled extractor for images of `[C, S, S]`, if there is one.
    pub fn default_for(image: [usize; 3]) -> Option<&'static str> {
        match image {
            [1, 28, 28] => Some("mnist"),
            [3, 32, 32] => Some("emoji32"),
            _ => None,
        }
    }

    /// Loads a bundled extractor by name, or one from a directory.
    pub fn load(name: &str, device: &B::Device) -> Result<Self> {
        let (config, net, source) = match FeatureNet::<B>::load_bundled(name, device)? {
            Some((config, net)) => (config, net, "built-in".to_string()),
            None => {
                let dir = PathBuf::from(name);
                ensure!(
                    dir.join(kiln_features::CONFIG_FILE).is_file(),
                    "--extractor {name}: not a bundled extractor ({}), inception[=FILE|MANIFEST.toml], nor a \
                     directory holding {}",
                    kiln_features::BUNDLED.join(", "),
                    kiln_features::CONFIG_FILE
                );
                let (config, net) = FeatureNet::<B>::load(&dir, device)?;
                (config, net, dir.display().to_string())
            }
        };
        let s = config.image_size;
        Ok(Self {
            net,
            image: [config.channels, s, s],
            feature_dim: config.feature_dim,
            classes: config.classes,
            source,
        })
    }

    /// Features `[N, F]` and class logits `[N, K]` of images in `[0, 1]`.
    pub fn run(&self, images: Tensor<B, 4>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let features = self.net.features(images);
        (features.clone(), self.net.head(features))
    }
}
