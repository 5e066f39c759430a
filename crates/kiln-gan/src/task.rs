//! Training a GAN under `kiln-train`: one discriminator update per step, a generator update every
//! `n_critic` steps, each with its own [`Optim`] (TTUR: two learning rates, Heusel et al. 2017),
//! an exponential moving average of the generator for sampling, and fixed-noise preview grids.

use std::path::Path;

use burn::module::{AutodiffModule, Module};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use kiln_core::{
    ImageBatch, LoadError, ModelManifest, PixelRange, Preview, SaveError, StepOutput, Task, read_scalars,
    standard_normal,
};
use kiln_optim::{Decay, Ema, Optim, OptimConfig, load_module, save_module};
use serde::{Deserialize, Serialize};

use crate::config::{DISCRIMINATOR_FILE, FAMILY, FORMAT, GENERATOR_FILE, GanConfig, GanError, Norm, config_err};
use crate::generator::to_unit;
use crate::layers::one_hot;
use crate::loss::{GanLoss, Penalty, gradient_penalty, interpolates};
use crate::{Discriminator, Generator};

/// The live generator's weights in a training state directory when EMA is on (the EMA weights
/// take [`GENERATOR_FILE`], the name samplers read).
pub const LIVE_GENERATOR_FILE: &str = "live-generator.safetensors";
const G_OPTIM_FILE: &str = "g-optim.safetensors";
const D_OPTIM_FILE: &str = "d-optim.safetensors";
const COUNTERS_FILE: &str = "gan-state.json";
/// The EMA generator with its update count, in a training state directory.
const EMA_FILE: &str = "ema.safetensors";
/// Mixed into the preview seed so the preview noise is not the stream `kiln sample --seed` draws.
const PREVIEW_NOISE_STREAM: u64 = 0x6A09_E667_F3BC_C908;

/// How a GAN is trained, as written under `[train]` in an experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GanTaskConfig {
    /// The adversarial loss.
    pub loss: GanLoss,
    /// A gradient penalty on the discriminator.
    pub penalty: Penalty,
    /// Apply the penalty every this many steps, scaled up by the same factor (StyleGAN2's lazy
    /// regularisation, Karras et al. 2020, §B, who use 16 for R1): the penalty pass is the dearest
    /// part of a step, and a lazy penalty trains nearly as well for much less.
    pub penalty_every: usize,
    /// Discriminator updates per generator update (5 for WGAN-GP). Each step updates D on its
    /// batch; G is updated on steps `n_critic − 1, 2·n_critic − 1, …`.
    pub n_critic: usize,
    /// The generator's optimiser.
    pub g_optim: OptimConfig,
    /// The discriminator's optimiser.
    pub d_optim: OptimConfig,
    /// Decay of the generator's weight average used for sampling; `None` samples the live
    /// weights. Warmed up as `min(decay, (1 + t)/(10 + t))` after `t` updates, so short runs get
    /// a useful average too.
    pub ema_decay: Option<f64>,
    /// Weight of an auxiliary classification loss for a conditional model (AC-GAN, Odena et al.
    /// 2017, arXiv:1610.09585), whose classifier is the projection discriminator's own class
    /// scores ([`Discriminator::forward_with_classes`]), so it adds no weights: D also minimises
    /// the cross-entropy of the real images' classes, G that of the classes its fakes were asked
    /// for. The projection alone only rewards "real and of class y" through one inner product;
    /// the cross-entropy also pushes the other classes' scores down, which is what keeps a
    /// sample of class 4 from looking like a 9. 0 turns it off.
    pub class_loss: f64,
    /// Images in an unconditional preview grid.
    pub preview_samples: usize,
    /// Images per grid row; a conditional model's grid has one row per class.
    pub preview_columns: usize,
    /// Seed of the fixed preview noise (drawn on the host, independent of the backend's
    /// generator, so grids of one run are comparable and a resumed run draws the same noise).
    pub preview_seed: u64,
}

impl Default for GanTaskConfig {
    fn default() -> Self {
        Self::dcgan()
    }
}

fn adam(lr: f64, beta1: f64, beta2: f64) -> OptimConfig {
    OptimConfig { lr, beta1, beta2, decay: Decay::Constant, ..OptimConfig::default() }
}

impl GanTaskConfig {
    /// DCGAN's recipe (Radford et al. 2015, §4): non-saturating loss, Adam with lr 2·10⁻⁴ and
    /// β = (0.5, 0.999) for both networks, one D step per G step, plus an EMA of G (0.999).
    pub fn dcgan() -> Self {
        Self {
            loss: GanLoss::NonSaturating,
            penalty: Penalty::None,
            penalty_every: 1,
            n_critic: 1,
            g_optim: adam(2e-4, 0.5, 0.999),
            d_optim: adam(2e-4, 0.5, 0.999),
            ema_decay: Some(0.999),
            class_loss: 0.0,
            preview_samples: 64,
            preview_columns: 8,
            preview_seed: 0,
        }
    }

    /// SAGAN's recipe (Zhang et al. 2018, §5): hinge loss, TTUR with lr 1·10⁻⁴ for G and 4·10⁻⁴
    /// for D, Adam β = (0, 0.9), one D step per G step, EMA of G.
    pub fn sagan() -> Self {
        Self { loss: GanLoss::Hinge, g_optim: adam(1e-4, 0.0, 0.9), d_optim: adam(4e-4, 0.0, 0.9), ..Self::dcgan() }
    }

    /// WGAN-GP's recipe (Gulrajani et al. 2017, algorithm 1): Wasserstein loss, λ = 10,
    /// `n_critic = 5`, Adam lr 1·10⁻⁴, β = (0, 0.9). Needs a critic without batch norm.
    pub fn wgan_gp() -> Self {
        Self {
            loss: GanLoss::Wasserstein,
            penalty: Penalty::WganGp { lambda: 10.0 },
            n_critic: 5,
            g_optim: adam(1e-4, 0.0, 0.9),
            d_optim: adam(1e-4, 0.0, 0.9),
            ..Self::dcgan()
        }
    }

    /// A recipe by name (see [`GanTaskConfig::PRESETS`]).
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "dcgan" => Some(Self::dcgan()),
            "sagan" => Some(Self::sagan()),
            "wgan-gp" => Some(Self::wgan_gp()),
            _ => None,
        }
    }

    /// Names accepted by [`GanTaskConfig::preset`].
    pub const PRESETS: &'static [&'static str] = &["dcgan", "sagan", "wgan-gp"];

    /// The recipe that goes with a [`GanConfig::preset`] of this name: DCGAN's for the `dcgan*`
    /// models, DCGAN's with hinge loss for `cgan28` (spectral norm and projection, as in Miyato &
    /// Koyama 2018, who train with hinge loss), SAGAN's for `sagan32`.
    pub fn for_model_preset(name: &str) -> Option<Self> {
        match name {
            "dcgan28" | "dcgan32" | "dcgan64" => Some(Self::dcgan()),
            "cgan28" => Some(Self { loss: GanLoss::Hinge, ..Self::dcgan() }),
            "sagan32" => Some(Self::sagan()),
            _ => None,
        }
    }

    /// Checks every field, and that the settings fit `model`.
    pub fn validate(&self, model: &GanConfig) -> Result<(), GanError> {
        self.g_optim.validate()?;
        self.d_optim.validate()?;
        if self.n_critic == 0 {
            return Err(config_err("n_critic", 0, "must be at least 1"));
        }
        if self.penalty_every == 0 {
            return Err(config_err("penalty_every", 0, "must be at least 1"));
        }
        match self.penalty {
            Penalty::None => {}
            Penalty::R1 { gamma: w } | Penalty::WganGp { lambda: w } if !(w.is_finite() && w > 0.0) => {
                return Err(config_err(
                    "penalty",
                    format!("{:?}", self.penalty),
                    "its weight must be a positive number",
                ));
            }
            Penalty::WganGp { .. } if model.d_norm == Norm::Batch => {
                return Err(config_err(
                    "penalty",
                    "wgan-gp",
                    "WGAN-GP penalises each image's own gradient norm, but batch norm makes D's output for one image \
                     depend on the whole batch, so that norm is not the image's (Gulrajani et al. 2017, §4). \
                     Use d_norm = \"none\" or \"spectral\", or R1",
                ));
            }
            _ => {}
        }
        if let Some(d) = self.ema_decay
            && !(0.0..1.0).contains(&d)
        {
            return Err(config_err("ema_decay", d, "must be in [0, 1)"));
        }
        if !(self.class_loss.is_finite() && self.class_loss >= 0.0) {
            return Err(config_err("class_loss", self.class_loss, "must be a number ≥ 0"));
        }
        if self.class_loss > 0.0 && !model.conditional() {
            return Err(config_err(
                "class_loss",
                self.class_loss,
                "needs a class-conditional model (num_classes > 0): its classifier is the projection's class scores",
            ));
        }
        if self.preview_columns == 0 || (!model.conditional() && self.preview_samples == 0) {
            return Err(config_err(
                "preview_samples/preview_columns",
                format!("{}/{}", self.preview_samples, self.preview_columns),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Counters kept on the host, saved as `gan-state.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Counters {
    /// The penalty at its last evaluation, reported between evaluations when it is lazy.
    last_penalty: f64,
}

/// A GAN with its two optimizers, the EMA generator and the fixed inputs of its previews.
pub struct GanTask<B: AutodiffBackend> {
    config: GanConfig,
    settings: GanTaskConfig,
    generator: Generator<B>,
    discriminator: Discriminator<B>,
    g_optim: Optim<B>,
    d_optim: Optim<B>,
    ema: Option<Ema<B::InnerBackend, Generator<B::InnerBackend>>>,
    counters: Counters,
    /// `[P, nz]`, fixed for the run.
    fixed_z: Tensor<B::InnerBackend, 2>,
    /// `[P]`: row `r` of a conditional grid is class `r`.
    fixed_labels: Option<Tensor<B::InnerBackend, 1, Int>>,
    device: B::Device,
}

impl<B: AutodiffBackend> std::fmt::Debug for GanTask<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GanTask")
            .field("config", &self.config)
            .field("settings", &self.settings)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<B: AutodiffBackend> GanTask<B> {
    /// A fresh GAN from `config`, trained as `settings` say for a run of `steps` steps (the
    /// optimisers' schedules span it).
    pub fn new(config: GanConfig, settings: GanTaskConfig, steps: usize, device: &B::Device) -> Result<Self, GanError> {
        config.validate()?;
        settings.validate(&config)?;
        let generator = config.init_generator::<B>(device);
        let discriminator = config.init_discriminator::<B>(device);
        let g_optim = Optim::new(settings.g_optim.clone(), (steps / settings.n_critic).max(1))?;
        let d_optim = Optim::new(settings.d_optim.clone(), steps.max(1))?;
        let ema = settings.ema_decay.map(|d| Ema::new(generator.valid(), d).map(Ema::with_warmup)).transpose()?;

        let (count, labels) = if config.conditional() {
            let cols = settings.preview_columns;
            let labels: Vec<i64> = (0..config.num_classes * cols).map(|i| (i / cols) as i64).collect();
            (labels.len(), Some(labels))
        } else {
            (settings.preview_samples, None)
        };
        let inner: burn::tensor::Device<B::InnerBackend> = device.clone();
        let fixed_z = Tensor::from_data(
            TensorData::new(
                standard_normal(count * config.nz, settings.preview_seed ^ PREVIEW_NOISE_STREAM, None),
                [count, config.nz],
            ),
            &inner,
        );
        let fixed_labels = labels.map(|l| Tensor::from_data(TensorData::new(l, [count]), &inner));
        Ok(Self {
            config,
            settings,
            generator,
            discriminator,
            g_optim,
            d_optim,
            ema,
            counters: Counters::default(),
            fixed_z,
            fixed_labels,
            device: device.clone(),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &GanConfig {
        &self.config
    }

    /// The training settings.
    pub fn settings(&self) -> &GanTaskConfig {
        &self.settings
    }

    /// The live generator being trained.
    pub fn generator(&self) -> &Generator<B> {
        &self.generator
    }

    /// The discriminator being trained.
    pub fn discriminator(&self) -> &Discriminator<B> {
        &self.discriminator
    }

    /// The generator to sample from: the EMA weights when EMA is on, else the live ones.
    pub fn sampler(&self) -> Generator<B::InnerBackend> {
        match &self.ema {
            Some(ema) => ema.module().clone(),
            None => self.generator.valid(),
        }
    }
}

/// Mean pairwise L2 distance among the fakes divided by the same among the reals, over pairs of
/// the same class when `code` `[N, K]` is given: about 1 when G's samples vary as much as the data,
/// falling towards 0 as it collapses onto few modes. `[1]`.
///
/// For a conditional model the histogram of generated labels would say nothing (G draws the labels
/// it is asked for), and D's projection gives no class prediction; within-class spread is the
/// honest cheap signal.
pub fn diversity<B: Backend>(fake: Tensor<B, 4>, real: Tensor<B, 4>, code: Option<Tensor<B, 2>>) -> Tensor<B, 1> {
    let n = fake.dims()[0];
    let device = fake.device();
    let same = match code {
        Some(c) => c.clone().matmul(c.transpose()), // [N, N], 1 where the classes agree
        None => Tensor::ones([n, n], &device),
    };
    let pairs = same - Tensor::eye(n, &device); // [N, N], no self-pairs
    let count = pairs.clone().sum().clamp_min(1.0);
    let mean_distance = |x: Tensor<B, 4>| {
        let x: Tensor<B, 2> = x.flatten(1, 3); // [N, D]
        let sq = x.clone().square().sum_dim(1); // [N, 1]
        let gram = x.clone().matmul(x.transpose()); // [N, N]
        let d2 = (sq.clone() + sq.transpose() - gram.mul_scalar(2.0)).clamp_min(0.0);
        (d2.sqrt() * pairs.clone()).sum() / count.clone()
    };
    mean_distance(fake) / mean_distance(real).clamp_min(1e-12)
}

impl<B: AutodiffBackend> Task<B> for GanTask<B> {
    type Batch = ImageBatch<B>;

    fn step(&mut self, batch: ImageBatch<B>, step: usize) -> StepOutput {
        let ImageBatch { images: real, labels } = batch;
        let n = real.dims()[0];
        let loss = self.settings.loss;
        let penalty = self.settings.penalty;
        let g_turn = (step + 1).is_multiple_of(self.settings.n_critic);
        let penalty_turn = penalty.is_some() && step.is_multiple_of(self.settings.penalty_every);
        let code = self.config.conditional().then(|| one_hot(labels, self.config.num_classes)); // [N, K]

        // One generator pass per step: the D update sees it detached and the G update reuses it
        // (as pytorch/examples' dcgan does). Without a G update this step, no graph is recorded.
        let z = Tensor::random([n, self.config.nz], Distribution::Normal(0.0, 1.0), &self.device);
        let fake = if g_turn {
            self.generator.forward_code(z, code.as_ref())
        } else {
            self.generator.clone().no_grad().forward_code(z, code.as_ref())
        }; // [N, C, S, S]
        let fake_detached = fake.clone().detach();

        // Discriminator update.
        let d = &self.discriminator;
        let class_weight = self.settings.class_loss;
        // The auxiliary classifier's scores `[N, K]` (real, fake) when class_loss is on.
        let with_classes = |images: Tensor<B, 4>| {
            let code = code.as_ref().expect("class_loss is validated to need a conditional model");
            d.forward_with_classes(images, code).expect("a conditional discriminator has a projection")
        };
        let mut penalty_value = None;
        let mut real_scores = None;
        let real_logits = match penalty {
            Penalty::R1 { .. } if penalty_turn => {
                let out = gradient_penalty(d, real.clone(), code.as_ref(), penalty);
                penalty_value = Some(out.penalty);
                out.logits
            }
            _ if class_weight > 0.0 => {
                let (logits, scores) = with_classes(real.clone());
                real_scores = Some(scores);
                logits
            }
            _ => d.forward_code(real.clone(), code.as_ref()),
        }; // [N]
        if class_weight > 0.0 && real_scores.is_none() {
            real_scores = Some(with_classes(real.clone()).1); // the R1 pass returns no scores
        }
        let (fake_logits, fake_scores) = if class_weight > 0.0 {
            let (logits, scores) = with_classes(fake_detached.clone());
            (logits, Some(scores))
        } else {
            (d.forward_code(fake_detached.clone(), code.as_ref()), None)
        }; // [N], [N, K]
        let class_ce = |scores: Tensor<B, 2>| {
            let code = code.clone().expect("class_loss is validated to need a conditional model");
            (log_softmax(scores, 1) * code).sum_dim(1).mean().neg() // [1]
        };
        let d_class = real_scores.map(class_ce);
        if let Penalty::WganGp { .. } = penalty
            && penalty_turn
        {
            let points = interpolates(real.clone(), fake_detached.clone());
            penalty_value = Some(gradient_penalty(d, points, code.as_ref(), penalty).penalty);
        }
        let d_loss = loss.d_loss(real_logits.clone(), fake_logits.clone());
        let mut total = match &penalty_value {
            Some(p) => d_loss.clone() + p.clone().mul_scalar(self.settings.penalty_every as f64),
            None => d_loss.clone(),
        };
        if let Some(ce) = &d_class {
            total = total + ce.clone().mul_scalar(class_weight);
        }
        let grads = total.backward();
        self.discriminator = self.d_optim.step(self.discriminator.clone(), &grads);

        // Generator update, through the updated D with its weights frozen (no weight gradients
        // are computed for it).
        let (g_loss, g_class) = if g_turn {
            let frozen = self.discriminator.clone().no_grad();
            let (logits, scores) = match &code {
                Some(c) if class_weight > 0.0 => {
                    let (logits, scores) = frozen.forward_with_classes(fake, c).expect("a projection");
                    (logits, Some(scores))
                }
                _ => (frozen.forward_code(fake, code.as_ref()), None),
            };
            let g_loss = loss.g_loss(logits);
            let g_class = scores.map(class_ce);
            let total = match &g_class {
                Some(ce) => g_loss.clone() + ce.clone().mul_scalar(class_weight),
                None => g_loss.clone(),
            };
            let grads = total.backward();
            self.generator = self.g_optim.step(self.generator.clone(), &grads);
            if let Some(ema) = &mut self.ema {
                ema.update(&self.generator.valid());
            }
            (g_loss.inner(), g_class.map(|c| c.inner()))
        } else {
            // G's objectives on this step's fakes under the D that judged them.
            (loss.g_loss(fake_logits.clone().inner()), fake_scores.map(|s| class_ce(s).inner()))
        };

        // Every metric in one device→host transfer.
        let threshold = loss.threshold();
        let (real_logits, fake_logits) = (real_logits.inner(), fake_logits.inner());
        let mut named = vec![
            ("d_loss", d_loss.inner()),
            ("g_loss", g_loss),
            ("d_real_acc", real_logits.clone().greater_elem(threshold).float().mean()),
            ("d_fake_acc", fake_logits.clone().lower_elem(threshold).float().mean()),
            ("d_real", real_logits.mean()),
            ("d_fake", fake_logits.mean()),
            ("diversity", diversity(fake_detached.inner(), real.inner(), code.map(|c| c.inner()))),
        ];
        if let (Some(d_class), Some(g_class)) = (d_class, g_class) {
            // Cross-entropy of the auxiliary classifier on real images and on the fakes' classes.
            named.push(("d_class_ce", d_class.inner()));
            named.push(("g_class_ce", g_class));
        }
        if let Some(p) = penalty_value {
            named.push(("penalty", p.inner()));
        }
        let mut metrics = read_scalars(named);
        // A lazy penalty is evaluated every `penalty_every` steps; between, its last value stands.
        if penalty.is_some() {
            match metrics.last() {
                Some(&("penalty", p)) => self.counters.last_penalty = p,
                _ => metrics.push(("penalty", self.counters.last_penalty)),
            }
        }
        StepOutput { metrics, examples: n }
    }

    fn previews(&self) -> Vec<Preview<B::InnerBackend>> {
        let columns = self.settings.preview_columns;
        let grid =
            |g: &Generator<B::InnerBackend>| to_unit(g.generate(self.fixed_z.clone(), self.fixed_labels.clone()));
        let mut previews = vec![Preview::new("samples", grid(&self.generator.valid()), columns)];
        if let Some(ema) = &self.ema {
            previews.push(Preview::new("samples-ema", grid(ema.module()), columns));
        }
        previews
    }

    fn save(&self, dir: &Path) -> Result<(), SaveError> {
        let which = if self.ema.is_some() { "ema" } else { "live" };
        let meta = [("kiln.family", FAMILY.to_string()), ("kiln.weights", which.to_string())];
        self.config.save_dir(dir)?;
        save_module(&self.sampler(), &dir.join(GENERATOR_FILE), &meta).map_err(GanError::from)?;
        save_module(&self.discriminator.valid(), &dir.join(DISCRIMINATOR_FILE), &meta[..1]).map_err(GanError::from)?;
        ModelManifest::new(FAMILY, FORMAT)
            .describing(dir, &[crate::CONFIG_FILE, GENERATOR_FILE, DISCRIMINATOR_FILE])?
            .write(dir)
    }

    fn save_state(&self, dir: &Path) -> Result<(), SaveError> {
        self.save(dir)?;
        if let Some(ema) = &self.ema {
            save_module(&self.generator.valid(), &dir.join(LIVE_GENERATOR_FILE), &[]).map_err(GanError::from)?;
            ema.save(&dir.join(EMA_FILE)).map_err(GanError::from)?;
        }
        self.g_optim.save(&dir.join(G_OPTIM_FILE)).map_err(GanError::from)?;
        self.d_optim.save(&dir.join(D_OPTIM_FILE)).map_err(GanError::from)?;
        let path = dir.join(COUNTERS_FILE);
        let json = serde_json::to_string_pretty(&self.counters)
            .map_err(|e| SaveError::Encode { path: path.clone(), message: e.to_string() })?;
        kiln_core::atomic_write(&path, json.as_bytes())
    }

    fn load_state(&mut self, dir: &Path) -> Result<(), LoadError> {
        let live = dir.join(if self.ema.is_some() { LIVE_GENERATOR_FILE } else { GENERATOR_FILE });
        self.generator = load_module(self.generator.clone(), &live)?;
        self.discriminator = load_module(self.discriminator.clone(), &dir.join(DISCRIMINATOR_FILE))?;
        if let Some(ema) = &mut self.ema {
            ema.load(&dir.join(EMA_FILE))?;
        }
        self.g_optim.load(&dir.join(G_OPTIM_FILE), &self.generator, &self.device)?;
        self.d_optim.load(&dir.join(D_OPTIM_FILE), &self.discriminator, &self.device)?;
        let path = dir.join(COUNTERS_FILE);
        let text =
            std::fs::read_to_string(&path).map_err(|e| LoadError { path: path.clone(), message: e.to_string() })?;
        self.counters = serde_json::from_str(&text)
            .map_err(|e| LoadError { path, message: format!("not a GAN training state: {e}") })?;
        Ok(())
    }

    fn device(&self) -> B::Device {
        self.device.clone()
    }

    /// The generator ends in `tanh`: real images are scaled to the same `[−1, 1]`.
    fn pixel_range(&self) -> PixelRange {
        PixelRange::MinusOneOne
    }
}
