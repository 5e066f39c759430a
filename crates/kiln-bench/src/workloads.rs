//! The workloads of issue 8, each built from kiln's own library crates, so a figure here is what
//! `kiln train` pays per step and not a stand-in.
//!
//! - **W1** `w1-dcgan64`: one [`GanTask`] step (D update, then G update) of `GanConfig::dcgan64()`
//!   with DCGAN's recipe (BCE, Adam 2·10⁻⁴, β = (0.5, 0.999), `n_critic` 1, no EMA, no penalty),
//!   batch 64 of random images: pytorch/examples' `dcgan` training step.
//! - **W2** `w2-vae64`: one [`VaeTask`] step of `VaeConfig::vanilla64()` (AntixK/PyTorch-VAE's
//!   VanillaVAE widths 32…512 and latent 128, on kiln's 4×4 stride-2 stages), Adam lr 5·10⁻³
//!   (PyTorch-VAE's `vae.yaml`), batch 64.
//! - **W3** `w3-vqvae32`: one [`VqVaeTask`] step of `VqVaeConfig::cifar()` (the VQ-VAE paper's
//!   CIFAR-10 net: two stride-2 4×4 convolutions, 256 channels, two residual blocks, K = 512,
//!   D = 64, 32×32 → 8×8 codes): forward, MSE + β·commitment, backward, Adam 2·10⁻⁴ (the paper's),
//!   then the EMA codebook update with dead-code restarts, batch 64 of 3×32×32.
//! - **W4** `w4-gpt-mini-*`: minGPT's `gpt-mini` (6 layers, 6 heads, width 192) as kiln-dalle's
//!   `DalleConfig::preset("gpt-mini")` over 80-token sequences (BOS + 16 text tokens + 63 of an
//!   8×8 grid of image codes; 512 text ids, 512 codes; no dropout), batch 32, fixed seeded
//!   random tokens. Three rows, in tokens per second: `-train` is one [`DalleTask`] step (forward,
//!   next-token loss 1/8·text + 7/8·image, backward, Adam 10⁻³; no caption dropout), 32·80
//!   tokens; `-sample-kv` draws 32 images' 64 codes with `sample_codes` and [`Decoding::Cached`]
//!   (prefill the caption, then one token per step against the key/value cache), and
//!   `-sample-recompute` the same with [`Decoding::Recompute`] (the whole prefix again for
//!   every token), 32·64 tokens each, so the cache's saving is the ratio of the two rows.
//! - **W5** `w5-draw-mnist`: one [`DrawTask`] step of `DrawConfig::mnist()` (the DRAW paper's
//!   MNIST setup with attention: T = 64 glimpses, LSTMs of 256, z = 100, read 2×2, write 5×5),
//!   Adam 10⁻³, batch 64 of 1×28×28: the negative ELBO over all 64 steps, backward, update.
//!   As experiments/draw-mnist.toml trains it: the batch in two shards of 32
//!   (`DrawTaskConfig::shards`), stepped at the same time, one per core, where kiln-cpu has two
//!   threads; PyTorch's peer runs the 64 in one pass on its two threads. The same update either way.
//! - **W7** `w7-unet-emoji`: one [`DiffusionTask`] step of `DiffusionConfig::emoji()` (the
//!   U-Net kiln's emoji experiment trains: levels 32/16/8 at 32/64/64 channels, one residual
//!   block per level, GroupNorm 8, attention at 8×8, time MLP of 128; DDPM with the cosine
//!   schedule and v-prediction, uniform weights), unconditional, Adam 10⁻⁴ and the EMA update
//!   (decay 0.999) that `kiln train` does every step, batch 64 of 3×32×32, in two shards as the
//!   diffusion experiments train it (one per core where kiln-cpu has two threads).
//! - **W6** kernels from kiln-kernels, the shapes of `crates/kiln-kernels/benches/kernels.rs`:
//!   antialiased bilinear and bicubic (PIL's a = −0.5) resizes 64×3×256×256 → 64×64, plain
//!   bilinear and bicubic (a = −0.75) 64×3×64×64 → 256×256 (antialiasing changes nothing when
//!   upscaling), attention B=8 H=8 L=1024 D=64 forward and backward, and the VQ nearest-code
//!   search N=65,536 D=64 K=512.
//!
//! `Scale::Tiny` shrinks every shape so the tests run each workload in milliseconds.

use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use kiln_core::{SplitMix64, Task};
use kiln_dalle::sample::{Decoding, TokenSampling, sample_codes};
use kiln_dalle::{DalleConfig, DalleParts, DalleTask, DalleTaskConfig, TokenBatch};
use kiln_data::ImageBatch;
use kiln_diffusion::{DiffusionConfig, DiffusionTask, DiffusionTaskConfig, UNetConfig};
use kiln_draw::{DrawConfig, DrawTask, DrawTaskConfig};
use kiln_gan::{GanConfig, GanTask, GanTaskConfig};
use kiln_kernels::vq::nearest_code;
use kiln_kernels::{
    AttentionMask, Cubic, Filter, ResizeOptions, ResizeTarget, SdpaOptions, resize, scaled_dot_product_attention,
};
use kiln_optim::{Decay, OptimConfig};
use kiln_vae::{VaeConfig, VaeTask, VaeTaskConfig};
use kiln_vqvae::{VqVaeConfig, VqVaeTask, VqVaeTaskConfig};

use crate::flops;
use crate::measure::{Record, Spec, load_average, peak_rss_mib, reset_peak_rss, time_reps};

/// Full size (the benchmark) or tiny (the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// The shapes of issue 8.
    Full,
    /// Small shapes that run in milliseconds.
    Tiny,
}

/// One benchmark workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// DCGAN-64 train step.
    Dcgan64,
    /// VAE-64 train step.
    Vae64,
    /// VQ-VAE (the paper's CIFAR net) train step.
    VqVae32,
    /// minGPT's gpt-mini as kiln-dalle's transformer: a train step or a sampling run.
    GptMini(GptCase),
    /// DRAW (the paper's MNIST setup) train step.
    DrawMnist,
    /// The emoji diffusion U-Net's train step.
    UNetEmoji,
    /// A resize of kiln-kernels.
    Resize(ResizeCase),
    /// Attention forward + backward.
    Attention,
    /// VQ nearest-code search.
    Vq,
}

/// The three measurements of W4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GptCase {
    /// One `DalleTask` step.
    Train,
    /// Sampling every image code with the key/value cache.
    SampleCached,
    /// Sampling every image code, recomputing the whole prefix for each.
    SampleRecompute,
}

/// The four resizes of W6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeCase {
    /// Bilinear, antialiased, 256 → 64.
    BilinearAaDown,
    /// Bicubic (PIL's a = −0.5, as PyTorch's `antialias=True`), antialiased, 256 → 64.
    BicubicAaDown,
    /// Bilinear, 64 → 256.
    BilinearUp,
    /// Bicubic (PyTorch's a = −0.75), 64 → 256.
    BicubicUp,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 14] = [
        Workload::Dcgan64,
        Workload::Vae64,
        Workload::VqVae32,
        Workload::GptMini(GptCase::Train),
        Workload::GptMini(GptCase::SampleCached),
        Workload::GptMini(GptCase::SampleRecompute),
        Workload::DrawMnist,
        Workload::Resize(ResizeCase::BilinearAaDown),
        Workload::Resize(ResizeCase::BicubicAaDown),
        Workload::Resize(ResizeCase::BilinearUp),
        Workload::Resize(ResizeCase::BicubicUp),
        Workload::Attention,
        Workload::Vq,
        Workload::UNetEmoji,
    ];

    /// The name in reports (the same in `pytorch_bench.py`).
    pub fn name(self) -> &'static str {
        match self {
            Workload::Dcgan64 => "w1-dcgan64",
            Workload::Vae64 => "w2-vae64",
            Workload::VqVae32 => "w3-vqvae32",
            Workload::GptMini(GptCase::Train) => "w4-gpt-mini-train",
            Workload::GptMini(GptCase::SampleCached) => "w4-gpt-mini-sample-kv",
            Workload::GptMini(GptCase::SampleRecompute) => "w4-gpt-mini-sample-recompute",
            Workload::DrawMnist => "w5-draw-mnist",
            Workload::UNetEmoji => "w7-unet-emoji",
            Workload::Resize(ResizeCase::BilinearAaDown) => "w6-bilinear-aa-256to64",
            Workload::Resize(ResizeCase::BicubicAaDown) => "w6-bicubic-aa-256to64",
            Workload::Resize(ResizeCase::BilinearUp) => "w6-bilinear-64to256",
            Workload::Resize(ResizeCase::BicubicUp) => "w6-bicubic-64to256",
            Workload::Attention => "w6-attention-fwd-bwd",
            Workload::Vq => "w6-vq-search",
        }
    }

    /// Parses a comma-separated `--workload` list: `w1`, `w2`, `w3`, `w4` (its three rows), `w5`,
    /// `w6` (all kernels), `w7`, `all` or full names.
    pub fn parse_list(text: &str) -> Result<Vec<Workload>> {
        let mut out = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let item = item.to_ascii_lowercase();
            let chosen: Vec<Workload> = match item.as_str() {
                "all" => Self::ALL.to_vec(),
                "w1" => vec![Workload::Dcgan64],
                "w2" => vec![Workload::Vae64],
                "w3" => vec![Workload::VqVae32],
                "w4" => Self::with_prefix("w4-"),
                "w5" => vec![Workload::DrawMnist],
                "w6" => Self::with_prefix("w6-"),
                "w7" => vec![Workload::UNetEmoji],
                name => match Self::ALL.iter().find(|w| w.name() == name) {
                    Some(w) => vec![*w],
                    None => bail!(
                        "unknown workload {item:?}: expected w1, w2, w3, w4, w5, w6, w7, all or one of {}",
                        Self::ALL.map(Workload::name).join(", ")
                    ),
                },
            };
            for w in chosen {
                if !out.contains(&w) {
                    out.push(w);
                }
            }
        }
        if out.is_empty() {
            bail!("--workload names no workload");
        }
        Ok(out)
    }

    /// The workloads whose names start with `prefix` (a group such as `w6-`), in report order.
    fn with_prefix(prefix: &str) -> Vec<Workload> {
        Self::ALL.into_iter().filter(|w| w.name().starts_with(prefix)).collect()
    }
}

/// `rows × cols` token ids below `vocab`, seeded: the same tokens on every run and backend.
fn random_ids<B: Backend>(rows: usize, cols: usize, vocab: usize, seed: u64, device: &B::Device) -> Tensor<B, 2, Int> {
    let mut rng = SplitMix64::new(seed);
    let ids: Vec<i64> = (0..rows * cols).map(|_| rng.below(vocab) as i64).collect();
    Tensor::from_data(TensorData::new(ids, [rows, cols]), device)
}

fn sync<B: Backend>(device: &B::Device) -> Result<()> {
    B::sync(device).map_err(|e| anyhow!("backend sync failed: {e:?}"))
}

/// Builds `workload` on `device`, runs it `warmup` times untimed and `reps` times timed.
pub fn run<B: AutodiffBackend>(
    workload: Workload,
    scale: Scale,
    device: &B::Device,
    warmup: usize,
    reps: usize,
) -> Result<Record> {
    reset_peak_rss();
    B::seed(device, 0);
    let tiny = scale == Scale::Tiny;
    let name = workload.name().to_string();
    let (spec, timing) = match workload {
        Workload::Dcgan64 => {
            let (n, config) = if tiny {
                (4, GanConfig::dcgan64().with_ngf(4).with_ndf(4).with_image_size(16))
            } else {
                (64, GanConfig::dcgan64())
            };
            let settings = GanTaskConfig { ema_decay: None, ..GanTaskConfig::dcgan() };
            let mut task =
                GanTask::<B>::new(config.clone(), settings, 1_000_000, device).context("building the DCGAN task")?;
            let s = config.image_size;
            let images = Tensor::<B, 4>::random([n, config.channels, s, s], Distribution::Uniform(-1.0, 1.0), device);
            let labels = Tensor::<B, 1, Int>::zeros([n], device);
            let mut step = 0;
            let mut failure = None;
            let times = time_reps(warmup, reps, || {
                task.step(ImageBatch { images: images.clone(), labels: labels.clone() }, step);
                step += 1;
                if let Err(e) = sync::<B>(device) {
                    failure = Some(e);
                }
            });
            failure.map_or(Ok(()), Err)?;
            let flops = flops::dcgan_step_flops(&config) * n as u64;
            (
                Spec {
                    name,
                    unit: "img",
                    items: n,
                    flops: Some(flops),
                    flops_note: "conv/convT/linear MACs×2 from layer shapes; fwd+bwd = 3×fwd; step = 3·(G + 3·D)",
                },
                times,
            )
        }
        Workload::Vae64 => {
            let (n, config) = if tiny {
                (4, VaeConfig::vanilla64().with_image_size(16).with_widths(vec![4, 8]).with_latent(8))
            } else {
                (64, VaeConfig::vanilla64())
            };
            // PyTorch-VAE's configs/vae.yaml: Adam, LR 0.005, no weight decay (its per-epoch
            // exponential decay does not change a step's cost).
            let optim = OptimConfig { lr: 5e-3, decay: Decay::Constant, ..OptimConfig::default() };
            let settings = VaeTaskConfig { optim, ema_decay: None, preview_samples: 8 };
            let s = config.image_size;
            let inner: burn::tensor::Device<B::InnerBackend> = device.clone();
            let fixed = Tensor::zeros([8, config.channels, s, s], &inner);
            let mut task = VaeTask::<B>::new(config.clone(), &settings, 1_000_000, fixed, device)
                .context("building the VAE task")?;
            let images = Tensor::<B, 4>::random([n, config.channels, s, s], Distribution::Default, device);
            let labels = Tensor::<B, 1, Int>::zeros([n], device);
            let mut step = 0;
            let mut failure = None;
            let times = time_reps(warmup, reps, || {
                task.step(ImageBatch { images: images.clone(), labels: labels.clone() }, step);
                step += 1;
                if let Err(e) = sync::<B>(device) {
                    failure = Some(e);
                }
            });
            failure.map_or(Ok(()), Err)?;
            let flops = flops::vae_step_flops(&config) * n as u64;
            (
                Spec {
                    name,
                    unit: "img",
                    items: n,
                    flops: Some(flops),
                    flops_note: "conv/convT/linear MACs×2 from layer shapes; fwd+bwd = 3×fwd",
                },
                times,
            )
        }
        Workload::VqVae32 => {
            let (n, config) = if tiny {
                (4, VqVaeConfig::cifar().with_image_size(16).with_hidden(8).with_res_hidden(8).with_codebook_size(16))
            } else {
                (64, VqVaeConfig::cifar())
            };
            // The paper's Adam 2e-4; Sonnet's EMA decay 0.99 and ε 1e-5; restarts on, so the step
            // pays for them as `kiln train` does.
            let optim = OptimConfig { lr: 2e-4, decay: Decay::Constant, ..OptimConfig::default() };
            let settings = VqVaeTaskConfig { optim, data_variance: 0.06, ..VqVaeTaskConfig::default() };
            let s = config.image_size;
            let inner: burn::tensor::Device<B::InnerBackend> = device.clone();
            let fixed = Tensor::zeros([8, config.channels, s, s], &inner);
            let mut task = VqVaeTask::<B>::new(config.clone(), &settings, 1_000_000, fixed, device)
                .context("building the VQ-VAE task")?;
            let images = Tensor::<B, 4>::random([n, config.channels, s, s], Distribution::Default, device);
            let labels = Tensor::<B, 1, Int>::zeros([n], device);
            let mut step = 0;
            let mut failure = None;
            let times = time_reps(warmup, reps, || {
                task.step(ImageBatch { images: images.clone(), labels: labels.clone() }, step);
                step += 1;
                if let Err(e) = sync::<B>(device) {
                    failure = Some(e);
                }
            });
            failure.map_or(Ok(()), Err)?;
            let flops = flops::vqvae_step_flops(&config) * n as u64;
            (
                Spec {
                    name,
                    unit: "img",
                    items: n,
                    flops: Some(flops),
                    flops_note: "conv/convT MACs×2 from layer shapes, fwd+bwd = 3×fwd; + the code search 2·hw·K·D once",
                },
                times,
            )
        }
        Workload::GptMini(case) => {
            // minGPT's gpt-mini over BOS + 16 text tokens + an 8×8 code grid: 80 input tokens.
            let (n, config) = if tiny {
                (2, DalleConfig::new(8, 2, 8, 2).with_layers(1).with_heads(2).with_width(16))
            } else {
                let preset = DalleConfig::preset("gpt-mini").context("kiln-dalle has no gpt-mini preset")?;
                (32, DalleConfig { text_vocab: 512, text_len: 16, image_vocab: 512, grid: 8, ..preset })
            };
            let config = config.with_dropout(0.0);
            config.validate().context("the gpt-mini config")?;
            let (l, tokens) = (config.text_len, config.image_tokens());
            match case {
                GptCase::Train => {
                    // The image tokenizer rides along in the task for saving and previews; a step
                    // never runs it, so a small one will do.
                    let vq_config = VqVaeConfig::cifar()
                        .with_image_size(4 * config.grid)
                        .with_hidden(8)
                        .with_res_hidden(8)
                        .with_codebook_size(config.image_vocab);
                    let inner: burn::tensor::Device<B::InnerBackend> = device.clone();
                    let parts = DalleParts {
                        bpe: None,
                        vqvae: vq_config.init::<B::InnerBackend>(&inner),
                        vq_config,
                        preview_captions: Vec::new(),
                    };
                    let optim = OptimConfig { lr: 1e-3, decay: Decay::Constant, ..OptimConfig::default() };
                    let settings = DalleTaskConfig { optim, caption_dropout: 0.0 };
                    let mut task = DalleTask::<B>::new(config.clone(), &settings, 1_000_000, parts, device)
                        .context("building the DALL·E task")?;
                    let text = random_ids::<B>(n, l, config.text_vocab, 1, device);
                    let image = random_ids::<B>(n, tokens, config.image_vocab, 2, device);
                    let mut step = 0;
                    let mut failure = None;
                    let times = time_reps(warmup, reps, || {
                        task.step(TokenBatch { text: text.clone(), image: image.clone() }, step);
                        step += 1;
                        if let Err(e) = sync::<B>(device) {
                            failure = Some(e);
                        }
                    });
                    failure.map_or(Ok(()), Err)?;
                    let flops = flops::dalle_step_flops(&config) * n as u64;
                    let note = "linear MACs×2 + QKᵀ/PV over the full T² (nanoGPT's estimate_mfu); fwd+bwd = 3×fwd";
                    let items = n * config.seq_len();
                    (Spec { name, unit: "tok", items, flops: Some(flops), flops_note: note }, times)
                }
                GptCase::SampleCached => {
                    let times = time_sampling::<B::InnerBackend>(&config, n, Decoding::Cached, device, warmup, reps)?;
                    let flops = flops::dalle_sample_cached_flops(&config) * n as u64;
                    let note = "linear MACs×2 per token + QKᵀ/PV against the cached prefix";
                    (Spec { name, unit: "tok", items: n * tokens, flops: Some(flops), flops_note: note }, times)
                }
                GptCase::SampleRecompute => {
                    let times =
                        time_sampling::<B::InnerBackend>(&config, n, Decoding::Recompute, device, warmup, reps)?;
                    let flops = flops::dalle_sample_recompute_flops(&config) * n as u64;
                    let note = "linear MACs×2 + QKᵀ/PV over the whole prefix, recomputed for every token";
                    (Spec { name, unit: "tok", items: n * tokens, flops: Some(flops), flops_note: note }, times)
                }
            }
        }
        Workload::DrawMnist => {
            let (n, config) = if tiny {
                (4, DrawConfig::mnist().with_steps(3).with_hidden(16).with_latent(4))
            } else {
                (64, DrawConfig::mnist())
            };
            let settings = DrawTaskConfig {
                optim: OptimConfig { lr: 1e-3, decay: Decay::Constant, ..OptimConfig::default() },
                ema_decay: None,
                preview_samples: 8,
                // As experiments/draw-mnist.toml: the batch in two slices, one per core.
                shards: 2,
            };
            let mut task =
                DrawTask::<B>::new(config.clone(), &settings, 1_000_000, device).context("building the DRAW task")?;
            let s = config.image_size;
            let images = Tensor::<B, 4>::random([n, config.channels, s, s], Distribution::Default, device);
            let labels = Tensor::<B, 1, Int>::zeros([n], device);
            let mut step = 0;
            let mut failure = None;
            let times = time_reps(warmup, reps, || {
                task.step(ImageBatch { images: images.clone(), labels: labels.clone() }, step);
                step += 1;
                if let Err(e) = sync::<B>(device) {
                    failure = Some(e);
                }
            });
            failure.map_or(Ok(()), Err)?;
            let flops = flops::draw_step_flops(&config) * n as u64;
            let note = "LSTM/head linear MACs×2 + filterbank read/write products, ×T; fwd+bwd = 3×fwd";
            (Spec { name, unit: "img", items: n, flops: Some(flops), flops_note: note }, times)
        }
        Workload::UNetEmoji => {
            let (n, config) = if tiny {
                let unet = UNetConfig::new(3, 8).with_base(8).with_mults(vec![1, 2]).with_attention(vec![4]);
                (4, DiffusionConfig { unet, ..DiffusionConfig::emoji() })
            } else {
                (64, DiffusionConfig::emoji())
            };
            let settings = DiffusionTaskConfig {
                optim: OptimConfig { lr: 1e-4, decay: Decay::Constant, ..OptimConfig::default() },
                ema_decay: Some(0.999),
                shards: 2,
                ..DiffusionTaskConfig::default()
            };
            let mut task = DiffusionTask::<B>::new(config.clone(), &settings, 1_000_000, device)
                .context("building the diffusion task")?;
            let s = config.unet.image_size;
            let images =
                Tensor::<B, 4>::random([n, config.unet.channels, s, s], Distribution::Uniform(-1.0, 1.0), device);
            let labels = Tensor::<B, 1, Int>::zeros([n], device);
            let mut step = 0;
            let mut failure = None;
            let times = time_reps(warmup, reps, || {
                task.step(ImageBatch { images: images.clone(), labels: labels.clone() }, step);
                step += 1;
                if let Err(e) = sync::<B>(device) {
                    failure = Some(e);
                }
            });
            failure.map_or(Ok(()), Err)?;
            let flops = flops::train_flops(flops::unet_forward_flops(&config.unet)) * n as u64;
            let note = "conv/linear MACs×2 + attention QKᵀ/PV from layer shapes; fwd+bwd = 3×fwd";
            (Spec { name, unit: "img", items: n, flops: Some(flops), flops_note: note }, times)
        }
        Workload::Resize(case) => {
            let (n, big, small) = if tiny { (2, 32, 8) } else { (64, 256, 64) };
            let (filter, antialias, from, to) = match case {
                ResizeCase::BilinearAaDown => (Filter::Bilinear, true, big, small),
                ResizeCase::BicubicAaDown => (Filter::Bicubic(Cubic::Pil), true, big, small),
                ResizeCase::BilinearUp => (Filter::Bilinear, false, small, big),
                ResizeCase::BicubicUp => (Filter::Bicubic(Cubic::Torch), false, small, big),
            };
            let inner: burn::tensor::Device<B::InnerBackend> = device.clone();
            let x = Tensor::<B::InnerBackend, 4>::random([n, 3, from, from], Distribution::Default, &inner);
            let options = ResizeOptions::new(filter).with_antialias(antialias);
            let target = ResizeTarget::Size { height: to, width: to };
            // Check the arguments once, outside the timed loop.
            resize(x.clone(), target, &options).context("resize")?;
            let mut failure = None;
            let times = time_reps(warmup, reps, || {
                let result = resize(x.clone(), target, &options)
                    .map_err(anyhow::Error::from)
                    .and_then(|y| sync::<B::InnerBackend>(&inner).map(|()| y));
                if let Err(e) = result {
                    failure = Some(e);
                }
            });
            failure.map_or(Ok(()), Err)?;
            (Spec { name, unit: "img", items: n, flops: None, flops_note: "resampling: no GEMM FLOPs counted" }, times)
        }
        Workload::Attention => {
            let (b, h, l, d) = if tiny { (1, 2, 16, 8) } else { (8, 8, 1024, 64) };
            let make = || Tensor::<B, 4>::random([b, h, l, d], Distribution::Normal(0.0, 1.0), device).require_grad();
            let (q, k, v) = (make(), make(), make());
            let mut failure = None;
            let times = time_reps(warmup, reps, || {
                let y = scaled_dot_product_attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    AttentionMask::None,
                    SdpaOptions::default(),
                );
                let grads = y.sum().backward();
                // Force every gradient: a lazy backend could otherwise skip work nobody reads.
                let grads = [q.grad(&grads), k.grad(&grads), v.grad(&grads)];
                if grads.iter().any(Option::is_none) {
                    failure = Some(anyhow!("attention: a gradient is missing"));
                }
                if let Err(e) = sync::<B>(device) {
                    failure = Some(e);
                }
            });
            failure.map_or(Ok(()), Err)?;
            let flops = flops::attention_fwd_bwd_flops(b, h, l, d);
            let note = "QKᵀ and PV: fwd 4·B·H·L²·D, fwd+bwd 3×fwd";
            (Spec { name, unit: "seq", items: b, flops: Some(flops), flops_note: note }, times)
        }
        Workload::Vq => {
            let (n, d, k) = if tiny { (64, 8, 16) } else { (65_536, 64, 512) };
            let inner: burn::tensor::Device<B::InnerBackend> = device.clone();
            let x = Tensor::<B::InnerBackend, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &inner);
            let codebook = Tensor::<B::InnerBackend, 2>::random([k, d], Distribution::Normal(0.0, 1.0), &inner);
            let mut failure = None;
            let times = time_reps(warmup, reps, || {
                let _indices = nearest_code(x.clone(), codebook.clone());
                if let Err(e) = sync::<B::InnerBackend>(&inner) {
                    failure = Some(e);
                }
            });
            failure.map_or(Ok(()), Err)?;
            let note = "the [N, K] product 2·N·K·D";
            (Spec { name, unit: "vec", items: n, flops: Some(flops::vq_flops(n, d, k)), flops_note: note }, times)
        }
    };
    Ok(Record {
        spec,
        times_ms: timing.times_ms,
        world: kiln_optim::sync::installed().map_or(1, |s| s.world_size()),
        exchange_ms: timing.exchange_ms,
        peak_rss_mib: peak_rss_mib(),
        load1: load_average().map(|l| l[0]),
    })
}

/// Times drawing all `grid²` image codes for `n` seeded captions with `decoding`, from a freshly
/// initialised model (the weights do not change what a step costs).
fn time_sampling<B: Backend>(
    config: &DalleConfig,
    n: usize,
    decoding: Decoding,
    device: &B::Device,
    warmup: usize,
    reps: usize,
) -> Result<crate::measure::Timing> {
    let model = config.init::<B>(device);
    let text = random_ids::<B>(n, config.text_len, config.text_vocab, 1, device);
    let sampling = TokenSampling { seed: 3, ..TokenSampling::default() };
    let tokens = config.image_tokens();
    let mut failure = None;
    // Each step reads its logits back to draw on the host, so the last one has finished.
    let times = time_reps(warmup, reps, || {
        let codes = sample_codes(&model, text.clone(), None, &sampling, decoding);
        if codes.len() != n || codes.iter().any(|c| c.len() != tokens) {
            failure = Some(anyhow!("sampling drew {} rows, not {n} of {tokens} codes", codes.len()));
        }
    });
    failure.map_or(Ok(times), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workload_lists() {
        assert_eq!(Workload::parse_list("w1").unwrap(), vec![Workload::Dcgan64]);
        assert_eq!(Workload::parse_list("w6").unwrap().len(), 6);
        assert_eq!(Workload::parse_list("w1,w2,w3,w4,w5,w6,w7,w1").unwrap(), Workload::ALL.to_vec());
        assert_eq!(
            Workload::parse_list("w4").unwrap(),
            vec![
                Workload::GptMini(GptCase::Train),
                Workload::GptMini(GptCase::SampleCached),
                Workload::GptMini(GptCase::SampleRecompute)
            ]
        );
        assert_eq!(
            Workload::parse_list("w4-gpt-mini-sample-kv").unwrap(),
            vec![Workload::GptMini(GptCase::SampleCached)]
        );
        assert_eq!(Workload::parse_list("w5").unwrap(), vec![Workload::DrawMnist]);
        assert_eq!(Workload::parse_list("w7").unwrap(), vec![Workload::UNetEmoji]);
        assert_eq!(Workload::parse_list("w3").unwrap(), vec![Workload::VqVae32]);
        assert_eq!(Workload::parse_list("w6-vq-search").unwrap(), vec![Workload::Vq]);
        assert!(Workload::parse_list("w9").unwrap_err().to_string().contains("unknown workload"));
    }

    /// Every workload runs one step at a tiny size and reports sane figures.
    #[cfg(feature = "flex")]
    #[test]
    fn every_workload_runs_tiny() {
        type B = burn::backend::Autodiff<kiln_device::Cpu>;
        let device = Default::default();
        for w in Workload::ALL {
            let record = run::<B>(w, Scale::Tiny, &device, 1, 1).unwrap();
            assert_eq!(record.times_ms.len(), 1, "{}", w.name());
            assert_eq!((record.world, record.exchange_ms.is_none()), (1, true), "{}", w.name());
            assert!(record.items_per_s() > 0.0 && record.items_per_s().is_finite(), "{}", w.name());
            assert_eq!(record.spec.name, w.name());
        }
    }

    /// Under data parallelism (two ranks as threads here; processes under mpirun) a workload
    /// reports the job's throughput — both ranks' batches — and a communication time per step.
    #[cfg(feature = "flex")]
    #[test]
    fn a_data_parallel_step_counts_every_ranks_batch() {
        type B = burn::backend::Autodiff<kiln_device::Cpu>;
        let ranks = kiln_optim::sync::ThreadGroup::ranks(2);
        let records: Vec<Record> = std::thread::scope(|scope| {
            let handles: Vec<_> = ranks
                .into_iter()
                .map(|rank| {
                    scope.spawn(move || {
                        let _installed = kiln_optim::sync::install(std::sync::Arc::new(rank));
                        let record = run::<B>(Workload::Dcgan64, Scale::Tiny, &Default::default(), 1, 2).unwrap();
                        assert!(kiln_optim::sync::take_failure().is_none());
                        record
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for record in &records {
            assert_eq!(record.world, 2);
            assert_eq!(record.exchange_ms.as_ref().map(Vec::len), Some(2));
            let [median, ..] = crate::measure::stats(&record.times_ms);
            let expected = 2.0 * record.spec.items as f64 / (median / 1e3);
            assert!((record.items_per_s() - expected).abs() <= 1e-9 * expected);
        }
    }
}
