//! `kiln train`: experiment file → run directory with metrics, grids, checkpoint and evaluation.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use kiln_data::{Batcher, EmojiSet, ImageSet, Mnist, Range, Split, gather};
use kiln_features::{ClassifierTask, accuracy};
use kiln_gan::GanTask;
use kiln_train::{LoopConfig, StopReason, Summary, fit};
use kiln_vae::{Vae, VaeTask, VaeTaskConfig};

use crate::device::{self, Job};
use crate::experiment::{ClassifierSpec, DataFormat, Experiment, GanSpec, ModelSpec, VaeSpec};

/// Arguments of `kiln train` other than the device.
pub struct TrainArgs {
    pub experiment: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub steps: Option<usize>,
    pub epochs: Option<usize>,
    pub time_budget: Option<Duration>,
    pub seed: Option<u64>,
    pub quiet: bool,
}

/// Parses `90`, `90s`, `10m`, `1h30m`, `2h` into a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?}: expected a duration such as 90s, 10m or 1h30m");
    if let Ok(secs) = text.parse::<f64>() {
        return if secs.is_finite() && secs > 0.0 { Ok(Duration::from_secs_f64(secs)) } else { Err(bad()) };
    }
    let (mut total, mut number) = (0.0, String::new());
    for c in text.chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            _ => return Err(bad()),
        };
        total += number.parse::<f64>().map_err(|_| bad())? * unit;
        number.clear();
    }
    if !number.is_empty() || total <= 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

/// Images in the fixed reconstruction preview.
const PREVIEW_RECON: usize = 32;

pub fn run(args: TrainArgs, device: &str) -> Result<()> {
    let experiment = match (&args.experiment, &args.resume) {
        (Some(file), _) => file.clone(),
        (None, Some(run)) => run.join("experiment.toml"),
        (None, None) => anyhow::bail!("give an experiment file or --resume RUN_DIR"),
    };
    let mut exp = Experiment::load(&experiment)?;
    if let Some(seed) = args.seed {
        exp.seed = seed;
    }
    if let Some(budget) = args.time_budget {
        exp.train.time_budget_s = Some(budget.as_secs_f64());
    }
    let out = match (&args.resume, args.out) {
        (Some(run), _) => run.clone(),
        (None, Some(out)) => out,
        (None, None) => PathBuf::from("runs").join(&exp.name).join(utc_stamp()),
    };
    // Fail fast, before loading data or a device, on a run directory that cannot be used.
    match (args.resume.is_some(), kiln_train::latest_checkpoint(&out)) {
        (true, None) => anyhow::bail!("{}: no checkpoint to resume from (checkpoints/ is empty)", out.display()),
        (false, Some((step, _))) => anyhow::bail!(
            "{}: already holds a checkpoint at step {step}; resume it (--resume) or choose another --out",
            out.display()
        ),
        _ => {}
    }
    // Load the data before choosing a device, so a bad path fails fast and without a GPU.
    let (train, test) = load_data(&exp).with_context(|| experiment.display().to_string())?;
    if let Some(steps) = args.steps {
        anyhow::ensure!(steps > 0, "--steps 0: must be at least 1");
        exp.train.steps = steps;
    }
    if let Some(epochs) = args.epochs {
        let per_epoch = train.len / exp.train.batch_size.max(1);
        anyhow::ensure!(epochs > 0 && per_epoch > 0, "--epochs {epochs}: must be at least 1");
        exp.train.steps = epochs * per_epoch;
    }
    // Ctrl-C or SIGTERM: finish the step, checkpoint, exit 0. A second Ctrl-C aborts at once.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nkiln: aborted");
            std::process::exit(130);
        }
        eprintln!("\nkiln: stopping after this step with a checkpoint (Ctrl-C again to abort)");
    })
    .context("installing the Ctrl-C handler")?;
    let resume = args.resume.is_some();
    device::run_on(device, TrainJob { exp, out, resume, stop, quiet: args.quiet, train, test })
}

/// The training and test images. Emoji has one split, used for both.
fn load_data(exp: &Experiment) -> Result<(Arc<ImageSet>, Arc<ImageSet>)> {
    match exp.data.format {
        DataFormat::Mnist => {
            let load = |split| Mnist::load(&exp.data.path, split).context("data.path");
            Ok((Arc::new(load(Split::Train)?), Arc::new(load(Split::Test)?)))
        }
        DataFormat::Emoji => {
            let set = Arc::new(EmojiSet::load(&exp.data.path).context("data.path")?.images);
            Ok((set.clone(), set))
        }
    }
}

struct TrainJob {
    exp: Experiment,
    out: PathBuf,
    resume: bool,
    stop: Arc<AtomicBool>,
    quiet: bool,
    train: Arc<ImageSet>,
    test: Arc<ImageSet>,
}

impl Job for TrainJob {
    fn run<B: AutodiffBackend>(self, device: B::Device, device_name: &str) -> Result<()> {
        let TrainJob { exp, out, resume, stop, quiet, train, test } = self;
        let batch_size = exp.train.batch_size;
        anyhow::ensure!(
            batch_size <= train.len,
            "train.batch_size = {batch_size}: larger than the {} training images",
            train.len
        );
        let run = Run { loop_config: loop_config(&exp, &out, resume, stop, quiet), exp: &exp, device_name, train };
        match &exp.model {
            ModelSpec::Vae(spec) => run.vae::<B>(spec, &test, &device),
            ModelSpec::Gan(spec) => run.gan::<B>(spec, &device),
            ModelSpec::Classifier(spec) => run.classifier::<B>(spec, &test, &device),
        }
    }
}

/// What every family's training shares: the experiment, the loop settings, the training images.
struct Run<'a> {
    exp: &'a Experiment,
    loop_config: LoopConfig,
    device_name: &'a str,
    train: Arc<ImageSet>,
}

impl Run<'_> {
    /// Checks the images fit a model of `channels`×`size`×`size`, makes the run directory and
    /// records the run.
    fn prepare(&self, channels: usize, size: usize) -> Result<()> {
        let (exp, train) = (self.exp, &self.train);
        anyhow::ensure!(
            (train.channels, train.height, train.width) == (channels, size, size),
            "{}: images are {}×{}×{} but the model expects {channels}×{size}×{size} (model.preset / image size)",
            exp.data.path.display(),
            train.channels,
            train.height,
            train.width
        );
        let out = &self.loop_config.out_dir;
        std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create run directory", out.display()))?;
        write_run_info(exp, out, self.device_name, self.loop_config.resume)?;
        let verb = if self.loop_config.resume { "resuming" } else { "training" };
        eprintln!(
            "kiln: {verb} {} ({}) on {}: {} steps of {} images ({} training images) → {}",
            exp.name,
            exp.model.family(),
            self.device_name,
            exp.train.steps,
            exp.train.batch_size,
            train.len,
            out.display()
        );
        Ok(())
    }

    fn vae<B: AutodiffBackend>(self, spec: &VaeSpec, test: &ImageSet, device: &B::Device) -> Result<()> {
        let exp = self.exp;
        let config = spec.config()?;
        self.prepare(config.channels, config.image_size)?;
        B::seed(device, exp.seed);
        let inner: burn::tensor::Device<B::InnerBackend> = device.clone();
        let fixed_n = PREVIEW_RECON.min(test.len) / 8 * 8;
        let fixed =
            gather::<B::InnerBackend>(test, &(0..fixed_n.max(1)).collect::<Vec<_>>(), Range::ZeroOne, &inner).images;
        let task_config = VaeTaskConfig {
            optim: exp.train.optim.clone().unwrap_or_default(),
            ema_decay: exp.train.ema_decay,
            ..Default::default()
        };
        let mut task = VaeTask::<B>::new(config, &task_config, exp.train.steps, fixed, device)?;
        let mut batches =
            Batcher::new(self.train.clone(), exp.train.batch_size, Range::ZeroOne, exp.seed)?.on::<B>(device);
        let summary = fit(&mut task, &mut batches, &self.loop_config)?;

        let out = &self.loop_config.out_dir;
        let model = task.sampling_model();
        let nelbo = test_nelbo(&model, test, exp.train.batch_size, &inner);
        let eval =
            serde_json::json!({ "split": "test", "images": test.len, "neg_elbo_nats": nelbo, "samples_per_image": 1 });
        kiln_core::atomic_write(&out.join("eval.json"), serde_json::to_string_pretty(&eval)?.as_bytes())?;
        report(exp, &summary, &format!("; test negative ELBO {nelbo:.2} nats/image"));
        eprintln!(
            "kiln: samples: {}  reconstructions: {}",
            out.join("samples.png").display(),
            out.join("reconstructions.png").display()
        );
        Ok(())
    }

    fn gan<B: AutodiffBackend>(self, spec: &GanSpec, device: &B::Device) -> Result<()> {
        let exp = self.exp;
        let classes = class_count(&self.train)?;
        let config = spec.config(classes)?;
        let settings = spec.settings(exp.train.gan.as_ref(), exp.train.ema_decay)?;
        self.prepare(config.channels, config.image_size)?;
        B::seed(device, exp.seed);
        let ema = settings.ema_decay.is_some();
        let mut task = GanTask::<B>::new(config, settings, exp.train.steps, device)?;
        // The generator ends in tanh: real images are scaled to the same [−1, 1].
        let mut batches =
            Batcher::new(self.train.clone(), exp.train.batch_size, Range::MinusOneOne, exp.seed)?.on::<B>(device);
        let summary = fit(&mut task, &mut batches, &self.loop_config)?;
        report(exp, &summary, "");
        let out = &self.loop_config.out_dir;
        let grid = if ema { "samples-ema.png" } else { "samples.png" };
        eprintln!("kiln: samples: {}", out.join(grid).display());
        Ok(())
    }
}

impl Run<'_> {
    fn classifier<B: AutodiffBackend>(self, spec: &ClassifierSpec, test: &ImageSet, device: &B::Device) -> Result<()> {
        let exp = self.exp;
        let classes = class_count(&self.train)?
            .with_context(|| format!("{}: the images have no labels to classify", exp.data.path.display()))?;
        let config = spec.config(self.train.channels, self.train.height, classes)?;
        anyhow::ensure!(
            self.train.height == self.train.width,
            "{}: images are {}×{}; the classifier takes square images",
            exp.data.path.display(),
            self.train.height,
            self.train.width
        );
        self.prepare(config.channels, config.image_size)?;
        B::seed(device, exp.seed);
        let optim = exp.train.optim.clone().unwrap_or_default();
        let mut task = ClassifierTask::<B>::new(config, optim, exp.train.steps, device)?;
        let mut batches =
            Batcher::new(self.train.clone(), exp.train.batch_size, Range::ZeroOne, exp.seed)?.on::<B>(device);
        let summary = fit(&mut task, &mut batches, &self.loop_config)?;
        let inner: burn::tensor::Device<B::InnerBackend> = device.clone();
        let net = task.net();
        // Emoji has one split: its accuracy is on the training images, and says so.
        let split = if exp.data.format == DataFormat::Emoji { "train" } else { "test" };
        let acc = accuracy(&net, test, 256, &inner);
        let train_acc = accuracy(&net, &self.train, 256, &inner);
        let eval =
            serde_json::json!({ "split": split, "images": test.len, "accuracy": acc, "train_accuracy": train_acc });
        kiln_core::atomic_write(
            &self.loop_config.out_dir.join("eval.json"),
            serde_json::to_string_pretty(&eval)?.as_bytes(),
        )?;
        report(exp, &summary, &format!("; {split} accuracy {:.2} %", 100.0 * acc));
        Ok(())
    }
}

/// The number of classes in a labelled set (largest label + 1), `None` for an unlabelled one.
fn class_count(set: &ImageSet) -> Result<Option<usize>> {
    let Some(&max) = set.labels.iter().max() else { return Ok(None) };
    let k = max as usize + 1;
    anyhow::ensure!(k <= 10_000, "data: label {max} — more than 10,000 classes is not a class-conditional set");
    Ok(Some(k))
}

fn loop_config(
    exp: &Experiment,
    out: &std::path::Path,
    resume: bool,
    stop: Arc<AtomicBool>,
    quiet: bool,
) -> LoopConfig {
    LoopConfig {
        steps: exp.train.steps,
        time_budget: exp.train.time_budget_s.map(Duration::from_secs_f64),
        log_every: exp.train.log_every,
        preview_every: exp.train.preview_every,
        checkpoint_every: exp.train.checkpoint_every,
        keep_checkpoints: exp.train.keep_checkpoints,
        seed: exp.seed,
        resume,
        stop: Some(stop),
        out_dir: out.to_path_buf(),
        progress: !quiet,
    }
}

/// The closing lines every run prints.
fn report(exp: &Experiment, summary: &Summary, extra: &str) {
    let why = match summary.stopped_by {
        StopReason::Steps => "",
        StopReason::Time => " (time budget reached; --resume continues)",
        StopReason::Signal => " (stopped; --resume continues)",
    };
    eprintln!(
        "kiln: step {} of {}{why}, {:.1} s this session ({:.0} img/s){extra}\nkiln: checkpoint: {}",
        summary.steps,
        exp.train.steps,
        summary.wall_s,
        summary.examples_per_s,
        summary.checkpoint.display(),
    );
}

/// The negative ELBO (β = 1, one posterior sample per image) averaged over the whole test split.
fn test_nelbo<B: Backend>(model: &Vae<B>, test: &ImageSet, batch_size: usize, device: &B::Device) -> f64 {
    let mut total = 0.0;
    let indices: Vec<usize> = (0..test.len).collect();
    for chunk in indices.chunks(batch_size) {
        let x = gather::<B>(test, chunk, Range::ZeroOne, device).images;
        let l = model.loss(x);
        let per_image = l.recon.into_scalar().elem::<f64>() + l.kl.into_scalar().elem::<f64>();
        total += per_image * chunk.len() as f64;
    }
    total / test.len.max(1) as f64
}

use burn::tensor::ElementConversion;

/// Writes the resolved experiment and the facts needed to reproduce the run.
///
/// A resumed run keeps its `run.json` and records the resume in `resumes.jsonl`.
fn write_run_info(exp: &Experiment, out: &std::path::Path, device_name: &str, resume: bool) -> Result<()> {
    let resolved = toml::to_string_pretty(exp).context("serialising the resolved experiment")?;
    kiln_core::atomic_write(&out.join("experiment.toml"), resolved.as_bytes())?;
    let git = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let info = serde_json::json!({
        "experiment": exp.name,
        "seed": exp.seed,
        "git_revision": git,
        "device": device_name,
        "kiln_version": env!("CARGO_PKG_VERSION"),
        "command": std::env::args().collect::<Vec<_>>(),
        "started_utc": utc_stamp(),
    });
    if resume {
        use std::io::Write;
        let path = out.join("resumes.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| path.display().to_string())?;
        writeln!(f, "{}", serde_json::to_string(&info)?).with_context(|| path.display().to_string())?;
    } else {
        kiln_core::atomic_write(&out.join("run.json"), serde_json::to_string_pretty(&info)?.as_bytes())?;
    }
    Ok(())
}

/// `YYYYMMDD-HHMMSS` in UTC, from the system clock (civil-from-days, no date crate needed).
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}
