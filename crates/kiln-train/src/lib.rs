//! The kiln training loop.
//!
//! [`fit`] drives any [`kiln_core::Task`] on batches from any [`kiln_core::Loader`]: it pulls
//! batches, seeds the backend's generator per step, calls `step`, and takes care of everything
//! around it — step and time budgets, a stop flag for Ctrl-C, a progress bar with loss and
//! images/s, a JSONL metrics log, preview grids from the task's fixed inputs, a divergence guard,
//! checkpoints written atomically and pruned, bit-exact resume, the final model and
//! `summary.json`. What a step *is* (one optimizer or two, which losses, EMA) is the task's
//! business, with the pieces in `kiln-optim`, so VAEs, GANs and autoregressive models share this
//! loop.
//!
//! # What is reused from burn-train, and why the rest is not
//! burn-train 0.21's `Learner` is built around one model and one optimizer behind `TrainStep`,
//! checkpoints with burn's recorder (keyed by `ParamId`, not safetensors) and brings a large build
//! (`train` feature). A GAN's two optimizers and `n_critic`, and a resume that is bit-identical
//! across processes, do not fit that shape, so the loop is written here in ~400 lines. What kiln
//! takes from burn instead is lower down: autodiff, `Module` visiting/mapping (for the optimizer and
//! EMA), burn-store's safetensors, and `Backend::seed`.
//!
//! # Exact resume
//! Everything random is a function of saved state: the backend generator is reseeded before every
//! step from `(seed, step)` ([`step_seed`]); the data order of each epoch depends only on the seed
//! and the epoch; the task writes weights, optimizer moments and EMA weights bit for bit. So a run
//! of 2N steps and a run of N steps, killed, and resumed for N more end with identical weights on
//! the same machine and backend (tested in `tests/cli.rs` with a real process and `SIGKILL`).
//!
//! # Several devices (data parallel)
//! burn 0.21's data-parallel support lives in burn-train's `Learner` (`ExecutionStrategy::multi`,
//! and `ddp` with a CUDA-only `DistributedBackend`), which kiln's loop does not use. kiln's seam is
//! smaller: [`LoopConfig::sync`] takes a `kiln_optim::GradSync` (one rank of a run), which the loop
//! installs for the optimizers — every family's `Optim::step` then averages its gradients over the
//! ranks in one flat buffer. The loop seeds each rank's noise apart ([`rank_seed`]), exchanges
//! three flags a step so a divergence, a spent time budget or Ctrl-C on any rank stops all of them
//! at the same step, counts every rank's examples, checks on resume that every rank chose the same
//! checkpoint, and lets rank 0 alone write the run. Each rank's loader takes its share
//! (`kiln_data::Batcher::with_shard`); the ranks' batches of a step are then the micro-batches one
//! process with `accumulate = ranks` would take, and the test
//! `two_ranks_train_like_one_process_accumulating_their_batches_and_only_rank_0_writes` holds the
//! two to 1e-6. Engines: `kiln_optim::sync::ThreadGroup` (ranks as threads of one process) and
//! kiln-mpi's `MpiSync` between processes and hosts, which `kiln train --world-size N` (or a
//! device list, `--device cuda:0,cuda:1`) starts through mpirun (see `kiln_optim::sync` for why
//! not burn-collective 0.21).
//!
//! # Looking at a run
//! Beside the metrics log, every preview writes `losses.png` (a panel per metric of
//! `metrics.jsonl`, drawn by `plot.rs`) and captions each grid with its name and step, with
//! `"input"`/`"reconstruction"` labels on the rows of reconstruction grids ([`GridLabels`]). Text
//! is drawn with a hand-made 5×7 bitmap font (`font.rs`), so no font files or `plotters` are needed.
//!
//! No TensorBoard event files: of the crates that write them, `tensorboard-rs` (last release
//! 0.5.9, March 2022) pins `image` 0.23 and the unmaintained `protobuf` 2 line, and `tboard`
//! (0.1.1, January 2024) and `tfrecord` (0.15, September 2023) generate their protobuf code with
//! `prost-build`, which needs `protoc` at build time — none is well kept enough to be worth a
//! dependency, and `metrics.jsonl` is one line of pandas or a short script away from any viewer.
#![warn(missing_docs)]

mod checkpoint;
mod font;
mod grid;
mod plot;
mod trainer;

pub use checkpoint::{
    TRAINER_FILE, TrainerState, checkpoints_dir, latest_checkpoint, list_checkpoints, read_trainer_state,
};
pub use grid::{GridLabels, grid_png, image_png, labelled_grid_png, write_grid, write_labelled_grid};
pub use plot::write_loss_plot;
pub use trainer::{LoopConfig, StopReason, Summary, TrainError, fit, rank_seed, step_seed};

#[cfg(test)]
mod tests;
