//! The generator: DCGAN's stack of transposed convolutions (Radford et al. 2015,
//! arXiv:1511.06434; pytorch/examples `dcgan`). A class-conditional model takes its class twice:
//! as a one-hot code concatenated to `z` (Mirza & Osindero 2014, arXiv:1411.1784), which lets the
//! first layer lay out a class-specific shape, and through conditional batch norm in every stage
//! (de Vries et al. 2017; Miyato & Koyama 2018); an optional SAGAN self-attention block (Zhang et
//! al. 2018, arXiv:1805.08318). And everything a sampler needs: latents (with BigGAN's truncation
//! trick, Brock et al. 2018, arXiv:1809.11096), class-conditional samples, latent interpolation
//! strips, save and load.

use std::path::Path;

use burn::module::Module;
use burn::tensor::activation::{relu, tanh};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Int, Tensor, TensorData};
use kiln_kernels::{SelfAttention2d, SelfAttention2dConfig};
use serde::{Deserialize, Serialize};

use crate::config::{GENERATOR_FILE, GanConfig, GanError};
use crate::layers::{BatchNorm, Conv, ConvConfig, ConvKind, materialize, one_hot};

/// One generator stage: a transposed convolution, (conditional) batch norm, ReLU.
#[derive(Module, Debug)]
pub struct GenBlock<B: Backend> {
    pub(crate) conv: Conv<B>,
    pub(crate) norm: BatchNorm<B>,
}

/// The generator `G(z, y)`; build it with [`GanConfig::init_generator`].
#[derive(Module, Debug)]
pub struct Generator<B: Backend> {
    /// Block 0 projects `z` to `s₀×s₀`; block `i` doubles the side to `s₀·2^i`.
    pub(crate) blocks: Vec<GenBlock<B>>,
    pub(crate) attention: Option<SelfAttention2d<B>>,
    /// The block after which `attention` runs.
    pub(crate) attention_after: usize,
    pub(crate) output: Conv<B>,
    pub(crate) nz: usize,
    pub(crate) num_classes: usize,
}

/// How [`Generator::interpolate`] walks from one latent to another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatentPath {
    /// A straight line: `(1 − t)·a + t·b`. Its midpoints have a smaller norm than typical
    /// Gaussian samples, so they can look washed out.
    Linear,
    /// Spherical interpolation (White 2016, arXiv:1609.04468): keeps the norm typical of
    /// `N(0, I)` samples along the way. The usual choice.
    #[default]
    Spherical,
}

/// What [`Generator::sample_with`] draws.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleRequest {
    /// Number of images.
    pub n: usize,
    /// One class per image (length `n`) for a conditional model; `None` draws classes uniformly.
    /// Must be `None` for an unconditional model.
    pub labels: Option<Vec<usize>>,
    /// Truncation threshold `τ > 0`: every latent entry is redrawn until `|z_i| ≤ τ`, trading
    /// variety for fidelity (BigGAN §3.1). `None` samples `N(0, I)`.
    pub truncation: Option<f64>,
}

impl GanConfig {
    /// Builds the generator on `device` with fresh DCGAN-initialised weights.
    ///
    /// # Panics
    /// If the config is invalid; call [`GanConfig::validate`] first on user-supplied configs.
    pub fn init_generator<B: Backend>(&self, device: &B::Device) -> Generator<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let (k, s0) = self.stages();
        let rows = self.num_classes.max(1);
        let sn = self.g_spectral_norm;
        let width = |i: usize| self.ngf << (k - 1 - i);
        let mut blocks = Vec::with_capacity(k);
        for i in 0..k {
            let conv = if i == 0 {
                // A conditional G also sees its class code beside z (Mirza & Osindero 2014).
                ConvConfig::new(ConvKind::Transposed, [self.nz + self.num_classes, width(0)], s0)
                    .with_bias(false)
                    .with_spectral(sn)
                    .init(device)
            } else {
                ConvConfig::new(ConvKind::Transposed, [width(i - 1), width(i)], 4)
                    .with_stride(2)
                    .with_padding(1)
                    .with_bias(false)
                    .with_spectral(sn)
                    .init(device)
            };
            blocks.push(GenBlock { conv, norm: BatchNorm::new(width(i), rows, device) });
        }
        let attention_after = self.attention.map_or(0, |side| (0..k).find(|&i| s0 << i == side).unwrap_or(0));
        let attention = self.attention.map(|_| SelfAttention2dConfig::new(width(attention_after)).init(device));
        let output = ConvConfig::new(ConvKind::Transposed, [width(k - 1), self.channels], 4)
            .with_stride(2)
            .with_padding(1)
            .with_bias(false)
            .with_spectral(sn)
            .init(device);
        materialize(Generator {
            blocks,
            attention,
            attention_after,
            output,
            nz: self.nz,
            num_classes: self.num_classes,
        })
    }
}

impl<B: Backend> Generator<B> {
    /// Dimension of the latent.
    pub fn nz(&self) -> usize {
        self.nz
    }

    /// Classes of a conditional model, 0 for an unconditional one.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Images in `[-1, 1]` (the training range) for latents `z` `[N, nz]` and, for a conditional
    /// model, labels `[N]`. `[N, C, S, S]`.
    ///
    /// # Panics
    /// If a conditional model gets no labels or an unconditional one gets some (a mistake in the
    /// calling code; [`Generator::sample_with`] checks user input).
    pub fn generate(&self, z: Tensor<B, 2>, labels: Option<Tensor<B, 1, Int>>) -> Tensor<B, 4> {
        let code = self.code(labels);
        self.forward_code(z, code.as_ref())
    }

    /// [`Generator::generate`] with the class as a float code `[N, K]` (one-hot, or any mixture
    /// of classes: conditional batch norm is linear in it).
    pub fn forward_code(&self, z: Tensor<B, 2>, code: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let input = match code {
            Some(code) => Tensor::cat(vec![z, code.clone()], 1), // [N, nz + K]
            None => z,
        };
        let [n, width] = input.dims();
        let mut h = input.reshape([n, width, 1, 1]); // [N, nz (+ K), 1, 1]
        for (i, block) in self.blocks.iter().enumerate() {
            h = relu(block.norm.forward(block.conv.forward(h), code)); // [N, ngf·2^(k−1−i), s₀·2^i, s₀·2^i]
            if i == self.attention_after
                && let Some(attention) = &self.attention
            {
                h = attention.forward(h); // same shape
            }
        }
        tanh(self.output.forward(h)) // [N, C, S, S]
    }

    fn code(&self, labels: Option<Tensor<B, 1, Int>>) -> Option<Tensor<B, 2>> {
        match (labels, self.num_classes) {
            (None, 0) => None,
            (Some(labels), k) if k > 0 => Some(one_hot(labels, k)),
            (None, k) => panic!("generator: a conditional model ({k} classes) needs labels"),
            (Some(_), _) => panic!("generator: labels given to an unconditional model"),
        }
    }

    /// `n` latents `[n, nz]` from `N(0, I)`, or from the normal truncated to `[−τ, τ]` when
    /// `truncation = Some(τ)` (entries outside are redrawn; after 64 rounds the rare survivors
    /// are clamped).
    pub fn latent(&self, n: usize, truncation: Option<f64>, device: &B::Device) -> Result<Tensor<B, 2>, GanError> {
        let normal = Distribution::Normal(0.0, 1.0);
        let mut z = Tensor::<B, 2>::random([n, self.nz], normal, device);
        let Some(tau) = truncation else { return Ok(z) };
        if !(tau.is_finite() && tau > 0.0) {
            return Err(crate::config::config_err("truncation", tau, "must be a positive number"));
        }
        for _ in 0..64 {
            let outside = z.clone().abs().greater_elem(tau);
            let outside_count: i64 = outside.clone().int().sum().into_scalar().elem();
            if outside_count == 0 {
                break;
            }
            z = z.mask_where(outside, Tensor::random([n, self.nz], normal, device));
        }
        Ok(z.clamp(-tau, tau))
    }

    /// `n` images in `[0, 1]` from `z ~ N(0, I)`; a conditional model draws their classes
    /// uniformly. `[n, C, S, S]`.
    pub fn sample(&self, n: usize, device: &B::Device) -> Tensor<B, 4> {
        let z = Tensor::random([n, self.nz], Distribution::Normal(0.0, 1.0), device);
        let labels = (self.num_classes > 0).then(|| self.random_labels(n, device));
        to_unit(self.generate(z, labels))
    }

    /// One image in `[0, 1]` per entry of `labels` (a conditional model only). `[len, C, S, S]`.
    pub fn sample_class(&self, labels: &[usize], device: &B::Device) -> Result<Tensor<B, 4>, GanError> {
        self.sample_with(&SampleRequest { n: labels.len(), labels: Some(labels.to_vec()), truncation: None }, device)
    }

    /// Images in `[0, 1]` as `request` says, its labels and truncation checked. `[n, C, S, S]`.
    pub fn sample_with(&self, request: &SampleRequest, device: &B::Device) -> Result<Tensor<B, 4>, GanError> {
        let labels = self.labels_for(request.n, request.labels.as_deref(), device)?;
        let z = self.latent(request.n, request.truncation, device)?;
        Ok(to_unit(self.generate(z, labels)))
    }

    /// Latent interpolation strips: row `i` walks in `steps` images from `from[i]` to `to[i]`
    /// (`[n, nz]` each), with class `labels[i]` (conditional models; `None` draws one class per
    /// strip). Images in `[0, 1]`, row-major: `[n·steps, C, S, S]`, ready for a grid of `steps`
    /// columns.
    pub fn interpolate(
        &self,
        from: Tensor<B, 2>,
        to: Tensor<B, 2>,
        steps: usize,
        labels: Option<&[usize]>,
        path: LatentPath,
    ) -> Result<Tensor<B, 4>, GanError> {
        let [n, nz] = from.dims();
        if nz != self.nz || to.dims() != [n, nz] {
            return Err(crate::config::config_err(
                "interpolate",
                format!("{:?} → {:?}", from.dims(), to.dims()),
                format!("endpoints must both be [n, {}]", self.nz),
            ));
        }
        if steps < 2 {
            return Err(crate::config::config_err("steps", steps, "a strip needs at least 2 images"));
        }
        let device = from.device();
        let z = latent_path(from, to, steps, path); // [n·steps, nz]
        let labels = self.labels_for(n, labels, &device)?;
        // Each strip keeps its class: repeat label i `steps` times.
        let labels = labels.map(|l| l.reshape([n, 1]).repeat_dim(1, steps).reshape([n * steps]));
        Ok(to_unit(self.generate(z, labels)))
    }

    /// Checked labels as a tensor: `None` for an unconditional model, uniform random classes
    /// when none are given.
    fn labels_for(
        &self,
        n: usize,
        labels: Option<&[usize]>,
        device: &B::Device,
    ) -> Result<Option<Tensor<B, 1, Int>>, GanError> {
        let k = self.num_classes;
        match labels {
            None if k == 0 => Ok(None),
            None => Ok(Some(self.random_labels(n, device))),
            Some(given) => {
                if k == 0 {
                    let label = given.first().copied().unwrap_or(0);
                    return Err(GanError::Label { label, reason: "this model is unconditional".into() });
                }
                if let Some(&label) = given.iter().find(|&&l| l >= k) {
                    return Err(GanError::Label { label, reason: format!("the model has classes 0..{k}") });
                }
                if given.len() != n {
                    return Err(crate::config::config_err("labels", given.len(), format!("need one per image ({n})")));
                }
                let values: Vec<i64> = given.iter().map(|&l| l as i64).collect();
                Ok(Some(Tensor::from_data(TensorData::new(values, [n]), device)))
            }
        }
    }

    fn random_labels(&self, n: usize, device: &B::Device) -> Tensor<B, 1, Int> {
        let k = self.num_classes as f64;
        Tensor::<B, 1>::random([n], Distribution::Uniform(0.0, k), device).floor().clamp(0.0, k - 1.0).int()
    }

    /// Writes `gan.json` (the config) and `generator.safetensors` into `dir`, each atomically.
    pub fn save(&self, config: &GanConfig, dir: &Path) -> Result<(), GanError> {
        config.save_dir(dir)?;
        kiln_optim::save_module(self, &dir.join(GENERATOR_FILE), &[("kiln.family", "gan".into())])?;
        Ok(())
    }

    /// Loads a generator saved by [`Generator::save`] (or by a training run) from `dir` onto
    /// `device`. Every tensor must be present with the shape the saved config implies.
    pub fn load(dir: &Path, device: &B::Device) -> Result<(GanConfig, Self), GanError> {
        let config = GanConfig::load_dir(dir)?;
        let model = kiln_optim::load_module(config.init_generator::<B>(device), &dir.join(GENERATOR_FILE)).map_err(
            |e| match e {
                kiln_optim::OptimError::State { path, message } => GanError::Checkpoint { path, message },
                other => GanError::Optim(other),
            },
        )?;
        Ok((config, model))
    }
}

/// `[-1, 1]` → `[0, 1]`.
pub fn to_unit<B: Backend, const D: usize>(images: Tensor<B, D>) -> Tensor<B, D> {
    images.add_scalar(1.0).mul_scalar(0.5).clamp(0.0, 1.0)
}

/// The latents of interpolation strips: row `i` of `from` and `to` (`[n, nz]`) joined in `steps`
/// points, endpoints included. `[n·steps, nz]`, strip by strip.
pub fn latent_path<B: Backend>(from: Tensor<B, 2>, to: Tensor<B, 2>, steps: usize, path: LatentPath) -> Tensor<B, 2> {
    let [n, nz] = from.dims();
    let device = from.device();
    let a: Vec<f32> = from.into_data().convert::<f32>().to_vec().unwrap_or_default();
    let b: Vec<f32> = to.into_data().convert::<f32>().to_vec().unwrap_or_default();
    let mut out = Vec::with_capacity(n * steps * nz);
    for (a, b) in a.chunks_exact(nz).zip(b.chunks_exact(nz)) {
        let (a, b): (Vec<f64>, Vec<f64>) =
            (a.iter().map(|&v| v as f64).collect(), b.iter().map(|&v| v as f64).collect());
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let cos = a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>() / (norm(&a) * norm(&b)).max(1e-12);
        let omega = cos.clamp(-1.0, 1.0).acos();
        for s in 0..steps {
            let t = s as f64 / (steps - 1).max(1) as f64;
            // Nearly parallel endpoints make slerp 0/0; a straight line is then the same path.
            let (wa, wb) = match path {
                LatentPath::Spherical if omega.sin().abs() > 1e-6 => {
                    (((1.0 - t) * omega).sin() / omega.sin(), (t * omega).sin() / omega.sin())
                }
                _ => (1.0 - t, t),
            };
            out.extend(a.iter().zip(&b).map(|(x, y)| (wa * x + wb * y) as f32));
        }
    }
    Tensor::from_data(TensorData::new(out, [n * steps, nz]), &device)
}
