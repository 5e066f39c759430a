//! The loop's promises, on a toy regression task small enough to run in milliseconds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::module::AutodiffModule;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use kiln_core::{LoadError, Loader, LoaderPosition, Preview, SaveError, StepOutput, Task};
use kiln_optim::{Optim, OptimConfig, TensorFile, load_module, save_module};

use crate::{LoopConfig, StopReason, TrainError, fit, list_checkpoints};

type B = burn::backend::Autodiff<burn::backend::Flex>;

/// Fits y = x·w* with noise the step draws from the backend generator (so per-step seeding
/// matters), and can be told to produce a NaN loss at one step.
struct Toy {
    model: Linear<B>,
    optim: Optim<B>,
    nan_at: Option<usize>,
    /// Input noise drawn from the backend generator (off for runs on several threads, which
    /// share burn-flex's one generator).
    noise: bool,
}

impl Toy {
    fn new(seed: u64) -> Self {
        Self::with_optim(seed, OptimConfig { lr: 0.05, ..OptimConfig::default() })
    }

    fn with_optim(seed: u64, config: OptimConfig) -> Self {
        let device = Device::<B>::default();
        <B as burn::tensor::backend::Backend>::seed(&device, seed);
        let model: Linear<B> = LinearConfig::new(4, 1).init(&device);
        // Parameters are drawn lazily, at first use: draw them now, from this seed.
        let _ = (model.weight.val(), model.bias.as_ref().map(|b| b.val()));
        let optim = Optim::new(config, 100).unwrap();
        Self { model, optim, nan_at: None, noise: true }
    }
}

impl Task<B> for Toy {
    type Batch = (Tensor<B, 2>, Tensor<B, 2>);

    fn step(&mut self, (x, y): Self::Batch, step: usize) -> StepOutput {
        let x = if self.noise {
            x.clone() + Tensor::random(x.dims(), Distribution::Normal(0.0, 0.1), &x.device())
        } else {
            x
        };
        let pred = self.model.forward(x);
        let mut loss = (pred - y).powf_scalar(2.0).mean();
        if self.nan_at == Some(step) {
            loss = loss.log().mul_scalar(f32::NAN);
        }
        let grads = loss.backward();
        self.model = self.optim.step(self.model.clone(), &grads);
        StepOutput { metrics: vec![("loss", loss.into_scalar().into())], examples: 8 }
    }

    fn previews(&self) -> Vec<Preview<<B as AutodiffBackend>::InnerBackend>> {
        let w = burn::tensor::activation::sigmoid(self.model.valid().weight.val().reshape([1, 1, 2, 2]));
        vec![Preview::new("weights", w, 1)]
    }

    fn save(&self, dir: &Path) -> Result<(), SaveError> {
        save_module(&self.model.valid(), &dir.join("model.safetensors"), &[])
            .map_err(|e| SaveError::Encode { path: dir.to_path_buf(), message: e.to_string() })?;
        kiln_core::ModelManifest::new("toy", 1).describing(dir, &["model.safetensors"])?.write(dir)
    }

    fn save_state(&self, dir: &Path) -> Result<(), SaveError> {
        self.save(dir)?;
        self.optim
            .save(&dir.join("optim.safetensors"))
            .map_err(|e| SaveError::Encode { path: dir.to_path_buf(), message: e.to_string() })
    }

    fn load_state(&mut self, dir: &Path) -> Result<(), LoadError> {
        self.model = load_module(self.model.clone(), &dir.join("model.safetensors"))?;
        self.optim.load(&dir.join("optim.safetensors"), &self.model, &self.device())?;
        Ok(())
    }

    fn device(&self) -> Device<B> {
        Device::<B>::default()
    }
}

/// Batch `n` is a pure function of `n`.
struct Counting(u64);

impl Loader for Counting {
    type Batch = (Tensor<B, 2>, Tensor<B, 2>);

    fn next_batch(&mut self) -> Self::Batch {
        let n = self.0;
        self.0 += 1;
        let x: Vec<f32> = (0..32).map(|i| (((n * 32 + i) * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0).collect();
        let y: Vec<f32> = x.chunks(4).map(|r| r[0] - 2.0 * r[1] + 0.5 * r[2] + r[3]).collect();
        let dev = Device::<B>::default();
        (Tensor::from_data(TensorData::new(x, [8, 4]), &dev), Tensor::from_data(TensorData::new(y, [8, 1]), &dev))
    }

    fn batches_per_epoch(&self) -> usize {
        10
    }

    fn position(&self) -> LoaderPosition {
        LoaderPosition { epoch: 0, batch: self.0, rng: 0 }
    }

    fn seek(&mut self, position: LoaderPosition) {
        self.0 = position.batch;
    }
}

/// burn-flex keeps one global generator, and `fit` reseeds it before every step: tests running
/// in parallel threads would draw from each other's streams, so the tests that train take turns.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config(steps: usize, out: &Path) -> LoopConfig {
    LoopConfig { checkpoint_every: 4, log_every: 2, seed: 11, ..LoopConfig::new(steps, out) }
}

#[test]
fn resumed_run_ends_with_bit_identical_weights_and_optimizer_state() {
    let _serial = serial();
    let (a, b) = (tmp("whole"), tmp("halves"));
    fit(&mut Toy::new(1), &mut Counting(0), &config(20, &a)).unwrap();

    let first = fit(&mut Toy::new(1), &mut Counting(0), &config(10, &b)).unwrap();
    assert_eq!(first.steps, 10);
    let resumed = fit(&mut Toy::new(1), &mut Counting(0), &LoopConfig { resume: true, ..config(20, &b) }).unwrap();
    assert_eq!((resumed.start_step, resumed.steps), (10, 20));

    // Tensors and metadata equal bit for bit (the header's key order may differ: it is a map).
    let read = |path: PathBuf| TensorFile::read(&path).unwrap();
    for f in ["model.safetensors", "optim.safetensors"] {
        let ckpt = |dir: &Path| read(dir.join("checkpoints/step-00000020").join(f));
        assert_eq!(ckpt(&a), ckpt(&b), "{f}");
    }
    assert_eq!(read(a.join("model.safetensors")), read(b.join("model.safetensors")));
    // The metrics log reads as one run: the same steps and losses, in order.
    let steps_and_loss = |dir: &Path| -> Vec<(u64, f64)> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(steps_and_loss(&a), steps_and_loss(&b));
    let losses = steps_and_loss(&a);
    assert!(losses.last().unwrap().1 < losses[0].1 / 4.0, "the toy model learns: {losses:?}");
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_different_seed_gives_different_weights() {
    let _serial = serial();
    // Guards the test above against passing because the noise is ignored.
    let (a, b) = (tmp("seed-a"), tmp("seed-b"));
    fit(&mut Toy::new(1), &mut Counting(0), &config(6, &a)).unwrap();
    fit(&mut Toy::new(1), &mut Counting(0), &LoopConfig { seed: 12, ..config(6, &b) }).unwrap();
    let read = |dir: &Path| TensorFile::read(&dir.join("model.safetensors")).unwrap();
    assert_ne!(read(&a), read(&b));
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn checkpoints_are_pruned_to_keep_and_leave_no_temporaries() {
    let _serial = serial();
    let dir = tmp("prune");
    fit(&mut Toy::new(2), &mut Counting(0), &LoopConfig { keep_checkpoints: 2, ..config(18, &dir) }).unwrap();
    let steps: Vec<usize> = list_checkpoints(&dir).into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![16, 18]);
    let names: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("step-")), "{names:?}");
    for f in ["trainer.json", "model.safetensors", "optim.safetensors"] {
        assert!(dir.join("checkpoints/step-00000018").join(f).is_file(), "{f}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_checkpoint() {
    let _serial = serial();
    let dir = tmp("nan");
    let mut task = Toy::new(3);
    task.nan_at = Some(9);
    let err = fit(&mut task, &mut Counting(0), &config(20, &dir)).unwrap_err();
    assert!(matches!(err, TrainError::Diverged { step: 9, metric: "loss", .. }), "{err}");
    assert!(err.to_string().contains("diverged at step 9"), "{err}");
    let steps: Vec<usize> = list_checkpoints(&dir).into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![4, 8]);
    // The last good checkpoint loads and the run resumes from it.
    let summary = fit(&mut Toy::new(3), &mut Counting(0), &LoopConfig { resume: true, ..config(12, &dir) }).unwrap();
    assert_eq!((summary.start_step, summary.steps), (8, 12));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_stop_flag_checkpoints_and_ends_cleanly() {
    let _serial = serial();
    let dir = tmp("stop");
    let stop = Arc::new(AtomicBool::new(true));
    let summary =
        fit(&mut Toy::new(4), &mut Counting(0), &LoopConfig { stop: Some(stop), ..config(50, &dir) }).unwrap();
    assert_eq!((summary.steps, summary.stopped_by), (1, StopReason::Signal));
    assert_eq!(list_checkpoints(&dir).last().unwrap().0, 1);
    assert!(dir.join("summary.json").is_file() && dir.join("weights.png").is_file());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn previews_leave_a_loss_plot_beside_grids_captioned_with_the_step() {
    let _serial = serial();
    let dir = tmp("plots");
    fit(&mut Toy::new(7), &mut Counting(0), &LoopConfig { preview_every: 4, ..config(10, &dir) }).unwrap();
    // metrics.jsonl keeps its keys in the order written (the task's metrics in the task's order),
    // which is the order of the panels.
    let log = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let first = log.lines().next().unwrap();
    assert!(first.starts_with(r#"{"step":2,"examples":16,"elapsed_s":"#) && first.contains(r#","loss":"#), "{first}");
    // One metric (loss): one panel with the curve drawn in it.
    let losses = image::open(dir.join("losses.png")).unwrap().to_rgb8();
    assert_eq!(losses.dimensions(), (crate::plot::PANEL_W as u32, crate::plot::PANEL_H as u32));
    assert!(losses.pixels().any(|p| p.0 == crate::plot::LINE));
    // The Toy's 2×2 weight grid is 6×6 bare; the caption band sits on top and, being wider than
    // the grid, sets the width: "weights  step 4" at step 4, "weights  step 10" at the end.
    let grid = |name: &str| image::open(dir.join(name)).unwrap().to_luma8();
    let (mid, last) = (grid("samples/weights-000004.png"), grid("weights.png"));
    let caption_w = |step: &str| crate::font::text_width(&format!("weights  step {step}"), 1) as u32 + 6;
    let height = 6 + crate::grid::caption_band(2) as u32;
    assert_eq!((mid.dimensions(), last.dimensions()), ((caption_w("4"), height), (caption_w("10"), height)));
    // The band holds the caption's dark grey text.
    assert!(last.as_raw()[..(height as usize - 6) * last.width() as usize].contains(&30));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn run_directory_mistakes_are_errors_that_name_it() {
    let _serial = serial();
    let dir = tmp("mistakes");
    let err = fit(&mut Toy::new(5), &mut Counting(0), &LoopConfig { resume: true, ..config(4, &dir) }).unwrap_err();
    assert!(err.to_string().contains("no checkpoint to resume from"), "{err}");
    fit(&mut Toy::new(5), &mut Counting(0), &config(4, &dir)).unwrap();
    let err = fit(&mut Toy::new(5), &mut Counting(0), &config(4, &dir)).unwrap_err();
    assert!(err.to_string().contains("already holds a checkpoint at step 4"), "{err}");
    let err =
        fit(&mut Toy::new(5), &mut Counting(0), &LoopConfig { resume: true, seed: 99, ..config(8, &dir) }).unwrap_err();
    assert!(err.to_string().contains("seed 11, this run has seed 99"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn resume_skips_a_corrupt_checkpoint_for_the_newest_valid_one_and_resume_from_picks_one() {
    let _serial = serial();
    let dir = tmp("corrupt");
    fit(&mut Toy::new(6), &mut Counting(0), &config(12, &dir)).unwrap();
    let newest = dir.join("checkpoints/step-00000012");
    let manifest = kiln_core::ModelManifest::read(&newest).unwrap().unwrap();
    let sealed: Vec<&str> = manifest.files.keys().map(String::as_str).collect();
    assert_eq!(sealed, ["model.safetensors", "optim.safetensors", "trainer.json"]);
    // One flipped bit in the optimizer state: it would load silently without the checksum.
    let optim = newest.join("optim.safetensors");
    let mut bytes = std::fs::read(&optim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    std::fs::write(&optim, bytes).unwrap();
    let resumed = fit(&mut Toy::new(6), &mut Counting(0), &LoopConfig { resume: true, ..config(14, &dir) }).unwrap();
    assert_eq!((resumed.start_step, resumed.steps), (8, 14));
    // The corrupt checkpoint is kept, out of the way.
    assert!(dir.join("checkpoints/set-aside/step-00000012/optim.safetensors").is_file());
    let steps: Vec<usize> = list_checkpoints(&dir).into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![8, 12, 14]);

    // --resume-from: exactly that step, newer ones set aside; an absent step names the ones there.
    let err =
        fit(&mut Toy::new(6), &mut Counting(0), &LoopConfig { resume: true, resume_from: Some(5), ..config(16, &dir) })
            .unwrap_err();
    assert!(err.to_string().contains("no checkpoint at step 5 (checkpoints at steps 8, 12, 14)"), "{err}");
    let back =
        fit(&mut Toy::new(6), &mut Counting(0), &LoopConfig { resume: true, resume_from: Some(8), ..config(10, &dir) })
            .unwrap();
    assert_eq!((back.start_step, back.steps), (8, 10));
    let steps: Vec<usize> = list_checkpoints(&dir).into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![8, 10]);
    assert!(dir.join("checkpoints/set-aside/step-00000012.1").is_dir());
    std::fs::remove_dir_all(dir).unwrap();
}

/// Rank `rank` of `world`: batch `k·world + rank` of [`Counting`]'s stream at its `k`-th step —
/// what `kiln_data::Batcher::with_shard` does for images.
struct Strided {
    next: u64,
    rank: u64,
    world: u64,
}

impl Loader for Strided {
    type Batch = (Tensor<B, 2>, Tensor<B, 2>);

    fn next_batch(&mut self) -> Self::Batch {
        let batch = Counting(self.next * self.world + self.rank).next_batch();
        self.next += 1;
        batch
    }

    fn batches_per_epoch(&self) -> usize {
        10
    }

    fn position(&self) -> LoaderPosition {
        LoaderPosition { epoch: 0, batch: self.next, rng: 0 }
    }

    fn seek(&mut self, position: LoaderPosition) {
        self.next = position.batch;
    }
}

#[test]
fn two_ranks_train_like_one_process_accumulating_their_batches_and_only_rank_0_writes() {
    let _serial = serial();
    let optim = OptimConfig { lr: 0.05, ..OptimConfig::default() };
    let alone_dir = tmp("dp-alone");
    let mut alone = Toy::with_optim(21, OptimConfig { accumulate: 2, ..optim.clone() });
    alone.noise = false;
    fit(&mut alone, &mut Counting(0), &config(12, &alone_dir)).unwrap();
    let expected = alone.model.weight.val().into_data().to_vec::<f32>().unwrap();

    let dir = tmp("dp-ranks");
    // Built one after the other (burn-flex has one generator), from the run's seed, as every rank
    // of a run is.
    let tasks: Vec<Toy> = [21, 21]
        .into_iter()
        .map(|seed| {
            let mut t = Toy::with_optim(seed, optim.clone());
            t.noise = false;
            t
        })
        .collect();
    let runs: Vec<_> = tasks
        .into_iter()
        .zip(kiln_optim::sync::ThreadGroup::ranks(2))
        .enumerate()
        .map(|(rank, (mut task, handle))| {
            let loop_config = LoopConfig { sync: Some(Arc::new(handle)), ..config(6, &dir) };
            std::thread::spawn(move || {
                let mut loader = Strided { next: 0, rank: rank as u64, world: 2 };
                let summary = fit(&mut task, &mut loader, &loop_config).unwrap();
                (summary.steps, task.model.weight.val().into_data().to_vec::<f32>().unwrap())
            })
        })
        .collect();
    let results: Vec<(usize, Vec<f32>)> = runs.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results[0], results[1], "the ranks hold the same weights, step for step");
    assert_eq!(results[0].0, 6);
    for (a, b) in results[0].1.iter().zip(&expected) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{:?} vs {expected:?}", results[0].1);
    }
    // Rank 0 alone wrote the run: one metrics line per log step, counting both ranks' examples.
    let log = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!((log.lines().count(), last["examples"].as_u64()), (3, Some(6 * 8 * 2)));
    let steps: Vec<usize> = list_checkpoints(&dir).into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![4, 6]);

    // A stop asked on one rank stops both, at the same step, with a checkpoint.
    let stop_dir = tmp("dp-stop");
    let runs: Vec<_> = kiln_optim::sync::ThreadGroup::ranks(2)
        .into_iter()
        .enumerate()
        .map(|(rank, handle)| {
            let stop = Arc::new(AtomicBool::new(rank == 1));
            let mut task = Toy::with_optim(21, optim.clone());
            task.noise = false;
            let loop_config = LoopConfig { sync: Some(Arc::new(handle)), stop: Some(stop), ..config(50, &stop_dir) };
            std::thread::spawn(move || {
                let mut loader = Strided { next: 0, rank: rank as u64, world: 2 };
                let s = fit(&mut task, &mut loader, &loop_config).unwrap();
                (s.steps, s.stopped_by)
            })
        })
        .collect();
    for run in runs {
        assert_eq!(run.join().unwrap(), (1, StopReason::Signal));
    }
    assert_eq!(list_checkpoints(&stop_dir).last().unwrap().0, 1);
    for d in [alone_dir, dir, stop_dir] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
