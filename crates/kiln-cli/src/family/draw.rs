//! The DRAW family (`kiln-draw`): `[model]` is a preset plus overrides; `[train.optim]` and
//! `ema_decay` are its training settings; its evaluation is the test-split negative ELBO, an upper
//! bound on the negative log-likelihood in nats.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::ElementConversion;
use burn::tensor::backend::{AutodiffBackend, Backend};
use kiln_core::Generative;
use kiln_draw::{Attention, Draw as Model, DrawConfig, DrawTask, DrawTaskConfig, Targets};
use serde::{Deserialize, Serialize};

use super::Family;
use crate::experiment::{Experiment, overlay, strict};
use crate::train::{DataInfo, TrainRun};

/// The adapter.
pub struct Draw;

/// `[model]` of a DRAW experiment: a preset plus any overrides.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    /// `small` (default) or `mnist` (the paper's).
    #[serde(skip_serializing)]
    preset: Option<String>,
    /// Drawing steps `T`.
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<usize>,
    /// Units of each LSTM.
    #[serde(skip_serializing_if = "Option::is_none")]
    hidden: Option<usize>,
    /// Dimension of each step's latent.
    #[serde(skip_serializing_if = "Option::is_none")]
    latent: Option<usize>,
    /// Forget-gate bias at initialisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    forget_bias: Option<f64>,
    /// `gaussian` or `none`.
    #[serde(skip_serializing)]
    attention: Option<AttentionName>,
    /// Read grid size (Gaussian attention).
    #[serde(skip_serializing)]
    read: Option<usize>,
    /// Write grid size (Gaussian attention).
    #[serde(skip_serializing)]
    write: Option<usize>,
    /// `binarized` or `grey`.
    #[serde(skip_serializing)]
    targets: Option<TargetsName>,
}

/// `[train.draw]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainSpec {
    /// Slices of each batch stepped at the same time (`DrawTaskConfig::shards`).
    shards: Option<usize>,
}

/// Attention kinds by name.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum AttentionName {
    Gaussian,
    None,
}

/// Likelihood targets by name.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum TargetsName {
    Binarized,
    Grey,
}

/// What a DRAW run trains from.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    model: DrawConfig,
    train: DrawTaskConfig,
}

impl Spec {
    fn config(&self) -> Result<DrawConfig> {
        let preset = self.preset.as_deref().unwrap_or("small");
        let base = DrawConfig::preset(preset).with_context(|| {
            format!("model.preset = {preset:?}: unknown DRAW preset (known: {})", DrawConfig::PRESETS.join(", "))
        })?;
        let mut c = overlay(&base, self, "model")?;
        let grids = self.read.is_some() || self.write.is_some();
        c.attention = match (self.attention, &c.attention) {
            (Some(AttentionName::None), _) if grids => {
                bail!("model.read / model.write are glimpse sizes of attention = \"gaussian\", not \"none\"")
            }
            (Some(AttentionName::None), _) => Attention::None,
            (None, Attention::None) if grids => {
                bail!("model.read / model.write need attention = \"gaussian\" (the preset has none)")
            }
            (None, Attention::None) => Attention::None,
            (_, &Attention::Gaussian { read, write }) => {
                Attention::Gaussian { read: self.read.unwrap_or(read), write: self.write.unwrap_or(write) }
            }
            // Switched on over a preset without it: the paper's MNIST grids unless given.
            (Some(AttentionName::Gaussian), Attention::None) => {
                Attention::Gaussian { read: self.read.unwrap_or(2), write: self.write.unwrap_or(5) }
            }
        };
        if let Some(t) = self.targets {
            c.targets = match t {
                TargetsName::Binarized => Targets::Binarized,
                TargetsName::Grey => Targets::Grey,
            };
        }
        c.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        Ok(c)
    }
}

impl Family for Draw {
    const NAME: &'static str = kiln_draw::FAMILY;
    const ABOUT: &'static str = "DRAW recurrent attention generator (kiln-draw): samples with drawing steps";
    const GENERATOR: bool = true;
    const FORMAT: u32 = kiln_draw::FORMAT;
    const LEGACY_FILE: Option<&'static str> = None;
    type Resolved = Resolved;

    fn resolve(exp: &Experiment, _data: Option<&DataInfo>) -> Result<Resolved> {
        let spec: Spec = strict(&exp.model_settings(), "model")?;
        let model = spec.config()?;
        let own: TrainSpec = match exp.family_settings()? {
            Some(t) => strict(t, "train.draw")?,
            None => TrainSpec::default(),
        };
        let defaults = DrawTaskConfig::default();
        let train = DrawTaskConfig {
            optim: exp.train.optim.clone().unwrap_or_default(),
            ema_decay: exp.train.ema_decay,
            shards: own.shards.unwrap_or(defaults.shards),
            ..defaults
        };
        if train.shards == 0 || train.shards > exp.train.batch_size {
            bail!(
                "train.draw.shards = {}: must be from 1 to the batch size ({}); each shard takes a slice of the batch",
                train.shards,
                exp.train.batch_size
            );
        }
        Ok(Resolved { model, train })
    }

    fn train<B: AutodiffBackend>(run: TrainRun<'_>, resolved: Resolved, device: &B::Device) -> Result<()> {
        let image = [resolved.model.channels, resolved.model.image_size, resolved.model.image_size];
        run.prepare::<B>(Self::NAME, image, &resolved, device)?;
        let Resolved { model: config, train: settings } = resolved;
        let exp = run.exp;
        let inner: burn::tensor::Device<B::InnerBackend> = device.clone();
        let mut task = DrawTask::<B>::new(config, &settings, exp.train.steps, device)?;
        let summary = run.fit(&mut task, device)?;

        let model = task.sampling_model();
        // The negative ELBO (one posterior sample per step and image) over the whole test split.
        let nelbo = run.test_mean::<B::InnerBackend>(exp.train.batch_size, &inner, |x| {
            let l = model.loss(x);
            l.recon.into_scalar().elem::<f64>() + l.kl.into_scalar().elem::<f64>()
        });
        let targets = match model.target_kind() {
            Targets::Binarized => "binarized at 0.5",
            Targets::Grey => "grey levels (not a likelihood)",
        };
        run.write_eval(&serde_json::json!({
            "split": "test",
            "images": run.test.len,
            "neg_elbo_nats": nelbo,
            "samples_per_image": 1,
            "targets": targets,
        }))?;
        run.report(&summary, &format!("; test negative ELBO (NLL bound) {nelbo:.2} nats/image"));
        eprintln!(
            "kiln: samples: {}  drawing steps: {}",
            run.out().join("samples.png").display(),
            run.out().join("steps.png").display()
        );
        Ok(())
    }

    fn open<B: Backend>(dir: &Path, device: &B::Device) -> Result<Box<dyn Generative<B>>> {
        let (_, draw) = Model::<B>::load(dir, device)?;
        Ok(Box::new(draw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAW: &str = r#"
name = "t"
[data]
format = "mnist"
path = "datasets/mnist-sample"
[model]
family = "draw"
steps = 8
[train]
steps = 10
"#;

    fn resolve(text: &str) -> Result<Resolved> {
        Draw::resolve(&Experiment::parse(text)?, None)
    }

    #[test]
    fn the_preset_takes_the_overrides() {
        let r = resolve(DRAW).unwrap();
        assert_eq!((r.model.steps, r.model.hidden, r.model.latent), (8, 128, 16));
        assert_eq!(r.model.attention, Attention::Gaussian { read: 2, write: 5 });
        assert_eq!(r.model.targets, Targets::Binarized);
        let r = resolve(&DRAW.replace("steps = 8", "preset = \"mnist\"\nwrite = 3\ntargets = \"grey\"")).unwrap();
        assert_eq!((r.model.steps, r.model.latent), (64, 100));
        assert_eq!(r.model.attention, Attention::Gaussian { read: 2, write: 3 });
        assert_eq!(r.model.targets, Targets::Grey);
        let r = resolve(&DRAW.replace("steps = 8", "attention = \"none\"")).unwrap();
        assert_eq!(r.model.attention, Attention::None);
        let err = resolve(&DRAW.replace("steps = 8", "attention = \"none\"\nread = 3")).unwrap_err();
        assert!(err.to_string().contains("model.read / model.write"), "{err}");
        let err = resolve(&DRAW.replace("steps = 8", "write = 99")).unwrap_err().to_string();
        assert!(err.contains("attention.write = 99"), "{err}");
        let err = resolve(&DRAW.replace("steps = 8", "preset = \"huge\"")).unwrap_err().to_string();
        assert!(err.contains("unknown DRAW preset (known: mnist, small)"), "{err}");
        let err = resolve(&DRAW.replace("steps = 8", "glimpses = 8")).unwrap_err().to_string();
        assert!(err.contains("model") && err.contains("glimpses"), "{err}");
    }
}
