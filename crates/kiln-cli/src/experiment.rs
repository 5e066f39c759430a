//! Experiment files: TOML under `experiments/`, read strictly (an unknown field or a wrong type is
//! an error naming it, not a silently ignored setting).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_optim::OptimConfig;
use kiln_vae::{Likelihood, VaeConfig};
use serde::{Deserialize, Serialize};

/// One experiment: what data, which model, how long.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Names the run directory (`runs/<name>/…`).
    pub name: String,
    /// Seeds weights, noise and data order.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The training data.
    pub data: DataSpec,
    /// The model.
    pub model: ModelSpec,
    /// The budget and optimiser.
    pub train: TrainSpec,
}

fn default_seed() -> u64 {
    42
}

/// Where the training data lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// The format: `mnist` (a directory of MNIST-format IDX files: MNIST, Fashion-MNIST, the
    /// bundled sample).
    pub format: DataFormat,
    /// The directory, relative to the current directory unless absolute.
    pub path: PathBuf,
}

/// Data formats `kiln train` reads.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
    Mnist,
}

/// The model, tagged by family.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "kebab-case")]
pub enum ModelSpec {
    /// A convolutional VAE (`kiln-vae`).
    Vae(VaeSpec),
}

/// A VAE: a preset plus any overrides.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeSpec {
    /// `mnist` (default), `rgb32` or `vanilla64`.
    pub preset: Option<String>,
    /// Channels of each stride-2 stage.
    pub widths: Option<Vec<usize>>,
    /// Dense layer width (0: none).
    pub hidden: Option<usize>,
    /// Latent dimension.
    pub latent: Option<usize>,
    /// `bernoulli` or `gaussian`.
    pub likelihood: Option<LikelihoodName>,
    /// Pixel standard deviation of the Gaussian likelihood.
    pub sigma: Option<f64>,
    /// KL weight.
    pub beta: Option<f64>,
}

/// Pixel likelihoods by name.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LikelihoodName {
    /// Bernoulli pixels.
    Bernoulli,
    /// Gaussian pixels (`sigma`, default 0.1).
    Gaussian,
}

/// Training budget, optimiser and bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Optimisation steps (one batch each; with `optim.accumulate = k`, k steps make one update).
    pub steps: usize,
    /// Images per step.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Metrics line every N steps.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Preview grids every N steps (0: at the end only).
    #[serde(default)]
    pub preview_every: usize,
    /// Checkpoint every N steps (0: only at the end or when stopped).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Checkpoints kept (older ones are deleted).
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// Stop after this many seconds even if steps remain (resumable).
    pub time_budget_s: Option<f64>,
    /// Keep an exponential moving average of the weights with this decay, for sampling.
    pub ema_decay: Option<f64>,
    /// Optimiser: `[train.optim]` with kind, lr, beta1, beta2, eps, weight_decay, warmup, decay,
    /// min_lr_factor, clip_norm, accumulate.
    #[serde(default)]
    pub optim: OptimConfig,
}

fn default_batch() -> usize {
    64
}
fn default_log_every() -> usize {
    25
}
fn default_checkpoint_every() -> usize {
    500
}
fn default_keep() -> usize {
    3
}

impl Experiment {
    /// Reads and checks an experiment file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read experiment file", path.display()))?;
        Self::parse(&text).with_context(|| format!("{}", path.display()))
    }

    /// Parses and checks experiment TOML.
    pub fn parse(text: &str) -> Result<Self> {
        // toml's message names the field and the line; keep it on one line.
        let exp: Self =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().replace('\n', " ").trim()))?;
        exp.check()?;
        Ok(exp)
    }

    fn check(&self) -> Result<()> {
        let t = &self.train;
        anyhow::ensure!(t.steps > 0, "train.steps = 0: must be at least 1");
        anyhow::ensure!(t.batch_size > 0, "train.batch_size = 0: must be at least 1");
        anyhow::ensure!(t.keep_checkpoints > 0, "train.keep_checkpoints = 0: must be at least 1");
        t.optim.validate().map_err(|e| anyhow::anyhow!("train.{e}"))?;
        if let Some(d) = t.ema_decay {
            anyhow::ensure!((0.0..1.0).contains(&d), "train.ema_decay = {d}: must be in [0, 1)");
        }
        anyhow::ensure!(
            self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) && !self.name.is_empty(),
            "name = {:?}: use letters, digits, '-', '_' and '.' (it names a directory)",
            self.name
        );
        let ModelSpec::Vae(v) = &self.model;
        v.config()?;
        Ok(())
    }
}

impl VaeSpec {
    /// The preset with this spec's overrides applied, validated.
    pub fn config(&self) -> Result<VaeConfig> {
        let preset = self.preset.as_deref().unwrap_or("mnist");
        let mut c = VaeConfig::preset(preset).with_context(|| {
            format!("model.preset = {preset:?}: unknown VAE preset (known: {})", VaeConfig::PRESETS.join(", "))
        })?;
        if let Some(w) = &self.widths {
            c.widths = w.clone();
        }
        if let Some(h) = self.hidden {
            c.hidden = h;
        }
        if let Some(l) = self.latent {
            c.latent = l;
        }
        if let Some(b) = self.beta {
            c.beta = b;
        }
        match (self.likelihood, self.sigma) {
            (Some(LikelihoodName::Bernoulli), Some(_)) => {
                anyhow::bail!("model.sigma is only meaningful with likelihood = \"gaussian\"")
            }
            (Some(LikelihoodName::Bernoulli), None) => c.likelihood = Likelihood::Bernoulli,
            (Some(LikelihoodName::Gaussian), sigma) => {
                c.likelihood = Likelihood::Gaussian { sigma: sigma.unwrap_or(0.1) }
            }
            (None, Some(sigma)) => match c.likelihood {
                Likelihood::Gaussian { .. } => c.likelihood = Likelihood::Gaussian { sigma },
                Likelihood::Bernoulli => anyhow::bail!("model.sigma is only meaningful with likelihood = \"gaussian\""),
            },
            (None, None) => {}
        }
        c.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
[data]
format = "mnist"
path = "datasets/mnist-sample"
[model]
family = "vae"
latent = 8
[train]
steps = 10
"#;

    #[test]
    fn good_file_parses_with_defaults() {
        let e = Experiment::parse(GOOD).unwrap();
        assert_eq!(e.seed, 42);
        assert_eq!(e.train.batch_size, 64);
        let ModelSpec::Vae(v) = &e.model;
        assert_eq!(v.config().unwrap().latent, 8);
    }

    #[test]
    fn unknown_field_is_named() {
        let err = Experiment::parse(&GOOD.replace("latent = 8", "latnet = 8")).unwrap_err().to_string();
        assert!(err.contains("unknown field `latnet`"), "{err}");
        let err = Experiment::parse(&GOOD.replace("steps = 10", "steps = 10\nsteps_typo = 1")).unwrap_err().to_string();
        assert!(err.contains("unknown field `steps_typo`"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = Experiment::parse(&GOOD.replace("steps = 10", "steps = \"ten\"")).unwrap_err().to_string();
        assert!(err.contains("steps") && err.contains("invalid type"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn optimizer_table_is_strict() {
        let with = |extra: &str| GOOD.replace("steps = 10", &format!("steps = 10\n[train.optim]\n{extra}"));
        let e = Experiment::parse(&with("kind = \"adamw\"\nlr = 3e-4\nwarmup = 5\ndecay = \"cosine\"")).unwrap();
        assert_eq!((e.train.optim.lr, e.train.optim.warmup), (3e-4, 5));
        let err = Experiment::parse(&with("beta2 = 1.5")).unwrap_err().to_string();
        assert!(err.contains("train.optim.beta2 = 1.5: must be in [0, 1)"), "{err}");
        let err = Experiment::parse(&with("decay = \"exponential\"")).unwrap_err().to_string();
        assert!(err.contains("unknown variant `exponential`"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = Experiment::parse(&GOOD.replace("latent = 8", "latent = 0")).unwrap_err().to_string();
        assert!(err.contains("latent = 0"), "{err}");
        let err = Experiment::parse(&GOOD.replace("family = \"vae\"", "family = \"vae\"\npreset = \"huge\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.preset = \"huge\""), "{err}");
        let err = Experiment::parse(&GOOD.replace("family = \"vae\"", "family = \"gan\"")).unwrap_err().to_string();
        assert!(err.contains("gan"), "{err}");
    }
}
