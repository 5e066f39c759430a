//! The diffusion family (`kiln-diffusion`): `[model]` is a preset plus overrides of the U-Net and
//! the process; `[train.diffusion]` holds label dropout and the previews' sampler steps; its
//! evaluation is the test-split denoising loss.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::ElementConversion;
use burn::tensor::backend::{AutodiffBackend, Backend};
use kiln_core::Generative;
use kiln_diffusion::{
    BetaSchedule, Diffusion as Model, DiffusionConfig, DiffusionTask, DiffusionTaskConfig, Prediction, Process,
    Weighting,
};
use serde::{Deserialize, Serialize};

use super::Family;
use crate::experiment::{Experiment, strict};
use crate::train::{DataInfo, TrainRun};

/// The adapter.
pub struct Diffusion;

/// `[model]` of a diffusion experiment: a preset plus any overrides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    /// `mnist` (default), `mnist-flow`, `emoji` or `cifar`.
    preset: Option<String>,
    /// U-Net: channels of the first level.
    base: Option<usize>,
    /// U-Net: channel multiplier per level.
    mults: Option<Vec<usize>>,
    /// U-Net: residual blocks per level.
    res_blocks: Option<usize>,
    /// U-Net: resolutions with self-attention.
    attention: Option<Vec<usize>>,
    /// U-Net: attention heads.
    heads: Option<usize>,
    /// U-Net: GroupNorm groups.
    groups: Option<usize>,
    /// U-Net: dropout in residual blocks.
    dropout: Option<f64>,
    /// Class-conditional on the data's labels (trained with label dropout for guidance).
    conditional: Option<bool>,
    /// `ddpm` or `flow`.
    process: Option<ProcessName>,
    /// DDPM steps `T`.
    timesteps: Option<usize>,
    /// DDPM `β` schedule: `cosine` or `linear`.
    schedule: Option<ScheduleName>,
    /// DDPM target: `epsilon` or `v`.
    prediction: Option<PredictionName>,
    /// Min-SNR-γ loss weighting (DDPM); absent: uniform.
    min_snr_gamma: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum ProcessName {
    Ddpm,
    Flow,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum ScheduleName {
    Cosine,
    Linear,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum PredictionName {
    Epsilon,
    V,
}

/// `[train.diffusion]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainSpec {
    label_dropout: Option<f64>,
    preview_steps: Option<usize>,
    preview_samples: Option<usize>,
    /// Slices of each batch stepped at the same time (`DiffusionTaskConfig::shards`).
    shards: Option<usize>,
}

/// What a diffusion run trains from.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    model: DiffusionConfig,
    train: DiffusionTaskConfig,
}

/// EMA decay when `[train] ema_decay` is not given: diffusion models are sampled from an average.
const EMA_DECAY: f64 = 0.999;

impl Spec {
    fn config(&self, data: Option<&DataInfo>) -> Result<DiffusionConfig> {
        let preset = self.preset.as_deref().unwrap_or("mnist");
        let mut c = DiffusionConfig::preset(preset).with_context(|| {
            format!(
                "model.preset = {preset:?}: unknown diffusion preset (known: {})",
                DiffusionConfig::PRESETS.join(", ")
            )
        })?;
        let u = &mut c.unet;
        if let Some(d) = data {
            [u.channels, u.image_size] = [d.image[0], d.image[1]];
        }
        u.base = self.base.unwrap_or(u.base);
        u.mults = self.mults.clone().unwrap_or(u.mults.clone());
        u.res_blocks = self.res_blocks.unwrap_or(u.res_blocks);
        u.attention = self.attention.clone().unwrap_or(u.attention.clone());
        u.heads = self.heads.unwrap_or(u.heads);
        u.groups = self.groups.unwrap_or(u.groups);
        u.dropout = self.dropout.unwrap_or(u.dropout);
        if self.conditional.unwrap_or(false) {
            u.classes = match data {
                Some(DataInfo { classes: Some(k), .. }) => *k,
                Some(_) => bail!("model.conditional = true, but the data set has no labels"),
                None => 10,
            };
        }
        let ddpm_only = self.timesteps.is_some() || self.schedule.is_some() || self.prediction.is_some();
        c.process = match (self.process, c.process) {
            (Some(ProcessName::Flow), _) | (None, Process::Flow) if ddpm_only => {
                bail!("model.timesteps / schedule / prediction belong to process = \"ddpm\", not \"flow\"")
            }
            (Some(ProcessName::Flow), _) => Process::Flow,
            (None, Process::Flow) => Process::Flow,
            (_, preset) => {
                let (t, s, p) = match preset {
                    Process::Ddpm { timesteps, schedule, prediction } => (timesteps, schedule, prediction),
                    Process::Flow => (1000, BetaSchedule::COSINE, Prediction::V),
                };
                Process::Ddpm {
                    timesteps: self.timesteps.unwrap_or(t),
                    schedule: match self.schedule {
                        Some(ScheduleName::Cosine) => BetaSchedule::COSINE,
                        Some(ScheduleName::Linear) => BetaSchedule::LINEAR,
                        None => s,
                    },
                    prediction: match self.prediction {
                        Some(PredictionName::Epsilon) => Prediction::Epsilon,
                        Some(PredictionName::V) => Prediction::V,
                        None => p,
                    },
                }
            }
        };
        if let Some(gamma) = self.min_snr_gamma {
            c.weighting = Weighting::MinSnr { gamma };
        }
        c.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        Ok(c)
    }
}

impl Family for Diffusion {
    const NAME: &'static str = kiln_diffusion::FAMILY;
    const ABOUT: &'static str =
        "DDPM / DDIM diffusion and rectified flow with a U-Net (kiln-diffusion): samples with a sampler's steps";
    const GENERATOR: bool = true;
    const FORMAT: u32 = kiln_diffusion::FORMAT;
    const LEGACY_FILE: Option<&'static str> = None;
    type Resolved = Resolved;

    fn resolve(exp: &Experiment, data: Option<&DataInfo>) -> Result<Resolved> {
        let spec: Spec = strict(&exp.model_settings(), "model")?;
        let model = spec.config(data)?;
        let own: TrainSpec = match exp.family_settings()? {
            Some(t) => strict(t, "train.diffusion")?,
            None => TrainSpec::default(),
        };
        let defaults = DiffusionTaskConfig::default();
        let train = DiffusionTaskConfig {
            optim: exp.train.optim.clone().unwrap_or_default(),
            ema_decay: Some(exp.train.ema_decay.unwrap_or(EMA_DECAY)),
            label_dropout: own.label_dropout.unwrap_or(defaults.label_dropout),
            preview_steps: own.preview_steps.unwrap_or(defaults.preview_steps),
            preview_samples: own.preview_samples.unwrap_or(defaults.preview_samples),
            shards: own.shards.unwrap_or(defaults.shards),
        };
        if train.shards == 0 || train.shards > exp.train.batch_size {
            bail!(
                "train.diffusion.shards = {}: must be from 1 to the batch size ({}); each shard takes a slice of the batch",
                train.shards,
                exp.train.batch_size
            );
        }
        if !(0.0..1.0).contains(&train.label_dropout) {
            bail!("train.diffusion.label_dropout = {}: must be in [0, 1) (0.1 is usual)", train.label_dropout);
        }
        if train.preview_steps == 0 || train.preview_samples == 0 {
            bail!("train.diffusion.preview_steps and preview_samples must be at least 1");
        }
        Ok(Resolved { model, train })
    }

    fn train<B: AutodiffBackend>(run: TrainRun<'_>, resolved: Resolved, device: &B::Device) -> Result<()> {
        let u = &resolved.model.unet;
        run.prepare::<B>(Self::NAME, [u.channels, u.image_size, u.image_size], &resolved, device)?;
        let Resolved { model: config, train: settings } = resolved;
        let exp = run.exp;
        let inner: burn::tensor::Device<B::InnerBackend> = device.clone();
        let mut task = DiffusionTask::<B>::new(config, &settings, exp.train.steps, device)?;
        let summary = run.fit(&mut task, device)?;

        let model = task.sampling_model();
        // The denoising loss of the averaged weights over the test split: one random time and
        // noise per image (the backend's generator), unconditional (null label) for a
        // conditional model, so runs of either kind compare.
        let null = model.classes();
        let loss = run.test_mean::<B::InnerBackend>(exp.train.batch_size, &inner, |x| {
            let n = x.dims()[0];
            let labels = (null > 0).then(|| burn::tensor::Tensor::full([n], null as i64, &x.device()));
            let l = model.loss(x * 2.0 - 1.0, labels);
            l.loss.into_scalar().elem::<f64>()
        });
        run.write_eval(&serde_json::json!({
            "split": "test",
            "images": run.test.len,
            "loss": loss,
            "process": format!("{:?}", model.process()),
            "labels": if null > 0 { "null (unconditional)" } else { "none" },
        }))?;
        run.report(&summary, &format!("; test denoising loss {loss:.4}"));
        eprintln!(
            "kiln: samples: {}  sampling steps: {}",
            run.out().join("samples.png").display(),
            run.out().join("steps.png").display()
        );
        Ok(())
    }

    fn open<B: Backend>(dir: &Path, device: &B::Device) -> Result<Box<dyn Generative<B>>> {
        let (_, model) = Model::<B>::load(dir, device)?;
        Ok(Box::new(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFFUSION: &str = r#"
name = "t"
[data]
format = "mnist"
path = "datasets/mnist-sample"
[model]
family = "diffusion"
base = 16
[train]
steps = 10
"#;

    fn resolve(text: &str, classes: Option<usize>) -> Result<Resolved> {
        let data = DataInfo { image: [1, 28, 28], classes, test_is_train: false, captions: false };
        Diffusion::resolve(&Experiment::parse(text)?, Some(&data))
    }

    #[test]
    fn the_preset_takes_the_overrides() {
        let r = resolve(DIFFUSION, Some(10)).unwrap();
        assert_eq!((r.model.unet.base, r.model.unet.classes, r.train.ema_decay), (16, 0, Some(EMA_DECAY)));
        assert_eq!(
            r.model.process,
            Process::Ddpm { timesteps: 1000, schedule: BetaSchedule::COSINE, prediction: Prediction::V }
        );
        let text = DIFFUSION.replace(
            "base = 16",
            "conditional = true\nschedule = \"linear\"\nprediction = \"epsilon\"\ntimesteps = 500\nmin_snr_gamma = 5.0",
        );
        let r = resolve(&format!("{text}[train.diffusion]\nlabel_dropout = 0.2\n"), Some(10)).unwrap();
        assert_eq!(r.model.unet.classes, 10);
        assert_eq!(
            r.model.process,
            Process::Ddpm { timesteps: 500, schedule: BetaSchedule::LINEAR, prediction: Prediction::Epsilon }
        );
        assert_eq!((r.model.weighting, r.train.label_dropout), (Weighting::MinSnr { gamma: 5.0 }, 0.2));
        let r = resolve(&DIFFUSION.replace("base = 16", "preset = \"mnist-flow\""), None).unwrap();
        assert_eq!(r.model.process, Process::Flow);

        let err = |text: &str| resolve(text, None).unwrap_err().to_string();
        assert!(err(&DIFFUSION.replace("base = 16", "process = \"flow\"\ntimesteps = 10")).contains("not \"flow\""));
        assert!(err(&DIFFUSION.replace("base = 16", "mults = [1, 2, 2, 2]")).contains("image_size = 28"));
        assert!(err(&DIFFUSION.replace("base = 16", "preset = \"huge\"")).contains("unknown diffusion preset"));
        assert!(err(&DIFFUSION.replace("base = 16", "conditional = true")).contains("no labels"));
        assert!(err(&format!("{DIFFUSION}[train.diffusion]\nlabel_dropout = 1.5\n")).contains("label_dropout = 1.5"));
        assert!(err(&format!("{DIFFUSION}[train.diffusion]\ndropout = 0.1\n")).contains("dropout"));
    }
}
