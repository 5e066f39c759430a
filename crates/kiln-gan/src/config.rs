//! The architecture settings shared by the generator and the discriminator, their presets, and
//! the crate's error type.

use std::path::{Path, PathBuf};

use burn::config::Config;
use serde::{Deserialize, Serialize};

/// File name of a saved [`GanConfig`] inside a model directory.
pub const CONFIG_FILE: &str = "gan.json";
/// File name of the generator weights a sampler loads (the EMA weights when EMA is on).
pub const GENERATOR_FILE: &str = "generator.safetensors";
/// File name of the discriminator weights.
pub const DISCRIMINATOR_FILE: &str = "discriminator.safetensors";
/// The family name in `kiln.json` and in experiment files.
pub const FAMILY: &str = "gan";
/// Version of the directory layout (`kiln.json`, `gan.json`, the two weight files).
pub const FORMAT: u32 = 1;

/// How the discriminator's hidden convolutions are normalised. Mutually exclusive, hence an enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Norm {
    /// Plain convolutions (e.g. a WGAN-GP critic).
    None,
    /// Batch norm after every hidden convolution but the first, as in DCGAN.
    Batch,
    /// Spectral norm on every convolution (Miyato et al. 2018), as in SAGAN and the projection
    /// discriminator.
    Spectral,
}

/// The architecture of a GAN: a DCGAN-shaped generator and discriminator (Radford et al. 2015,
/// arXiv:1511.06434), optionally class-conditional (the class code concatenated to `z` and
/// conditional batch norm in G, a projection discriminator, Miyato & Koyama 2018,
/// arXiv:1802.05637) and with SAGAN's self-attention
/// (Zhang et al. 2018, arXiv:1805.08318).
///
/// The defaults are pytorch/examples' `dcgan` at 64×64 (`nz = 100`, `ngf = ndf = 64`).
///
/// Geometry: the image side is halved while it is even and larger than 4, giving `k` stages and a
/// base side `s₀ = image_size / 2^k` (64 → 4 stages, s₀ = 4; 32 → 3, 4; 28 → 2, 7). G projects
/// `z` to `ngf·2^(k−1)` channels at `s₀×s₀` and doubles the side `k` times, halving the channels;
/// D mirrors it with stride-2 4×4 convolutions (`ndf·2^i` channels) and ends in an `s₀×s₀`
/// convolution to one logit.
#[derive(Config, Debug, PartialEq)]
pub struct GanConfig {
    /// Dimension of the latent `z`.
    #[config(default = 100)]
    pub nz: usize,
    /// Generator width: channels of its last hidden stage (doubling towards `z`).
    #[config(default = 64)]
    pub ngf: usize,
    /// Discriminator width: channels of its first stage (doubling towards the logit).
    #[config(default = 64)]
    pub ndf: usize,
    /// Image channels (1 grey, 3 RGB).
    #[config(default = 3)]
    pub channels: usize,
    /// Image height = width.
    #[config(default = 64)]
    pub image_size: usize,
    /// Classes of a conditional model; 0 for an unconditional one.
    #[config(default = 0)]
    pub num_classes: usize,
    /// Side of the feature map that gets a SAGAN self-attention block, in both networks (one of
    /// the stage sides `s₀, 2s₀, …, image_size/2`); `None` for no attention.
    #[config(default = "None")]
    pub attention: Option<usize>,
    /// Normalisation of the discriminator.
    #[config(default = "Norm::Batch")]
    pub d_norm: Norm,
    /// Spectrally normalise the generator's convolutions too (SAGAN does; it keeps batch norm).
    #[config(default = false)]
    pub g_spectral_norm: bool,
}

/// Errors of this crate: invalid settings, bad labels, unreadable model directories.
#[derive(Debug, thiserror::Error)]
pub enum GanError {
    /// A setting is out of range or two settings do not go together.
    #[error("GAN config: {field} = {value}: {reason}")]
    Config {
        /// The offending field, as written in an experiment file.
        field: &'static str,
        /// Its value.
        value: String,
        /// Why it is wrong.
        reason: String,
    },
    /// A class label outside `0..num_classes`, or a label given to an unconditional model.
    #[error("label {label}: {reason}")]
    Label {
        /// The label asked for.
        label: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A model file is missing, unreadable or does not fit the model.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Optimiser settings or state.
    #[error(transparent)]
    Optim(#[from] kiln_optim::OptimError),
    /// Writing a file failed.
    #[error(transparent)]
    Save(#[from] kiln_core::SaveError),
}

impl From<GanError> for kiln_core::SaveError {
    fn from(e: GanError) -> Self {
        match e {
            GanError::Save(e) => e,
            GanError::Checkpoint { path, message } => kiln_core::SaveError::Encode { path, message },
            other => kiln_core::SaveError::Encode { path: PathBuf::new(), message: other.to_string() },
        }
    }
}

impl From<GanError> for kiln_core::LoadError {
    fn from(e: GanError) -> Self {
        match e {
            GanError::Checkpoint { path, message } => kiln_core::LoadError { path, message },
            GanError::Optim(e) => e.into(),
            other => kiln_core::LoadError { path: PathBuf::new(), message: other.to_string() },
        }
    }
}

pub(crate) fn config_err(field: &'static str, value: impl ToString, reason: impl Into<String>) -> GanError {
    GanError::Config { field, value: value.to_string(), reason: reason.into() }
}

impl GanConfig {
    /// MNIST, 1×28×28: DCGAN with `ngf = ndf = 64` (G 100→128@7→64@14→1@28, D 1→64@14→128@7→1).
    /// About 14 M multiply-adds per image per network, so two CPU cores train it in minutes.
    pub fn dcgan28() -> Self {
        Self::new().with_channels(1).with_image_size(28)
    }

    /// RGB 32×32 DCGAN (CIFAR-10 / emoji-32 sized): G 100→256@4→128@8→64@16→3@32.
    pub fn dcgan32() -> Self {
        Self::new().with_image_size(32)
    }

    /// pytorch/examples' `dcgan` at 64×64 (`nz = 100`, `ngf = ndf = 64`, batch norm, no biases,
    /// N(0, 0.02) weights): the default.
    pub fn dcgan64() -> Self {
        Self::new()
    }

    /// Class-conditional MNIST: [`GanConfig::dcgan28`] with the class concatenated to `z` and
    /// conditional batch norm in G, and a spectrally normalised projection discriminator (Miyato &
    /// Koyama 2018), 10 classes. Train it with hinge loss. Spectral norm starts slower than
    /// DCGAN's batch norm (noise for the first ~300 steps on the MNIST sample) but is what the
    /// projection paper uses and what the penalties pair with.
    pub fn cgan28() -> Self {
        Self::dcgan28().with_num_classes(10).with_d_norm(Norm::Spectral)
    }

    /// A SAGAN-style 32×32 RGB model: spectral norm in both networks, self-attention at 16×16.
    /// Unconditional as given; set `num_classes` (10 for emoji-32's categories) for a
    /// class-conditional one. The paper's networks are ResNets at 128×128; this keeps DCGAN's
    /// plain stages and adds what SAGAN adds (attention, SN in G and D, hinge loss and TTUR in
    /// [`crate::GanTaskConfig::sagan`]).
    pub fn sagan32() -> Self {
        Self::dcgan32().with_attention(Some(16)).with_d_norm(Norm::Spectral).with_g_spectral_norm(true)
    }

    /// A preset by name (see [`GanConfig::PRESETS`]).
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "dcgan28" => Some(Self::dcgan28()),
            "dcgan32" => Some(Self::dcgan32()),
            "dcgan64" => Some(Self::dcgan64()),
            "cgan28" => Some(Self::cgan28()),
            "sagan32" => Some(Self::sagan32()),
            _ => None,
        }
    }

    /// Names accepted by [`GanConfig::preset`].
    pub const PRESETS: &'static [&'static str] = &["dcgan28", "dcgan32", "dcgan64", "cgan28", "sagan32"];

    /// The number of stride-2 stages `k` and the base side `s₀`.
    pub fn stages(&self) -> (usize, usize) {
        let mut side = self.image_size;
        let mut k = 0;
        while side > 4 && side.is_multiple_of(2) {
            side /= 2;
            k += 1;
        }
        (k, side)
    }

    /// Whether the model is class-conditional.
    pub fn conditional(&self) -> bool {
        self.num_classes > 0
    }

    /// Checks every field; `init` assumes a validated config.
    pub fn validate(&self) -> Result<(), GanError> {
        for (field, v) in [("nz", self.nz), ("ngf", self.ngf), ("ndf", self.ndf), ("channels", self.channels)] {
            if v == 0 {
                return Err(config_err(field, v, "must be at least 1"));
            }
        }
        let (k, s0) = self.stages();
        if k == 0 || self.image_size < 8 {
            return Err(config_err(
                "image_size",
                self.image_size,
                "must be at least 8 and even (the networks halve it at least once)",
            ));
        }
        if self.num_classes == 1 {
            return Err(config_err("num_classes", 1, "use 0 for an unconditional model, or at least 2 classes"));
        }
        if let Some(side) = self.attention {
            let sides: Vec<usize> = (0..k).map(|i| s0 << i).collect();
            if !sides.contains(&side) {
                return Err(config_err(
                    "attention",
                    side,
                    format!("must be the side of a hidden feature map, one of {sides:?}"),
                ));
            }
        }
        let widest = self.ngf.max(self.ndf).checked_shl(k as u32).unwrap_or(0);
        if widest == 0 || widest > 1 << 16 {
            return Err(config_err("ngf/ndf", format!("{}/{}", self.ngf, self.ndf), "grow past 65536 channels"));
        }
        Ok(())
    }

    /// Reads a config saved beside a model from `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, GanError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| GanError::Checkpoint { path: path.clone(), message: e.to_string() })?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| GanError::Checkpoint { path: path.clone(), message: format!("not a GAN config: {e}") })?;
        config.validate().map_err(|e| GanError::Checkpoint { path, message: e.to_string() })?;
        Ok(config)
    }

    /// Writes the config as `gan.json` into `dir`, atomically.
    pub fn save_dir(&self, dir: &Path) -> Result<(), GanError> {
        let path = dir.join(CONFIG_FILE);
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| kiln_core::SaveError::Encode { path: path.clone(), message: e.to_string() })?;
        kiln_core::atomic_write(&path, json.as_bytes())?;
        Ok(())
    }
}
