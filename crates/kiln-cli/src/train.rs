//! `kiln train`: experiment file → run directory with metrics, grids, checkpoint and evaluation.
//!
//! What every family shares lives here — the run directory and its records, the data, the loop
//! settings, Ctrl-C, the closing report — and [`TrainRun`] hands it to the family's adapter
//! (`family/`), which builds its task and trains it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use kiln_core::{ImageBatch, Task, UtcTime};
use kiln_data::{Batcher, ImageSet};
use kiln_device::{DeviceInfo, Job};
use kiln_optim::GradSync;
use kiln_train::{LoopConfig, StopReason, Summary, fit};
use serde::Serialize;

use crate::experiment::{Experiment, SAFE_ON_RESUME};
use crate::family::Family;
use crate::family::registry::{self, Visit};

/// `kiln train`'s arguments.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The experiment file, e.g. experiments/vae-mnist.toml (with --resume: the run's own).
    #[arg(required_unless_present = "resume")]
    pub experiment: Option<PathBuf>,
    /// Continue the run in this directory from its newest checkpoint, bit for bit. A checkpoint
    /// whose files fail their checksums (kiln.json) or do not load is skipped, saying why.
    #[arg(long, conflicts_with_all = ["out", "seed"])]
    pub resume: Option<PathBuf>,
    /// With --resume: continue from the checkpoint of this step instead of the newest (newer ones
    /// are moved to checkpoints/set-aside/).
    #[arg(long, value_name = "STEP", requires = "resume")]
    pub resume_from: Option<usize>,
    /// Run directory (default: runs/<name>/<UTC time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override the experiment's step budget (the run's total, counting resumed steps).
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<usize>,
    /// Train for this many passes over the training set instead of a step count.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after this much wall time, with a checkpoint: 90s, 10m, 1h30m.
    #[arg(long, value_parser = parse_duration)]
    pub time_budget: Option<Duration>,
    /// Override the experiment's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Data-parallel over N processes (ranks) on this machine, each training on its share of every
    /// batch: the effective batch is N × train.batch_size, the cores are divided between them.
    /// kiln starts them with mpirun (a kiln built with `--features mpi`); on several hosts, start
    /// `mpirun … kiln train …` yourself (README, "Several processes and hosts"). A device list,
    /// `--device cuda:0,cuda:1`, starts one rank per device the same way.
    #[arg(long, value_name = "N")]
    pub world_size: Option<usize>,
    /// Seconds any exchange between ranks may take before the run stops with an error (a rank
    /// died or hangs where mpirun did not notice).
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0)]
    pub dist_timeout: f64,
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

/// The file a run's resolved family settings go to.
pub const RESOLVED_FILE: &str = "resolved.json";

pub fn run(args: TrainArgs, device: &str, threads: usize, threads_given: bool) -> Result<()> {
    let devices = crate::dist::device_list(device)?;
    let sync: Option<Arc<dyn GradSync>> = match crate::dist::mode(&args, &devices)? {
        crate::dist::Mode::Alone => None,
        crate::dist::Mode::Launch { world } => return crate::dist::launch(&args, world, threads, threads_given),
        crate::dist::Mode::Rank => Some(crate::dist::join(&args)?),
    };
    let rank0 = sync.as_ref().filter(|s| s.rank() == 0).cloned();
    // Several GPUs of one host: each rank takes its entry of a `--device cuda:0,cuda:1` list, or
    // with a bare `--device cuda` the GPU of its local rank, as the MPI launcher numbers the ranks
    // of this host.
    let device = match &sync {
        Some(_) => crate::dist::rank_device(&devices, crate::dist::local_rank())?,
        None => devices[0].clone(),
    };
    let device = device.as_str();
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
    train_stage(args, device, stop, sync)?;
    if let Some((n, seconds)) = rank0.and_then(|s| s.exchange_time()).filter(|(n, _)| *n > 0) {
        eprintln!(
            "kiln: rank 0 spent {seconds:.2} s in {n} exchanges with the other ranks ({:.2} ms each, waiting included)",
            1e3 * seconds / n as f64
        );
    }
    Ok(())
}

/// The run directory's sub-directory where a family's first stage trains (a DALL·E's VQ-VAE).
pub const FIRST_STAGE_DIR: &str = "tokenizer";

/// Trains one experiment (after its first stage, if its family has one); with `sync`, as one rank
/// of a data-parallel run.
fn train_stage(args: TrainArgs, device: &str, stop: Arc<AtomicBool>, sync: Option<Arc<dyn GradSync>>) -> Result<()> {
    let lead = sync.as_ref().is_none_or(|s| s.rank() == 0);
    let experiment = match (&args.experiment, &args.resume) {
        (Some(file), _) => file.clone(),
        (None, Some(run)) => run.join("experiment.toml"),
        (None, None) => anyhow::bail!("give an experiment file or --resume RUN_DIR"),
    };
    let mut exp = anchored(Experiment::load(&experiment)?)?;
    if let Some(seed) = args.seed {
        exp.seed = seed;
    }
    if let Some(budget) = args.time_budget {
        exp.train.time_budget_s = Some(budget.as_secs_f64());
    }
    let stamp = UtcTime::now().stamp();
    let default_out = args.resume.is_none() && args.out.is_none();
    let out = match (&args.resume, args.out) {
        (Some(run), _) => run.clone(),
        (None, Some(out)) => out,
        (None, None) => PathBuf::from("runs").join(&exp.name).join(&stamp),
    };
    anyhow::ensure!(args.resume.is_none() || out.is_dir(), "--resume {}: no such run directory", out.display());
    if let (Some(run), Some(file)) = (&args.resume, &args.experiment) {
        // Checked before anything is written: a resumed run continues the experiment it began.
        let recorded = anchored(Experiment::load(&run.join("experiment.toml")).context("the run's own experiment")?)?;
        let changed = recorded.changed_keys(&exp)?;
        let fixed: Vec<&String> = changed.iter().filter(|k| !SAFE_ON_RESUME.contains(&k.as_str())).collect();
        anyhow::ensure!(
            fixed.is_empty(),
            "{}: differs from {} in {}; a resumed run continues the experiment it started with (only {} may \
             change) — resume with `kiln train --resume {}` alone, or start a new run",
            file.display(),
            run.join("experiment.toml").display(),
            fixed.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
            SAFE_ON_RESUME.join(", "),
            run.display()
        );
    }
    // Fail fast, before loading data or a device, on a run directory that cannot be used.
    check_checkpoints(args.resume.is_some(), &out)?;
    // Load the data before choosing a device, so a bad path fails fast and without a GPU.
    let loaded = exp.data.load().with_context(|| experiment.display().to_string())?;
    let (train, test, captions) = (loaded.train, loaded.test, loaded.captions);
    if let Some(steps) = args.steps {
        anyhow::ensure!(steps > 0, "--steps 0: must be at least 1");
        exp.train.steps = steps;
    }
    if let Some(epochs) = args.epochs {
        let per_epoch = train.len / exp.train.batch_size.max(1);
        anyhow::ensure!(epochs > 0 && per_epoch > 0, "--epochs {epochs}: must be at least 1");
        exp.train.steps = epochs * per_epoch;
    }
    let resume_at = match args.resume_from {
        Some(step) => {
            let all = kiln_train::list_checkpoints(&out);
            anyhow::ensure!(
                all.iter().any(|(s, _)| *s == step),
                "--resume-from {step}: {} has no checkpoint at that step (it has steps {})",
                out.display(),
                all.iter().map(|(s, _)| s.to_string()).collect::<Vec<_>>().join(", ")
            );
            Some(step)
        }
        None => kiln_train::latest_checkpoint(&out).map(|(at, _)| at),
    };
    if args.resume.is_some()
        && let Some(at) = resume_at
        && at >= exp.train.steps
    {
        anyhow::bail!(
            "{}: the run is at step {at}, so {} steps leave nothing to train; give --steps above {at} to continue it",
            out.display(),
            exp.train.steps
        );
    }
    anyhow::ensure!(
        exp.train.batch_size <= train.len,
        "train.batch_size = {}: larger than the {} training images",
        exp.train.batch_size,
        train.len
    );
    let data = DataInfo::of(&train, loaded.one_split, captions.is_some())?;
    let family = exp.family()?.to_string();
    if let Some(sync) = &sync {
        // Every rank must train the same experiment, with the same overrides, on the same data.
        let text = toml::to_string(&exp).context("serialising the experiment")?;
        sync.agree(crate::dist::digest(&[text.as_bytes(), &(train.len as u64).to_le_bytes()]))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let world = sync.world_size();
        anyhow::ensure!(
            exp.train.batch_size * world <= train.len,
            "train.batch_size = {} × {world} ranks: larger than the {} training images",
            exp.train.batch_size,
            train.len
        );
    }
    // Check the whole experiment before a first stage spends minutes on its part.
    registry::with_family(&family, Resolve { exp: &exp, data: &data })??;
    // Only now, with the experiment checked, is the run directory made (a default one claimed
    // under a unique name) and locked; the lock is held until this function returns and dies with
    // the process. The checkpoint check is repeated under it: another run may have written one.
    let out = match out.parent() {
        Some(parent) if default_out && lead => unique_run_dir(parent, &stamp)?,
        _ => out,
    };
    // Rank 0 of a data-parallel run holds the lock for all of them.
    let _lock = if lead { Some(lock_run_dir(&out)?) } else { None };
    check_checkpoints(args.resume.is_some(), &out)?;
    if let Some(first) = registry::first_stage(&exp)? {
        let dir = out.join(FIRST_STAGE_DIR);
        let done = kiln_train::latest_checkpoint(&dir)
            .is_some_and(|(step, _)| Experiment::load(&first).is_ok_and(|stage| step >= stage.train.steps));
        if done {
            eprintln!("kiln: first stage {} already trained in {}", first.display(), dir.display());
        } else {
            eprintln!("kiln: first stage: {} → {}", first.display(), dir.display());
            let resume = kiln_train::latest_checkpoint(&dir).is_some();
            let stage = TrainArgs {
                experiment: Some(first.clone()),
                resume: resume.then(|| dir.clone()),
                resume_from: None,
                out: Some(dir.clone()),
                steps: None,
                epochs: None,
                time_budget: None,
                seed: None,
                quiet: args.quiet,
                world_size: args.world_size,
                dist_timeout: args.dist_timeout,
            };
            train_stage(stage, device, stop.clone(), sync.clone())
                .with_context(|| format!("first stage {}", first.display()))?;
            anyhow::ensure!(
                !stop.load(Ordering::SeqCst),
                "stopped during the first stage; the same command again (`kiln train {} --out {}`) continues it",
                experiment.display(),
                out.display()
            );
        }
    }
    let mut loop_config = loop_config(&exp, &out, args.resume.is_some(), stop, args.quiet);
    loop_config.resume_from = args.resume_from;
    loop_config.sync = sync;
    let start = Start { exp: &exp, loop_config, train, test, data, captions, device };
    registry::with_family(&family, start)?
}

/// `exp` with a `data.path` that names a directory here made absolute: the run records it so, and
/// `kiln reconstruct` and `kiln eval` then find the data from any working directory. (A name such
/// as `cifar-10`, resolved in the data directory at load, is kept as written.)
fn anchored(mut exp: Experiment) -> Result<Experiment> {
    if exp.data.path.exists() {
        exp.data.path =
            std::path::absolute(&exp.data.path).with_context(|| format!("data.path = {}", exp.data.path.display()))?;
    }
    Ok(exp)
}

/// Resolves the family's settings against the data, then trains on the device.
struct Start<'a> {
    exp: &'a Experiment,
    loop_config: LoopConfig,
    train: Arc<ImageSet>,
    test: Arc<ImageSet>,
    data: DataInfo,
    captions: Option<Arc<Vec<String>>>,
    device: &'a str,
}

/// Resolves a family's settings against the data, only to check them.
struct Resolve<'a> {
    exp: &'a Experiment,
    data: &'a DataInfo,
}

impl Visit for Resolve<'_> {
    type Output = Result<()>;

    fn visit<F: Family>(self) -> Result<()> {
        F::resolve(self.exp, Some(self.data)).map(drop)
    }
}

impl Visit for Start<'_> {
    type Output = Result<()>;

    fn visit<F: Family>(self) -> Result<()> {
        let resolved = F::resolve(self.exp, Some(&self.data))?;
        let job = TrainJob::<F> {
            exp: self.exp,
            loop_config: self.loop_config,
            train: self.train,
            test: self.test,
            data: self.data,
            captions: self.captions,
            resolved,
        };
        kiln_device::run_on(self.device, job)?
    }
}

struct TrainJob<'a, F: Family> {
    exp: &'a Experiment,
    loop_config: LoopConfig,
    train: Arc<ImageSet>,
    test: Arc<ImageSet>,
    data: DataInfo,
    captions: Option<Arc<Vec<String>>>,
    resolved: F::Resolved,
}

impl<F: Family> Job for TrainJob<'_, F> {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device, info: &DeviceInfo) -> Result<()> {
        let run = TrainRun {
            exp: self.exp,
            loop_config: self.loop_config,
            device_name: &info.description,
            train: self.train,
            test: self.test,
            data: self.data,
            captions: self.captions,
        };
        F::train::<B>(run, self.resolved, &device)
    }
}

/// A fresh run needs a directory without checkpoints; a resumed one, one with.
fn check_checkpoints(resume: bool, out: &Path) -> Result<()> {
    match (resume, kiln_train::latest_checkpoint(out)) {
        (true, None) => {
            let unfinished = std::fs::read_dir(out.join("checkpoints"))
                .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with(".tmp-step-")))
                .unwrap_or(false);
            if unfinished {
                anyhow::bail!(
                    "{}: no complete checkpoint to resume from: checkpoints/ holds only an unfinished one \
                     (.tmp-step-*, left when a run died while writing it); start the run again",
                    out.display()
                )
            }
            anyhow::bail!("{}: no checkpoint to resume from (checkpoints/ is empty)", out.display())
        }
        (false, Some((step, _))) => anyhow::bail!(
            "{}: already holds a checkpoint at step {step}; resume it (--resume) or choose another --out",
            out.display()
        ),
        _ => Ok(()),
    }
}

/// The lock file in a run directory (holding the pid of the process training there).
pub const LOCK_FILE: &str = ".lock";

/// Takes an OS lock on `RUN/.lock` (creating RUN), so that two `kiln train` processes never
/// write one run directory: the second fails at once, naming the holder's pid. The lock lives as
/// long as the returned file and dies with the process, so a crashed run does not block the next.
fn lock_run_dir(out: &Path) -> Result<std::fs::File> {
    use std::io::Write;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create run directory", out.display()))?;
    let path = out.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("{}: cannot open the run's lock file", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)
                .and_then(|()| write!(file, "{}", std::process::id()))
                .with_context(|| format!("{}: cannot write the run's lock file", path.display()))?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "{}: another `kiln train` (pid {}) is training in this run directory; wait for it to finish or \
                 choose another --out",
                out.display(),
                holder.trim()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("{}: cannot lock the run directory", path.display()))
        }
    }
}

/// `parent/stamp`, or `parent/stamp-1`, `-2`, … if that exists: claimed by creating it, so two
/// runs started within the same second get two directories.
pub(crate) fn unique_run_dir(parent: &Path, stamp: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(parent).with_context(|| format!("{}: cannot create directory", parent.display()))?;
    for i in 0..1000 {
        let dir = parent.join(if i == 0 { stamp.to_string() } else { format!("{stamp}-{i}") });
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("{}: cannot create run directory", dir.display())),
        }
    }
    anyhow::bail!("{}: a thousand runs already started at {stamp}", parent.display())
}

/// What a family may ask of the training data before choosing its model's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataInfo {
    /// `[C, H, W]` of the images.
    pub image: [usize; 3],
    /// Classes of a labelled set (largest label + 1), `None` for an unlabelled one.
    pub classes: Option<usize>,
    /// The test split is the training set (a one-split data set such as emoji).
    pub test_is_train: bool,
    /// Every image has a caption ([`TrainRun::captions`]).
    pub captions: bool,
}

impl DataInfo {
    fn of(train: &ImageSet, one_split: bool, captions: bool) -> Result<Self> {
        let classes = match train.labels.iter().max() {
            None => None,
            Some(&max) => {
                let k = max as usize + 1;
                anyhow::ensure!(
                    k <= 10_000,
                    "data: label {max} — more than 10,000 classes is not a class-conditional set"
                );
                Some(k)
            }
        };
        Ok(Self { image: [train.channels, train.height, train.width], classes, test_is_train: one_split, captions })
    }
}

/// One training run as a family adapter sees it: the experiment, the loop settings, the data.
pub struct TrainRun<'a> {
    /// The experiment.
    pub exp: &'a Experiment,
    /// Budget, logging, checkpoints, Ctrl-C.
    pub loop_config: LoopConfig,
    /// The device, described for records.
    pub device_name: &'a str,
    /// The training images.
    pub train: Arc<ImageSet>,
    /// The test images (the training images again for a one-split set).
    pub test: Arc<ImageSet>,
    /// Facts about the data.
    pub data: DataInfo,
    /// One caption per training image, for captioned sets (emoji).
    pub captions: Option<Arc<Vec<String>>>,
}

impl TrainRun<'_> {
    /// The run directory.
    pub fn out(&self) -> &Path {
        &self.loop_config.out_dir
    }

    /// Whether this process writes the run: alone, or rank 0 of a data-parallel run (the other
    /// ranks only train).
    pub fn lead(&self) -> bool {
        self.shard().0 == 0
    }

    /// `(rank, world)` of a data-parallel run, `(0, 1)` alone: a family whose loader is its own
    /// (not [`TrainRun::fit`]'s images) shards it with this.
    pub fn shard(&self) -> (usize, usize) {
        self.loop_config.sync.as_ref().map_or((0, 1), |s| (s.rank(), s.world_size()))
    }

    /// Checks the images fit a model of `channels`×`size`×`size`, makes the run directory,
    /// records the run and the family's resolved settings, and seeds the device.
    pub fn prepare<B: AutodiffBackend>(
        &self,
        family: &str,
        image: [usize; 3],
        resolved: &impl Serialize,
        device: &B::Device,
    ) -> Result<()> {
        let exp = self.exp;
        let [c, h, w] = image;
        let [dc, dh, dw] = self.data.image;
        anyhow::ensure!(
            [dc, dh, dw] == image,
            "{}: images are {dc}×{dh}×{dw} but the model expects {c}×{h}×{w} (model.preset / image size)",
            exp.data.path.display(),
        );
        let out = self.out();
        // Every rank seeds alike, so every rank builds the same initial weights.
        B::seed(device, exp.seed);
        if !self.lead() {
            return Ok(());
        }
        std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create run directory", out.display()))?;
        write_run_info(exp, out, self.device_name, self.loop_config.resume)?;
        let resolved = serde_json::json!({ "family": family, "settings": resolved });
        kiln_core::atomic_write(&out.join(RESOLVED_FILE), serde_json::to_string_pretty(&resolved)?.as_bytes())?;
        let verb = if self.loop_config.resume { "resuming" } else { "training" };
        let world = self.shard().1;
        let ranks = if world > 1 { format!(" × {world} ranks") } else { String::new() };
        eprintln!(
            "kiln: {verb} {} ({family}) on {}{ranks}: {} steps of {} images{ranks} ({} training images) → {}",
            exp.name,
            self.device_name,
            exp.train.steps,
            exp.train.batch_size,
            self.train.len,
            out.display()
        );
        Ok(())
    }

    /// Trains `task` on the training images, in the pixel range the task asks for.
    pub fn fit<B: AutodiffBackend, T: Task<B, Batch = ImageBatch<B>>>(
        &self,
        task: &mut T,
        device: &B::Device,
    ) -> Result<Summary> {
        let augment = self.exp.data.augment.unwrap_or_default().augment();
        let (rank, world) = self.shard();
        let batches = Batcher::new(self.train.clone(), self.exp.train.batch_size, task.pixel_range(), self.exp.seed)?
            .with_augment(augment)
            .with_shard(rank, world)?;
        Ok(fit(task, &mut batches.on::<B>(device), &self.loop_config)?)
    }

    /// Trains `task` on batches from `loader`, for families whose batches are not images (a
    /// DALL·E's token rows). In a data-parallel run the family shards `loader` itself
    /// ([`TrainRun::shard`]).
    pub fn fit_with<B: AutodiffBackend, T: Task<B>, L: kiln_core::Loader<Batch = T::Batch>>(
        &self,
        task: &mut T,
        loader: &mut L,
    ) -> Result<Summary> {
        Ok(fit(task, loader, &self.loop_config)?)
    }

    /// The mean over the test split of a per-image figure: `per_image` gets batches of
    /// `batch_size` test images in `[0, 1]` and returns their mean (e.g. a loss), which is
    /// weighted by the batch's size. Families with a test loss (the VAE's and DRAW's negative
    /// ELBO) report it through this.
    pub fn test_mean<B: burn::tensor::backend::Backend>(
        &self,
        batch_size: usize,
        device: &B::Device,
        mut per_image: impl FnMut(burn::tensor::Tensor<B, 4>) -> f64,
    ) -> f64 {
        let indices: Vec<usize> = (0..self.test.len).collect();
        let mut total = 0.0;
        for chunk in indices.chunks(batch_size.max(1)) {
            let x = kiln_data::gather::<B>(&self.test, chunk, kiln_core::PixelRange::ZeroOne, device).images;
            total += per_image(x) * chunk.len() as f64;
        }
        total / self.test.len.max(1) as f64
    }

    /// Writes the family's evaluation of the trained model as `eval.json`.
    pub fn write_eval(&self, eval: &serde_json::Value) -> Result<()> {
        if !self.lead() {
            return Ok(());
        }
        Ok(kiln_core::atomic_write(&self.out().join("eval.json"), serde_json::to_string_pretty(eval)?.as_bytes())?)
    }

    /// The closing lines every run prints, with the family's own figures in `extra`.
    pub fn report(&self, summary: &Summary, extra: &str) {
        if !self.lead() {
            return;
        }
        let why = match summary.stopped_by {
            StopReason::Steps => "",
            StopReason::Time => " (time budget reached; --resume continues)",
            StopReason::Signal => " (stopped; --resume continues)",
        };
        let out = self.out();
        eprintln!(
            "kiln: step {} of {}{why}, {:.1} s this session ({:.0} img/s){extra}\nkiln: checkpoint: {}\nkiln: \
             metrics: {} (one JSON line per logged step; curves in {})",
            summary.steps,
            self.exp.train.steps,
            summary.wall_s,
            summary.examples_per_s,
            summary.checkpoint.display(),
            out.join("metrics.jsonl").display(),
            out.join("losses.png").display(),
        );
        // What a user runs next, with this run's directory filled in.
        let generator = self.exp.family().is_ok_and(|f| registry::all().iter().any(|i| i.name == f && i.generator));
        let run = out.display();
        if summary.stopped_by != StopReason::Steps {
            eprintln!("kiln: next: kiln train --resume {run}");
        } else if generator {
            eprintln!("kiln: next: kiln sample --checkpoint {run} --out grid.png   ·   kiln eval --checkpoint {run}");
        }
    }
}

fn loop_config(exp: &Experiment, out: &Path, resume: bool, stop: Arc<AtomicBool>, quiet: bool) -> LoopConfig {
    LoopConfig {
        steps: exp.train.steps,
        time_budget: exp.train.time_budget_s.map(Duration::from_secs_f64),
        log_every: exp.train.log_every,
        preview_every: exp.train.preview_every,
        checkpoint_every: exp.train.checkpoint_every,
        keep_checkpoints: exp.train.keep_checkpoints,
        seed: exp.seed,
        resume,
        resume_from: None,
        stop: Some(stop),
        out_dir: out.to_path_buf(),
        progress: !quiet,
        sync: None,
    }
}

/// Writes the experiment as read and the facts needed to reproduce the run.
///
/// A resumed run keeps its `run.json` and records the resume in `resumes.jsonl`.
fn write_run_info(exp: &Experiment, out: &Path, device_name: &str, resume: bool) -> Result<()> {
    // What a resume changed (budget and bookkeeping only: anything else was refused up front).
    let changed = match Experiment::load(&out.join("experiment.toml")) {
        Ok(before) if resume => before.changed_keys(exp)?,
        _ => Vec::new(),
    };
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
        "family": exp.family()?,
        "seed": exp.seed,
        "git_revision": git,
        "device": device_name,
        "kiln_version": env!("CARGO_PKG_VERSION"),
        // args_os: a path that is not UTF-8 is recorded lossily instead of panicking.
        "command": std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        "started_utc": UtcTime::now().stamp(),
    });
    if resume {
        use std::io::Write;
        let mut info = info;
        info["changed"] = serde_json::json!(changed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_started_in_the_same_second_get_their_own_directories() {
        let parent = std::env::temp_dir().join(format!("kiln-unique-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&parent);
        let a = unique_run_dir(&parent, "20261202T180000Z").unwrap();
        let b = unique_run_dir(&parent, "20261202T180000Z").unwrap();
        assert_eq!(a, parent.join("20261202T180000Z"));
        assert_eq!(b, parent.join("20261202T180000Z-1"));
        // The lock is exclusive while held and free once dropped.
        let held = lock_run_dir(&a).unwrap();
        let err = lock_run_dir(&a).unwrap_err().to_string();
        assert!(err.contains(&format!("(pid {})", std::process::id())), "{err}");
        drop(held);
        lock_run_dir(&a).unwrap();
        std::fs::remove_dir_all(&parent).unwrap();
    }
}
