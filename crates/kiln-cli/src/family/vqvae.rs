//! The VQ-VAE family (`kiln-vqvae`): `[model]` is a preset plus overrides; `[train.optim]` is
//! the encoder/decoder's Adam, and `[train.vqvae]` the codebook's training settings (`decay` of
//! its moving averages, `epsilon` of their Laplace smoothing, `restart_threshold` for dead codes —
//! settings of how the codebook is trained, not of the network, so they live under `[train]`).
//! A VQ-VAE has no prior, so it is no generator (`kiln eval` does not apply); its evaluation is
//! reconstruction on the test split.

use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::ElementConversion;
use burn::tensor::backend::{AutodiffBackend, Backend};
use kiln_core::{Generative, PixelRange};
use kiln_data::{ImageSet, gather};
use kiln_kernels::vq;
use kiln_vqvae::{VqVae as Model, VqVaeConfig, VqVaeTask, VqVaeTaskConfig};
use serde::{Deserialize, Serialize};

use super::Family;
use crate::experiment::{Experiment, overlay, strict};
use crate::train::{DataInfo, TrainRun};

/// The adapter.
pub struct VqVae;

/// `[model]` of a VQ-VAE experiment: a preset plus any overrides.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    /// `mnist28` (default), `emoji32` or `cifar`.
    #[serde(skip_serializing)]
    preset: Option<String>,
    /// Stride-2 stages (the code grid is the image side / 2^downsamples).
    #[serde(skip_serializing_if = "Option::is_none")]
    downsamples: Option<usize>,
    /// Trunk channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    hidden: Option<usize>,
    /// Channels inside a residual block.
    #[serde(skip_serializing_if = "Option::is_none")]
    res_hidden: Option<usize>,
    /// Residual blocks in the encoder and in the decoder.
    #[serde(skip_serializing_if = "Option::is_none")]
    res_blocks: Option<usize>,
    /// Codes K.
    #[serde(skip_serializing_if = "Option::is_none")]
    codebook_size: Option<usize>,
    /// Code dimension D.
    #[serde(skip_serializing_if = "Option::is_none")]
    code_dim: Option<usize>,
    /// Commitment weight β.
    #[serde(skip_serializing_if = "Option::is_none")]
    commitment: Option<f64>,
}

/// `[train.vqvae]`: the codebook's training settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// EMA decay γ of the codebook statistics.
    #[serde(skip_serializing_if = "Option::is_none")]
    decay: Option<f64>,
    /// Laplace smoothing ε.
    #[serde(skip_serializing_if = "Option::is_none")]
    epsilon: Option<f64>,
    /// Restart codes whose EMA count falls below this; 0 turns restarts off (TOML has no null).
    #[serde(skip_serializing)]
    restart_threshold: Option<f64>,
}

/// What a VQ-VAE run trains from.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    model: VqVaeConfig,
    train: VqVaeTaskConfig,
}

/// Images in the fixed reconstruction preview.
const PREVIEW_RECON: usize = 32;

impl Spec {
    fn config(&self) -> Result<VqVaeConfig> {
        let preset = self.preset.as_deref().unwrap_or("mnist28");
        let base = VqVaeConfig::preset(preset).with_context(|| {
            format!("model.preset = {preset:?}: unknown VQ-VAE preset (known: {})", VqVaeConfig::PRESETS.join(", "))
        })?;
        let c = overlay(&base, self, "model")?;
        c.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        Ok(c)
    }
}

fn settings(exp: &Experiment) -> Result<VqVaeTaskConfig> {
    let table = exp.family_settings()?.cloned().unwrap_or_default();
    let given: Settings = strict(&table, "train.vqvae")?;
    let mut train = overlay(&VqVaeTaskConfig::default(), &given, "train.vqvae")?;
    train.optim = exp.train.optim.clone().unwrap_or_default();
    match given.restart_threshold {
        Some(0.0) => train.restart_threshold = None,
        Some(t) => train.restart_threshold = Some(t),
        None => {}
    }
    train.validate().map_err(|e| anyhow::anyhow!("train.vqvae: {e}"))?;
    Ok(train)
}

/// The variance of every pixel value of `set` in `[0, 1]` units (one pass, in f64).
fn pixel_variance(set: &ImageSet) -> f64 {
    let n = set.pixels.len().max(1) as f64;
    let (sum, sq) = set.pixels.iter().fold((0.0, 0.0), |(s, q), &p| {
        let v = p as f64 / 255.0;
        (s + v, q + v * v)
    });
    let mean = sum / n;
    (sq / n - mean * mean).max(0.0)
}

impl Family for VqVae {
    const NAME: &'static str = kiln_vqvae::FAMILY;
    const ABOUT: &'static str = "VQ-VAE with an EMA codebook (kiln-vqvae): reconstruct; sampling needs a prior";
    const GENERATOR: bool = false;
    const FORMAT: u32 = kiln_vqvae::FORMAT;
    const LEGACY_FILE: Option<&'static str> = None;
    type Resolved = Resolved;

    fn resolve(exp: &Experiment, data: Option<&DataInfo>) -> Result<Resolved> {
        anyhow::ensure!(
            exp.train.ema_decay.is_none(),
            "train.ema_decay: a VQ-VAE keeps no average of its weights; its codebook's moving-average decay is \
             [train.vqvae] decay"
        );
        let spec: Spec = strict(&exp.model_settings(), "model")?;
        let mut model = spec.config()?;
        // The preset gives the network's widths; the data gives the image shape, so any square
        // picture set trains (a folder of captioned pictures, say) without a preset of its own.
        if let Some(&DataInfo { image: [c, h, w], .. }) = data {
            anyhow::ensure!(h == w, "{}: images are {h}×{w}; a VQ-VAE takes square images", exp.data.path.display());
            model.channels = c;
            model.image_size = h;
            model.validate().map_err(|e| anyhow::anyhow!("model: {e} (the images are {c}×{h}×{w})"))?;
        }
        let train = settings(exp)?;
        Ok(Resolved { model, train })
    }

    fn train<B: AutodiffBackend>(run: TrainRun<'_>, mut resolved: Resolved, device: &B::Device) -> Result<()> {
        let image = [resolved.model.channels, resolved.model.image_size, resolved.model.image_size];
        let variance = pixel_variance(&run.train);
        anyhow::ensure!(variance > 0.0, "{}: every training pixel has the same value", run.exp.data.path.display());
        resolved.train.data_variance = variance;
        run.prepare::<B>(Self::NAME, image, &resolved, device)?;
        let Resolved { model: config, train: settings } = resolved;
        let exp = run.exp;
        let inner: burn::tensor::Device<B::InnerBackend> = device.clone();
        let test = &run.test;
        let fixed_n = (PREVIEW_RECON.min(test.len) / 8 * 8).max(1);
        let indices: Vec<usize> = (0..fixed_n).collect();
        let fixed = gather::<B::InnerBackend>(test, &indices, PixelRange::ZeroOne, &inner).images;
        let mut task = VqVaeTask::<B>::new(config, &settings, exp.train.steps, fixed, device)?;
        let summary = run.fit(&mut task, device)?;

        let split = if run.data.test_is_train { "train (the data set has one split)" } else { "test" };
        let eval = evaluate(&task.trained(), test, exp.train.batch_size, &inner);
        run.write_eval(&serde_json::json!({
            "split": split,
            "images": test.len,
            "recon_mse": eval.mse,
            "nmse": eval.mse / variance,
            "psnr": eval.psnr,
            "perplexity": eval.perplexity,
            "usage": eval.usage,
            "data_variance": variance,
        }))?;
        run.report(
            &summary,
            &format!(
                "; {split}: recon MSE {:.5}, NMSE {:.4}, PSNR {:.2} dB, perplexity {:.1}, usage {:.1}%",
                eval.mse,
                eval.mse / variance,
                eval.psnr,
                eval.perplexity,
                100.0 * eval.usage
            ),
        );
        eprintln!(
            "kiln: reconstructions: {}  codes: {}",
            run.out().join("reconstructions.png").display(),
            run.out().join("codes.png").display()
        );
        Ok(())
    }

    fn open<B: Backend>(dir: &Path, device: &B::Device) -> Result<Box<dyn Generative<B>>> {
        let (_, model) = Model::<B>::load(dir, device)?;
        Ok(Box::new(model))
    }
}

/// Reconstruction figures over a whole split.
struct Eval {
    /// Mean squared error per pixel value (the decoder's unclamped output, as in training).
    mse: f64,
    /// `10·log10(1 / mse)`, of the split's MSE.
    psnr: f64,
    /// Perplexity of the code usage over the split.
    perplexity: f64,
    /// Share of the codebook used anywhere in the split.
    usage: f64,
}

fn evaluate<B: Backend>(model: &Model<B>, set: &ImageSet, batch_size: usize, device: &B::Device) -> Eval {
    let indices: Vec<usize> = (0..set.len).collect();
    let mut sse = 0.0;
    let mut counts: Option<burn::tensor::Tensor<B, 1>> = None;
    for chunk in indices.chunks(batch_size.max(1)) {
        let x = gather::<B>(set, chunk, PixelRange::ZeroOne, device).images;
        let out = model.loss(x);
        sse += out.recon_mse.into_scalar().elem::<f64>() * chunk.len() as f64;
        counts = Some(match counts {
            Some(c) => c + out.counts,
            None => out.counts,
        });
    }
    let mse = sse / set.len.max(1) as f64;
    let (perplexity, usage) = match counts {
        Some(c) => (vq::perplexity(c.clone()).into_scalar().elem::<f64>(), vq::usage(c).into_scalar().elem::<f64>()),
        None => (0.0, 0.0),
    };
    Eval { mse, psnr: -10.0 * mse.log10(), perplexity, usage }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VQ: &str = r#"
name = "t"
[data]
format = "mnist"
path = "datasets/mnist-sample"
[model]
family = "vqvae"
codebook_size = 32
[train]
steps = 10
"#;

    fn resolve(text: &str) -> Result<Resolved> {
        VqVae::resolve(&Experiment::parse(text)?, None)
    }

    #[test]
    fn the_preset_takes_the_overrides() {
        let r = resolve(VQ).unwrap();
        assert_eq!((r.model.codebook_size, r.model.code_dim, r.model.image_size), (32, 16, 28));
        let r = resolve(&VQ.replace("codebook_size = 32", "preset = \"emoji32\"")).unwrap();
        assert_eq!((r.model.channels, r.model.codebook_size, r.model.code_dim), (3, 512, 64));
        let err = resolve(&VQ.replace("codebook_size = 32", "preset = \"imagenet\"")).unwrap_err().to_string();
        assert!(err.contains("unknown VQ-VAE preset") && err.contains("mnist28, emoji32, cifar"), "{err}");
        let err = resolve(&VQ.replace("codebook_size = 32", "codebook_size = 0")).unwrap_err().to_string();
        assert!(err.contains("codebook_size = 0"), "{err}");
        let err = resolve(&VQ.replace("codebook_size = 32", "codes = 3")).unwrap_err().to_string();
        assert!(err.contains("model") && err.contains("codes"), "{err}");
    }

    #[test]
    fn train_vqvae_holds_the_codebook_settings() {
        let r = resolve(&format!("{VQ}[train.vqvae]\ndecay = 0.95\nrestart_threshold = 0.5\n")).unwrap();
        assert_eq!((r.train.decay, r.train.restart_threshold), (0.95, Some(0.5)));
        let r = resolve(&format!("{VQ}[train.vqvae]\nrestart_threshold = 0\n")).unwrap();
        assert_eq!(r.train.restart_threshold, None);
        let err = resolve(&format!("{VQ}[train.vqvae]\ndecay = 1.5\n")).unwrap_err().to_string();
        assert!(err.contains("train.vqvae") && err.contains("decay = 1.5"), "{err}");
        let err = resolve(&format!("{VQ}[train.vqvae]\nbeta = 0.5\n")).unwrap_err().to_string();
        assert!(err.contains("train.vqvae") && err.contains("beta"), "{err}");
        let err = resolve(&VQ.replace("steps = 10", "steps = 10\nema_decay = 0.99")).unwrap_err().to_string();
        assert!(err.contains("train.ema_decay") && err.contains("[train.vqvae] decay"), "{err}");
    }

    #[test]
    fn pixel_variance_is_that_of_the_values() {
        let set = ImageSet { pixels: vec![0, 255, 0, 255], labels: vec![], len: 1, channels: 1, height: 2, width: 2 };
        assert!((pixel_variance(&set) - 0.25).abs() < 1e-12);
    }
}
