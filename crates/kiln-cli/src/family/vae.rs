//! The VAE family (`kiln-vae`): `[model]` is a preset plus overrides; `[train.optim]` and
//! `ema_decay` are its training settings; its evaluation is the test-split negative ELBO.

use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::ElementConversion;
use burn::tensor::backend::{AutodiffBackend, Backend};
use kiln_core::{Generative, PixelRange, SampleRequest};
use kiln_data::gather;
use kiln_vae::{Likelihood, Vae as Model, VaeConfig, VaeTask, VaeTaskConfig};
use serde::{Deserialize, Serialize};

use super::Family;
use crate::experiment::{Experiment, overlay, strict};
use crate::train::{DataInfo, TrainRun};

/// The adapter.
pub struct Vae;

/// `[model]` of a VAE experiment: a preset plus any overrides.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    /// `mnist` (default), `rgb32` or `vanilla64`.
    #[serde(skip_serializing)]
    preset: Option<String>,
    /// Channels of each stride-2 stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    widths: Option<Vec<usize>>,
    /// Dense layer width (0: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    hidden: Option<usize>,
    /// Latent dimension.
    #[serde(skip_serializing_if = "Option::is_none")]
    latent: Option<usize>,
    /// KL weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    beta: Option<f64>,
    /// Gaussians of the latent mixture fitted after training (0: sample N(0, I)).
    #[serde(skip_serializing_if = "Option::is_none")]
    prior_components: Option<usize>,
    /// `bernoulli` or `gaussian`.
    #[serde(skip_serializing)]
    likelihood: Option<LikelihoodName>,
    /// Pixel standard deviation of the Gaussian likelihood.
    #[serde(skip_serializing)]
    sigma: Option<f64>,
}

/// Pixel likelihoods by name.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum LikelihoodName {
    Bernoulli,
    Gaussian,
}

/// What a VAE run trains from.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    model: VaeConfig,
    train: VaeTaskConfig,
}

/// Images in the fixed reconstruction preview.
const PREVIEW_RECON: usize = 32;

impl Spec {
    fn config(&self) -> Result<VaeConfig> {
        let preset = self.preset.as_deref().unwrap_or("mnist");
        let base = VaeConfig::preset(preset).with_context(|| {
            format!("model.preset = {preset:?}: unknown VAE preset (known: {})", VaeConfig::PRESETS.join(", "))
        })?;
        let mut c = overlay(&base, self, "model")?;
        let bernoulli_sigma = "model.sigma is only meaningful with likelihood = \"gaussian\"";
        match (self.likelihood, self.sigma) {
            (Some(LikelihoodName::Bernoulli), Some(_)) => anyhow::bail!(bernoulli_sigma),
            (Some(LikelihoodName::Bernoulli), None) => c.likelihood = Likelihood::Bernoulli,
            (Some(LikelihoodName::Gaussian), sigma) => {
                c.likelihood = Likelihood::Gaussian { sigma: sigma.unwrap_or(0.1) }
            }
            (None, Some(sigma)) => match c.likelihood {
                Likelihood::Gaussian { .. } => c.likelihood = Likelihood::Gaussian { sigma },
                Likelihood::Bernoulli => anyhow::bail!(bernoulli_sigma),
            },
            (None, None) => {}
        }
        c.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        Ok(c)
    }
}

impl Family for Vae {
    const NAME: &'static str = kiln_vae::FAMILY;
    const ABOUT: &'static str = "convolutional VAE (kiln-vae): sample, reconstruct, interpolate";
    const GENERATOR: bool = true;
    const FORMAT: u32 = kiln_vae::FORMAT;
    const LEGACY_FILE: Option<&'static str> = Some(kiln_vae::CONFIG_FILE);
    type Resolved = Resolved;

    fn resolve(exp: &Experiment, _data: Option<&DataInfo>) -> Result<Resolved> {
        anyhow::ensure!(
            exp.family_settings()?.is_none(),
            "[train.vae]: a VAE is trained by [train.optim] and [train] ema_decay; it has no table of its own"
        );
        let spec: Spec = strict(&exp.model_settings(), "model")?;
        let model = spec.config()?;
        let train = VaeTaskConfig {
            optim: exp.train.optim.clone().unwrap_or_default(),
            ema_decay: exp.train.ema_decay,
            ..Default::default()
        };
        Ok(Resolved { model, train })
    }

    fn train<B: AutodiffBackend>(run: TrainRun<'_>, resolved: Resolved, device: &B::Device) -> Result<()> {
        let image = [resolved.model.channels, resolved.model.image_size, resolved.model.image_size];
        run.prepare::<B>(Self::NAME, image, &resolved, device)?;
        let Resolved { model: config, train: settings } = resolved;
        let exp = run.exp;
        let inner: burn::tensor::Device<B::InnerBackend> = device.clone();
        let test = &run.test;
        let fixed_n = PREVIEW_RECON.min(test.len) / 8 * 8;
        let indices: Vec<usize> = (0..fixed_n.max(1)).collect();
        let fixed = gather::<B::InnerBackend>(test, &indices, PixelRange::ZeroOne, &inner).images;
        let model_config = config.clone();
        let mut task = VaeTask::<B>::new(config, &settings, exp.train.steps, fixed, device)?;
        let summary = run.fit(&mut task, device)?;

        // The latent mixture the model samples from (`model.prior_components`), fitted to the
        // posterior means of the training images; the final model is written again with it, and
        // samples.png redrawn from it, so the grid shows what `kiln sample` gives.
        let mut model = task.sampling_model();
        let components = model_config.prior_components.min(run.train.len);
        if components > 0 {
            let indices: Vec<usize> = (0..run.train.len).collect();
            let batches = indices
                .chunks(exp.train.batch_size.max(1))
                .map(|chunk| gather::<B::InnerBackend>(&run.train, chunk, PixelRange::ZeroOne, &inner).images);
            let prior = model.fit_prior(batches, components, exp.seed)?;
            eprintln!(
                "kiln: latent prior: {components} Gaussians fitted to {} training images' posterior means \
                 (mean log-density {:.2} nats)",
                prior.fitted_on, prior.mean_log_likelihood
            );
            model = model.with_prior(Some(prior));
            if run.lead() {
                model.save(&model_config, run.out())?;
                let request = SampleRequest::new(settings.preview_samples.max(1), 0);
                let grid = Generative::sample(&model, &request, &inner)?.images;
                kiln_train::write_grid(grid, 8, &run.out().join("samples.png"))?;
            }
        }

        // The negative ELBO (β = 1, one posterior sample per image) over the whole test split.
        let nelbo = run.test_mean::<B::InnerBackend>(exp.train.batch_size, &inner, |x| {
            let l = model.loss(x);
            l.recon.into_scalar().elem::<f64>() + l.kl.into_scalar().elem::<f64>()
        });
        run.write_eval(
            &serde_json::json!({ "split": "test", "images": test.len, "neg_elbo_nats": nelbo, "samples_per_image": 1 }),
        )?;
        run.report(&summary, &format!("; test negative ELBO {nelbo:.2} nats/image"));
        eprintln!(
            "kiln: samples: {}  reconstructions: {}",
            run.out().join("samples.png").display(),
            run.out().join("reconstructions.png").display()
        );
        Ok(())
    }

    fn open<B: Backend>(dir: &Path, device: &B::Device) -> Result<Box<dyn Generative<B>>> {
        let (_, vae) = Model::<B>::load(dir, device)?;
        Ok(Box::new(vae))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAE: &str = r#"
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

    fn resolve(text: &str) -> Result<Resolved> {
        Vae::resolve(&Experiment::parse(text)?, None)
    }

    #[test]
    fn the_preset_takes_the_overrides() {
        let r = resolve(VAE).unwrap();
        assert_eq!((r.model.latent, r.model.widths.clone()), (8, vec![32, 64]));
        let r =
            resolve(&VAE.replace("latent = 8", "preset = \"rgb32\"\nlikelihood = \"gaussian\"\nsigma = 0.2")).unwrap();
        assert_eq!((r.model.channels, r.model.likelihood.clone()), (3, Likelihood::Gaussian { sigma: 0.2 }));
        let err = resolve(&VAE.replace("latent = 8", "likelihood = \"bernoulli\"\nsigma = 0.2")).unwrap_err();
        assert!(err.to_string().contains("model.sigma is only meaningful"), "{err}");
        let err = resolve(&VAE.replace("latent = 8", "latent = \"eight\"")).unwrap_err().to_string();
        assert!(err.contains("model") && err.contains("invalid type"), "{err}");
    }
}
