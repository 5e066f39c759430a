use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_core::{SaveError, Task};
use serde::Serialize;

use crate::write_grid;

/// How long and how loudly to train.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Optimisation steps to run.
    pub steps: usize,
    /// Stop early once this much wall time has passed (checked after each step).
    pub time_budget: Option<Duration>,
    /// Write a metrics line (window means) every this many steps.
    pub log_every: usize,
    /// Write preview grids every this many steps (0: only at the end).
    pub preview_every: usize,
    /// Run directory: `metrics.jsonl`, `samples/`, the latest grids, the checkpoint, `summary.json`.
    pub out_dir: PathBuf,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

/// What a finished run reports (also written as `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Steps run.
    pub steps: usize,
    /// Wall time of the whole loop, previews and checkpoint included, in seconds.
    pub wall_s: f64,
    /// Training throughput: examples per second of time spent in `step`.
    pub examples_per_s: f64,
    /// Mean of each metric over the last logging window.
    pub final_metrics: Vec<(String, f64)>,
    /// Whether the time budget ended the run before the step budget.
    pub stopped_by_time: bool,
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
    /// A file could not be written.
    #[error(transparent)]
    Save(#[from] SaveError),
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

/// Trains `task` on batches from `next_batch` as `config` says, writing everything into
/// `config.out_dir`, and returns the run's [`Summary`].
pub fn fit<B, T>(
    task: &mut T,
    mut next_batch: impl FnMut() -> T::Batch,
    config: &LoopConfig,
) -> Result<Summary, TrainError>
where
    B: AutodiffBackend,
    T: Task<B>,
{
    let out = &config.out_dir;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SaveError::Io { path: path.clone(), source }
    };
    std::fs::create_dir_all(out.join("samples")).map_err(io(out))?;
    let log_path = out.join("metrics.jsonl");
    let mut log = BufWriter::new(File::create(&log_path).map_err(io(&log_path))?);

    let bar = if config.progress { ProgressBar::new(config.steps as u64) } else { ProgressBar::hidden() };
    if config.progress {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    }

    let start = Instant::now();
    let mut step_time = Duration::ZERO;
    let mut examples = 0usize;
    let mut window = Window::default();
    let mut last_means = Vec::new();
    let mut stopped_by_time = false;
    let mut steps_done = 0;
    for step in 0..config.steps {
        let batch = next_batch();
        let t = Instant::now();
        let output = task.step(batch, step);
        step_time += t.elapsed();
        examples += output.examples;
        steps_done = step + 1;

        if let Some(&(metric, value)) = output.metrics.first()
            && !value.is_finite()
        {
            bar.abandon();
            return Err(TrainError::Diverged { step, metric, value });
        }
        window.add(&output.metrics);
        let rate = examples as f64 / step_time.as_secs_f64().max(1e-9);
        let last = steps_done == config.steps;
        let out_of_time = config.time_budget.is_some_and(|b| start.elapsed() >= b);
        if steps_done % config.log_every.max(1) == 0 || last || out_of_time {
            last_means = window.means();
            let mut line = serde_json::json!({
                "step": steps_done,
                "examples": examples,
                "elapsed_s": start.elapsed().as_secs_f64(),
                "examples_per_s": rate,
            });
            for (k, v) in &last_means {
                line[k.as_str()] = serde_json::json!(v);
            }
            let json = serde_json::to_string(&line)
                .map_err(|e| SaveError::Encode { path: log_path.clone(), message: e.to_string() })?;
            writeln!(log, "{json}").map_err(io(&log_path))?;
            log.flush().map_err(io(&log_path))?;
            if let Some((name, value)) = last_means.first() {
                bar.set_message(format!("{name} {value:.2} | {rate:.0} img/s"));
            }
            window.reset();
        }
        bar.set_position(steps_done as u64);
        if config.preview_every > 0 && steps_done % config.preview_every == 0 && !last {
            write_previews(task, out, Some(steps_done))?;
        }
        if out_of_time && !last {
            stopped_by_time = true;
            break;
        }
    }
    bar.finish();
    write_previews(task, out, Some(steps_done))?;
    task.save(out)?;
    let summary = Summary {
        steps: steps_done,
        wall_s: start.elapsed().as_secs_f64(),
        examples_per_s: examples as f64 / step_time.as_secs_f64().max(1e-9),
        final_metrics: last_means,
        stopped_by_time,
    };
    let json = serde_json::to_string_pretty(&summary)
        .map_err(|e| SaveError::Encode { path: out.join("summary.json"), message: e.to_string() })?;
    kiln_core::atomic_write(&out.join("summary.json"), json.as_bytes())?;
    Ok(summary)
}

/// Writes each preview as `samples/<name>-<step>.png` and as `<name>.png` (the latest).
fn write_previews<B: AutodiffBackend, T: Task<B>>(task: &T, out: &Path, step: Option<usize>) -> Result<(), SaveError> {
    for preview in task.previews() {
        let latest = out.join(format!("{}.png", preview.name));
        write_grid(preview.images, preview.columns, &latest)?;
        if let Some(step) = step {
            let dated = out.join("samples").join(format!("{}-{step:06}.png", preview.name));
            std::fs::copy(&latest, &dated).map_err(|source| SaveError::Io { path: dated.clone(), source })?;
        }
    }
    Ok(())
}
