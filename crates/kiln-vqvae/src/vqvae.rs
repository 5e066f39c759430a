//! VQ-VAE: van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation Learning",
//! arXiv:1711.00937, with the exponential-moving-average codebook of its appendix A.1.
//!
//! The network follows DeepMind Sonnet's `vqvae_example` (the paper's CIFAR-10 net): an encoder of
//! stride-2 4×4 convolutions, a 3×3 convolution and a stack of residual blocks (ReLU, 3×3 conv,
//! ReLU, 1×1 conv, with a ReLU after the stack), a 1×1 projection to the code dimension `D`, the
//! nearest-code quantizer over `K` codes (kiln-kernels' `vq`), and a decoder that mirrors the
//! encoder with transposed convolutions. The codebook is not a trained parameter: it is the ratio
//! of two running averages (assigned vectors' count and sum) kept in the model beside it, so that
//! saving the model saves the whole codebook state and a resumed run continues bit for bit.
//!
//! Pixels enter in `[0, 1]` and are centred to `[-0.5, 0.5]` inside, as Sonnet does; the
//! reconstruction loss is the mean squared error in pixel units.

use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::module::{Module, Param, ParamId};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};
use kiln_core::{Generative, LatentSpace, ModelCard, ModelManifest, SampleError, SampleRequest, Samples};
use kiln_kernels::vq;

/// File name of a saved [`VqVaeConfig`] inside a checkpoint directory.
pub const CONFIG_FILE: &str = "vqvae.json";
/// File name of saved [`VqVae`] weights (and codebook statistics) inside a checkpoint directory.
pub const WEIGHTS_FILE: &str = "vqvae.safetensors";
/// The family name in `kiln.json` and in experiment files.
pub const FAMILY: &str = "vqvae";
/// Version of the directory layout (`kiln.json`, `vqvae.json`, `vqvae.safetensors`).
pub const FORMAT: u32 = 1;

/// Why `sample` refuses: the message [`Generative::sample`] returns.
pub const NO_PRIOR: &str = "this VQ-VAE has no prior of its own: it encodes images to a grid of discrete codes and \
decodes them back (use `kiln reconstruct`); to sample, train a prior over its codes, e.g. an autoregressive \
transformer over the code grid such as the DALL·E family's, unconditional or class-conditional, and decode what \
it draws";

/// Configuration of a [`VqVae`].
///
/// The defaults are the `mnist28` preset. Its widths are a quarter of the paper's CIFAR net's
/// (hidden 64 instead of 256, one residual block instead of two, K = 64 codes of D = 16): a 7×7
/// grid of 64 codes holds a 28×28 grey digit easily, and the narrow trunk is what keeps a run
/// with clear reconstructions to a few minutes on two CPU cores (measured in
/// `experiments/vqvae-mnist.toml`).
#[derive(Config, Debug)]
pub struct VqVaeConfig {
    /// Image channels (1 grey, 3 RGB).
    #[config(default = 1)]
    pub channels: usize,
    /// Image height = width; must be divisible by `2^downsamples`.
    #[config(default = 28)]
    pub image_size: usize,
    /// Stride-2 4×4 convolutions in the encoder (and transposed ones in the decoder): the code
    /// grid is `image_size / 2^downsamples` on a side.
    #[config(default = 2)]
    pub downsamples: usize,
    /// Channels of the encoder and decoder trunks (the first stride-2 stages use half).
    #[config(default = 64)]
    pub hidden: usize,
    /// Channels inside each residual block (the 3×3 conv's output).
    #[config(default = 32)]
    pub res_hidden: usize,
    /// Residual blocks in the encoder and in the decoder.
    #[config(default = 1)]
    pub res_blocks: usize,
    /// Codes in the codebook, `K`.
    #[config(default = 64)]
    pub codebook_size: usize,
    /// Dimension of a code, `D`.
    #[config(default = 16)]
    pub code_dim: usize,
    /// Weight β of the commitment loss `‖z_e − sg(e)‖²` (0.25 in the paper, robust from 0.1 to 2).
    #[config(default = 0.25)]
    pub commitment: f64,
}

/// Errors of this crate: invalid configurations and unreadable checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum VqVaeError {
    /// A configuration value is out of range.
    #[error("VQ-VAE config: {field} = {value}: {reason}")]
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
    /// The optimizer settings are invalid.
    #[error(transparent)]
    Optim(#[from] kiln_optim::OptimError),
}

impl VqVaeConfig {
    /// The MNIST preset (1×28×28 → 7×7 codes, K = 64, D = 16): the defaults.
    pub fn mnist28() -> Self {
        Self::new()
    }

    /// A 3×32×32 preset for emoji-32 (→ 8×8 codes, K = 512, D = 64 as in the paper), at half the
    /// CIFAR net's width (hidden 128, residual 32 — Sonnet's example settings) with its two
    /// residual blocks: emoji are flat-shaded, and the narrower trunk keeps a run to minutes on
    /// two cores.
    pub fn emoji32() -> Self {
        Self::new()
            .with_channels(3)
            .with_image_size(32)
            .with_hidden(128)
            .with_res_hidden(32)
            .with_res_blocks(2)
            .with_codebook_size(512)
            .with_code_dim(64)
    }

    /// The paper's CIFAR-10 net (section 4.1): two stride-2 4×4 convolutions, 256 channels
    /// throughout, two residual blocks, K = 512, D = 64; 32×32 → 8×8 codes. kiln's W3 benchmark
    /// workload.
    pub fn cifar() -> Self {
        Self::emoji32().with_hidden(256).with_res_hidden(256)
    }

    /// A preset by name: `mnist28`, `emoji32` or `cifar`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "mnist28" => Some(Self::mnist28()),
            "emoji32" => Some(Self::emoji32()),
            "cifar" => Some(Self::cifar()),
            _ => None,
        }
    }

    /// Names accepted by [`VqVaeConfig::preset`].
    pub const PRESETS: &'static [&'static str] = &["mnist28", "emoji32", "cifar"];

    /// Side of the code grid, `image_size / 2^downsamples`.
    pub fn grid(&self) -> usize {
        self.image_size >> self.downsamples
    }

    /// Checks every field; `init` assumes a validated config.
    pub fn validate(&self) -> Result<(), VqVaeError> {
        let bad = |field, value: String, reason: &str| Err(VqVaeError::Config { field, value, reason: reason.into() });
        for (field, value) in [
            ("channels", self.channels),
            ("res_hidden", self.res_hidden),
            ("codebook_size", self.codebook_size),
            ("code_dim", self.code_dim),
        ] {
            if value == 0 {
                return bad(field, value.to_string(), "must be at least 1");
            }
        }
        if self.hidden < 2 {
            return bad("hidden", self.hidden.to_string(), "must be at least 2 (the first stages use hidden / 2)");
        }
        if self.downsamples == 0 || self.downsamples > 8 {
            return bad("downsamples", self.downsamples.to_string(), "must be 1 to 8 stride-2 stages");
        }
        let factor = 1usize << self.downsamples;
        if self.image_size == 0 || !self.image_size.is_multiple_of(factor) {
            return bad(
                "image_size",
                self.image_size.to_string(),
                &format!("must be a positive multiple of 2^{} = {factor} (one halving per stage)", self.downsamples),
            );
        }
        if !(self.commitment.is_finite() && self.commitment >= 0.0) {
            return bad("commitment", self.commitment.to_string(), "must be finite and ≥ 0 (the paper uses 0.25)");
        }
        Ok(())
    }

    /// Builds the model on `device` with freshly initialised weights and a codebook drawn from
    /// `U(±√(3/D))` (Sonnet's variance-scaling initialiser: unit variance per code entry), with
    /// EMA statistics that reproduce it exactly.
    ///
    /// # Panics
    /// If the config is invalid; call [`VqVaeConfig::validate`] first on user-supplied configs.
    pub fn init<B: Backend>(&self, device: &B::Device) -> VqVae<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let same = PaddingConfig2d::Same;
        let down = |i, o| {
            Conv2dConfig::new([i, o], [4, 4]).with_stride([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        };
        let up = |i, o| ConvTranspose2dConfig::new([i, o], [4, 4]).with_stride([2, 2]).with_padding([1, 1]);
        let (h, half) = (self.hidden, self.hidden / 2);
        let stage_width = |i: usize| if i + 1 == self.downsamples { h } else { half };
        let residuals = || -> Vec<Residual<B>> {
            (0..self.res_blocks)
                .map(|_| Residual {
                    conv3: Conv2dConfig::new([h, self.res_hidden], [3, 3]).with_padding(same.clone()).init(device),
                    conv1: Conv2dConfig::new([self.res_hidden, h], [1, 1]).init(device),
                })
                .collect()
        };

        let mut enc_down = Vec::new();
        let mut c = self.channels;
        for i in 0..self.downsamples {
            enc_down.push(down(c, stage_width(i)).init(device));
            c = stage_width(i);
        }
        let enc_conv = Conv2dConfig::new([h, h], [3, 3]).with_padding(same.clone()).init(device);
        let enc_res = residuals();
        let pre_vq = Conv2dConfig::new([h, self.code_dim], [1, 1]).init(device);

        let bound = (3.0 / self.code_dim as f64).sqrt();
        let codebook =
            Tensor::<B, 2>::random([self.codebook_size, self.code_dim], Distribution::Uniform(-bound, bound), device);
        let stats = vq::EmaCodebook::new(codebook.clone());

        let dec_conv = Conv2dConfig::new([self.code_dim, h], [3, 3]).with_padding(same.clone()).init(device);
        let dec_res = residuals();
        // Mirror of the encoder: widths h → h/2 → … → channels.
        let mut dec_up = Vec::new();
        let mut c = h;
        for i in (0..self.downsamples).rev() {
            let out = if i == 0 { self.channels } else { stage_width(i - 1) };
            dec_up.push(up(c, out).init(device));
            c = out;
        }
        VqVae {
            enc_down,
            enc_conv,
            enc_res,
            pre_vq,
            codebook: frozen(codebook),
            cluster_size: frozen(stats.cluster_size),
            embed_sum: frozen(stats.embed_sum),
            dec_conv,
            dec_res,
            dec_up,
            image: [self.channels, self.image_size, self.image_size],
            grid: self.grid(),
            commitment: self.commitment,
        }
    }

    /// Reads a config saved by [`VqVae::save`] from `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, VqVaeError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| VqVaeError::Checkpoint { path: path.clone(), message: e.to_string() })?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| VqVaeError::Checkpoint { path: path.clone(), message: format!("not a VQ-VAE config: {e}") })?;
        config.validate().map_err(|e| VqVaeError::Checkpoint { path, message: e.to_string() })?;
        Ok(config)
    }
}

/// A parameter the optimizer never sees (no gradient): the codebook and its EMA statistics.
fn frozen<B: Backend, const D: usize>(t: Tensor<B, D>) -> Param<Tensor<B, D>> {
    Param::initialized(ParamId::new(), t.detach())
}

/// One residual block: `x + conv1×1(relu(conv3×3(relu(x))))`.
#[derive(Module, Debug)]
struct Residual<B: Backend> {
    conv3: Conv2d<B>,
    conv1: Conv2d<B>,
}

impl<B: Backend> Residual<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.conv3.forward(relu(x.clone())); // [N, res_hidden, s, s]
        x + self.conv1.forward(relu(h)) // [N, hidden, s, s]
    }
}

/// One evaluation of the VQ-VAE objective on a batch, with what the EMA update and the metrics
/// need.
#[derive(Debug, Clone)]
pub struct VqVaeLoss<B: Backend> {
    /// `recon_mse + β·commitment`, the quantity the optimizer minimises. `[1]`.
    pub loss: Tensor<B, 1>,
    /// Mean squared error per pixel value, in `[0, 1]` pixel units. `[1]`.
    pub recon_mse: Tensor<B, 1>,
    /// `‖z_e − sg(e)‖²` averaged over elements (unweighted). `[1]`.
    pub commitment: Tensor<B, 1>,
    /// The chosen codes, `[N, h, w]`.
    pub indices: Tensor<B, 3, Int>,
    /// The encoder outputs, one row per code position, detached: `[N·h·w, D]` (the EMA update's
    /// input, rows in the order of `indices` flattened).
    pub latents: Tensor<B, 2>,
    /// How often each code was chosen in the batch, `[K]`.
    pub counts: Tensor<B, 1>,
}

/// A VQ-VAE; build it with [`VqVaeConfig::init`].
#[derive(Module, Debug)]
pub struct VqVae<B: Backend> {
    enc_down: Vec<Conv2d<B>>,
    enc_conv: Conv2d<B>,
    enc_res: Vec<Residual<B>>,
    pre_vq: Conv2d<B>,
    /// The codes `e_k`, `[K, D]`: `embed_sum / smoothed cluster_size`, or a restart.
    codebook: Param<Tensor<B, 2>>,
    /// EMA count `N_k` of vectors assigned to each code, `[K]`.
    cluster_size: Param<Tensor<B, 1>>,
    /// EMA sum `m_k` of the vectors assigned to each code, `[K, D]`.
    embed_sum: Param<Tensor<B, 2>>,
    dec_conv: Conv2d<B>,
    dec_res: Vec<Residual<B>>,
    dec_up: Vec<ConvTranspose2d<B>>,
    /// `[C, S, S]` of the images.
    image: [usize; 3],
    /// Side of the code grid.
    grid: usize,
    commitment: f64,
}

impl<B: Backend> VqVae<B> {
    /// `[C, S, S]` of the images the model takes.
    pub fn image_shape(&self) -> [usize; 3] {
        self.image
    }

    /// Side `h = w` of the code grid.
    pub fn grid(&self) -> usize {
        self.grid
    }

    /// The codebook, `[K, D]`.
    pub fn codebook(&self) -> Tensor<B, 2> {
        self.codebook.val()
    }

    /// The EMA count of vectors assigned to each code, `[K]`: the code-usage histogram.
    pub fn cluster_size(&self) -> Tensor<B, 1> {
        self.cluster_size.val()
    }

    /// The continuous encoder output `z_e(x)` for images `x` `[N, C, S, S]` in `[0, 1]`.
    /// `[N, D, h, w]`.
    pub fn encode_latents(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = x.sub_scalar(0.5); // [N, C, S, S] in [-0.5, 0.5]
        let last = self.enc_down.len() - 1;
        for (i, conv) in self.enc_down.iter().enumerate() {
            h = conv.forward(h); // side halves
            if i < last {
                h = relu(h);
            }
        }
        let mut h = self.enc_conv.forward(relu(h)); // [N, hidden, h, w]
        for block in &self.enc_res {
            h = block.forward(h); // [N, hidden, h, w]
        }
        self.pre_vq.forward(relu(h)) // [N, D, h, w]
    }

    /// The nearest code of every position of `x` `[N, C, S, S]` (in `[0, 1]`): `[N, h, w]`.
    pub fn encode(&self, x: Tensor<B, 4>) -> Tensor<B, 3, Int> {
        let z = self.encode_latents(x);
        let [n, _, h, w] = z.dims();
        let flat = to_rows(z); // [N·h·w, D]
        vq::nearest_code(flat, self.codebook.val()).reshape([n, h, w])
    }

    /// The code vectors of `indices` `[N, h, w]`: `[N, D, h, w]`.
    pub fn codes(&self, indices: Tensor<B, 3, Int>) -> Tensor<B, 4> {
        let [n, h, w] = indices.dims();
        let rows = vq::lookup(self.codebook.val(), indices.reshape([n * h * w])); // [N·h·w, D]
        from_rows(rows, [n, h, w])
    }

    /// The decoder's raw output for quantized latents `[N, D, h, w]`: pixel means in `[0, 1]`
    /// units, not clamped (the loss is taken on these). `[N, C, S, S]`.
    pub fn decode_latents(&self, z_q: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.dec_conv.forward(z_q); // [N, hidden, h, w]
        for block in &self.dec_res {
            h = block.forward(h); // [N, hidden, h, w]
        }
        let mut h = relu(h);
        let last = self.dec_up.len() - 1;
        for (i, deconv) in self.dec_up.iter().enumerate() {
            h = deconv.forward(h); // side doubles
            if i < last {
                h = relu(h);
            }
        }
        h.add_scalar(0.5) // [N, C, S, S]
    }

    /// Images for code indices `[N, h, w]`, clamped to `[0, 1]`. `[N, C, S, S]`.
    pub fn decode_indices(&self, indices: Tensor<B, 3, Int>) -> Tensor<B, 4> {
        self.decode_latents(self.codes(indices)).clamp(0.0, 1.0)
    }

    /// Reconstructions of `x` `[N, C, S, S]` through its codes, in `[0, 1]`. `[N, C, S, S]`.
    pub fn reconstruct(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.decode_indices(self.encode(x))
    }

    /// The training objective on images `x` `[N, C, S, S]` in `[0, 1]`: reconstruction MSE plus
    /// β times the commitment loss, gradients reaching the encoder through the straight-through
    /// estimator. The codebook gets no gradient (the paper's codebook loss is replaced by the EMA
    /// update, [`VqVae::ema_update`]).
    pub fn loss(&self, x: Tensor<B, 4>) -> VqVaeLoss<B> {
        let z = self.encode_latents(x.clone()); // [N, D, h, w]
        let [n, _, h, w] = z.dims();
        let rows = to_rows(z); // [N·h·w, D]
        let q = vq::quantize(rows.clone(), self.codebook.val());
        let counts = vq::code_counts(q.indices.clone(), self.codebook.dims()[0]); // [K]
        let recon = self.decode_latents(from_rows(q.quantized, [n, h, w])); // [N, C, S, S]
        let recon_mse = (recon - x).square().mean(); // [1]
        let loss = recon_mse.clone() + q.commitment_loss.clone().mul_scalar(self.commitment);
        VqVaeLoss {
            loss,
            recon_mse,
            commitment: q.commitment_loss,
            indices: q.indices.reshape([n, h, w]),
            latents: rows.detach(),
            counts,
        }
    }

    /// The model with its codebook moved one EMA step towards the encoder outputs assigned to it
    /// (`latents` `[M, D]`, their codes `indices` `[M]`; decay γ, Laplace smoothing ε), then every
    /// code whose EMA count fell below `restart_threshold` replaced by a random row of `latents`
    /// (Jukebox's restart; its count reset to 1 and its sum to the new code, so it starts as a
    /// live code of one vector). Restarts draw from the backend's RNG.
    pub fn ema_update(
        mut self,
        latents: Tensor<B, 2>,
        indices: Tensor<B, 1, Int>,
        decay: f64,
        epsilon: f64,
        restart_threshold: Option<f64>,
    ) -> Self {
        let stats = vq::EmaCodebook { cluster_size: self.cluster_size.val(), embed_sum: self.embed_sum.val() };
        let (stats, mut codebook) = stats.update(latents.clone(), indices, decay, epsilon);
        let vq::EmaCodebook { mut cluster_size, mut embed_sum } = stats;
        if let Some(threshold) = restart_threshold {
            let [k, d] = codebook.dims();
            let dead = vq::dead_codes(cluster_size.clone(), threshold); // [K]
            codebook = vq::restart_dead_codes(codebook, dead.clone(), latents); // [K, D]
            cluster_size = cluster_size.mask_fill(dead.clone(), 1.0);
            embed_sum = embed_sum.mask_where(dead.unsqueeze_dim::<2>(1).expand([k, d]), codebook.clone());
        }
        self.codebook = Param::initialized(self.codebook.id, codebook.detach());
        self.cluster_size = Param::initialized(self.cluster_size.id, cluster_size.detach());
        self.embed_sum = Param::initialized(self.embed_sum.id, embed_sum.detach());
        self
    }

    /// Writes `vqvae.json` (the config), `vqvae.safetensors` (weights, codebook and its EMA
    /// statistics) and `kiln.json` into `dir`, each atomically.
    pub fn save(&self, config: &VqVaeConfig, dir: &Path) -> Result<(), VqVaeError> {
        kiln_optim::save_module(self, &dir.join(WEIGHTS_FILE), &[("kiln.family", FAMILY.into())])
            .map_err(|e| optim_err(e, dir))?;
        let json = serde_json::to_string_pretty(config)
            .map_err(|e| kiln_core::SaveError::Encode { path: dir.join(CONFIG_FILE), message: e.to_string() })?;
        kiln_core::atomic_write(&dir.join(CONFIG_FILE), json.as_bytes())?;
        ModelManifest::new(FAMILY, FORMAT).describing(dir, &[CONFIG_FILE, WEIGHTS_FILE])?.write(dir)?;
        Ok(())
    }

    /// Loads a model saved by [`VqVae::save`] from `dir` onto `device`. Every tensor must be
    /// present with the shape the saved config implies; anything else is an error naming the file.
    pub fn load(dir: &Path, device: &B::Device) -> Result<(VqVaeConfig, Self), VqVaeError> {
        let config = VqVaeConfig::load_dir(dir)?;
        let model =
            kiln_optim::load_module(config.init::<B>(device), &dir.join(WEIGHTS_FILE)).map_err(|e| match e {
                kiln_optim::OptimError::State { path, message } => {
                    VqVaeError::Checkpoint { path, message: format!("not a checkpoint of this VQ-VAE ({message})") }
                }
                other => optim_err(other, dir),
            })?;
        Ok((config, model))
    }
}

/// `[N, D, h, w]` → `[N·h·w, D]`, one row per code position in `(n, y, x)` order.
fn to_rows<B: Backend>(z: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, d, h, w] = z.dims();
    z.permute([0, 2, 3, 1]).reshape([n * h * w, d])
}

/// `[N·h·w, D]` → `[N, D, h, w]`, the inverse of [`to_rows`].
fn from_rows<B: Backend>(rows: Tensor<B, 2>, [n, h, w]: [usize; 3]) -> Tensor<B, 4> {
    let d = rows.dims()[1];
    rows.reshape([n, h, w, d]).permute([0, 3, 1, 2])
}

fn optim_err(e: kiln_optim::OptimError, dir: &Path) -> VqVaeError {
    match e {
        kiln_optim::OptimError::Save(e) => VqVaeError::Save(e),
        kiln_optim::OptimError::State { path, message } => VqVaeError::Checkpoint { path, message },
        other => VqVaeError::Checkpoint { path: dir.join(WEIGHTS_FILE), message: other.to_string() },
    }
}

/// A trained VQ-VAE reconstructs through its codes; it cannot sample (no prior) and has no
/// continuous latent space to interpolate in.
impl<B: Backend> Generative<B> for VqVae<B> {
    fn card(&self) -> ModelCard {
        ModelCard { name: "this VQ-VAE".into(), image: self.image, classes: 0, accepts: Vec::new() }
    }

    fn sample(&self, _request: &SampleRequest, _device: &B::Device) -> Result<Samples<B>, SampleError> {
        Err(SampleError::Incapable(NO_PRIOR.into()))
    }

    fn reconstruct(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>, SampleError> {
        let [_, c, h, w] = images.dims();
        if [c, h, w] != self.image {
            return Err(SampleError::Incapable(format!(
                "this VQ-VAE takes {:?} images (channels, height, width), not {:?}",
                self.image,
                [c, h, w]
            )));
        }
        Ok(VqVae::reconstruct(self, images))
    }

    fn latent_space(&self) -> Option<&dyn LatentSpace<B>> {
        None
    }
}
