//! The kiln training loop.
//!
//! [`fit`] drives any [`kiln_core::Task`]: it pulls batches, calls `step`, and takes care of
//! everything around it — the step budget and time budget, a progress bar with loss and images/s,
//! a JSONL metrics log, preview grids from the task's fixed inputs, a divergence guard, and the
//! final checkpoint and `summary.json`. What a step *is* (one optimizer or two, which losses) is
//! the task's business, so VAEs, GANs and autoregressive models share this loop.
#![warn(missing_docs)]

mod grid;
mod trainer;

pub use grid::{grid_png, image_png, write_grid};
pub use trainer::{LoopConfig, Summary, TrainError, fit};
