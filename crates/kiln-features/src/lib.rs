//! kiln's own feature networks: small classifiers whose features score generators on small data.
//!
//! FID, KID and precision/recall compare two sets of images through the features of a network.
//! The standard network, Inception-v3 on ImageNet, sees 299×299 photographs; on 28×28 digits or
//! 32×32 emoji its features say little and cost a lot. So kiln also ships networks trained on the
//! data the models learn from (the practice of Heusel et al.'s MNIST experiments and of most small-
//! data GAN papers): a [`FeatureNet`] is a plain all-convolutional classifier whose penultimate
//! layer gives the features and whose softmax gives the class probabilities for the Inception
//! Score and for checking a conditional model draws the class it is asked for.
//!
//! ```text
//! FeatureNetConfig ──init(&device)──▶ FeatureNet<B>
//!     features(x ∈ [0,1] [N,C,S,S]) → [N, feature_dim]     (ReLU of the penultimate layer)
//!     logits(x)                      → [N, classes]
//! ClassifierTask<B>: kiln_core::Task (cross-entropy + Adam, trained by kiln_train::fit)
//! FeatureNet::load(dir) ◀── features.json + features.safetensors   (weights/<name>/ in this crate)
//! ```
//!
//! Scores from different extractors are not comparable: every score kiln reports names the
//! extractor and the sample counts it used. The shipped weights are rebuilt by
//! `cargo xtask features` (seeded, on the bundled data); their accuracy is in
//! `weights/<name>/provenance.json`.
#![warn(missing_docs)]

mod task;

use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;

pub use task::{ClassifierTask, accuracy};

/// The config file beside the weights.
pub const CONFIG_FILE: &str = "features.json";
/// The weights file.
pub const WEIGHTS_FILE: &str = "features.safetensors";
/// The family name in `kiln.json` and in experiment files (`family = "classifier"`).
pub const FAMILY: &str = "classifier";
/// Version of the directory layout (`kiln.json`, `features.json`, `features.safetensors`).
pub const FORMAT: u32 = 1;

/// What can go wrong building, saving or loading a feature network.
#[derive(Debug, thiserror::Error)]
pub enum FeaturesError {
    /// A config field is out of range.
    #[error("{field} = {value}: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A file could not be read or does not hold what it should.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Writing failed.
    #[error(transparent)]
    Save(#[from] kiln_core::SaveError),
    /// The optimizer or its state.
    #[error(transparent)]
    Optim(#[from] kiln_optim::OptimError),
}

/// Configuration of a [`FeatureNet`].
#[derive(Config, Debug, PartialEq)]
pub struct FeatureNetConfig {
    /// Image channels (1 grey, 3 RGB).
    pub channels: usize,
    /// Image side (square images).
    pub image_size: usize,
    /// Classes of the head.
    pub classes: usize,
    /// Channels of each 3×3 stride-2 convolution.
    #[config(default = "vec![32, 64, 128]")]
    pub widths: Vec<usize>,
    /// Width of the feature layer.
    #[config(default = 128)]
    pub feature_dim: usize,
}

impl FeatureNetConfig {
    /// The MNIST extractor: 1×28×28, ten digits.
    pub fn mnist() -> Self {
        Self::new(1, 28, 10)
    }

    /// The emoji-32 extractor: 3×32×32, ten emoji categories.
    pub fn emoji32() -> Self {
        Self::new(3, 32, 10)
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), FeaturesError> {
        let err = |field, value: usize, reason: &str| {
            Err(FeaturesError::Config { field, value: value.to_string(), reason: reason.into() })
        };
        for (field, v) in
            [("channels", self.channels), ("image_size", self.image_size), ("feature_dim", self.feature_dim)]
        {
            if v == 0 {
                return err(field, v, "must be at least 1");
            }
        }
        if self.classes < 2 {
            return err("classes", self.classes, "a classifier needs at least 2 classes");
        }
        if self.widths.is_empty() || self.widths.contains(&0) {
            return Err(FeaturesError::Config {
                field: "widths",
                value: format!("{:?}", self.widths),
                reason: "needs at least one stage, each at least 1 channel wide".into(),
            });
        }
        Ok(())
    }

    /// A freshly initialised network (burn's default initialisers).
    pub fn init<B: Backend>(&self, device: &B::Device) -> FeatureNet<B> {
        let mut convs = Vec::with_capacity(self.widths.len());
        let mut channels = self.channels;
        for &w in &self.widths {
            convs.push(
                Conv2dConfig::new([channels, w], [3, 3])
                    .with_stride([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device),
            );
            channels = w;
        }
        FeatureNet {
            convs,
            feature: LinearConfig::new(channels, self.feature_dim).init(device),
            head: LinearConfig::new(self.feature_dim, self.classes).init(device),
        }
    }

    /// Reads `features.json` from `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, FeaturesError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| FeaturesError::File { path: path.clone(), message: e.to_string() })?;
        Self::parse(&text, path)
    }

    /// Reads a config from the text of a `features.json`; `path` names it in errors.
    fn parse(text: &str, path: PathBuf) -> Result<Self, FeaturesError> {
        let config: Self = serde_json::from_str(text).map_err(|e| FeaturesError::File {
            path: path.clone(),
            message: format!("not a feature-net config: {e}"),
        })?;
        config.validate().map_err(|e| FeaturesError::File { path, message: e.to_string() })?;
        Ok(config)
    }
}

/// An all-convolutional classifier: stride-2 3×3 convolutions with ReLU, global average pooling,
/// a feature layer and a linear head. Inputs are images in `[0, 1]`.
#[derive(Module, Debug)]
pub struct FeatureNet<B: Backend> {
    convs: Vec<Conv2d<B>>,
    feature: Linear<B>,
    head: Linear<B>,
}

impl<B: Backend> FeatureNet<B> {
    /// The features: the feature layer after its ReLU. `[N, feature_dim]`.
    pub fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = images.mul_scalar(2.0).sub_scalar(1.0); // [N, C, S, S] in [-1, 1]
        for conv in &self.convs {
            x = relu(conv.forward(x)); // [N, w, S/2ᵏ, S/2ᵏ]
        }
        let [n, c, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([n, c]); // [N, widths.last]
        relu(self.feature.forward(pooled)) // [N, feature_dim]
    }

    /// Class logits from features. `[N, classes]`.
    pub fn head(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        self.head.forward(features)
    }

    /// Class logits. `[N, classes]`.
    pub fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.head(self.features(images))
    }

    /// Writes `features.json` and `features.safetensors` into `dir`, each atomically.
    pub fn save(&self, config: &FeatureNetConfig, dir: &Path) -> Result<(), FeaturesError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| FeaturesError::File { path: dir.to_path_buf(), message: e.to_string() })?;
        let json = serde_json::to_string_pretty(config)
            .map_err(|e| FeaturesError::File { path: dir.join(CONFIG_FILE), message: e.to_string() })?;
        kiln_core::atomic_write(&dir.join(CONFIG_FILE), json.as_bytes())?;
        kiln_optim::save_module(self, &dir.join(WEIGHTS_FILE), &[("kiln.family", "features".into())])?;
        kiln_core::ModelManifest::new(FAMILY, FORMAT).describing(dir, &[CONFIG_FILE, WEIGHTS_FILE])?.write(dir)?;
        Ok(())
    }

    /// Loads a network saved by [`FeatureNet::save`]; every tensor must be there with its shape.
    pub fn load(dir: &Path, device: &B::Device) -> Result<(FeatureNetConfig, Self), FeaturesError> {
        let config = FeatureNetConfig::load_dir(dir)?;
        let net = kiln_optim::load_module(config.init::<B>(device), &dir.join(WEIGHTS_FILE)).map_err(|e| match e {
            kiln_optim::OptimError::State { path, message } => FeaturesError::File { path, message },
            other => FeaturesError::Optim(other),
        })?;
        Ok((config, net))
    }
}

/// The bundled networks' config and weights, built into every binary that links this crate: `kiln
/// eval` then works from an installed or moved binary, with no source tree beside it (~0.9 MB).
const EMBEDDED: &[(&str, &str, &[u8])] = &[
    ("mnist", include_str!("../weights/mnist/features.json"), include_bytes!("../weights/mnist/features.safetensors")),
    (
        "emoji32",
        include_str!("../weights/emoji32/features.json"),
        include_bytes!("../weights/emoji32/features.safetensors"),
    ),
];

impl<B: Backend> FeatureNet<B> {
    /// Loads a bundled network (`mnist`, `emoji32`) from the copy built into the binary; `None`
    /// for a name that is not bundled.
    pub fn load_bundled(name: &str, device: &B::Device) -> Result<Option<(FeatureNetConfig, Self)>, FeaturesError> {
        let Some(&(_, json, weights)) = EMBEDDED.iter().find(|(n, _, _)| *n == name) else {
            return Ok(None);
        };
        let label = PathBuf::from(format!("<built-in {name}>"));
        let config = FeatureNetConfig::parse(json, label.join(CONFIG_FILE))?;
        let net = kiln_optim::load_module_bytes(config.init::<B>(device), weights.to_vec(), &label.join(WEIGHTS_FILE))?;
        Ok(Some((config, net)))
    }
}

/// The directory of a feature network shipped with kiln (`mnist`, `emoji32`) in this crate's
/// source tree, where `cargo xtask features` rebuilds it; binaries read the built-in copy
/// ([`FeatureNet::load_bundled`]). `None` for an unknown name.
pub fn bundled(name: &str) -> Option<PathBuf> {
    BUNDLED.contains(&name).then(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("weights").join(name))
}

/// Names [`bundled`] knows.
pub const BUNDLED: &[&str] = &["mnist", "emoji32"];

#[cfg(test)]
mod tests;
