//! Experiment files: TOML under `experiments/`, read strictly (an unknown field or a wrong type is
//! an error naming it, not a silently ignored setting).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_features::FeatureNetConfig;
use kiln_gan::{GanConfig, GanTaskConfig, Norm};
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
    /// bundled sample) or `emoji` (a sheet written by `cargo xtask data emoji`, labelled by
    /// category).
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
    /// `emoji.png` + `dataset.json` + `captions.jsonl` (`datasets/emoji-32`); labels are the emoji
    /// categories. One split: a model that needs a test split evaluates on the training images.
    Emoji,
}

/// The model, tagged by family.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "kebab-case")]
pub enum ModelSpec {
    /// A convolutional VAE (`kiln-vae`).
    Vae(VaeSpec),
    /// A GAN (`kiln-gan`): DCGAN, class-conditional, SAGAN.
    Gan(GanSpec),
    /// A classifier whose features score generators (`kiln-features`; `cargo xtask features`).
    Classifier(ClassifierSpec),
}

/// A feature-network classifier: its shape; the classes come from the data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSpec {
    /// Channels of each stride-2 convolution (default [32, 64, 128]).
    pub widths: Option<Vec<usize>>,
    /// Width of the feature layer (default 128).
    pub feature_dim: Option<usize>,
}

impl ClassifierSpec {
    /// The config for images of `channels`×`size`×`size` in `classes` classes, validated.
    pub fn config(&self, channels: usize, size: usize, classes: usize) -> Result<FeatureNetConfig> {
        let mut c = FeatureNetConfig::new(channels, size, classes);
        if let Some(w) = &self.widths {
            c.widths = w.clone();
        }
        c.feature_dim = self.feature_dim.unwrap_or(c.feature_dim);
        c.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        Ok(c)
    }
}

impl ModelSpec {
    /// The family's name, as `family = "…"` spells it.
    pub fn family(&self) -> &'static str {
        match self {
            Self::Vae(_) => "vae",
            Self::Gan(_) => "gan",
            Self::Classifier(_) => "classifier",
        }
    }
}

/// A GAN: a preset plus any overrides. Training settings (loss, penalty, the two optimisers,
/// `n_critic`, EMA) are under `[train.gan]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GanSpec {
    /// `dcgan28` (default), `dcgan32`, `dcgan64`, `cgan28` or `sagan32`.
    pub preset: Option<String>,
    /// Latent dimension.
    pub nz: Option<usize>,
    /// Generator width (channels of its last hidden stage).
    pub ngf: Option<usize>,
    /// Discriminator width (channels of its first stage).
    pub ndf: Option<usize>,
    /// Side of the feature maps that get self-attention (SAGAN), e.g. 16.
    pub attention: Option<usize>,
    /// The discriminator's normalisation: `batch`, `spectral` or `none`.
    pub d_norm: Option<Norm>,
    /// Spectral norm in the generator too (SAGAN).
    pub g_spectral_norm: Option<bool>,
    /// Condition on the data's labels (one class per label value, e.g. emoji categories). A
    /// conditional preset (`cgan28`) is conditional unless this is `false`.
    pub conditional: Option<bool>,
}

impl GanSpec {
    /// The preset's name.
    pub fn preset_name(&self) -> &str {
        self.preset.as_deref().unwrap_or("dcgan28")
    }

    /// The preset with this spec's overrides applied, validated. A conditional model gets
    /// `classes` classes (the training data's; `None` keeps the preset's count).
    pub fn config(&self, classes: Option<usize>) -> Result<GanConfig> {
        let preset = self.preset_name();
        let mut c = GanConfig::preset(preset).with_context(|| {
            format!("model.preset = {preset:?}: unknown GAN preset (known: {})", GanConfig::PRESETS.join(", "))
        })?;
        let conditional = self.conditional.unwrap_or(c.num_classes > 0);
        c.num_classes = match (conditional, classes) {
            (false, _) => 0,
            (true, Some(k)) => k,
            (true, None) => c.num_classes.max(10),
        };
        c.nz = self.nz.unwrap_or(c.nz);
        c.ngf = self.ngf.unwrap_or(c.ngf);
        c.ndf = self.ndf.unwrap_or(c.ndf);
        c.d_norm = self.d_norm.unwrap_or(c.d_norm);
        c.g_spectral_norm = self.g_spectral_norm.unwrap_or(c.g_spectral_norm);
        if self.attention.is_some() {
            c.attention = self.attention;
        }
        c.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        Ok(c)
    }

    /// The preset's training recipe with `[train.gan]`'s entries laid over it: a key given there
    /// replaces the recipe's, except inside `g_optim`/`d_optim`, whose keys are replaced one by
    /// one (so `d_optim = { lr = 4e-4 }` keeps the recipe's betas). Strict: unknown keys are errors.
    pub fn settings(&self, overrides: Option<&toml::Table>, ema_decay: Option<f64>) -> Result<GanTaskConfig> {
        let base = GanTaskConfig::for_model_preset(self.preset_name()).unwrap_or_default();
        let mut table = match toml::Value::try_from(&base).context("serialising the GAN recipe")? {
            toml::Value::Table(t) => t,
            other => anyhow::bail!("the GAN recipe serialised as {other:?}, not a table"),
        };
        for (key, value) in overrides.into_iter().flatten() {
            match (table.get_mut(key), value) {
                (Some(toml::Value::Table(old)), toml::Value::Table(new)) if key.ends_with("_optim") => {
                    old.extend(new.clone());
                }
                _ => {
                    table.insert(key.clone(), value.clone());
                }
            }
        }
        if let Some(d) = ema_decay {
            table.insert("ema_decay".into(), toml::Value::Float(d));
        }
        let settings: GanTaskConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e| anyhow::anyhow!("train.gan: {}", e.to_string().replace('\n', " ").trim()))?;
        Ok(settings)
    }
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
    /// Optimiser (VAE): `[train.optim]` with kind, lr, beta1, beta2, eps, weight_decay, warmup,
    /// decay, min_lr_factor, clip_norm, accumulate.
    pub optim: Option<OptimConfig>,
    /// GAN training (`[train.gan]`): loss, penalty, penalty_every, n_critic, g_optim, d_optim,
    /// ema_decay, preview_samples, preview_columns, preview_seed — over the preset's recipe.
    pub gan: Option<toml::Table>,
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
        if let Some(optim) = &t.optim {
            optim.validate().map_err(|e| anyhow::anyhow!("train.{e}"))?;
        }
        if let Some(d) = t.ema_decay {
            anyhow::ensure!((0.0..1.0).contains(&d), "train.ema_decay = {d}: must be in [0, 1)");
        }
        anyhow::ensure!(
            self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) && !self.name.is_empty(),
            "name = {:?}: use letters, digits, '-', '_' and '.' (it names a directory)",
            self.name
        );
        if !matches!(self.model, ModelSpec::Gan(_)) {
            anyhow::ensure!(
                t.gan.is_none(),
                "[train.gan] is for family = \"gan\"; family = \"{}\" takes [train.optim]",
                self.model.family()
            );
        }
        match &self.model {
            ModelSpec::Vae(v) => {
                v.config()?;
            }
            ModelSpec::Classifier(c) => {
                c.config(1, 8, 2)?;
            }
            ModelSpec::Gan(g) => {
                anyhow::ensure!(
                    t.optim.is_none(),
                    "[train.optim]: a GAN has two optimisers; set them as g_optim and d_optim under [train.gan]"
                );
                let config = g.config(None)?;
                g.settings(t.gan.as_ref(), t.ema_decay)?
                    .validate(&config)
                    .map_err(|e| anyhow::anyhow!("train.gan: {e}"))?;
            }
        }
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
        let ModelSpec::Vae(v) = &e.model else { panic!("a VAE") };
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
        let optim = e.train.optim.unwrap();
        assert_eq!((optim.lr, optim.warmup), (3e-4, 5));
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
        let err = Experiment::parse(&GOOD.replace("family = \"vae\"", "family = \"draw\"")).unwrap_err().to_string();
        assert!(err.contains("unknown variant `draw`"), "{err}");
    }

    const GAN: &str = r#"
name = "g"
[data]
format = "mnist"
path = "datasets/mnist-sample"
[model]
family = "gan"
preset = "cgan28"
ngf = 8
[train]
steps = 10
"#;

    #[test]
    fn gan_settings_lay_over_the_preset_recipe() {
        let e = Experiment::parse(GAN).unwrap();
        let ModelSpec::Gan(g) = &e.model else { panic!("a GAN") };
        let c = g.config(Some(10)).unwrap();
        assert_eq!((c.ngf, c.num_classes), (8, 10));
        // cgan28's recipe is DCGAN's with hinge loss.
        let s = g.settings(None, None).unwrap();
        assert_eq!(s.loss, kiln_gan::GanLoss::Hinge);
        let with = |extra: &str| GAN.replace("steps = 10", &format!("steps = 10\n[train.gan]\n{extra}"));
        let e =
            Experiment::parse(&with("d_optim = { lr = 4e-4 }\nn_critic = 2\npenalty = { kind = \"r1\", gamma = 0.1 }"))
                .unwrap();
        let ModelSpec::Gan(g) = &e.model else { panic!("a GAN") };
        let s = g.settings(e.train.gan.as_ref(), Some(0.99)).unwrap();
        assert_eq!((s.d_optim.lr, s.d_optim.beta1, s.g_optim.lr), (4e-4, 0.5, 2e-4));
        assert_eq!((s.n_critic, s.ema_decay), (2, Some(0.99)));
        assert_eq!(s.penalty, kiln_gan::Penalty::R1 { gamma: 0.1 });
        // Unconditional on request; a conditional model takes the data's class count.
        let e = Experiment::parse(&GAN.replace("ngf = 8", "conditional = false")).unwrap();
        let ModelSpec::Gan(g) = &e.model else { panic!("a GAN") };
        assert_eq!(g.config(Some(10)).unwrap().num_classes, 0);
    }

    #[test]
    fn gan_mistakes_are_named() {
        let with = |extra: &str| GAN.replace("steps = 10", &format!("steps = 10\n{extra}"));
        let err = Experiment::parse(&with("[train.gan]\nn_critc = 2")).unwrap_err().to_string();
        assert!(err.contains("train.gan") && err.contains("n_critc"), "{err}");
        let err = Experiment::parse(&with("[train.gan]\nloss = \"wasserstien\"")).unwrap_err().to_string();
        assert!(err.contains("wasserstien"), "{err}");
        let err = Experiment::parse(&with("[train.optim]\nlr = 1e-3")).unwrap_err().to_string();
        assert!(err.contains("g_optim and d_optim"), "{err}");
        let err = Experiment::parse(&GAN.replace("ngf = 8", "attention = 5")).unwrap_err().to_string();
        assert!(err.contains("attention"), "{err}");
        // WGAN-GP with a batch-norm critic is refused with the reason.
        let err = Experiment::parse(
            &GAN.replace("cgan28", "dcgan28")
                .replace("steps = 10", "steps = 10\n[train.gan]\npenalty = { kind = \"wgan-gp\", lambda = 10.0 }"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("batch norm"), "{err}");
        let err = Experiment::parse(&GOOD.replace("steps = 10", "steps = 10\n[train.gan]\nn_critic = 2"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[train.gan] is for family = \"gan\""), "{err}");
    }
}
