//! Trains a GAN preset on a bundled data set through `kiln_train::fit`, on the CPU (burn-flex).
//!
//! ```text
//! cargo run --release -p kiln-gan --example train -- <preset> <data-dir> <steps> <out-dir> [options]
//!   preset   dcgan28 | cgan28 | dcgan32 | sagan32 | dcgan64
//!   data     datasets/mnist-sample (MNIST IDX files) or datasets/emoji-32 (an emoji sheet)
//! options:
//!   --task dcgan|sagan|wgan-gp    training recipe (default: dcgan; sagan for sagan32;
//!                                  dcgan with hinge loss for cgan28)
//!   --loss non-saturating|hinge|least-squares|wasserstein
//!   --r1 GAMMA | --gp LAMBDA       a gradient penalty, with --penalty-every N
//!   --conditional                  condition on the data's labels (sets num_classes)
//!   --d-norm batch|spectral|none   the discriminator's normalisation
//!   --batch N (64)  --seed N (0)  --preview-every N (steps/10)  --width N (ngf = ndf = N)
//!   --ema DECAY | --no-ema
//! ```
//! Writes metrics.jsonl, samples/*.png (fixed-noise grids), samples.png, samples-ema.png,
//! gan.json, generator.safetensors and summary.json into the out dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kiln_data::{Batcher, EmojiSet, ImageSet, Mnist, PixelRange, Split};
use kiln_gan::{GanConfig, GanTask, GanTaskConfig, Penalty};
use kiln_train::{LoopConfig, fit};

type Backend = burn::backend::Autodiff<burn_flex::Flex>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [preset, data, steps, out] = match &args[..args.len().min(4)] {
        [a, b, c, d] => [a.clone(), b.clone(), c.clone(), d.clone()],
        _ => bail!("usage: train <preset> <data-dir> <steps> <out-dir> [options] (see the file's header)"),
    };
    let steps: usize = steps.parse().context("steps must be a number")?;
    let mut model = GanConfig::preset(&preset)
        .with_context(|| format!("unknown preset {preset}; one of {:?}", GanConfig::PRESETS))?;
    let mut task = GanTaskConfig::for_model_preset(&preset).unwrap_or_default();
    let (mut batch, mut seed, mut preview_every, mut conditional) = (64usize, 0u64, (steps / 10).max(1), false);
    let mut rest = args[4..].iter();
    while let Some(flag) = rest.next() {
        let mut value = || rest.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--task" => {
                let name = value()?;
                task = GanTaskConfig::preset(name)
                    .with_context(|| format!("unknown task {name}; one of {:?}", GanTaskConfig::PRESETS))?;
            }
            "--loss" => task.loss = serde_json::from_value(serde_json::json!(value()?)).context("--loss")?,
            "--r1" => task.penalty = Penalty::R1 { gamma: value()?.parse()? },
            "--gp" => task.penalty = Penalty::WganGp { lambda: value()?.parse()? },
            "--penalty-every" => task.penalty_every = value()?.parse()?,
            "--conditional" => conditional = true,
            "--d-norm" => model.d_norm = serde_json::from_value(serde_json::json!(value()?)).context("--d-norm")?,
            "--batch" => batch = value()?.parse()?,
            "--seed" => seed = value()?.parse()?,
            "--preview-every" => preview_every = value()?.parse()?,
            "--width" => {
                let w: usize = value()?.parse()?;
                (model.ngf, model.ndf) = (w, w);
            }
            "--ema" => task.ema_decay = Some(value()?.parse()?),
            "--no-ema" => task.ema_decay = None,
            other => bail!("unknown option {other}"),
        }
    }

    let set = Arc::new(load(Path::new(&data))?);
    if set.channels != model.channels || set.height != model.image_size {
        bail!(
            "{data} holds {}×{}×{} images, preset {preset} wants {}×{}×{}",
            set.channels,
            set.height,
            set.width,
            model.channels,
            model.image_size,
            model.image_size
        );
    }
    let classes = set.labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    if conditional {
        model.num_classes = classes;
    }
    if model.num_classes > 0 && classes > model.num_classes {
        bail!("{data} has labels up to {}, the model only {} classes", classes - 1, model.num_classes);
    }

    let device = Default::default();
    <Backend as burn::tensor::backend::Backend>::seed(&device, seed);
    let mut gan = GanTask::<Backend>::new(model.clone(), task.clone(), steps, &device)?;
    let mut loader = Batcher::new(set.clone(), batch, PixelRange::MinusOneOne, seed)?.on::<Backend>(&device);
    let config = LoopConfig {
        log_every: (steps / 50).clamp(1, 50),
        preview_every,
        seed,
        progress: true,
        ..LoopConfig::new(steps, PathBuf::from(&out))
    };
    eprintln!(
        "{preset}: {} images, batch {batch}, {steps} steps\nmodel {}\ntask {}",
        set.len,
        serde_json::to_string(&model)?,
        serde_json::to_string(&task)?
    );
    let summary = fit(&mut gan, &mut loader, &config)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

fn load(dir: &Path) -> Result<ImageSet> {
    if dir.join("dataset.json").is_file() {
        Ok(EmojiSet::load(dir).with_context(|| format!("loading {}", dir.display()))?.images)
    } else {
        Mnist::load(dir, Split::Train).with_context(|| format!("loading {}", dir.display()))
    }
}
