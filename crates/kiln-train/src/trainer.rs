use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_core::{LoadError, Loader, SaveError, Task};
use serde::Serialize;

use crate::checkpoint::{
    TrainerState, latest_checkpoint, list_checkpoints, read_trainer_state, set_aside, write_checkpoint,
};
use crate::{GridLabels, write_labelled_grid, write_loss_plot};

/// How long and how loudly to train, and where to keep the results.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Total optimisation steps of the run (a resumed run counts the steps already done).
    pub steps: usize,
    /// Stop early once this much wall time has passed in this process (checked after each step);
    /// the run can be resumed later.
    pub time_budget: Option<Duration>,
    /// Write a metrics line (window means) every this many steps.
    pub log_every: usize,
    /// Write preview grids every this many steps (0: only at the end).
    pub preview_every: usize,
    /// Write a checkpoint every this many steps (0: only at the end or when stopped).
    pub checkpoint_every: usize,
    /// Checkpoints to keep; older ones are deleted once a newer one is complete.
    pub keep_checkpoints: usize,
    /// Seeds the backend's random generator before every step, from `(seed, step)`, so the noise a
    /// step draws does not depend on how many processes the run took.
    pub seed: u64,
    /// Continue from the newest valid checkpoint in `out_dir` instead of starting afresh: one
    /// whose files match the checksums in its `kiln.json` and that loads. Newer ones that fail are
    /// skipped with a line saying why, and set aside (see [`LoopConfig::resume_from`]).
    pub resume: bool,
    /// With `resume`: continue from the checkpoint of exactly this step (no fallback); newer
    /// checkpoints are moved to `checkpoints/set-aside/`, since the run now goes another way.
    pub resume_from: Option<usize>,
    /// Set from elsewhere (a Ctrl-C handler) to stop after the current step with a checkpoint.
    pub stop: Option<Arc<AtomicBool>>,
    /// Run directory: `metrics.jsonl`, `samples/`, the latest grids, `checkpoints/`, the final
    /// model and `summary.json`.
    pub out_dir: PathBuf,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Data-parallel: the engine this process (one rank) averages gradients through, installed
    /// for the optimizers while the loop runs. Rank 0 writes everything (metrics, previews,
    /// checkpoints, the model); the others only train. Each rank's loader must be sharded
    /// (`kiln_data::Batcher::with_shard`). `None`: training alone.
    pub sync: Option<std::sync::Arc<dyn kiln_optim::GradSync>>,
}

impl LoopConfig {
    /// A quiet loop of `steps` steps into `out_dir`: logs every 25 steps, previews and a
    /// checkpoint at the end only, seed 0.
    pub fn new(steps: usize, out_dir: impl Into<PathBuf>) -> Self {
        Self {
            steps,
            time_budget: None,
            log_every: 25,
            preview_every: 0,
            checkpoint_every: 0,
            keep_checkpoints: 3,
            seed: 0,
            resume: false,
            resume_from: None,
            stop: None,
            out_dir: out_dir.into(),
            progress: false,
            sync: None,
        }
    }
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// All steps done.
    Steps,
    /// The time budget ran out.
    Time,
    /// The stop flag was raised (Ctrl-C).
    Signal,
}

/// What a finished run reports (also written as `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Steps completed in total.
    pub steps: usize,
    /// The step this process started from (0 unless resumed).
    pub start_step: usize,
    /// Wall time of this process's loop, previews and checkpoints included, in seconds.
    pub wall_s: f64,
    /// Training throughput: examples per second of time spent in `step`.
    pub examples_per_s: f64,
    /// Seconds of this process's loop spent in `step` itself.
    pub step_s: f64,
    /// Seconds spent waiting for the next batch (the loader runs on the loop's thread).
    pub data_s: f64,
    /// Seconds spent writing preview grids and checkpoints (in the loop, between steps).
    pub io_s: f64,
    /// Mean of each metric over the last logging window.
    pub final_metrics: Vec<(String, f64)>,
    /// Why the loop ended.
    pub stopped_by: StopReason,
    /// The last checkpoint written (in summary.json lossily, so a path that is not UTF-8 does
    /// not lose the summary).
    #[serde(serialize_with = "lossy_path")]
    pub checkpoint: PathBuf,
}

/// Why a run stopped without finishing.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The headline loss became NaN or infinite; nothing was written after the last good step.
    #[error("training diverged at step {step}: {metric} = {value} (the last good checkpoint, if any, is untouched)")]
    Diverged {
        /// The step whose loss was not finite.
        step: usize,
        /// Name of the metric.
        metric: &'static str,
        /// Its value.
        value: f64,
    },
    /// `resume` was asked for but there is nothing to resume, or the run directory already holds
    /// checkpoints and `resume` was not asked for.
    #[error("{dir}: {message}")]
    RunDir {
        /// The run directory.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint could not be read back.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A file could not be written.
    #[error(transparent)]
    Save(#[from] SaveError),
    /// A data-parallel exchange failed (a peer died or timed out, or the ranks disagree).
    #[error("data-parallel run: {0}")]
    Sync(#[from] kiln_optim::SyncError),
}

/// Running means of each metric since the last log line.
#[derive(Default)]
struct Window {
    sums: Vec<(&'static str, f64)>,
    count: usize,
}

impl Window {
    fn add(&mut self, metrics: &[(&'static str, f64)]) {
        if self.sums.is_empty() {
            self.sums = metrics.iter().map(|&(k, _)| (k, 0.0)).collect();
        }
        for ((_, sum), (_, v)) in self.sums.iter_mut().zip(metrics) {
            *sum += v;
        }
        self.count += 1;
    }

    fn means(&self) -> Vec<(String, f64)> {
        self.sums.iter().map(|&(k, s)| (k.to_string(), s / self.count.max(1) as f64)).collect()
    }

    fn reset(&mut self) {
        self.sums.iter_mut().for_each(|(_, s)| *s = 0.0);
        self.count = 0;
    }
}

/// The seed of step `step`'s random draws: a SplitMix64 finaliser of the run seed and the step.
pub fn step_seed(seed: u64, step: usize) -> u64 {
    let mut z = seed ^ (step as u64).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The run seed rank `rank` of a data-parallel run draws its steps' noise from (from step 1 on;
/// step 0 draws alike on every rank, see [`fit`]): rank 0's is the run's own (so one process is
/// the run it always was); the others draw other noise (a GAN's latents, a VAE's samples), as the
/// micro-batches of one process would.
pub fn rank_seed(seed: u64, rank: usize) -> u64 {
    if rank == 0 { seed } else { step_seed(seed ^ 0xD15C_0DA7_A5EE_D000, rank) }
}

/// Trains `task` on batches from `loader` as `config` says, writing everything into
/// `config.out_dir`, and returns the run's [`Summary`].
///
/// With `config.resume`, the task, the loader and the step counter are restored from the newest
/// checkpoint first, and `metrics.jsonl` is cut back to that step: the run then continues exactly
/// as if it had never stopped.
pub fn fit<B, T, L>(task: &mut T, loader: &mut L, config: &LoopConfig) -> Result<Summary, TrainError>
where
    B: AutodiffBackend,
    T: Task<B>,
    L: Loader<Batch = T::Batch>,
{
    let out = &config.out_dir;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SaveError::Io { path: path.clone(), source }
    };
    let run_dir_err = |message: String| TrainError::RunDir { dir: out.clone(), message };
    let sync = config.sync.clone();
    let (rank, world) = sync.as_ref().map_or((0, 1), |s| (s.rank(), s.world_size()));
    // Rank 0 leads: it alone writes into the run directory.
    let lead = rank == 0;
    let _installed = sync.clone().map(kiln_optim::sync::install);
    if lead {
        std::fs::create_dir_all(out.join("samples")).map_err(io(out))?;
    }
    let log_path = out.join("metrics.jsonl");

    let mut state = TrainerState {
        step: 0,
        seed: config.seed,
        loader_epoch: 0,
        loader_batch: 0,
        loader_rng: loader.position().rng,
        examples: 0,
        train_s: 0.0,
    };
    let latest = latest_checkpoint(out);
    if config.resume {
        state = resume_point(task, config, lead)?;
        if let Some(sync) = &sync {
            // Every rank read the run directory on its own: they must have chosen one checkpoint.
            sync.agree(state.step as u64)?;
        }
        loader.seek(state.position());
        if lead {
            truncate_metrics(&log_path, state.step)?;
        }
    } else if let Some((step, dir)) = latest {
        return Err(run_dir_err(format!(
            "already holds a checkpoint at step {step} ({}); resume it or choose another output directory",
            dir.display()
        )));
    }
    let start_step = state.step;
    let mut log = if !lead {
        None
    } else if config.resume {
        Some(std::fs::OpenOptions::new().create(true).append(true).open(&log_path))
    } else {
        Some(std::fs::File::create(&log_path))
    }
    .transpose()
    .map_err(io(&log_path))?
    .map(BufWriter::new);

    // A bar for a person at a terminal; under nohup or CI (stderr not a terminal) a plain line per
    // logged step instead, so a log shows progress between the first and the last line.
    let progress = config.progress && lead;
    let plain_log = progress && !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = if progress && !plain_log { ProgressBar::new(config.steps as u64) } else { ProgressBar::hidden() };
    if progress && !plain_log {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(start_step as u64);
        bar.reset_eta();
    }

    let device = task.device();
    let start = Instant::now();
    let mut step_time = Duration::ZERO;
    // Time outside `step`, so a slow loader or slow writes show up in the summary.
    let (mut data_time, mut io_time) = (Duration::ZERO, Duration::ZERO);
    let mut examples = 0usize;
    let mut window = Window::default();
    let mut last_means = Vec::new();
    let mut stopped_by = StopReason::Steps;
    let checkpoint = |task: &T, state: &TrainerState| {
        write_checkpoint(out, state, config.keep_checkpoints, |dir| task.save_state(dir))
    };
    for step in start_step..config.steps {
        let t = Instant::now();
        let batch = loader.next_batch();
        data_time += t.elapsed();
        // The run's first step draws the same on every rank: burn draws a parameter's initial
        // value at its first use, inside this step's forward pass, and every rank must start from
        // the same weights. From then on each rank draws its own noise.
        let seed = if step == 0 { config.seed } else { rank_seed(config.seed, rank) };
        B::seed(&device, step_seed(seed, step));
        let t = Instant::now();
        let output = task.step(batch, step);
        let dt = t.elapsed();
        step_time += dt;
        // Every rank trained on as many examples as this one.
        examples += output.examples * world;
        let steps_done = step + 1;
        if let Some(e) = kiln_optim::sync::take_failure() {
            bar.abandon();
            return Err(e.into());
        }

        let diverged = output.metrics.first().filter(|(_, value)| !value.is_finite()).copied();
        let out_of_time = config.time_budget.is_some_and(|b| start.elapsed() >= b);
        let stop_asked = config.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
        // Ranks stop together: a divergence, a spent budget or Ctrl-C on any rank is every rank's.
        let (any_diverged, out_of_time, stop_asked) = match &sync {
            None => (diverged.is_some(), out_of_time, stop_asked),
            Some(sync) => {
                let mut flags = [diverged.is_some(), out_of_time, stop_asked].map(|f| if f { 1.0 } else { 0.0 });
                sync.all_reduce_mean(&mut flags)?;
                (flags[0] > 0.0, flags[1] > 0.0, flags[2] > 0.0)
            }
        };
        if let Some((metric, value)) = diverged {
            bar.abandon();
            return Err(TrainError::Diverged { step, metric, value });
        }
        if any_diverged {
            return Err(TrainError::RunDir {
                dir: out.clone(),
                message: format!("another rank's loss became non-finite at step {step}; the run stopped there"),
            });
        }
        state.step = steps_done;
        state.examples += (output.examples * world) as u64;
        state.train_s += dt.as_secs_f64();
        let position = loader.position();
        (state.loader_epoch, state.loader_batch, state.loader_rng) = (position.epoch, position.batch, position.rng);

        window.add(&output.metrics);
        let rate = examples as f64 / step_time.as_secs_f64().max(1e-9);
        let last = steps_done == config.steps;
        if steps_done % config.log_every.max(1) == 0 || last || out_of_time || stop_asked {
            last_means = window.means();
            // Keys in this order and the task's metrics in its own (a serde_json map would sort
            // them), so a reader and `losses.png` meet the headline loss first.
            let mut fields: Vec<(&str, serde_json::Value)> = vec![
                ("step", steps_done.into()),
                ("examples", state.examples.into()),
                ("elapsed_s", state.train_s.into()),
                ("examples_per_s", rate.into()),
            ];
            fields.extend(last_means.iter().map(|(k, v)| (k.as_str(), (*v).into())));
            let fields: Vec<String> =
                fields.iter().map(|(k, v)| format!("{}:{v}", serde_json::Value::from(*k))).collect();
            let json = format!("{{{}}}", fields.join(","));
            if let Some(log) = &mut log {
                writeln!(log, "{json}").map_err(io(&log_path))?;
                log.flush().map_err(io(&log_path))?;
            }
            // The first few metrics (a GAN has d_loss, g_loss, accuracies), then throughput.
            let shown: Vec<String> = last_means.iter().take(4).map(|(k, v)| format!("{k} {v:.3}")).collect();
            let message = format!("{} | {rate:.0} img/s", shown.join(" "));
            if plain_log {
                eprintln!("kiln: step {steps_done}/{}  {message}", config.steps);
            }
            bar.set_message(message);
            window.reset();
        }
        bar.set_position(steps_done as u64);
        if lead && config.preview_every > 0 && steps_done % config.preview_every == 0 && !last {
            let t = Instant::now();
            write_previews(task, out, steps_done)?;
            io_time += t.elapsed();
        }
        if stop_asked && !last {
            stopped_by = StopReason::Signal;
            break;
        }
        if out_of_time && !last {
            stopped_by = StopReason::Time;
            break;
        }
        if lead && config.checkpoint_every > 0 && steps_done % config.checkpoint_every == 0 && !last {
            let t = Instant::now();
            checkpoint(task, &state)?;
            io_time += t.elapsed();
        }
    }
    bar.finish();
    let t = Instant::now();
    let final_checkpoint = if lead {
        write_previews(task, out, state.step)?;
        let dir = checkpoint(task, &state)?;
        task.save(out)?;
        dir
    } else {
        // Rank 0 writes it: the path every rank resumes from.
        crate::checkpoint::checkpoints_dir(out).join(format!("step-{:08}", state.step))
    };
    io_time += t.elapsed();
    let summary = Summary {
        steps: state.step,
        start_step,
        wall_s: start.elapsed().as_secs_f64(),
        examples_per_s: examples as f64 / step_time.as_secs_f64().max(1e-9),
        step_s: step_time.as_secs_f64(),
        data_s: data_time.as_secs_f64(),
        io_s: io_time.as_secs_f64(),
        final_metrics: last_means,
        stopped_by,
        checkpoint: final_checkpoint,
    };
    if lead {
        let json = serde_json::to_string_pretty(&summary)
            .map_err(|e| SaveError::Encode { path: out.join("summary.json"), message: e.to_string() })?;
        kiln_core::atomic_write(&out.join("summary.json"), json.as_bytes())?;
    }
    Ok(summary)
}

/// Restores `task` from the checkpoint a resume continues from — the one `config.resume_from`
/// names, or the newest that verifies and loads — and moves newer checkpoints aside. Returns the
/// trainer state saved with it.
/// Rank 0 (`lead`) moves the newer checkpoints aside; the other ranks of a data-parallel run only
/// read.
fn resume_point<B: AutodiffBackend, T: Task<B>>(
    task: &mut T,
    config: &LoopConfig,
    lead: bool,
) -> Result<TrainerState, TrainError> {
    let out = &config.out_dir;
    let run_dir_err = |message: String| TrainError::RunDir { dir: out.clone(), message };
    let all = list_checkpoints(out);
    let steps = || all.iter().map(|(s, _)| s.to_string()).collect::<Vec<_>>().join(", ");
    if all.is_empty() {
        return Err(run_dir_err("no checkpoint to resume from (checkpoints/ is empty)".into()));
    }
    let candidates: Vec<&(usize, PathBuf)> = match config.resume_from {
        None => all.iter().rev().collect(),
        Some(step) => {
            let found: Vec<_> = all.iter().filter(|(s, _)| *s == step).collect();
            if found.is_empty() {
                return Err(run_dir_err(format!("no checkpoint at step {step} (checkpoints at steps {})", steps())));
            }
            found
        }
    };
    let mut chosen = None;
    for (step, dir) in candidates {
        let attempt = (|| -> Result<TrainerState, TrainError> {
            kiln_core::ModelManifest::read_verified(dir)?;
            let state = read_trainer_state(dir)?;
            if state.seed != config.seed {
                return Err(run_dir_err(format!(
                    "checkpoint {} was made with seed {}, this run has seed {}",
                    dir.display(),
                    state.seed,
                    config.seed
                )));
            }
            task.load_state(dir)?;
            Ok(state)
        })();
        match attempt {
            Ok(state) => {
                chosen = Some((*step, state));
                break;
            }
            // A seed mismatch is the run's, not the checkpoint's: every older one has it too.
            Err(e @ TrainError::RunDir { .. }) => return Err(e),
            Err(e) if config.resume_from.is_some() => return Err(e),
            Err(e) if lead => eprintln!("kiln: skipping checkpoint {}: {e}", dir.display()),
            Err(_) => {}
        }
    }
    let Some((step, state)) = chosen else {
        return Err(run_dir_err(format!(
            "none of the checkpoints (steps {}) verifies and loads; each was skipped for the reason printed above",
            steps()
        )));
    };
    for (newer, dir) in all.iter().filter(|(s, _)| *s > step && lead) {
        let moved = set_aside(out, dir).map_err(|source| SaveError::Io { path: dir.clone(), source })?;
        eprintln!("kiln: resuming from step {step}: checkpoint of step {newer} moved to {}", moved.display());
    }
    Ok(state)
}

/// Keeps the lines of `metrics.jsonl` up to `step`, dropping those a killed process wrote after its
/// last checkpoint (they will be written again).
fn truncate_metrics(path: &Path, step: usize) -> Result<(), SaveError> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
                .is_some_and(|s| s as usize <= step)
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    kiln_core::atomic_write(path, kept.as_bytes())
}

/// Writes each preview as `samples/<name>-<step>.png` and as `<name>.png` (the latest), captioned
/// with its name and the step, and the curves of `metrics.jsonl` beside them as `losses.png`.
fn write_previews<B: AutodiffBackend, T: Task<B>>(task: &T, out: &Path, step: usize) -> Result<(), SaveError> {
    write_loss_plot(&out.join("metrics.jsonl"), &out.join("losses.png"))?;
    for preview in task.previews() {
        let latest = out.join(format!("{}.png", preview.name));
        let labels = GridLabels { caption: format!("{}  step {step}", preview.name), rows: preview.row_labels };
        write_labelled_grid(preview.images, preview.columns, &labels, &latest)?;
        let dated = out.join("samples").join(format!("{}-{step:06}.png", preview.name));
        std::fs::copy(&latest, &dated).map_err(|source| SaveError::Io { path: dated.clone(), source })?;
    }
    Ok(())
}

fn lossy_path<S: serde::Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}
