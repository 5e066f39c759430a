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
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use kiln_core::{Generative, LatentSpace, ModelCard, ModelManifest, SampleError, SampleOption, SampleRequest, Samples};
use kiln_kernels::{SelfAttention2d, SelfAttention2dConfig};

use crate::config::{FAMILY, FORMAT, GENERATOR_FILE, GanConfig, GanError};
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
    /// `[C, S, S]` of its images.
    pub(crate) image: [usize; 3],
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
            image: [self.channels, self.image_size, self.image_size],
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
    /// calling code; [`Generative::sample`] checks user input).
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

    /// One image in `[0, 1]` per entry of `labels` (a conditional model only), from latents drawn
    /// on the device's generator. `[len, C, S, S]`. (Seeded, host-drawn sampling with truncation
    /// is [`Generative::sample`].)
    pub fn sample_class(&self, labels: &[usize], device: &B::Device) -> Result<Tensor<B, 4>, GanError> {
        let k = self.num_classes;
        if k == 0 {
            let label = labels.first().copied().unwrap_or(0);
            return Err(GanError::Label { label, reason: "this model is unconditional".into() });
        }
        if let Some(&label) = labels.iter().find(|&&l| l >= k) {
            return Err(GanError::Label { label, reason: format!("the model has classes 0..{k}") });
        }
        let n = labels.len();
        let values: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        let labels = Tensor::from_data(TensorData::new(values, [n]), device);
        let z = Tensor::random([n, self.nz], Distribution::Normal(0.0, 1.0), device);
        Ok(to_unit(self.generate(z, Some(labels))))
    }

    /// Writes `gan.json` (the config), `generator.safetensors` and `kiln.json` into `dir`, each
    /// atomically.
    pub fn save(&self, config: &GanConfig, dir: &Path) -> Result<(), GanError> {
        config.save_dir(dir)?;
        kiln_optim::save_module(self, &dir.join(GENERATOR_FILE), &[("kiln.family", FAMILY.into())])?;
        ModelManifest::new(FAMILY, FORMAT).describing(dir, &[crate::CONFIG_FILE, GENERATOR_FILE])?.write(dir)?;
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

/// A trained generator samples from latents drawn on the host from the request's seed (truncated
/// when asked), one class per image for a conditional model, and interpolates in its latent space.
impl<B: Backend> Generative<B> for Generator<B> {
    fn card(&self) -> ModelCard {
        let name = if self.num_classes > 0 { "this conditional GAN" } else { "this GAN" };
        ModelCard {
            name: name.into(),
            image: self.image,
            classes: self.num_classes,
            accepts: vec![SampleOption::Class, SampleOption::Truncation],
        }
    }

    fn sample(&self, request: &SampleRequest, device: &B::Device) -> Result<Samples<B>, SampleError> {
        let classes = request.check(&self.card())?;
        Ok(Samples::images(self.decode_checked(request.latents(self.nz, device), &classes))) // [n, C, S, S]
    }

    fn reconstruct(&self, _images: Tensor<B, 4>) -> Result<Tensor<B, 4>, SampleError> {
        Err(SampleError::Incapable(
            "a GAN has no encoder, so it cannot reconstruct images (try `kiln sample` or `kiln interpolate`)".into(),
        ))
    }

    fn latent_space(&self) -> Option<&dyn LatentSpace<B>> {
        Some(self)
    }
}

impl<B: Backend> LatentSpace<B> for Generator<B> {
    fn dim(&self) -> usize {
        self.nz
    }

    fn decode(&self, z: Tensor<B, 2>, classes: &[usize]) -> Result<Tensor<B, 4>, SampleError> {
        let classes = self.card().classes_for(z.dims()[0], classes)?;
        Ok(self.decode_checked(z, &classes))
    }
}

impl<B: Backend> Generator<B> {
    /// Images in `[0, 1]` for latents `[n, nz]` and checked classes (empty when unconditional).
    fn decode_checked(&self, z: Tensor<B, 2>, classes: &[usize]) -> Tensor<B, 4> {
        let labels = (!classes.is_empty()).then(|| {
            let values: Vec<i64> = classes.iter().map(|&c| c as i64).collect();
            Tensor::from_data(TensorData::new(values, [classes.len()]), &z.device())
        });
        to_unit(self.generate(z, labels))
    }
}
