//! Opening a run (or checkpoint) directory as a model, whichever family wrote it.

use std::path::Path;

use anyhow::{Result, bail, ensure};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use kiln_gan::{GanConfig, Generator};
use kiln_vae::{Vae, VaeConfig};

/// A trained model, as far as the generating commands need one.
#[allow(clippy::large_enum_variant)] // one per command run, never moved in a loop
pub enum Model<B: Backend> {
    /// A VAE: samples, reconstructions, interpolations.
    Vae(VaeConfig, Vae<B>),
    /// A GAN's generator (the EMA weights when the run kept them): samples and interpolations.
    Gan(GanConfig, Generator<B>),
}

impl<B: Backend> Model<B> {
    /// The latent dimension.
    pub fn latent(&self) -> usize {
        match self {
            Self::Vae(c, _) => c.latent,
            Self::Gan(c, _) => c.nz,
        }
    }

    /// Classes a conditional model can be asked for (0: unconditional).
    pub fn classes(&self) -> usize {
        match self {
            Self::Vae(..) => 0,
            Self::Gan(c, _) => c.num_classes,
        }
    }
}

/// Loads the model in run directory `dir`, telling the family by its config file (`vae.json`,
/// `gan.json`).
pub fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<Model<B>> {
    if !dir.is_dir() {
        bail!("{}: no such checkpoint directory", dir.display());
    }
    if dir.join(kiln_vae::CONFIG_FILE).is_file() {
        let (config, vae) = Vae::load(dir, device)?;
        Ok(Model::Vae(config, vae))
    } else if dir.join(kiln_gan::CONFIG_FILE).is_file() {
        let (config, generator) = Generator::load(dir, device)?;
        Ok(Model::Gan(config, generator))
    } else {
        bail!(
            "{}: not a kiln checkpoint (no {} or {} here)",
            dir.display(),
            kiln_vae::CONFIG_FILE,
            kiln_gan::CONFIG_FILE
        )
    }
}

impl<B: Backend> Model<B> {
    /// Images in `[0, 1]` from latents `z` `[n, latent]`; a conditional model takes one class per
    /// image in `labels`. `[n, C, S, S]`.
    pub fn generate(&self, z: Tensor<B, 2>, labels: &[usize]) -> Result<Tensor<B, 4>> {
        let n = z.dims()[0];
        match self {
            Self::Vae(_, vae) => {
                ensure!(labels.is_empty(), "--class: a VAE is unconditional; it takes no class");
                Ok(vae.decode(z))
            }
            Self::Gan(config, g) if config.num_classes == 0 => {
                ensure!(labels.is_empty(), "--class: this GAN is unconditional; it takes no class");
                Ok(kiln_gan::to_unit(g.generate(z, None)))
            }
            Self::Gan(config, g) => {
                ensure!(labels.len() == n, "{} labels for {n} images", labels.len());
                let values: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
                let labels = Tensor::<B, 1, Int>::from_data(TensorData::new(values, [n]), &z.device());
                debug_assert!(config.num_classes > 0);
                Ok(kiln_gan::to_unit(g.generate(z, Some(labels))))
            }
        }
    }

    /// The class of each of `n` images, `per_row` to a grid row: each row takes the next of
    /// `wanted` (cycling), or the next class of the model when none are wanted. Empty for an
    /// unconditional model asked for nothing; an error naming `--class` for a class the model lacks.
    pub fn labels(&self, n: usize, per_row: usize, wanted: &[usize]) -> Result<Vec<usize>> {
        let k = self.classes();
        if k == 0 {
            ensure!(wanted.is_empty(), "--class: this model is unconditional; it takes no class");
            return Ok(Vec::new());
        }
        if let Some(bad) = wanted.iter().find(|&&c| c >= k) {
            bail!("--class {bad}: the model has classes 0 to {}", k - 1);
        }
        let per_row = per_row.max(1);
        Ok((0..n)
            .map(|i| {
                let row = i / per_row;
                if wanted.is_empty() { row % k } else { wanted[row % wanted.len()] }
            })
            .collect())
    }
}
