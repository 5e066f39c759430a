//! The DALL·E family (`kiln-dalle`): a transformer over BPE caption tokens and the codes of a
//! trained VQ-VAE.
//!
//! `[model]` is a preset (`small`, `gpt-mini`) plus overrides, and `tokenizer`: the image
//! tokenizer, either a trained VQ-VAE (a run or model directory) or a VQ-VAE experiment file,
//! which `kiln train` then trains first into `RUN/tokenizer` (the first stage; resumed or skipped
//! when the run is resumed). `text_len = 0` makes an unconditional prior over the codes: the
//! model that turns a VQ-VAE into a generator. `[train.dalle]` holds the caption dropout, the
//! captions of a labelled set (`label_captions`, one per class: MNIST has labels, not captions)
//! and the captions drawn in the preview grids. The run's evaluation is the held-out next-token
//! loss, and for a labelled set with a bundled classifier, how often the samples of each class's
//! caption are classified as that class, with and without guidance.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use kiln_bpe::{Bpe, BpeConfig};
use kiln_core::{Generative, PixelRange};
use kiln_dalle::sample::TokenSampling;
use kiln_dalle::{
    DalleConfig, DalleGenerator, DalleParts, DalleTask, DalleTaskConfig, TokenLoader, TokenSet, image_codes,
};
use kiln_data::{ImageSet, gather};
use kiln_vqvae::VqVae;
use serde::{Deserialize, Serialize};

use super::Family;
use super::classifier::Extractor;
use crate::experiment::{Experiment, overlay, strict};
use crate::train::{DataInfo, TrainRun};

/// The adapter.
pub struct Dalle;

/// `[model]` of a DALL·E experiment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    /// `small` (default) or `gpt-mini`.
    #[serde(skip_serializing)]
    preset: Option<String>,
    /// The image tokenizer: a trained VQ-VAE's directory, or a VQ-VAE experiment file to train first.
    #[serde(skip_serializing)]
    tokenizer: Option<PathBuf>,
    /// Size of the BPE vocabulary to learn from the captions (pad included); default 512.
    #[serde(skip_serializing)]
    text_vocab: Option<usize>,
    /// Text tokens per caption; default the longest training caption's; 0 for a prior.
    #[serde(skip_serializing)]
    text_len: Option<usize>,
    /// Transformer blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    layers: Option<usize>,
    /// Attention heads.
    #[serde(skip_serializing_if = "Option::is_none")]
    heads: Option<usize>,
    /// Model width.
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<usize>,
    /// Dropout.
    #[serde(skip_serializing_if = "Option::is_none")]
    dropout: Option<f64>,
    /// Weight of the text loss (the image loss gets the rest).
    #[serde(skip_serializing_if = "Option::is_none")]
    text_loss_weight: Option<f64>,
}

/// `[train.dalle]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Share of captions dropped to the null caption.
    #[serde(skip_serializing_if = "Option::is_none")]
    caption_dropout: Option<f64>,
    /// One caption per class, for a labelled data set without captions.
    #[serde(skip_serializing)]
    label_captions: Option<Vec<String>>,
    /// Captions drawn in the preview grid, one row each.
    #[serde(skip_serializing)]
    preview: Option<Vec<String>>,
}

/// What a DALL·E run trains from.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    model: DalleConfig,
    train: DalleTaskConfig,
    /// Where the image tokenizer comes from, as written.
    tokenizer: PathBuf,
    /// The BPE vocabulary asked for.
    text_vocab: usize,
    /// Captions per class, when the data has labels instead of captions.
    label_captions: Option<Vec<String>>,
    /// Preview captions.
    preview: Vec<String>,
    /// Text tokens per caption as given (`None`: the longest training caption's; `Some(0)`: a prior).
    text_len: Option<usize>,
}

impl Resolved {
    /// An unconditional prior: no text at all.
    fn prior(&self) -> bool {
        self.text_len == Some(0)
    }
}

/// The default BPE size: room for the emoji names' words after the 256 bytes.
const TEXT_VOCAB: usize = 512;
/// Preview rows when the experiment names none.
const PREVIEW_ROWS: usize = 8;
/// Samples per class caption in the evaluation's class-accuracy check.
const EVAL_PER_CLASS: usize = 20;
/// The guidance scale the evaluation compares with unguided sampling.
const EVAL_GUIDANCE: f64 = 3.0;

fn is_experiment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "toml")
}

impl Family for Dalle {
    const NAME: &'static str = kiln_dalle::FAMILY;
    const ABOUT: &'static str =
        "a small DALL·E (kiln-dalle): captions → VQ-VAE codes with one transformer; text_len = 0 is a prior";
    const GENERATOR: bool = true;
    const FORMAT: u32 = kiln_dalle::FORMAT;
    const LEGACY_FILE: Option<&'static str> = None;
    type Resolved = Resolved;

    fn resolve(exp: &Experiment, data: Option<&DataInfo>) -> Result<Resolved> {
        ensure!(exp.train.ema_decay.is_none(), "train.ema_decay: the DALL·E family keeps no weight average");
        let spec: Spec = strict(&exp.model_settings(), "model")?;
        let preset = spec.preset.as_deref().unwrap_or("small");
        let base = DalleConfig::preset(preset).with_context(|| {
            format!("model.preset = {preset:?}: unknown DALL·E preset (known: {})", DalleConfig::PRESETS.join(", "))
        })?;
        let mut model = overlay(&base, &spec, "model")?;
        let tokenizer = spec.tokenizer.clone().context(
            "model.tokenizer: missing; name the image tokenizer, a trained VQ-VAE (its run directory) or a VQ-VAE \
             experiment file to train first (e.g. \"experiments/vqvae-emoji.toml\")",
        )?;
        if !is_experiment(&tokenizer) && data.is_some() {
            ensure!(
                tokenizer.join(kiln_core::MANIFEST_FILE).is_file(),
                "model.tokenizer = {:?}: not a trained model directory (no {}) nor a .toml experiment file",
                tokenizer.display().to_string(),
                kiln_core::MANIFEST_FILE
            );
        }
        let text_vocab = spec.text_vocab.unwrap_or(TEXT_VOCAB);
        ensure!(
            text_vocab >= kiln_bpe::MIN_VOCAB_SIZE,
            "model.text_vocab = {text_vocab}: must be at least {} (256 bytes + pad)",
            kiln_bpe::MIN_VOCAB_SIZE
        );
        let table = exp.family_settings()?.cloned().unwrap_or_default();
        let given: Settings = strict(&table, "train.dalle")?;
        let mut train = overlay(&DalleTaskConfig::default(), &given, "train.dalle")?;
        train.optim = exp.train.optim.clone().unwrap_or_default();
        train.validate().map_err(|e| anyhow::anyhow!("train.dalle: {e}"))?;
        let prior = spec.text_len == Some(0);
        if prior {
            model.text_len = 0;
            train.caption_dropout = 0.0;
        }
        if let Some(data) = data
            && !prior
        {
            match (&given.label_captions, data.captions, data.classes) {
                (Some(c), _, Some(k)) => ensure!(
                    c.len() == k,
                    "train.dalle.label_captions: {} captions for {k} classes; give one per class, in label order",
                    c.len()
                ),
                (Some(_), _, None) => bail!("train.dalle.label_captions: the data set has no labels to caption"),
                (None, true, _) => {}
                (None, false, _) => bail!(
                    "{}: this data set has no captions; give [train.dalle] label_captions (one per class, e.g. \
                     \"a handwritten seven\"), or set model.text_len = 0 for an unconditional prior",
                    exp.data.path.display()
                ),
            }
        }
        model.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        let preview = given.preview.clone().unwrap_or_default();
        let label_captions = if prior { None } else { given.label_captions };
        Ok(Resolved { model, train, tokenizer, text_vocab, label_captions, preview, text_len: spec.text_len })
    }

    fn first_stage(exp: &Experiment) -> Result<Option<PathBuf>> {
        let spec: Spec = strict(&exp.model_settings(), "model")?;
        Ok(spec.tokenizer.filter(|t| is_experiment(t)))
    }

    fn train<B: AutodiffBackend>(run: TrainRun<'_>, mut resolved: Resolved, device: &B::Device) -> Result<()> {
        let inner: burn::tensor::Device<B::InnerBackend> = device.clone();
        let vq_dir = if is_experiment(&resolved.tokenizer) {
            run.out().join(crate::train::FIRST_STAGE_DIR)
        } else {
            resolved.tokenizer.clone()
        };
        let (vq_config, vqvae) = VqVae::<B::InnerBackend>::load(&vq_dir, &inner)
            .with_context(|| format!("model.tokenizer: the image tokenizer in {}", vq_dir.display()))?;
        let image = [vq_config.channels, vq_config.image_size, vq_config.image_size];

        // Captions: the data set's own, or one per label.
        let captions_of = |set: &ImageSet, own: Option<&Arc<Vec<String>>>| -> Option<Vec<String>> {
            match (&resolved.label_captions, own) {
                (Some(per_class), _) => Some(set.labels.iter().map(|&l| per_class[l as usize].clone()).collect()),
                (None, Some(c)) => Some(c.to_vec()),
                (None, None) => None,
            }
        };
        let prior = resolved.prior();
        let train_captions = if prior { None } else { captions_of(&run.train, run.captions.as_ref()) };
        let bpe = match &train_captions {
            Some(captions) => {
                let config = BpeConfig { vocab_size: resolved.text_vocab, lowercase: true };
                Some(Bpe::train(captions, &config).context("model.text_vocab")?)
            }
            None => None,
        };
        let config = &mut resolved.model;
        config.image_vocab = vq_config.codebook_size;
        config.grid = vq_config.grid();
        if let (Some(bpe), Some(captions)) = (&bpe, &train_captions) {
            config.text_vocab = bpe.vocab_size();
            let longest = captions.iter().map(|c| bpe.encode(c).len()).max().unwrap_or(1).max(1);
            config.text_len = resolved.text_len.unwrap_or(longest);
        }
        config.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        if resolved.preview.is_empty()
            && let Some(captions) = &train_captions
        {
            resolved.preview = spread(captions, PREVIEW_ROWS);
        }

        // The data as token rows: every image through the frozen VQ-VAE, once.
        let started = std::time::Instant::now();
        let codes = encode_all(&vqvae, &run.train, run.exp.train.batch_size, &inner);
        let (set, cut) = TokenSet::new(bpe.as_ref().zip(train_captions.as_deref()), config.text_len, &codes);
        eprintln!(
            "kiln: encoded {} images to {}×{} codes of {} and {} captions to {} tokens of {} in {:.1} s{}",
            set.len,
            config.grid,
            config.grid,
            config.image_vocab,
            if bpe.is_some() { set.len } else { 0 },
            config.text_len,
            config.text_vocab,
            started.elapsed().as_secs_f64(),
            if cut > 0 { format!(" ({cut} captions cut to {} tokens)", config.text_len) } else { String::new() }
        );
        run.prepare::<B>(Self::NAME, image, &resolved, device)?;
        let exp = run.exp;
        let parts = DalleParts { bpe, vqvae, vq_config, preview_captions: resolved.preview.clone() };
        let mut task = DalleTask::<B>::new(resolved.model.clone(), &resolved.train, exp.train.steps, parts, device)?;
        let (rank, world) = run.shard();
        let mut loader = TokenLoader::<B>::new(Arc::new(set), exp.train.batch_size, exp.seed, device)
            .with_shard(rank, world)
            .ok_or_else(|| anyhow::anyhow!("train.batch_size × {world} ranks: larger than the training set"))?;
        let summary = run.fit_with(&mut task, &mut loader)?;

        // Held-out next-token loss (the training split for a one-split set, said so).
        let generator = task.trained();
        let split = if run.data.test_is_train { "train (the data set has one split)" } else { "test" };
        let test_captions = if prior { None } else { captions_of(&run.test, run.captions.as_ref()) };
        let test_codes = encode_all(&generator.vqvae, &run.test, exp.train.batch_size, &inner);
        let (test_set, _) =
            TokenSet::new(generator.bpe.as_ref().zip(test_captions.as_deref()), generator.config.text_len, &test_codes);
        let (text_ce, image_ce) = token_loss(&generator, &test_set, exp.train.batch_size, &inner);
        let mut eval = serde_json::json!({
            "split": split,
            "images": test_set.len,
            "text_ce": text_ce,
            "image_ce": image_ce,
            "image_bits_per_code": image_ce / std::f64::consts::LN_2,
        });
        let mut extra = format!("; {split}: image-token CE {image_ce:.3} nats, text-token CE {text_ce:.3}");
        if let Some(per_class) = &resolved.label_captions
            && let Some(name) = Extractor::<B::InnerBackend>::default_for(image)
        {
            let classifier = Extractor::<B::InnerBackend>::load(name, &inner)?;
            let guidance = (generator.caption_dropout > 0.0).then_some(EVAL_GUIDANCE);
            let plain = class_accuracy(&generator, per_class, &classifier, None, &inner)?;
            eval["class_accuracy"] = serde_json::json!(plain);
            extra += &format!(", class accuracy of samples {:.1} %", 100.0 * plain);
            if let Some(s) = guidance {
                let guided = class_accuracy(&generator, per_class, &classifier, Some(s), &inner)?;
                eval["class_accuracy_guided"] = serde_json::json!({ "guidance": s, "accuracy": guided });
                extra += &format!(" ({:.1} % at guidance {s})", 100.0 * guided);
            }
            eval["class_accuracy_samples_per_class"] = serde_json::json!(EVAL_PER_CLASS);
        }
        run.write_eval(&eval)?;
        run.report(&summary, &extra);
        eprintln!("kiln: samples: {}", run.out().join("samples.png").display());
        Ok(())
    }

    fn open<B: Backend>(dir: &Path, device: &B::Device) -> Result<Box<dyn Generative<B>>> {
        Ok(Box::new(DalleGenerator::<B>::load(dir, device)?))
    }
}

/// `rows` captions spread evenly over `captions`, first occurrences only.
fn spread(captions: &[String], rows: usize) -> Vec<String> {
    let mut unique: Vec<&String> = Vec::new();
    for c in captions {
        if !unique.contains(&c) {
            unique.push(c);
        }
    }
    let step = (unique.len() / rows.max(1)).max(1);
    unique.into_iter().step_by(step).take(rows).cloned().collect()
}

/// Image codes of every image of `set`, in order.
fn encode_all<B: Backend>(vqvae: &VqVae<B>, set: &ImageSet, batch_size: usize, device: &B::Device) -> Vec<Vec<u32>> {
    let indices: Vec<usize> = (0..set.len).collect();
    let mut codes = Vec::with_capacity(set.len);
    for chunk in indices.chunks(batch_size.max(1)) {
        codes.extend(image_codes(vqvae, gather::<B>(set, chunk, PixelRange::ZeroOne, device).images));
    }
    codes
}

/// Mean text and image cross-entropies over `set`, in nats.
fn token_loss<B: Backend>(g: &DalleGenerator<B>, set: &TokenSet, batch_size: usize, device: &B::Device) -> (f64, f64) {
    let indices: Vec<usize> = (0..set.len).collect();
    let (mut text, mut image) = (0.0, 0.0);
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = set.gather::<B>(chunk, device);
        let out = g.dalle.loss(batch.text, batch.image);
        text += out.text.into_scalar().elem::<f64>() * chunk.len() as f64;
        image += out.image.into_scalar().elem::<f64>() * chunk.len() as f64;
    }
    let n = set.len.max(1) as f64;
    (text / n, image / n)
}

/// Share of [`EVAL_PER_CLASS`] samples per class caption that `classifier` puts in that class.
fn class_accuracy<B: Backend>(
    g: &DalleGenerator<B>,
    per_class: &[String],
    classifier: &Extractor<B>,
    guidance: Option<f64>,
    device: &B::Device,
) -> Result<f64> {
    let mut hits = 0usize;
    for (class, caption) in per_class.iter().enumerate() {
        let sampling = TokenSampling { guidance, seed: 1000 + class as u64, ..TokenSampling::default() };
        let images: Tensor<B, 4> = g.generate(Some(caption), EVAL_PER_CLASS, &sampling, device)?;
        let (_, logits) = classifier.run(images);
        let predicted: Vec<i64> = logits.argmax(1).into_data().iter::<i64>().collect();
        hits += predicted.iter().filter(|&&p| p == class as i64).count();
    }
    Ok(hits as f64 / (per_class.len() * EVAL_PER_CLASS).max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DALLE: &str = r#"
name = "t"
[data]
format = "mnist"
path = "datasets/mnist-sample"
[model]
family = "dalle"
tokenizer = "experiments/vqvae-mnist.toml"
width = 64
[train]
steps = 10
[train.dalle]
label_captions = ["zero", "one"]
"#;

    fn data(classes: Option<usize>, captions: bool) -> DataInfo {
        DataInfo { image: [1, 28, 28], classes, test_is_train: false, captions }
    }

    fn resolve(text: &str, data: Option<&DataInfo>) -> Result<Resolved> {
        Dalle::resolve(&Experiment::parse(text)?, data)
    }

    #[test]
    fn the_preset_takes_the_overrides_and_the_captions_are_checked() {
        let r = resolve(DALLE, Some(&data(Some(2), false))).unwrap();
        assert_eq!((r.model.width, r.model.layers, r.text_vocab, r.text_len), (64, 4, TEXT_VOCAB, None));
        assert_eq!(r.label_captions.as_deref(), Some(&["zero".to_string(), "one".to_string()][..]));
        let r = resolve(&DALLE.replace("width = 64", "preset = \"gpt-mini\""), None).unwrap();
        assert_eq!((r.model.width, r.model.layers, r.model.heads), (192, 6, 6));
        let err = resolve(DALLE, Some(&data(Some(3), false))).unwrap_err().to_string();
        assert!(err.contains("2 captions for 3 classes"), "{err}");
        let bare = DALLE.replace("label_captions = [\"zero\", \"one\"]", "");
        let err = resolve(&bare, Some(&data(Some(2), false))).unwrap_err().to_string();
        assert!(err.contains("no captions") && err.contains("label_captions"), "{err}");
        // A captioned set needs none; a prior needs no captions at all.
        resolve(&bare, Some(&data(None, true))).unwrap();
        let prior = resolve(&bare.replace("width = 64", "text_len = 0"), Some(&data(Some(2), false))).unwrap();
        assert!(prior.prior() && prior.train.caption_dropout == 0.0);
    }

    #[test]
    fn bad_tables_name_the_key() {
        let err = resolve(&DALLE.replace("tokenizer = \"experiments/vqvae-mnist.toml\"", ""), None).unwrap_err();
        assert!(err.to_string().contains("model.tokenizer: missing"), "{err}");
        let err = resolve(&DALLE.replace("width = 64", "width = 63\nheads = 4"), None).unwrap_err().to_string();
        assert!(err.contains("heads = 4") && err.contains("width = 63"), "{err}");
        let err = resolve(&DALLE.replace("width = 64", "text_vocab = 100"), None).unwrap_err().to_string();
        assert!(err.contains("model.text_vocab = 100"), "{err}");
        let err = resolve(&format!("{DALLE}caption_dropout = 1.5\n"), None).unwrap_err().to_string();
        assert!(err.contains("train.dalle") && err.contains("caption_dropout"), "{err}");
        let err = resolve(&DALLE.replace("width = 64", "depth = 3"), None).unwrap_err().to_string();
        assert!(err.contains("model") && err.contains("depth"), "{err}");
        let err = resolve(
            &DALLE.replace("tokenizer = \"experiments/vqvae-mnist.toml\"", "tokenizer = \"nowhere\""),
            Some(&data(Some(2), false)),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("nowhere") && err.contains("not a trained model directory"), "{err}");
        assert_eq!(
            Dalle::first_stage(&Experiment::parse(DALLE).unwrap()).unwrap(),
            Some(PathBuf::from("experiments/vqvae-mnist.toml"))
        );
    }

    #[test]
    fn previews_spread_over_the_distinct_captions() {
        let captions: Vec<String> = (0..20).map(|i| format!("c{}", i / 2)).collect();
        assert_eq!(spread(&captions, 5), ["c0", "c2", "c4", "c6", "c8"]);
        assert_eq!(spread(&captions[..4], 8), ["c0", "c1"]);
    }
}
