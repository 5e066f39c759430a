//! The GAN family (`kiln-gan`): `[model]` is a preset plus overrides, `[train.gan]` lays the
//! training recipe (loss, penalty, the two optimisers, `n_critic`, EMA) over the preset's.

use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use kiln_core::Generative;
use kiln_gan::{GanConfig, GanTask, GanTaskConfig, Generator, Norm};
use serde::{Deserialize, Serialize};

use super::Family;
use crate::experiment::{Experiment, overlay, strict};
use crate::train::{DataInfo, TrainRun};

/// The adapter.
pub struct Gan;

/// `[model]` of a GAN experiment: a preset plus any overrides.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    /// `dcgan28` (default), `dcgan32`, `dcgan64`, `cgan28` or `sagan32`.
    #[serde(skip_serializing)]
    preset: Option<String>,
    /// Latent dimension.
    #[serde(skip_serializing_if = "Option::is_none")]
    nz: Option<usize>,
    /// Generator width (channels of its last hidden stage).
    #[serde(skip_serializing_if = "Option::is_none")]
    ngf: Option<usize>,
    /// Discriminator width (channels of its first stage).
    #[serde(skip_serializing_if = "Option::is_none")]
    ndf: Option<usize>,
    /// Side of the feature maps that get self-attention (SAGAN), e.g. 16.
    #[serde(skip_serializing_if = "Option::is_none")]
    attention: Option<usize>,
    /// The discriminator's normalisation: `batch`, `spectral` or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    d_norm: Option<Norm>,
    /// Spectral norm in the generator too (SAGAN).
    #[serde(skip_serializing_if = "Option::is_none")]
    g_spectral_norm: Option<bool>,
    /// Condition on the data's labels (one class per label value). A conditional preset
    /// (`cgan28`) is conditional unless this is `false`.
    #[serde(skip_serializing)]
    conditional: Option<bool>,
}

/// What a GAN run trains from: the architecture and the whole recipe (learning rates and betas
/// of both optimisers included).
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    model: GanConfig,
    train: GanTaskConfig,
}

impl Spec {
    fn preset_name(&self) -> &str {
        self.preset.as_deref().unwrap_or("dcgan28")
    }

    /// The preset with the overrides, validated; a conditional model gets the data's `classes`
    /// (`None`: the preset's count, or 10).
    fn config(&self, classes: Option<usize>) -> Result<GanConfig> {
        let preset = self.preset_name();
        let base = GanConfig::preset(preset).with_context(|| {
            format!("model.preset = {preset:?}: unknown GAN preset (known: {})", GanConfig::PRESETS.join(", "))
        })?;
        let mut c = overlay(&base, self, "model")?;
        let conditional = self.conditional.unwrap_or(c.num_classes > 0);
        c.num_classes = match (conditional, classes) {
            (false, _) => 0,
            (true, Some(k)) => k,
            (true, None) => c.num_classes.max(10),
        };
        c.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        Ok(c)
    }

    /// The preset's recipe with `[train.gan]` and `[train] ema_decay` laid over it.
    fn settings(&self, exp: &Experiment) -> Result<GanTaskConfig> {
        let base = GanTaskConfig::for_model_preset(self.preset_name()).unwrap_or_default();
        let mut overrides = exp.family_settings()?.cloned().unwrap_or_default();
        if let Some(d) = exp.train.ema_decay {
            overrides.insert("ema_decay".into(), toml::Value::Float(d));
        }
        overlay(&base, &overrides, "train.gan")
    }
}

impl Family for Gan {
    const NAME: &'static str = kiln_gan::FAMILY;
    const ABOUT: &'static str = "GANs (kiln-gan): DCGAN, class-conditional projection GAN, SAGAN";
    const GENERATOR: bool = true;
    const FORMAT: u32 = kiln_gan::FORMAT;
    const LEGACY_FILE: Option<&'static str> = Some(kiln_gan::CONFIG_FILE);
    type Resolved = Resolved;

    fn resolve(exp: &Experiment, data: Option<&DataInfo>) -> Result<Resolved> {
        anyhow::ensure!(
            exp.train.optim.is_none(),
            "[train.optim]: a GAN has two optimisers; set them as g_optim and d_optim under [train.gan]"
        );
        let spec: Spec = strict(&exp.model_settings(), "model")?;
        let model = spec.config(data.and_then(|d| d.classes))?;
        let train = spec.settings(exp)?;
        train.validate(&model).map_err(|e| anyhow::anyhow!("train.gan: {e}"))?;
        Ok(Resolved { model, train })
    }

    fn train<B: AutodiffBackend>(run: TrainRun<'_>, resolved: Resolved, device: &B::Device) -> Result<()> {
        let image = [resolved.model.channels, resolved.model.image_size, resolved.model.image_size];
        run.prepare::<B>(Self::NAME, image, &resolved, device)?;
        let Resolved { model: config, train: settings } = resolved;
        let ema = settings.ema_decay.is_some();
        let mut task = GanTask::<B>::new(config, settings, run.exp.train.steps, device)?;
        let summary = run.fit(&mut task, device)?;
        run.report(&summary, "");
        let grid = if ema { "samples-ema.png" } else { "samples.png" };
        eprintln!("kiln: samples: {}", run.out().join(grid).display());
        Ok(())
    }

    fn open<B: Backend>(dir: &Path, device: &B::Device) -> Result<Box<dyn Generative<B>>> {
        let (_, generator) = Generator::<B>::load(dir, device)?;
        Ok(Box::new(generator))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAN: &str = r#"
name = "g"
[data]
format = "mnist"
path = "datasets/mnist-sample"
[model]
family = "gan"
preset = "cgan28"
ngf = 8
[train]
steps = 10
"#;

    const VAE: &str = r#"
name = "t"
[data]
format = "mnist"
path = "datasets/mnist-sample"
[model]
family = "vae"
[train]
steps = 10
"#;

    fn resolve(text: &str, classes: Option<usize>) -> Result<Resolved> {
        let data =
            classes.map(|k| DataInfo { image: [1, 28, 28], classes: Some(k), test_is_train: false, captions: false });
        Gan::resolve(&Experiment::parse(text)?, data.as_ref())
    }

    #[test]
    fn gan_settings_lay_over_the_preset_recipe() {
        let r = resolve(GAN, Some(10)).unwrap();
        assert_eq!((r.model.ngf, r.model.num_classes), (8, 10));
        // cgan28's recipe is DCGAN's with hinge loss.
        assert_eq!(r.train.loss, kiln_gan::GanLoss::Hinge);
        let with =
            |extra: &str| GAN.replace("steps = 10", &format!("steps = 10\nema_decay = 0.99\n[train.gan]\n{extra}"));
        let r = resolve(&with("d_optim = { lr = 4e-4 }\nn_critic = 2\npenalty = { kind = \"r1\", gamma = 0.1 }"), None)
            .unwrap();
        let s = r.train;
        assert_eq!((s.d_optim.lr, s.d_optim.beta1, s.g_optim.lr), (4e-4, 0.5, 2e-4));
        assert_eq!((s.n_critic, s.ema_decay), (2, Some(0.99)));
        assert_eq!(s.penalty, kiln_gan::Penalty::R1 { gamma: 0.1 });
        // Unconditional on request; a conditional model takes the data's class count.
        let r = resolve(&GAN.replace("ngf = 8", "conditional = false"), Some(10)).unwrap();
        assert_eq!(r.model.num_classes, 0);
        // The resolved recipe serialises with its learning rates and betas (resolved.json).
        let json = serde_json::to_value(resolve(GAN, Some(10)).unwrap()).unwrap();
        assert_eq!(json["train"]["g_optim"]["lr"], 2e-4);
        assert_eq!(json["train"]["d_optim"]["beta1"], 0.5);
    }

    #[test]
    fn a_written_experiment_reads_back_the_same() {
        // `kiln train` writes the experiment into the run; `--resume` reads it back.
        let text = GAN.replace("steps = 10", "steps = 10\n[train.gan]\nn_critic = 2\nd_optim = { lr = 4e-4 }");
        let exp = Experiment::parse(&text).unwrap();
        let again = Experiment::parse(&toml::to_string_pretty(&exp).unwrap()).unwrap();
        assert_eq!(again.family_settings().unwrap(), exp.family_settings().unwrap());
        assert_eq!(again.model, exp.model);
        let (a, b) = (Gan::resolve(&exp, None).unwrap(), Gan::resolve(&again, None).unwrap());
        assert_eq!(serde_json::to_value(a).unwrap(), serde_json::to_value(b).unwrap());
    }

    #[test]
    fn gan_mistakes_are_named() {
        let with = |extra: &str| GAN.replace("steps = 10", &format!("steps = 10\n{extra}"));
        let err = Experiment::parse(&with("[train.gan]\nn_critc = 2")).unwrap_err().to_string();
        assert!(err.contains("train.gan") && err.contains("n_critc"), "{err}");
        let err = Experiment::parse(&with("[train.gan]\nloss = \"wasserstien\"")).unwrap_err().to_string();
        assert!(err.contains("wasserstien"), "{err}");
        let err = Experiment::parse(&with("[train.optim]\nlr = 1e-3")).unwrap_err().to_string();
        assert!(err.contains("g_optim and d_optim"), "{err}");
        let err = Experiment::parse(&GAN.replace("ngf = 8", "attention = 5")).unwrap_err().to_string();
        assert!(err.contains("attention"), "{err}");
        let err = Experiment::parse(&GAN.replace("ngf = 8", "ngff = 8")).unwrap_err().to_string();
        assert!(err.contains("unknown field `ngff`"), "{err}");
        // WGAN-GP with a batch-norm critic is refused with the reason.
        let err = Experiment::parse(
            &GAN.replace("cgan28", "dcgan28")
                .replace("steps = 10", "steps = 10\n[train.gan]\npenalty = { kind = \"wgan-gp\", lambda = 10.0 }"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("batch norm"), "{err}");
        let err = Experiment::parse(&VAE.replace("steps = 10", "steps = 10\n[train.gan]\nn_critic = 2"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[train.gan] is for family = \"gan\""), "{err}");
    }
}
