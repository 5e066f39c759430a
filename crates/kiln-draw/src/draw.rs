//! DRAW: Gregor, Danihelka, Graves, Rezende & Wierstra, "DRAW: A Recurrent Neural Network For
//! Image Generation", arXiv:1502.04623 (ICML 2015).
//!
//! Two LSTMs are stepped `T` times. At step `t` the encoder reads the image and the error image
//! `x̂ = x − σ(c_{t−1})` (through an `N × N` Gaussian glimpse placed by the decoder's previous
//! state, or whole), together with `h_dec_{t−1}`; its state gives a diagonal Gaussian posterior
//! `q(z_t | ·)`; the decoder LSTM takes `z_t` and writes a patch (through Gaussian attention, or
//! a linear layer to the whole canvas) that is **added** to the canvas: `c_t = c_{t−1} +
//! write(h_dec_t)`. The image is `σ(c_T)`. The loss is the negative ELBO: the Bernoulli negative
//! log-likelihood of the image under `σ(c_T)` plus `Σ_t KL(q(z_t) ‖ N(0, I))` (eq. 9–12).
//! Generating replaces the posterior by the prior: `z_t ~ N(0, I)` into the decoder alone.
//!
//! The attention filterbanks are kiln-kernels' (`kiln_kernels::draw`); the LSTM is this crate's
//! steppable cell (`lstm.rs`), in PyTorch's `nn.LSTMCell` layout. Defaults follow the paper's
//! MNIST setup (its Table 3: 64 glimpses, 256 LSTM units, 100-dimensional `z`, read 2×2, write
//! 5×5). The initial LSTM states and the canvas `c_0` are zero (some implementations learn them
//! as biases); with `c_0 = 0` the first write starts from a grey `σ(0) = 0.5` canvas. The
//! attention heads start with their grids tiling the image (see `tiling`).

use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use kiln_core::{Generative, ModelCard, ModelManifest, SampleError, SampleOption, SampleRequest, Samples};
use kiln_kernels::draw::{DrawAttention, DrawAttentionConfig, read};

use crate::lstm::{LstmCell, LstmCellConfig, LstmCellState};

/// File name of a saved [`DrawConfig`] inside a checkpoint directory.
pub const CONFIG_FILE: &str = "draw.json";
/// File name of saved [`Draw`] weights inside a checkpoint directory.
pub const WEIGHTS_FILE: &str = "draw.safetensors";
/// The family name in `kiln.json` and in experiment files.
pub const FAMILY: &str = "draw";
/// Version of the directory layout (`kiln.json`, `draw.json`, `draw.safetensors`).
pub const FORMAT: u32 = 1;

/// How the networks look at the image and the canvas. Mutually exclusive, hence an enum.
#[derive(Config, Debug, PartialEq)]
pub enum Attention {
    /// The paper's "no attention" variant: the encoder reads `[x, x̂]` whole and the decoder
    /// writes the whole canvas through one linear layer.
    None,
    /// Gaussian filterbank attention (section 3.2): `read × read` glimpses of `x` and `x̂`, and
    /// `write × write` patches written back through the transposed filterbanks.
    Gaussian {
        /// Read grid size `N` (the paper's MNIST: 2).
        read: usize,
        /// Write grid size `N` (the paper's MNIST: 5).
        write: usize,
    },
}

/// What the Bernoulli likelihood scores. Mutually exclusive, hence an enum.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum Targets {
    /// Pixels thresholded at 0.5 to {0, 1}, and the model reads the same binary image. A
    /// Bernoulli likelihood is a true (discrete) likelihood only on binary data, so the negative
    /// ELBO is an upper bound on `−log p(x)` in nats, the quantity the paper reports on
    /// binarized MNIST. The default.
    Binarized,
    /// The grey levels in `[0, 1]` as soft targets of the cross-entropy (what kiln-vae does).
    /// Smoother, but the number is not a log-likelihood: it has a floor of the pixels' own
    /// entropy, so it is not comparable with published binarized-MNIST figures.
    Grey,
}

/// Configuration of a [`Draw`] model. The defaults are the paper's MNIST setup.
#[derive(Config, Debug)]
pub struct DrawConfig {
    /// Image channels.
    #[config(default = 1)]
    pub channels: usize,
    /// Image height = width.
    #[config(default = 28)]
    pub image_size: usize,
    /// Number of drawing steps `T` (glimpses).
    #[config(default = 64)]
    pub steps: usize,
    /// Units of each LSTM (encoder and decoder).
    #[config(default = 256)]
    pub hidden: usize,
    /// Dimension of each step's latent `z_t`.
    #[config(default = 100)]
    pub latent: usize,
    /// Attention, or none.
    #[config(default = "Attention::Gaussian { read: 2, write: 5 }")]
    pub attention: Attention,
    /// What the likelihood scores.
    #[config(default = "Targets::Binarized")]
    pub targets: Targets,
    /// Added to each LSTM's forget-gate bias at initialisation.
    #[config(default = 1.0)]
    pub forget_bias: f64,
}

/// Errors of this crate: invalid configurations and unreadable checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum DrawError {
    /// A configuration value is out of range.
    #[error("DRAW config: {field} = {value}: {reason}")]
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

impl DrawConfig {
    /// The paper's MNIST setup with attention (Gregor et al. 2015, Table 3): T = 64, LSTM 256,
    /// z = 100, read 2×2, write 5×5. About 1.5M parameters; 64 steps of two LSTMs per image make
    /// it slow on a CPU (minutes per epoch of the full set on two cores).
    pub fn mnist() -> Self {
        Self::new()
    }

    /// A small, fast setup for CPU runs: T = 16, LSTM 128, z = 16, the same 2×2 read and 5×5
    /// write. A step costs about a sixteenth of the paper's (four times fewer steps, four times
    /// smaller LSTM matrices), and sixteen 5×5 writes are still enough to draw a digit stroke
    /// by stroke; the price is a looser bound.
    pub fn small() -> Self {
        Self::new().with_steps(16).with_hidden(128).with_latent(16)
    }

    /// A preset by name: `mnist` (the paper's) or `small`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "mnist" => Some(Self::mnist()),
            "small" => Some(Self::small()),
            _ => None,
        }
    }

    /// Names accepted by [`DrawConfig::preset`].
    pub const PRESETS: &'static [&'static str] = &["mnist", "small"];

    /// Checks every field; `init` assumes a validated config.
    pub fn validate(&self) -> Result<(), DrawError> {
        let bad = |field, value: String, reason: &str| Err(DrawError::Config { field, value, reason: reason.into() });
        for (field, v) in [
            ("channels", self.channels),
            ("image_size", self.image_size),
            ("steps", self.steps),
            ("hidden", self.hidden),
            ("latent", self.latent),
        ] {
            if v == 0 {
                return bad(field, v.to_string(), "must be at least 1");
            }
        }
        if let Attention::Gaussian { read, write } = self.attention {
            for (field, n) in [("attention.read", read), ("attention.write", write)] {
                if n == 0 || n > self.image_size {
                    return bad(
                        field,
                        n.to_string(),
                        &format!("a glimpse grid must be 1 to image_size = {} filters wide", self.image_size),
                    );
                }
            }
        }
        if !self.forget_bias.is_finite() {
            return bad("forget_bias", self.forget_bias.to_string(), "must be a finite number");
        }
        Ok(())
    }

    /// Builds the model on `device` with freshly initialised weights.
    ///
    /// # Panics
    /// If the config is invalid; call [`DrawConfig::validate`] first on user-supplied configs.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Draw<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let (c, s, h) = (self.channels, self.image_size, self.hidden);
        let (read_size, write_size, read_attn, write_attn) = match self.attention {
            Attention::None => (2 * c * s * s, c * s * s, None, None),
            Attention::Gaussian { read, write } => {
                let attn = |n| tiling(DrawAttentionConfig::new(h, s, s, n).init(device), n, s, device);
                (2 * c * read * read, c * write * write, Some(attn(read)), Some(attn(write)))
            }
        };
        let cell = |input| LstmCellConfig::new(input, h).with_forget_bias(self.forget_bias).init(device);
        Draw {
            encoder: cell(read_size + h),
            decoder: cell(self.latent),
            posterior: LinearConfig::new(h, 2 * self.latent).init(device),
            write_head: LinearConfig::new(h, write_size).init(device),
            read_attn,
            write_attn,
            steps: self.steps,
            latent: self.latent,
            hidden: h,
            image: [c, s, s],
            attention: self.attention.clone(),
            targets: self.targets,
        }
    }

    /// Reads a config saved by [`Draw::save`] from `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, DrawError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| DrawError::Checkpoint { path: path.clone(), message: e.to_string() })?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| DrawError::Checkpoint { path: path.clone(), message: format!("not a DRAW config: {e}") })?;
        config.validate().map_err(|e| DrawError::Checkpoint { path, message: e.to_string() })?;
        Ok(config)
    }
}

/// One evaluation of the negative ELBO on a batch; all three are batch means in nats per image.
#[derive(Debug, Clone)]
pub struct DrawLoss<B: Backend> {
    /// `recon + kl`, the quantity to minimise (an upper bound on `−log p(x)`). `[1]`.
    pub loss: Tensor<B, 1>,
    /// `−log p(x | z_{1..T})`, the Bernoulli negative log-likelihood of `σ(c_T)`, summed over
    /// pixels (the paper's `L^x`). `[1]`.
    pub recon: Tensor<B, 1>,
    /// `Σ_t KL(q(z_t | ·) ‖ N(0, I))` (the paper's `L^z`). `[1]`.
    pub kl: Tensor<B, 1>,
}

/// Every step of one drawing: what each step wrote and the canvas after it (logits, before the
/// sigmoid), `T` of each, `[N, C, H, W]`.
#[derive(Debug, Clone)]
pub struct DrawTrace<B: Backend> {
    /// `write(h_dec_t)`, t = 1..T.
    pub writes: Vec<Tensor<B, 4>>,
    /// `c_t = c_{t−1} + write(h_dec_t)`, t = 1..T.
    pub canvases: Vec<Tensor<B, 4>>,
}

/// Which latents the encoder-driven pass feeds the decoder.
#[derive(Debug, Clone)]
enum Latents<B: Backend> {
    /// Reparameterised posterior samples `μ + σ·ε` from this standard normal noise `ε`,
    /// `[T, N, latent]` (training, the ELBO).
    Sample(Tensor<B, 3>),
    /// Posterior means (reconstructions without sampling noise).
    Mean,
}

/// A DRAW network; build it with [`DrawConfig::init`].
#[derive(Module, Debug)]
pub struct Draw<B: Backend> {
    encoder: LstmCell<B>,
    decoder: LstmCell<B>,
    /// `h_enc_t → (μ_t, log σ²_t)`.
    posterior: Linear<B>,
    /// `h_dec_t →` the write patch (attention) or the whole canvas update (no attention).
    write_head: Linear<B>,
    read_attn: Option<DrawAttention<B>>,
    write_attn: Option<DrawAttention<B>>,
    steps: usize,
    latent: usize,
    hidden: usize,
    /// `[C, S, S]` of the images.
    image: [usize; 3],
    attention: Attention,
    targets: Targets,
}

impl<B: Backend> Draw<B> {
    /// Number of drawing steps `T`.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Dimension of each step's latent.
    pub fn latent(&self) -> usize {
        self.latent
    }

    /// `[C, H, W]` of the images.
    pub fn image(&self) -> [usize; 3] {
        self.image
    }

    /// The encoder LSTM (exposed for tests and inspection).
    pub fn encoder(&self) -> &LstmCell<B> {
        &self.encoder
    }

    /// What the likelihood scores.
    pub fn target_kind(&self) -> Targets {
        self.targets
    }

    /// The images the likelihood scores and the encoder reads: `x` binarized or as is.
    pub fn targets(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self.targets {
            Targets::Binarized => x.greater_elem(0.5).float(),
            Targets::Grey => x,
        }
    }

    /// The encoder's input from the image, the error image and the previous decoder state:
    /// `x`, `x̂` `[N, C, H, W]`, `h_dec` `[N, hidden]` → `[N, 2·C·N_r²]` (or `[N, 2·C·H·W]`).
    fn read(&self, x: Tensor<B, 4>, x_hat: Tensor<B, 4>, h_dec: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.read_attn {
            Some(attn) => {
                // One set of filterbanks for both glimpses: they look at the same place.
                let (params, banks) = attn.attend(h_dec);
                let gx = read(x, &banks, params.gamma.clone()); // [N, C, N_r, N_r]
                let gx_hat = read(x_hat, &banks, params.gamma); // [N, C, N_r, N_r]
                Tensor::cat(vec![gx.flatten(1, 3), gx_hat.flatten(1, 3)], 1) // [N, 2·C·N_r²]
            }
            None => Tensor::cat(vec![x.flatten(1, 3), x_hat.flatten(1, 3)], 1), // [N, 2·C·H·W]
        }
    }

    /// What step `t` adds to the canvas: `h_dec` `[N, hidden]` → `[N, C, H, W]`.
    fn write(&self, h_dec: Tensor<B, 2>) -> Tensor<B, 4> {
        let [c, s, _] = self.image;
        let n = h_dec.dims()[0];
        let w = self.write_head.forward(h_dec.clone()); // [N, C·N_w²] or [N, C·S·S]
        match (&self.write_attn, &self.attention) {
            (Some(attn), Attention::Gaussian { write, .. }) => {
                let patch = w.reshape([n, c, *write, *write]); // [N, C, N_w, N_w]
                attn.write(patch, h_dec) // [N, C, S, S]
            }
            _ => w.reshape([n, c, s, s]), // [N, C, S, S]
        }
    }

    /// The encoder-driven pass over `x` (already [`Draw::targets`]): the final canvas (logits,
    /// `[N, C, H, W]`) and the KL summed over steps per image (`[N]`).
    fn infer(&self, x: Tensor<B, 4>, latents: Latents<B>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let device = x.device();
        let n = x.dims()[0];
        let mut canvas = Tensor::<B, 4>::zeros(x.dims(), &device); // c_0 = 0
        let mut enc = LstmCellState::zeros(n, self.hidden, &device);
        let mut dec = LstmCellState::zeros(n, self.hidden, &device);
        let mut kl = Tensor::<B, 1>::zeros([n], &device);
        for t in 0..self.steps {
            let x_hat = x.clone() - sigmoid(canvas.clone()); // [N, C, H, W]
            let r = self.read(x.clone(), x_hat, dec.h.clone()); // [N, R]
            enc = self.encoder.step(Tensor::cat(vec![r, dec.h.clone()], 1), &enc); // [N, hidden]
            let stats = self.posterior.forward(enc.h.clone()); // [N, 2·latent]
            let mean = stats.clone().narrow(1, 0, self.latent); // [N, latent]
            let log_var = stats.narrow(1, self.latent, self.latent); // [N, latent]
            let z = match &latents {
                Latents::Sample(noise) => {
                    let eps = noise.clone().narrow(0, t, 1).reshape([n, self.latent]); // [N, latent]
                    mean.clone() + (log_var.clone() * 0.5).exp() * eps
                }
                Latents::Mean => mean.clone(),
            }; // [N, latent]
            let terms = mean.square() + log_var.clone().exp() - log_var - 1.0; // [N, latent]
            kl = kl + terms.sum_dim(1).squeeze_dim::<1>(1) * 0.5; // [N]
            dec = self.decoder.step(z, &dec); // [N, hidden]
            canvas = canvas + self.write(dec.h.clone()); // [N, C, H, W]
        }
        (canvas, kl)
    }

    /// The negative ELBO of images `x` `[N, C, H, W]` in `[0, 1]` with one reparameterised
    /// posterior sample per step, in nats per image (batch means).
    pub fn loss(&self, x: Tensor<B, 4>) -> DrawLoss<B> {
        let noise = self.posterior_noise(x.dims()[0], &x.device());
        self.loss_with_noise(x, noise)
    }

    /// Standard normal noise for [`Draw::loss_with_noise`] on `n` images: `[T, n, latent]`, from
    /// the backend's generator.
    pub fn posterior_noise(&self, n: usize, device: &B::Device) -> Tensor<B, 3> {
        Tensor::random([self.steps, n, self.latent], Distribution::Normal(0.0, 1.0), device)
    }

    /// [`Draw::loss`] with the reparameterisation noise given, `[T, N, latent]`: step `t`'s
    /// latents are `μ_t + σ_t·noise[t]`. Drawing the noise apart from the pass lets a batch be cut
    /// into slices that run on different threads and still see the noise one pass would have
    /// (`DrawTask`'s shards).
    ///
    /// # Panics
    /// If `noise` is not `[T, N, latent]` for this model and `x` `[N, …]`.
    pub fn loss_with_noise(&self, x: Tensor<B, 4>, noise: Tensor<B, 3>) -> DrawLoss<B> {
        let expected = [self.steps, x.dims()[0], self.latent];
        assert_eq!(noise.dims(), expected, "DRAW's posterior noise must be [T, N, latent]");
        let x = self.targets(x);
        let (canvas, kl) = self.infer(x.clone(), Latents::Sample(noise));
        let recon = bernoulli_nll(canvas, x).mean(); // [1]
        let kl = kl.mean(); // [1]
        DrawLoss { loss: recon.clone() + kl.clone(), recon, kl }
    }

    /// Reconstructions of `x` `[N, C, H, W]`: the encoder reads the image and the decoder draws
    /// with the posterior means as its latents (no sampling noise). `σ(c_T)`, `[N, C, H, W]`.
    pub fn reconstruct(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.targets(x);
        sigmoid(self.infer(x, Latents::Mean).0)
    }

    /// Draws from latents `z` `[T, N, latent]` with the decoder alone, keeping every step.
    ///
    /// # Panics
    /// If `z` is not `[T, N, latent]` for this model's `T` and latent size.
    pub fn trace(&self, z: Tensor<B, 3>) -> DrawTrace<B> {
        let [t, n, d] = z.dims();
        assert_eq!([t, d], [self.steps, self.latent], "DRAW latents must be [T = {}, N, {}]", self.steps, self.latent);
        let device = z.device();
        let [c, s, _] = self.image;
        let mut canvas = Tensor::<B, 4>::zeros([n, c, s, s], &device); // c_0 = 0
        let mut dec = LstmCellState::zeros(n, self.hidden, &device);
        let (mut writes, mut canvases) = (Vec::with_capacity(t), Vec::with_capacity(t));
        for step in 0..t {
            let z_t = z.clone().narrow(0, step, 1).reshape([n, d]); // [N, latent]
            dec = self.decoder.step(z_t, &dec); // [N, hidden]
            let w = self.write(dec.h.clone()); // [N, C, S, S]
            canvas = canvas + w.clone(); // [N, C, S, S]
            writes.push(w);
            canvases.push(canvas.clone());
        }
        DrawTrace { writes, canvases }
    }

    /// The canvases `σ(c_t)` for t = 1..T drawn from latents `z` `[T, N, latent]`:
    /// `[T, N, C, H, W]` in `[0, 1]`, the last one the image.
    pub fn generate(&self, z: Tensor<B, 3>) -> Tensor<B, 5> {
        let canvases = self.trace(z).canvases.into_iter().map(sigmoid).collect();
        Tensor::stack(canvases, 0) // [T, N, C, S, S]
    }

    /// `n` prior latent sequences `[T, n, latent]` drawn on the host from `seed` (truncated to
    /// `[−τ, τ]` when asked), the same on every backend.
    pub fn prior_latents(&self, n: usize, seed: u64, truncation: Option<f64>, device: &B::Device) -> Tensor<B, 3> {
        let values = kiln_core::standard_normal(self.steps * n * self.latent, seed, truncation);
        Tensor::from_data(TensorData::new(values, [self.steps, n, self.latent]), device)
    }

    /// Writes `draw.json` (the config), `draw.safetensors` (the weights) and `kiln.json` into
    /// `dir`, each atomically.
    pub fn save(&self, config: &DrawConfig, dir: &Path) -> Result<(), DrawError> {
        kiln_optim::save_module(self, &dir.join(WEIGHTS_FILE), &[("kiln.family", FAMILY.into())])
            .map_err(|e| optim_err(e, dir))?;
        let json = serde_json::to_string_pretty(config)
            .map_err(|e| kiln_core::SaveError::Encode { path: dir.join(CONFIG_FILE), message: e.to_string() })?;
        kiln_core::atomic_write(&dir.join(CONFIG_FILE), json.as_bytes())?;
        ModelManifest::new(FAMILY, FORMAT).describing(dir, &[CONFIG_FILE, WEIGHTS_FILE])?.write(dir)?;
        Ok(())
    }

    /// Loads a model saved by [`Draw::save`] from `dir` onto `device`. Every tensor must be
    /// present with the shape the saved config implies; anything else is an error naming the file.
    pub fn load(dir: &Path, device: &B::Device) -> Result<(DrawConfig, Self), DrawError> {
        let config = DrawConfig::load_dir(dir)?;
        let model =
            kiln_optim::load_module(config.init::<B>(device), &dir.join(WEIGHTS_FILE)).map_err(|e| match e {
                kiln_optim::OptimError::State { path, message } => {
                    DrawError::Checkpoint { path, message: format!("not a checkpoint of this DRAW model ({message})") }
                }
                other => optim_err(other, dir),
            })?;
        Ok((config, model))
    }
}

/// `attn` with its parameter head's bias set so that, before training, the `n × n` grid tiles
/// the `size × size` image: centred, stride `δ = size/n`, filter width `σ = δ/2`, intensity 1.
///
/// The paper does not say how the heads start. At a zero bias, eq. 22–24 put an `N = 2` grid's
/// filters on the image's outermost rows and columns (stride `(A−1)/(N−1)`), each a pixel or so
/// wide: on MNIST they read blank border, the encoder starts blind, and nothing teaches it to
/// look elsewhere because its latents carry no information yet — the posterior collapses onto
/// the prior (measured here: KL 0.01 nats per image after 400 steps of the small preset, the
/// loss stuck at ~209 nats, a model of the mean digit). Starting from a grid that covers the
/// image, every filter sees part of the digit from the first step. A fresh leaf, so it trains.
fn tiling<B: Backend>(mut attn: DrawAttention<B>, n: usize, size: usize, device: &B::Device) -> DrawAttention<B> {
    let stride_unit = (size as f64 - 1.0) / (n.max(2) as f64 - 1.0);
    let delta = size as f64 / n as f64;
    let bias = [0.0, 0.0, 2.0 * (delta / 2.0).ln(), (delta / stride_unit).ln(), 0.0].map(|v| v as f32);
    attn.params.bias = Some(Param::from_tensor(Tensor::from_data(TensorData::new(bias.to_vec(), [5]), device)));
    attn
}

/// `−log Bernoulli(x | σ(logits))` per image, summed over pixels, stable for any logit:
/// `max(l, 0) − l·x + log(1 + e^−|l|)`. `[N]`.
pub(crate) fn bernoulli_nll<B: Backend>(logits: Tensor<B, 4>, x: Tensor<B, 4>) -> Tensor<B, 1> {
    let per_pixel = logits.clone().clamp_min(0.0) - logits.clone() * x + logits.abs().neg().exp().log1p();
    per_pixel.flatten::<2>(1, 3).sum_dim(1).squeeze_dim::<1>(1)
}

fn optim_err(e: kiln_optim::OptimError, dir: &Path) -> DrawError {
    match e {
        kiln_optim::OptimError::Save(e) => DrawError::Save(e),
        kiln_optim::OptimError::State { path, message } => DrawError::Checkpoint { path, message },
        other => DrawError::Checkpoint { path: dir.join(WEIGHTS_FILE), message: other.to_string() },
    }
}

/// A trained DRAW model samples by drawing a latent per step from the prior, on the host from the
/// request's seed (truncated when asked), and returns every step's canvas as the frames. It
/// reconstructs through the encoder with posterior means. It has no single latent space to
/// interpolate in (a sequence of `T` latents, each read in the context of the canvas so far).
impl<B: Backend> Generative<B> for Draw<B> {
    fn card(&self) -> ModelCard {
        ModelCard {
            name: "this DRAW model".into(),
            image: self.image,
            classes: 0,
            accepts: vec![SampleOption::Truncation],
        }
    }

    fn sample(&self, request: &SampleRequest, device: &B::Device) -> Result<Samples<B>, SampleError> {
        request.check(&self.card())?;
        let z = self.prior_latents(request.n, request.seed, request.truncation, device); // [T, n, latent]
        let frames = self.generate(z); // [T, n, C, S, S]
        let images = frames.clone().narrow(0, self.steps - 1, 1).squeeze_dim::<4>(0); // [n, C, S, S]
        Ok(Samples { images, frames: Some(frames) })
    }

    fn reconstruct(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>, SampleError> {
        let [_, c, h, w] = images.dims();
        if [c, h, w] != self.image {
            return Err(SampleError::Incapable(format!(
                "this DRAW model draws {:?} images; got {:?}",
                self.image,
                [c, h, w]
            )));
        }
        Ok(Draw::reconstruct(self, images))
    }
}
