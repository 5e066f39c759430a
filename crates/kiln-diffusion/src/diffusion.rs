//! The processes around the U-Net: how training noises an image and what the network must
//! predict, and how the samplers walk back from noise.
//!
//! **DDPM** (Ho et al. 2020). With `ᾱ_t` from the [`NoiseSchedule`], `q(x_t | x_0) =
//! N(√ᾱ_t·x_0, (1 − ᾱ_t)·I)`, so training draws `t` uniformly, `ε ~ N(0, I)`, forms
//! `x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε` in one shot and regresses the network's output on `ε` (the
//! paper's simplified loss, eq. 14) or on `v = √ᾱ_t·ε − √(1 − ᾱ_t)·x_0` (Salimans & Ho 2022,
//! arXiv:2202.00512: the same information, better scaled at both ends of the schedule). Either
//! output gives the estimates `x̂_0` and `ε̂`, and one update serves every sampler: DDIM's
//! (Song et al. 2020, eq. 12)
//!
//! ```text
//! x_prev = √ᾱ_prev·x̂_0 + √(1 − ᾱ_prev − σ²)·ε̂ + σ·z,   σ = η·√((1 − ᾱ_prev)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev)
//! ```
//! over a respaced subsequence of the steps. At `η = 1` and every step, `σ²` is the posterior
//! variance `β̃_t` and the update is ancestral DDPM sampling exactly (DDIM paper, section 4.1), so
//! the `ddpm` sampler is this update at `η = 1`, not a second code path. `x̂_0` is clipped to the
//! data range `[−1, 1]` and `ε̂` recomputed from it, as the reference code does; at a few
//! dozen steps this is what keeps a young model's samples from blowing out.
//!
//! **Rectified flow** (Liu et al. 2022). `x_t = (1 − t)·x_0 + t·ε` for `t ~ U(0, 1)`, and the
//! network regresses the constant velocity `ε − x_0` of that line. Sampling integrates
//! `dx/dt = v̂(x, t)` from `t = 1` (noise) to `0` with Euler or Heun steps.
//!
//! The network's time input is on a 0–1000 scale for both (`t·1000/T` for DDPM's step index,
//! `t·1000` for flow time), so the sinusoidal features span the same frequencies.

use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Shape, Tensor, TensorData};
use kiln_core::{Generative, ModelCard, ModelManifest, SampleError, SampleOption, SampleRequest, Samples, SplitMix64};

use crate::schedule::{BetaSchedule, NoiseSchedule};
use crate::unet::{UNet, UNetConfig};

/// File name of a saved [`DiffusionConfig`] inside a checkpoint directory.
pub const CONFIG_FILE: &str = "diffusion.json";
/// File name of saved [`Diffusion`] weights inside a checkpoint directory.
pub const WEIGHTS_FILE: &str = "diffusion.safetensors";
/// The family name in `kiln.json` and in experiment files.
pub const FAMILY: &str = "diffusion";
/// Version of the directory layout (`kiln.json`, `diffusion.json`, `diffusion.safetensors`).
pub const FORMAT: u32 = 1;

/// The network's time input spans `[0, TIME_SCALE)` whatever the process.
const TIME_SCALE: f64 = 1000.0;

/// What a DDPM's network predicts.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum Prediction {
    /// The noise `ε` (Ho et al.).
    Epsilon,
    /// The velocity `v = √ᾱ·ε − √(1 − ᾱ)·x_0` (Salimans & Ho).
    V,
}

/// The forward process: how an image becomes noise.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum Process {
    /// The discrete Markov chain of DDPM.
    Ddpm {
        /// Number of steps `T` (the papers: 1000).
        timesteps: usize,
        /// The shape of `β_t`.
        schedule: BetaSchedule,
        /// What the network predicts.
        prediction: Prediction,
    },
    /// The straight path of rectified flow; the network predicts its velocity `ε − x_0`.
    Flow,
}

/// How the per-image losses are weighted across steps.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum Weighting {
    /// Every step alike (Ho et al.'s simplified objective).
    Uniform,
    /// Min-SNR-γ (Hang et al. 2023, arXiv:2303.09556): a step's weight is capped at
    /// `min(SNR, γ)` in `x_0` units, so the nearly clean steps, whose targets are easy and whose
    /// gradients dominate, stop crowding out the rest. DDPM only.
    MinSnr {
        /// The cap (the paper: 5).
        gamma: f64,
    },
}

/// Configuration of a [`Diffusion`] model.
#[derive(Config, Debug, PartialEq)]
pub struct DiffusionConfig {
    /// The denoising network.
    pub unet: UNetConfig,
    /// The forward process.
    #[config(default = "Process::Ddpm { timesteps: 1000, schedule: BetaSchedule::COSINE, prediction: Prediction::V }")]
    pub process: Process,
    /// Loss weighting over steps.
    #[config(default = "Weighting::Uniform")]
    pub weighting: Weighting,
}

/// Errors of this crate: invalid configurations and unreadable checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    /// A configuration value is out of range.
    #[error("diffusion config: {field} = {value}: {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// Its value, as written.
        value: String,
        /// Why it is wrong.
        reason: String,
    },
    /// A checkpoint file is missing, unreadable or does not fit the model.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Writing the checkpoint failed.
    #[error(transparent)]
    Save(#[from] kiln_core::SaveError),
}

impl DiffusionConfig {
    /// MNIST-28 (1 channel): levels 28/14/7 with 32/64/64 channels, attention at 7×7; the
    /// cosine schedule over 1000 steps, v-prediction (the default: on short CPU runs an
    /// ε-model's samples stay noisy long after its loss has fallen, see the tests).
    pub fn mnist() -> Self {
        Self::new(UNetConfig::new(1, 28))
    }

    /// Rectified flow on the MNIST network.
    pub fn mnist_flow() -> Self {
        Self::mnist().with_process(Process::Flow)
    }

    /// Emoji-32 (3 channels): levels 32/16/8 with 32/64/64 channels, attention at 8×8.
    pub fn emoji() -> Self {
        Self::new(UNetConfig::new(3, 32).with_attention(vec![8]))
    }

    /// Ho et al.'s CIFAR-10 network (35.7M parameters; a GPU's): 128 channels, multipliers
    /// 1/2/2/2, two residual blocks per level, attention at 16×16, dropout 0.1, the linear
    /// schedule over 1000 steps. Too big to train on a CPU.
    pub fn cifar() -> Self {
        let unet = UNetConfig::new(3, 32)
            .with_base(128)
            .with_mults(vec![1, 2, 2, 2])
            .with_res_blocks(2)
            .with_attention(vec![16])
            .with_groups(32)
            .with_dropout(0.1);
        Self::new(unet).with_process(Process::Ddpm {
            timesteps: 1000,
            schedule: BetaSchedule::LINEAR,
            prediction: Prediction::Epsilon,
        })
    }

    /// A preset by name: see [`DiffusionConfig::PRESETS`].
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "mnist" => Some(Self::mnist()),
            "mnist-flow" => Some(Self::mnist_flow()),
            "emoji" => Some(Self::emoji()),
            "cifar" => Some(Self::cifar()),
            _ => None,
        }
    }

    /// Names accepted by [`DiffusionConfig::preset`].
    pub const PRESETS: &'static [&'static str] = &["mnist", "mnist-flow", "emoji", "cifar"];

    /// Checks every field; `init` assumes a validated config.
    pub fn validate(&self) -> Result<(), DiffusionError> {
        let bad =
            |field, value: String, reason: &str| Err(DiffusionError::Config { field, value, reason: reason.into() });
        self.unet.validate()?;
        if let Process::Ddpm { timesteps, schedule, .. } = self.process {
            if !(2..=100_000).contains(&timesteps) {
                return bad("process.timesteps", timesteps.to_string(), "must be 2 to 100000 (the papers: 1000)");
            }
            match schedule {
                BetaSchedule::Linear { beta_start, beta_end } => {
                    if !(beta_start > 0.0 && beta_start < beta_end && beta_end < 1.0) {
                        return bad(
                            "process.schedule",
                            format!("linear {beta_start}..{beta_end}"),
                            "needs 0 < beta_start < beta_end < 1 (the paper: 1e-4..0.02)",
                        );
                    }
                }
                BetaSchedule::Cosine { offset } => {
                    if !(offset.is_finite() && offset >= 0.0) {
                        return bad("process.schedule.offset", offset.to_string(), "must be ≥ 0 (the paper: 0.008)");
                    }
                }
            }
        }
        if let Weighting::MinSnr { gamma } = self.weighting {
            if !(gamma.is_finite() && gamma > 0.0) {
                return bad("weighting.gamma", gamma.to_string(), "must be a positive number (the paper: 5)");
            }
            if self.process == Process::Flow {
                return bad("weighting", "min-snr".into(), "weights a DDPM's steps by their SNR; flow is uniform");
            }
        }
        Ok(())
    }

    /// Builds the model on `device` with freshly initialised weights.
    ///
    /// # Panics
    /// If the config is invalid; call [`DiffusionConfig::validate`] first on user-supplied configs.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Diffusion<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        Diffusion { unet: self.unet.init(device), process: self.process, weighting: self.weighting }
    }

    /// Reads a config saved by [`Diffusion::save`] from `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, DiffusionError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| DiffusionError::Checkpoint { path: path.clone(), message: e.to_string() })?;
        let config: Self = serde_json::from_str(&text).map_err(|e| DiffusionError::Checkpoint {
            path: path.clone(),
            message: format!("not a diffusion config: {e}"),
        })?;
        config.validate().map_err(|e| DiffusionError::Checkpoint { path, message: e.to_string() })?;
        Ok(config)
    }
}

/// The random draws of one training loss ([`Diffusion::loss_draws`]).
#[derive(Debug, Clone)]
pub struct LossDraws<B: Backend> {
    /// A uniform draw in `[0, 1)` per image that picks its time, `[B]`.
    pub u: Tensor<B, 1>,
    /// Standard normal noise, `[B, C, H, W]`.
    pub noise: Tensor<B, 4>,
}

impl<B: Backend> LossDraws<B> {
    /// The draws of images `rows` of the batch.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Self {
        let (start, len) = (rows.start, rows.len());
        Self { u: self.u.clone().narrow(0, start, len), noise: self.noise.clone().narrow(0, start, len) }
    }
}

/// One evaluation of the training objective on a batch.
#[derive(Debug, Clone)]
pub struct DiffusionLoss<B: Backend> {
    /// The weighted mean squared error, the quantity to minimise. `[1]`.
    pub loss: Tensor<B, 1>,
    /// The unweighted mean squared error per pixel (equal to `loss` under uniform weighting). `[1]`.
    pub mse: Tensor<B, 1>,
}

/// The samplers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    /// Ancestral sampling (DDPM's): the DDIM update at `η = 1`, by default over all `T` steps.
    Ddpm,
    /// DDIM over a respaced subsequence, deterministic at `η = 0`.
    Ddim,
    /// Euler steps of the flow ODE.
    Euler,
    /// Heun's second-order steps of the flow ODE (two network calls a step, one on the last).
    Heun,
}

impl Sampler {
    /// Every sampler by the name `kiln sample --sampler` takes.
    pub const NAMES: &'static [(&'static str, Sampler)] =
        &[("ddpm", Self::Ddpm), ("ddim", Self::Ddim), ("euler", Self::Euler), ("heun", Self::Heun)];

    /// The sampler called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::NAMES.iter().find(|(n, _)| *n == name).map(|&(_, s)| s)
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, s)| *s == self).map(|(n, _)| *n).unwrap_or("?")
    }

    /// Whether it samples `process`.
    pub fn fits(self, process: &Process) -> bool {
        matches!(
            (self, process),
            (Self::Ddpm | Self::Ddim, Process::Ddpm { .. }) | (Self::Euler | Self::Heun, Process::Flow)
        )
    }
}

/// How to sample: the sampler, its steps and `η`, the guidance scale, the seed, and how many
/// frames of the trajectory to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// The sampler (it must fit the model's process).
    pub sampler: Sampler,
    /// Sampler steps (DDPM/DDIM: at most `T`).
    pub steps: usize,
    /// DDIM's `η` in `[0, 1]` (the `ddpm` sampler is `η = 1`).
    pub eta: f64,
    /// Classifier-free guidance scale `s`: the output is `cond + (s − 1)·(cond − uncond)`; 1 is
    /// plain conditional sampling (one network call per step instead of two).
    pub guidance: f64,
    /// Seed of the noise drawn at each stochastic step (the initial noise is the caller's).
    pub seed: u64,
    /// Frames of the trajectory to keep, evenly spaced, the last one the result (0: none).
    pub frames: usize,
}

impl SamplerConfig {
    /// The default way to sample `process`: DDIM at 50 steps, or Heun at 25 (≈ 50 calls).
    pub fn default_for(process: &Process) -> Self {
        let (sampler, steps) = match process {
            Process::Ddpm { .. } => (Sampler::Ddim, 50),
            Process::Flow => (Sampler::Heun, 25),
        };
        Self { sampler, steps, eta: 0.0, guidance: 1.0, seed: 0, frames: 0 }
    }

    /// `sampler` at its own default steps and `η` for a DDPM of `timesteps` steps.
    pub fn with_sampler(mut self, sampler: Sampler, timesteps: usize) -> Self {
        self.sampler = sampler;
        (self.steps, self.eta) = match sampler {
            Sampler::Ddpm => (timesteps, 1.0),
            Sampler::Ddim => (50, 0.0),
            Sampler::Euler => (50, 0.0),
            Sampler::Heun => (25, 0.0),
        };
        self
    }
}

/// What a sampler returns: images and the kept frames, all in `[−1, 1]`.
#[derive(Debug, Clone)]
pub struct Sampling<B: Backend> {
    /// The samples `[N, C, H, W]`, clamped to `[−1, 1]`.
    pub images: Tensor<B, 4>,
    /// The kept frames of `x_t`, `[N, C, H, W]` each, in order; the last equals `images`.
    pub frames: Vec<Tensor<B, 4>>,
}

/// A diffusion or flow model; build it with [`DiffusionConfig::init`].
#[derive(Module, Debug)]
pub struct Diffusion<B: Backend> {
    unet: UNet<B>,
    process: Process,
    weighting: Weighting,
}

impl<B: Backend> Diffusion<B> {
    /// The denoising network.
    pub fn unet(&self) -> &UNet<B> {
        &self.unet
    }

    /// The forward process.
    pub fn process(&self) -> Process {
        self.process
    }

    /// The DDPM noise schedule (`None` for flow).
    pub fn schedule(&self) -> Option<NoiseSchedule> {
        match self.process {
            Process::Ddpm { timesteps, schedule, .. } => Some(NoiseSchedule::new(schedule, timesteps)),
            Process::Flow => None,
        }
    }

    /// Classes of a conditional model (0: unconditional); label `classes()` is the null label.
    pub fn classes(&self) -> usize {
        self.unet.classes()
    }

    /// `[C, H, W]` of the images.
    pub fn image(&self) -> [usize; 3] {
        self.unet.image()
    }

    /// The noised images and what the network should output for them, at times `u [B]` in
    /// `[0, 1)` (a DDPM's step is `⌊u·T⌋`), with `noise` like `x0` `[B, C, H, W]`. Also the
    /// per-image loss weights and the network's time input. Public for tests and inspection.
    pub fn noised(&self, x0: Tensor<B, 4>, u: Tensor<B, 1>, noise: Tensor<B, 4>) -> Noised<B> {
        let [b, ..] = x0.dims();
        let device = x0.device();
        let col = |t: Tensor<B, 1>| t.reshape([b, 1, 1, 1]);
        match self.process {
            Process::Ddpm { timesteps, schedule, prediction } => {
                let table = NoiseSchedule::new(schedule, timesteps);
                let bars: Vec<f32> = table.alpha_bars().iter().map(|&a| a as f32).collect();
                let bars = Tensor::<B, 1>::from_data(TensorData::new(bars, [timesteps]), &device);
                let step = (u * timesteps as f64).floor().clamp(0.0, (timesteps - 1) as f64).int(); // [B]
                let abar = bars.select(0, step.clone()); // [B]
                let (signal, sigma) = (abar.clone().sqrt(), (abar.clone().neg() + 1.0).sqrt()); // [B], [B]
                let x_t = x0.clone() * col(signal.clone()) + noise.clone() * col(sigma.clone()); // [B, C, H, W]
                let target = match prediction {
                    Prediction::Epsilon => noise,
                    Prediction::V => noise * col(signal) - x0 * col(sigma),
                };
                let snr = abar.clone() / (abar.neg() + 1.0); // [B]
                let weight = match (self.weighting, prediction) {
                    (Weighting::Uniform, _) => snr.ones_like(),
                    (Weighting::MinSnr { gamma }, Prediction::Epsilon) => snr.clone().clamp_max(gamma) / snr,
                    (Weighting::MinSnr { gamma }, Prediction::V) => snr.clone().clamp_max(gamma) / (snr + 1.0),
                };
                let time = step.float() * (TIME_SCALE / timesteps as f64);
                Noised { x_t, target, weight, time }
            }
            Process::Flow => {
                let t = col(u.clone()); // [B, 1, 1, 1]
                let x_t = x0.clone() * (t.clone().neg() + 1.0) + noise.clone() * t; // [B, C, H, W]
                Noised { x_t, target: noise - x0, weight: u.ones_like(), time: u * TIME_SCALE }
            }
        }
    }

    /// The training objective on images `x0 [B, C, H, W]` in `[−1, 1]`, with a label per image
    /// for a conditional model (the null label `classes()` for dropped ones). Times and noise
    /// are drawn from the backend's generator (seeded per step by the trainer).
    pub fn loss(&self, x0: Tensor<B, 4>, labels: Option<Tensor<B, 1, Int>>) -> DiffusionLoss<B> {
        let draws = self.loss_draws(x0.dims()[0], x0.shape(), &x0.device());
        self.loss_with(x0, labels, draws)
    }

    /// What [`Diffusion::loss`] draws from the backend's generator for a batch of images of
    /// `shape`: a uniform time `u` per image and standard normal noise, in that order.
    pub fn loss_draws(&self, n: usize, shape: Shape, device: &B::Device) -> LossDraws<B> {
        let u = Tensor::<B, 1>::random([n], Distribution::Default, device); // [B] in [0, 1)
        let noise = Tensor::random(shape, Distribution::Normal(0.0, 1.0), device); // [B, C, H, W]
        LossDraws { u, noise }
    }

    /// [`Diffusion::loss`] with its random draws given, so a batch can be cut into slices that
    /// run on different threads and still see the draws one pass would have (`DiffusionTask`'s
    /// shards).
    pub fn loss_with(
        &self,
        x0: Tensor<B, 4>,
        labels: Option<Tensor<B, 1, Int>>,
        draws: LossDraws<B>,
    ) -> DiffusionLoss<B> {
        let LossDraws { u, noise } = draws;
        let n = self.noised(x0, u, noise);
        let out = self.unet.forward(n.x_t, n.time, labels); // [B, C, H, W]
        let per_image = (out - n.target).square().flatten::<2>(1, 3).mean_dim(1).squeeze_dim::<1>(1); // [B]
        DiffusionLoss { loss: (per_image.clone() * n.weight).mean(), mse: per_image.mean() }
    }

    /// The network's output at `x [N, C, H, W]` and time `time` (0–1000 scale), guided: with
    /// labels and `s ≠ 1`, the conditional and null-label halves go through the network as one
    /// batch and combine as `cond + (s − 1)·(cond − uncond)`.
    fn predict(&self, x: Tensor<B, 4>, time: f64, labels: Option<&Tensor<B, 1, Int>>, guidance: f64) -> Tensor<B, 4> {
        let [n, ..] = x.dims();
        let device = x.device();
        match labels {
            Some(labels) if guidance != 1.0 => {
                let t = Tensor::<B, 1>::full([2 * n], time, &device);
                let null = Tensor::<B, 1, Int>::full([n], self.classes() as i64, &device);
                let both = self.unet.forward(
                    Tensor::cat(vec![x.clone(), x], 0),
                    t,
                    Some(Tensor::cat(vec![labels.clone(), null], 0)),
                ); // [2N, C, H, W]
                let cond = both.clone().narrow(0, 0, n); // [N, C, H, W]
                let uncond = both.narrow(0, n, n); // [N, C, H, W]
                cond.clone() + (cond - uncond) * (guidance - 1.0)
            }
            labels => self.unet.forward(x, Tensor::full([n], time, &device), labels.cloned()),
        }
    }

    /// Denoises `noise [N, C, H, W]` (standard normal) into images with `how`, conditioned on
    /// `labels` for a conditional model.
    ///
    /// # Panics
    /// If the sampler does not fit the process (`Sampler::fits`); [`Generative::sample`] checks.
    pub fn denoise(&self, noise: Tensor<B, 4>, labels: Option<Tensor<B, 1, Int>>, how: &SamplerConfig) -> Sampling<B> {
        assert!(how.sampler.fits(&self.process), "the {} sampler does not fit this process", how.sampler.name());
        let steps = how.steps.max(1);
        let keep = frame_steps(steps, how.frames);
        let mut frames = Vec::with_capacity(keep.len());
        let mut x = noise;
        let labels = labels.as_ref();
        match self.process {
            Process::Ddpm { prediction, .. } => {
                let schedule = self.schedule().expect("a DDPM has a schedule");
                let t_len = schedule.len();
                let taus = schedule.respaced(steps);
                for (k, &i) in taus.iter().enumerate() {
                    let abar = schedule.alpha_bar(i);
                    let prev = taus.get(k + 1).map_or(1.0, |&j| schedule.alpha_bar(j));
                    let out = self.predict(x.clone(), i as f64 * TIME_SCALE / t_len as f64, labels, how.guidance);
                    let (s, c) = (abar.sqrt(), (1.0 - abar).sqrt());
                    let x0 = match prediction {
                        Prediction::Epsilon => (x.clone() - out * c) / s,
                        Prediction::V => x.clone() * s - out * c,
                    }
                    .clamp(-1.0, 1.0); // [N, C, H, W]
                    let eps = (x.clone() - x0.clone() * s) / c; // [N, C, H, W]
                    let (a, d, sigma) = ddim_coefficients(abar, prev, how.eta);
                    x = x0 * a + eps * d;
                    if sigma > 0.0 {
                        let z = step_noise(&x, how.seed, k);
                        x = x + z * sigma;
                    }
                    if keep.contains(&k) {
                        frames.push(x.clone().clamp(-1.0, 1.0));
                    }
                }
            }
            Process::Flow => {
                let time = |k: usize| 1.0 - k as f64 / steps as f64;
                for k in 0..steps {
                    let (t, next) = (time(k), time(k + 1));
                    let dt = next - t; // negative: from noise to data
                    let v = self.predict(x.clone(), t * TIME_SCALE, labels, how.guidance);
                    let euler = x.clone() + v.clone() * dt;
                    x = if how.sampler == Sampler::Heun && next > 0.0 {
                        let v2 = self.predict(euler, next * TIME_SCALE, labels, how.guidance);
                        x + (v + v2) * (dt / 2.0)
                    } else {
                        euler
                    };
                    if keep.contains(&k) {
                        frames.push(x.clone().clamp(-1.0, 1.0));
                    }
                }
            }
        }
        let images = x.clamp(-1.0, 1.0);
        Sampling { images, frames }
    }

    /// `n` images' worth of standard normal noise drawn on the host from `seed`, the same on every
    /// backend. `[n, C, H, W]`.
    pub fn initial_noise(&self, n: usize, seed: u64, device: &B::Device) -> Tensor<B, 4> {
        let [c, h, w] = self.image();
        let values = kiln_core::standard_normal(n * c * h * w, seed, None);
        Tensor::from_data(TensorData::new(values, [n, c, h, w]), device)
    }

    /// The sampler settings `request` asks for, checked against this model.
    pub fn sampler_config(&self, request: &SampleRequest) -> Result<SamplerConfig, SampleError> {
        let timesteps = self.schedule().map_or(0, |s| s.len());
        let mut how = SamplerConfig::default_for(&self.process);
        if let Some(name) = &request.sampler {
            let names: Vec<&str> =
                Sampler::NAMES.iter().filter(|(_, s)| s.fits(&self.process)).map(|(n, _)| *n).collect();
            let sampler = Sampler::parse(name).filter(|s| s.fits(&self.process)).ok_or_else(|| {
                SampleError::invalid("sampler", name, format!("this model samples with {}", names.join(" or ")))
            })?;
            how = how.with_sampler(sampler, timesteps);
        }
        if let Some(steps) = request.steps {
            if steps == 0 || (timesteps > 0 && steps > timesteps) {
                let most = if timesteps > 0 { format!("1 to T = {timesteps}") } else { "at least 1".into() };
                return Err(SampleError::invalid("steps", steps, format!("must be {most}")));
            }
            how.steps = steps;
        }
        if let Some(eta) = request.eta {
            if how.sampler != Sampler::Ddim {
                return Err(SampleError::invalid(
                    "eta",
                    eta,
                    format!("η is DDIM's; the {} sampler has none (use --sampler ddim)", how.sampler.name()),
                ));
            }
            if !(0.0..=1.0).contains(&eta) {
                return Err(SampleError::invalid("eta", eta, "must be in [0, 1] (0: deterministic, 1: ancestral)"));
            }
            how.eta = eta;
        }
        if let Some(g) = request.guidance {
            if !(g.is_finite() && g >= 0.0) {
                return Err(SampleError::invalid("guidance", g, "must be ≥ 0 (1: plain conditional; 2 to 4 is usual)"));
            }
            how.guidance = g;
        }
        how.seed = request.seed;
        Ok(how)
    }

    /// Writes `diffusion.json` (the config), `diffusion.safetensors` (the weights) and `kiln.json`
    /// into `dir`, each atomically.
    pub fn save(&self, config: &DiffusionConfig, dir: &Path) -> Result<(), DiffusionError> {
        kiln_optim::save_module(self, &dir.join(WEIGHTS_FILE), &[("kiln.family", FAMILY.into())])
            .map_err(|e| optim_err(e, dir))?;
        let json = serde_json::to_string_pretty(config)
            .map_err(|e| kiln_core::SaveError::Encode { path: dir.join(CONFIG_FILE), message: e.to_string() })?;
        kiln_core::atomic_write(&dir.join(CONFIG_FILE), json.as_bytes())?;
        ModelManifest::new(FAMILY, FORMAT).describing(dir, &[CONFIG_FILE, WEIGHTS_FILE])?.write(dir)?;
        Ok(())
    }

    /// Loads a model saved by [`Diffusion::save`] from `dir` onto `device`. Every tensor must be
    /// present with the shape the saved config implies; anything else is an error naming the file.
    pub fn load(dir: &Path, device: &B::Device) -> Result<(DiffusionConfig, Self), DiffusionError> {
        let config = DiffusionConfig::load_dir(dir)?;
        let model =
            kiln_optim::load_module(config.init::<B>(device), &dir.join(WEIGHTS_FILE)).map_err(|e| match e {
                kiln_optim::OptimError::State { path, message } => DiffusionError::Checkpoint {
                    path,
                    message: format!("not a checkpoint of this diffusion model ({message})"),
                },
                other => optim_err(other, dir),
            })?;
        Ok((config, model))
    }
}

/// A batch noised for training (see [`Diffusion::noised`]).
#[derive(Debug, Clone)]
pub struct Noised<B: Backend> {
    /// `x_t` `[B, C, H, W]`.
    pub x_t: Tensor<B, 4>,
    /// What the network should output `[B, C, H, W]`.
    pub target: Tensor<B, 4>,
    /// Each image's loss weight `[B]`.
    pub weight: Tensor<B, 1>,
    /// The network's time input `[B]` (0–1000 scale).
    pub time: Tensor<B, 1>,
}

/// The DDIM update from `ᾱ_t = abar` to `ᾱ_prev = prev` as `(a, d, σ)`:
/// `x_prev = a·x̂_0 + d·ε̂ + σ·z`.
pub(crate) fn ddim_coefficients(abar: f64, prev: f64, eta: f64) -> (f64, f64, f64) {
    let sigma = eta * ((1.0 - prev) / (1.0 - abar)).sqrt() * (1.0 - abar / prev).max(0.0).sqrt();
    (prev.sqrt(), (1.0 - prev - sigma * sigma).max(0.0).sqrt(), sigma)
}

/// The sampler steps (0-based) after which a frame is kept: `frames` of `steps`, evenly spaced,
/// always ending with the last.
pub(crate) fn frame_steps(steps: usize, frames: usize) -> Vec<usize> {
    let f = frames.min(steps);
    (1..=f).map(|j| (j * steps).div_ceil(f) - 1).collect()
}

/// Fresh standard normal noise like `x` for stochastic step `k` of a sampling seeded `seed`,
/// drawn on the host so a seed gives the same samples on every backend.
fn step_noise<B: Backend>(x: &Tensor<B, 4>, seed: u64, k: usize) -> Tensor<B, 4> {
    let dims = x.dims();
    let stream = SplitMix64::new(seed ^ (k as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407)).next_u64();
    let values = kiln_core::standard_normal(dims.iter().product(), stream, None);
    Tensor::from_data(TensorData::new(values, dims), &x.device())
}

fn optim_err(e: kiln_optim::OptimError, dir: &Path) -> DiffusionError {
    match e {
        kiln_optim::OptimError::Save(e) => DiffusionError::Save(e),
        kiln_optim::OptimError::State { path, message } => DiffusionError::Checkpoint { path, message },
        other => DiffusionError::Checkpoint { path: dir.join(WEIGHTS_FILE), message: other.to_string() },
    }
}

/// A trained model samples from host noise of the request's seed with the sampler it asks for
/// (DDIM at 50 steps or Heun at 25 by default), keeping 16 frames of the trajectory. It has no
/// encoder and no latent space to interpolate in (the deterministic samplers do define one, the
/// initial noise, but it is image-sized and not what `kiln interpolate` walks).
impl<B: Backend> Generative<B> for Diffusion<B> {
    fn card(&self) -> ModelCard {
        let mut accepts = vec![SampleOption::Steps, SampleOption::Sampler];
        if matches!(self.process, Process::Ddpm { .. }) {
            accepts.push(SampleOption::Eta);
        }
        if self.classes() > 0 {
            accepts.extend([SampleOption::Class, SampleOption::Guidance]);
        }
        let kind = match self.process {
            Process::Ddpm { .. } => "diffusion",
            Process::Flow => "flow",
        };
        let name = if self.classes() > 0 {
            format!("this class-conditional {kind} model")
        } else {
            format!("this {kind} model")
        };
        ModelCard { name, image: self.image(), classes: self.classes(), accepts }
    }

    fn sample(&self, request: &SampleRequest, device: &B::Device) -> Result<Samples<B>, SampleError> {
        let classes = request.check(&self.card())?;
        let mut how = self.sampler_config(request)?;
        how.frames = FRAMES;
        let labels = (!classes.is_empty()).then(|| {
            let ids: Vec<i64> = classes.iter().map(|&c| c as i64).collect();
            Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [request.n]), device)
        });
        let out = self.denoise(self.initial_noise(request.n, request.seed, device), labels, &how);
        let unit = |x: Tensor<B, 4>| ((x + 1.0) / 2.0).clamp(0.0, 1.0);
        let frames = Tensor::stack(out.frames.into_iter().map(unit).collect(), 0); // [F, N, C, H, W]
        Ok(Samples { images: unit(out.images), frames: Some(frames) })
    }
}

/// Frames of the trajectory `kiln sample` writes as a strip and a GIF.
const FRAMES: usize = 16;
