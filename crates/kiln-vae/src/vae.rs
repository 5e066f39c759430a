//! A convolutional VAE: Kingma & Welling, "Auto-Encoding Variational Bayes", arXiv:1312.6114, with
//! the β weight of Higgins et al., "β-VAE", ICLR 2017.
//!
//! The encoder is a stack of stride-2 4×4 convolutions (the DCGAN shape, arXiv:1511.06434), a dense
//! layer, and a linear head giving the mean and log-variance of a diagonal Gaussian posterior. The
//! decoder mirrors it with transposed convolutions. The MNIST preset is sized so that five minutes
//! on two CPU cores buy recognisable samples (see `experiments/vae-mnist.toml`).

use std::path::{Path, PathBuf};

use crate::prior::{LatentMixture, PRIOR_FILE};
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use kiln_core::{Generative, LatentSpace, ModelCard, ModelManifest, SampleError, SampleOption, SampleRequest, Samples};
use kiln_kernels::activation::leaky_relu;

/// File name of a saved [`VaeConfig`] inside a checkpoint directory.
pub const CONFIG_FILE: &str = "vae.json";
/// File name of saved [`Vae`] weights inside a checkpoint directory.
pub const WEIGHTS_FILE: &str = "vae.safetensors";
/// The family name in `kiln.json` and in experiment files.
pub const FAMILY: &str = "vae";
/// Version of the directory layout (`kiln.json`, `vae.json`, `vae.safetensors`).
pub const FORMAT: u32 = 1;

const SLOPE: f64 = 0.2;
const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// The decoder's output distribution `p(x | z)`. Mutually exclusive, hence an enum.
#[derive(Config, Debug, PartialEq)]
pub enum Likelihood {
    /// Independent Bernoulli pixels; the decoder outputs logits. Right for `[0, 1]` grey digits.
    Bernoulli,
    /// Independent Gaussian pixels with a fixed standard deviation; the decoder outputs means.
    Gaussian {
        /// Standard deviation of every pixel (in the data's units).
        sigma: f64,
    },
}

/// Configuration of a [`Vae`].
#[derive(Config, Debug)]
pub struct VaeConfig {
    /// Image channels (1 grey, 3 RGB).
    #[config(default = 1)]
    pub channels: usize,
    /// Image height = width; must be divisible by `2^widths.len()`.
    #[config(default = 28)]
    pub image_size: usize,
    /// Channels of each stride-2 encoder stage (the decoder mirrors them).
    #[config(default = "vec![32, 64]")]
    pub widths: Vec<usize>,
    /// Width of the dense layer between convolutions and latent; 0 for none.
    #[config(default = 256)]
    pub hidden: usize,
    /// Dimension of the latent code.
    #[config(default = 16)]
    pub latent: usize,
    /// Pixel likelihood.
    #[config(default = "Likelihood::Bernoulli")]
    pub likelihood: Likelihood,
    /// Weight of the KL term (1 = the ELBO).
    #[config(default = 1.0)]
    pub beta: f64,
    /// Gaussians of the latent mixture fitted to the training set's posterior means after
    /// training, which the model then samples from instead of `N(0, I)` (see [`crate::prior`]);
    /// 0 keeps `N(0, I)`. `kiln train` fits it; a library user calls [`Vae::fit_prior`].
    #[config(default = 10)]
    pub prior_components: usize,
}

/// Errors of this crate: invalid configurations and unreadable checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum VaeError {
    /// A configuration value is out of range.
    #[error("VAE config: {field} = {value}: {reason}")]
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

impl VaeConfig {
    /// The MNIST preset (1×28×28, widths 32/64, dense 256, latent 16, Bernoulli): the default.
    pub fn mnist() -> Self {
        Self::new()
    }

    /// A 3×32×32 preset for small RGB sets such as emoji-32.
    pub fn rgb32() -> Self {
        Self::new()
            .with_channels(3)
            .with_image_size(32)
            .with_widths(vec![32, 64, 128])
            .with_hidden(512)
            .with_latent(64)
            .with_likelihood(Likelihood::Gaussian { sigma: 0.1 })
    }

    /// AntixK/PyTorch-VAE's VanillaVAE shape at 64×64 (widths 32…512, latent 128), kiln's W2
    /// benchmark workload.
    pub fn vanilla64() -> Self {
        Self::new()
            .with_channels(3)
            .with_image_size(64)
            .with_widths(vec![32, 64, 128, 256, 512])
            .with_hidden(0)
            .with_latent(128)
            .with_likelihood(Likelihood::Gaussian { sigma: 1.0 })
    }

    /// A preset by name: `mnist`, `rgb32` or `vanilla64`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "mnist" => Some(Self::mnist()),
            "rgb32" => Some(Self::rgb32()),
            "vanilla64" => Some(Self::vanilla64()),
            _ => None,
        }
    }

    /// Names accepted by [`VaeConfig::preset`].
    pub const PRESETS: &'static [&'static str] = &["mnist", "rgb32", "vanilla64"];

    /// Checks every field; `init` assumes a validated config.
    pub fn validate(&self) -> Result<(), VaeError> {
        let bad = |field, value: String, reason: &str| Err(VaeError::Config { field, value, reason: reason.into() });
        if self.channels == 0 {
            return bad("channels", self.channels.to_string(), "must be at least 1");
        }
        if self.latent == 0 {
            return bad("latent", self.latent.to_string(), "must be at least 1");
        }
        if self.widths.is_empty() || self.widths.contains(&0) {
            return bad("widths", format!("{:?}", self.widths), "needs at least one stage, none of width 0");
        }
        let factor = 1usize.checked_shl(self.widths.len() as u32).unwrap_or(0);
        if factor == 0 || self.image_size == 0 || !self.image_size.is_multiple_of(factor) {
            return bad(
                "image_size",
                self.image_size.to_string(),
                &format!("must be a positive multiple of 2^{} = {factor} (one halving per stage)", self.widths.len()),
            );
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return bad("beta", self.beta.to_string(), "must be finite and ≥ 0");
        }
        if let Likelihood::Gaussian { sigma } = self.likelihood
            && !(sigma.is_finite() && sigma > 0.0)
        {
            return bad("likelihood.sigma", sigma.to_string(), "must be finite and > 0");
        }
        Ok(())
    }

    /// Builds the model on `device` with freshly initialised weights.
    ///
    /// # Panics
    /// If the config is invalid; call [`VaeConfig::validate`] first on user-supplied configs.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Vae<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [4, 4]).with_stride([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        };
        let deconv = |i, o| ConvTranspose2dConfig::new([i, o], [4, 4]).with_stride([2, 2]).with_padding([1, 1]);

        let mut enc_convs = Vec::new();
        let mut c = self.channels;
        for &w in &self.widths {
            enc_convs.push(conv(c, w).init(device));
            c = w;
        }
        let side = self.image_size >> self.widths.len();
        let flat = c * side * side;
        let (enc_hidden, dec_hidden, dense) = if self.hidden > 0 {
            (
                Some(LinearConfig::new(flat, self.hidden).init(device)),
                Some(LinearConfig::new(self.hidden, flat).init(device)),
                self.hidden,
            )
        } else {
            (None, None, flat)
        };
        let enc_head = LinearConfig::new(dense, 2 * self.latent).init(device);
        let dec_in = LinearConfig::new(self.latent, dense).init(device);
        let mut dec_convs = Vec::new();
        for (i, &w) in self.widths.iter().enumerate().rev() {
            let out = if i == 0 { self.channels } else { self.widths[i - 1] };
            dec_convs.push(deconv(w, out).init(device));
        }
        Vae {
            enc_convs,
            enc_hidden,
            enc_head,
            dec_in,
            dec_hidden,
            dec_convs,
            latent: self.latent,
            top: [c, side],
            image: [self.channels, self.image_size, self.image_size],
            likelihood: self.likelihood.clone(),
            beta: self.beta,
            prior: None,
        }
    }

    /// Reads a config saved by [`Vae::save`] from `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, VaeError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| VaeError::Checkpoint { path: path.clone(), message: e.to_string() })?;
        let bad = |e: serde_json::Error| VaeError::Checkpoint {
            path: path.clone(),
            message: format!("not a VAE config: {e}"),
        };
        let mut value: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
        // Configs written before `prior_components` existed take its default.
        if let Some(fields) = value.as_object_mut() {
            fields.entry("prior_components").or_insert_with(|| Self::new().prior_components.into());
        }
        let config: Self = serde_json::from_value(value).map_err(bad)?;
        config.validate().map_err(|e| VaeError::Checkpoint { path, message: e.to_string() })?;
        Ok(config)
    }
}

/// The approximate posterior `q(z | x) = N(mean, diag(exp(log_var)))`.
#[derive(Debug, Clone)]
pub struct Posterior<B: Backend> {
    /// `[N, latent]`.
    pub mean: Tensor<B, 2>,
    /// `[N, latent]`.
    pub log_var: Tensor<B, 2>,
}

impl<B: Backend> Posterior<B> {
    /// A reparameterised sample `mean + exp(log_var / 2) · ε`, `ε ~ N(0, I)`: differentiable in
    /// `mean` and `log_var`. `[N, latent]`.
    pub fn sample(&self) -> Tensor<B, 2> {
        let eps = Tensor::random(self.mean.shape(), Distribution::Normal(0.0, 1.0), &self.mean.device());
        self.mean.clone() + (self.log_var.clone() * 0.5).exp() * eps
    }

    /// `KL(q(z|x) ‖ N(0, I))` per example, in nats. `[N]`.
    pub fn kl(&self) -> Tensor<B, 1> {
        let m2 = self.mean.clone().powi_scalar(2);
        let terms = self.log_var.clone().exp() + m2 - self.log_var.clone() - 1.0; // [N, latent]
        terms.sum_dim(1).squeeze_dim::<1>(1) * 0.5
    }
}

/// One evaluation of the (β-weighted) negative ELBO on a batch; all three are batch means.
#[derive(Debug, Clone)]
pub struct VaeLoss<B: Backend> {
    /// `recon + β·kl`, the quantity to minimise. `[1]`.
    pub loss: Tensor<B, 1>,
    /// `−log p(x | z)` summed over pixels, nats per image. `[1]`.
    pub recon: Tensor<B, 1>,
    /// `KL(q(z | x) ‖ p(z))`, nats per image. `[1]`.
    pub kl: Tensor<B, 1>,
}

/// A convolutional VAE; build it with [`VaeConfig::init`].
#[derive(Module, Debug)]
pub struct Vae<B: Backend> {
    enc_convs: Vec<Conv2d<B>>,
    enc_hidden: Option<Linear<B>>,
    enc_head: Linear<B>,
    dec_in: Linear<B>,
    dec_hidden: Option<Linear<B>>,
    dec_convs: Vec<ConvTranspose2d<B>>,
    latent: usize,
    /// Channels and side of the innermost feature map.
    top: [usize; 2],
    /// `[C, S, S]` of the images.
    image: [usize; 3],
    likelihood: Likelihood,
    beta: f64,
    /// The latent mixture samples are drawn from, when one was fitted ([`Vae::fit_prior`]);
    /// otherwise `N(0, I)`.
    prior: Option<LatentMixture>,
}

impl<B: Backend> Vae<B> {
    /// Latent dimension.
    pub fn latent(&self) -> usize {
        self.latent
    }

    /// The fitted latent mixture that sampling draws from, if any.
    pub fn prior(&self) -> Option<&LatentMixture> {
        self.prior.as_ref()
    }

    /// This model sampling from `prior` (`None`: from `N(0, I)`).
    ///
    /// # Panics
    /// If the mixture's dimension is not the latent size.
    pub fn with_prior(mut self, prior: Option<LatentMixture>) -> Self {
        if let Some(p) = &prior {
            assert_eq!(p.dim, self.latent, "a latent mixture of dim {} for a latent size of {}", p.dim, self.latent);
        }
        self.prior = prior;
        self
    }

    /// Fits a `components`-Gaussian mixture to the posterior means of `batches` (images
    /// `[N, C, S, S]` in `[0, 1]`, typically the training set) — see [`crate::prior`] for why.
    pub fn fit_prior(
        &self,
        batches: impl IntoIterator<Item = Tensor<B, 4>>,
        components: usize,
        seed: u64,
    ) -> Result<LatentMixture, VaeError> {
        let mut points = Vec::new();
        for x in batches {
            let mean = self.encode(x).mean; // [N, latent]
            let values = mean.into_data().convert::<f32>().into_vec::<f32>().map_err(|e| VaeError::Config {
                field: "prior points",
                value: "the posterior means".into(),
                reason: format!("could not be read back: {e:?}"),
            })?;
            points.extend(values);
        }
        LatentMixture::fit(&points, self.latent, components, seed)
    }

    /// `q(z | x)` for images `x` `[N, C, S, S]` in `[0, 1]`.
    pub fn encode(&self, x: Tensor<B, 4>) -> Posterior<B> {
        let mut h = x;
        for conv in &self.enc_convs {
            h = leaky_relu(conv.forward(h), SLOPE); // [N, w_i, S/2^i, S/2^i]
        }
        let mut h: Tensor<B, 2> = h.flatten(1, 3); // [N, c·s·s]
        if let Some(dense) = &self.enc_hidden {
            h = leaky_relu(dense.forward(h), SLOPE); // [N, hidden]
        }
        let stats = self.enc_head.forward(h); // [N, 2·latent]
        let [mean, log_var] = [0, 1].map(|i| stats.clone().narrow(1, i * self.latent, self.latent));
        Posterior { mean, log_var }
    }

    /// The decoder's raw output for latents `z` `[N, latent]`: logits (Bernoulli) or means
    /// (Gaussian). `[N, C, S, S]`.
    pub fn decode_params(&self, z: Tensor<B, 2>) -> Tensor<B, 4> {
        let mut h = leaky_relu(self.dec_in.forward(z), SLOPE); // [N, hidden or c·s·s]
        if let Some(dense) = &self.dec_hidden {
            h = leaky_relu(dense.forward(h), SLOPE); // [N, c·s·s]
        }
        let [c, s] = self.top;
        let mut h = h.reshape([0, c as i32, s as i32, s as i32]); // [N, c, s, s]
        let last = self.dec_convs.len() - 1;
        for (i, deconv) in self.dec_convs.iter().enumerate() {
            h = deconv.forward(h); // side doubles
            if i < last {
                h = leaky_relu(h, SLOPE);
            }
        }
        h // [N, C, S, S]
    }

    /// Images for latents `z` `[N, latent]`: the mean of `p(x | z)`, in `[0, 1]`. `[N, C, S, S]`.
    pub fn decode(&self, z: Tensor<B, 2>) -> Tensor<B, 4> {
        let params = self.decode_params(z);
        match self.likelihood {
            Likelihood::Bernoulli => sigmoid(params),
            Likelihood::Gaussian { .. } => params.clamp(0.0, 1.0),
        }
    }

    /// Reconstructions of `x` through the posterior mean (no sampling noise). `[N, C, S, S]`.
    pub fn reconstruct(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.decode(self.encode(x).mean)
    }

    /// The β-weighted negative ELBO of images `x` `[N, C, S, S]` in `[0, 1]`, with one
    /// reparameterised posterior sample per image.
    pub fn loss(&self, x: Tensor<B, 4>) -> VaeLoss<B> {
        let posterior = self.encode(x.clone());
        let params = self.decode_params(posterior.sample());
        let recon = self.neg_log_likelihood(params, x).mean(); // [1]
        let kl = posterior.kl().mean(); // [1]
        let loss = recon.clone() + kl.clone() * self.beta;
        VaeLoss { loss, recon, kl }
    }

    /// `−log p(x | params)` per image, summed over pixels. `[N]`.
    pub(crate) fn neg_log_likelihood(&self, params: Tensor<B, 4>, x: Tensor<B, 4>) -> Tensor<B, 1> {
        let per_pixel = match self.likelihood {
            // BCE with logits, stable for any |logit|: max(l, 0) − l·x + log(1 + e^−|l|).
            Likelihood::Bernoulli => {
                params.clone().clamp_min(0.0) - params.clone() * x + params.abs().neg().exp().log1p()
            }
            Likelihood::Gaussian { sigma } => {
                let z = (params - x) / sigma;
                z.powi_scalar(2) * 0.5 + (sigma.ln() + 0.5 * LN_2PI)
            }
        };
        per_pixel.flatten::<2>(1, 3).sum_dim(1).squeeze_dim::<1>(1)
    }

    /// Writes `vae.json` (the config), `vae.safetensors` (the weights) and `kiln.json` into
    /// `dir`, each atomically.
    pub fn save(&self, config: &VaeConfig, dir: &Path) -> Result<(), VaeError> {
        kiln_optim::save_module(self, &dir.join(WEIGHTS_FILE), &[("kiln.family", FAMILY.into())])
            .map_err(|e| optim_err(e, dir))?;
        let json = serde_json::to_string_pretty(config)
            .map_err(|e| kiln_core::SaveError::Encode { path: dir.join(CONFIG_FILE), message: e.to_string() })?;
        kiln_core::atomic_write(&dir.join(CONFIG_FILE), json.as_bytes())?;
        let mut files = vec![CONFIG_FILE, WEIGHTS_FILE];
        if let Some(prior) = &self.prior {
            prior.save(dir)?;
            files.push(PRIOR_FILE);
        }
        ModelManifest::new(FAMILY, FORMAT).describing(dir, &files)?.write(dir)?;
        Ok(())
    }

    /// Loads a model saved by [`Vae::save`] from `dir` onto `device`. Every tensor must be present
    /// with the shape the saved config implies; anything else is an error naming the file.
    pub fn load(dir: &Path, device: &B::Device) -> Result<(VaeConfig, Self), VaeError> {
        let config = VaeConfig::load_dir(dir)?;
        let model =
            kiln_optim::load_module(config.init::<B>(device), &dir.join(WEIGHTS_FILE)).map_err(|e| match e {
                kiln_optim::OptimError::State { path, message } => {
                    VaeError::Checkpoint { path, message: format!("not a checkpoint of this VAE ({message})") }
                }
                other => optim_err(other, dir),
            })?;
        let prior = LatentMixture::load(dir, config.latent)?;
        Ok((config, model.with_prior(prior)))
    }
}

fn optim_err(e: kiln_optim::OptimError, dir: &Path) -> VaeError {
    match e {
        kiln_optim::OptimError::Save(e) => VaeError::Save(e),
        kiln_optim::OptimError::State { path, message } => VaeError::Checkpoint { path, message },
        other => VaeError::Checkpoint { path: dir.join(WEIGHTS_FILE), message: other.to_string() },
    }
}

/// A trained VAE samples by decoding prior latents drawn on the host from the request's seed
/// (truncated when asked), reconstructs through the posterior mean, and interpolates in its
/// latent space.
impl<B: Backend> Generative<B> for Vae<B> {
    fn card(&self) -> ModelCard {
        ModelCard { name: "this VAE".into(), image: self.image, classes: 0, accepts: vec![SampleOption::Truncation] }
    }

    fn sample(&self, request: &SampleRequest, device: &B::Device) -> Result<Samples<B>, SampleError> {
        request.check(&self.card())?;
        let z = match &self.prior {
            Some(prior) => {
                let values = prior.sample(request.n, request.seed, request.truncation);
                Tensor::from_data(TensorData::new(values, [request.n, self.latent]), device)
            }
            None => request.latents(self.latent, device),
        }; // [n, latent]
        Ok(Samples::images(self.decode(z))) // [n, C, S, S]
    }

    fn reconstruct(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>, SampleError> {
        Ok(Vae::reconstruct(self, images))
    }

    fn latent_space(&self) -> Option<&dyn LatentSpace<B>> {
        Some(self)
    }
}

impl<B: Backend> LatentSpace<B> for Vae<B> {
    fn dim(&self) -> usize {
        self.latent
    }

    fn decode(&self, z: Tensor<B, 2>, classes: &[usize]) -> Result<Tensor<B, 4>, SampleError> {
        self.card().classes_for(z.dims()[0], classes)?;
        Ok(Vae::decode(self, z))
    }
}
