//! The seam between model families and the trainer.
//!
//! A model crate says what one optimisation step is by implementing [`Task`]; `kiln-train` runs
//! any `Task` — batches, budgets, logs, preview grids, checkpoints — without knowing which model it
//! drives. The trait lives here, in a crate with one dependency, so that neither side depends on
//! the other (as ripgrep's `grep-matcher` holds the one trait its searcher and matchers share).
//!
//! The step owns its optimizers: a VAE has one, a GAN two (D then G, each with its own learning
//! rate), an autoregressive prior one more. Owning them keeps the trainer ignorant of how many
//! there are and in which order they run. For the same reason a task saves and restores its own
//! training state ([`Task::save_state`], [`Task::load_state`]); the trainer decides *when* and
//! *where* (checkpoint directories written atomically), and keeps the step counter, the seed and
//! the data position ([`Loader`]) itself.
//!
//! Beside `Task` sit the other seams every family shares: [`Generative`] (a trained model asked
//! for images: sampling, interpolation, reconstruction), [`ModelManifest`] (`kiln.json`, what a
//! saved model directory is), the batch type the data crate makes and models consume
//! ([`ImageBatch`], [`PixelRange`]) and the host-side seeded generator ([`SplitMix64`]) — all here
//! so that a model crate depends on this crate and burn, not on the data crate's downloader and
//! image codecs.
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod batch;
mod manifest;
mod metrics;
mod rng;
mod sample;
mod time;

pub use batch::{ImageBatch, PixelRange};
pub use manifest::{MANIFEST_FILE, ModelManifest};
pub use metrics::read_scalars;
pub use rng::{SplitMix64, epoch_order, standard_normal};
pub use sample::{
    Generative, Interpolation, LatentPath, LatentSpace, ModelCard, SampleError, SampleOption, SampleRequest, Samples,
    check_truncation, interpolate, latent_path,
};
pub use time::UtcTime;

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Device, Tensor};

/// What one training step reports: named scalars, the first of which is the headline loss.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutput {
    /// `(name, value)` pairs in display order; the first is shown in the progress bar.
    pub metrics: Vec<(&'static str, f64)>,
    /// How many training examples the step consumed (for images/s).
    pub examples: usize,
}

/// A named batch of images in `[0, 1]`, `[N, C, H, W]`, that the trainer writes as a PNG grid
/// (captioned with the name and the step).
#[derive(Debug, Clone)]
pub struct Preview<B: Backend> {
    /// File stem of the grid, e.g. `"samples"` or `"reconstructions"`.
    pub name: &'static str,
    /// Images in `[0, 1]`, `[N, C, H, W]`.
    pub images: Tensor<B, 4>,
    /// Images per row of the grid.
    pub columns: usize,
    /// Labels written left of the grid's rows, repeating down them (`["input",
    /// "reconstruction"]` for rows that alternate); empty: none.
    pub row_labels: Vec<String>,
}

impl<B: Backend> Preview<B> {
    /// A grid of `images` named `name`, `columns` to a row, without row labels.
    pub fn new(name: &'static str, images: Tensor<B, 4>, columns: usize) -> Self {
        Self { name, images, columns, row_labels: Vec::new() }
    }

    /// Labels the grid's rows; the labels repeat when the grid has more rows than labels.
    pub fn with_row_labels<S: Into<String>>(mut self, labels: impl IntoIterator<Item = S>) -> Self {
        self.row_labels = labels.into_iter().map(Into::into).collect();
        self
    }
}

/// One trainable model family as the trainer sees it.
pub trait Task<B: AutodiffBackend> {
    /// A batch as the task consumes it (images, images + labels, images + captions, …).
    type Batch;

    /// Runs one optimisation step (every optimizer the model has) and reports its metrics.
    ///
    /// `step` counts from 0; tasks with schedules (warm-up, `n_critic`) read it.
    fn step(&mut self, batch: Self::Batch, step: usize) -> StepOutput;

    /// Images worth looking at now, from inputs fixed when the task was built (fixed noise, a fixed
    /// batch), so successive grids are comparable.
    fn previews(&self) -> Vec<Preview<B::InnerBackend>>;

    /// Writes the model's weights and whatever is needed to rebuild it into `dir` (the files
    /// `kiln sample` reads).
    fn save(&self, dir: &Path) -> Result<(), SaveError>;

    /// Writes everything a resumed run needs into `dir` — weights, optimizer moments, EMA weights,
    /// counters — so that continuing from it is bit-identical to never having stopped. `dir` is a
    /// fresh temporary directory the trainer renames into place once this returns.
    fn save_state(&self, dir: &Path) -> Result<(), SaveError>;

    /// Restores what [`Task::save_state`] wrote, into a task built from the same settings.
    fn load_state(&mut self, dir: &Path) -> Result<(), LoadError>;

    /// The device the task trains on (the trainer seeds its random generator per step).
    fn device(&self) -> Device<B>;

    /// The range its batches' pixels must be in: the model knows whether it ends in a sigmoid
    /// (`[0, 1]`, the default) or a `tanh` (`[-1, 1]`).
    fn pixel_range(&self) -> PixelRange {
        PixelRange::ZeroOne
    }
}

/// Where a [`Loader`] stands: enough to continue the same sequence of batches in a new process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoaderPosition {
    /// Completed passes over the data.
    pub epoch: u64,
    /// Batches already taken in the current epoch.
    pub batch: u64,
    /// State of the loader's augmentation random generator.
    pub rng: u64,
}

/// An endless, seeded, resumable stream of batches.
pub trait Loader {
    /// What one call yields.
    type Batch;

    /// The next batch.
    fn next_batch(&mut self) -> Self::Batch;

    /// Batches in one pass over the data (for `--epochs`).
    fn batches_per_epoch(&self) -> usize;

    /// The current position.
    fn position(&self) -> LoaderPosition;

    /// Continues from `position`, as if every earlier batch had been taken.
    fn seek(&mut self, position: LoaderPosition);
}

/// Reading saved state failed, or it does not fit the model; names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LoadError {
    /// The file (or directory) that could not be used.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

/// Writing a file failed.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// An I/O error on the named path.
    #[error("{path}: {source}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Serialising the named artefact failed.
    #[error("{path}: could not serialise: {message}")]
    Encode {
        /// The file being written.
        path: PathBuf,
        /// What the encoder said.
        message: String,
    },
}

/// Writes `bytes` to `path` atomically: into a temporary file beside it, flushed to disk, then
/// renamed over the final name. A reader (or a crash) never sees a half-written file.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), SaveError> {
    let io = |source| SaveError::Io { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: the temporary file is ours and useless now.
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("kiln-core-aw-{}", std::process::id()));
        let path = dir.join("sub/out.bin");
        atomic_write(&path, b"first version, longer").unwrap();
        atomic_write(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.bin")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_write_names_the_path_on_error() {
        let err = atomic_write(Path::new("/proc/definitely/not/writable"), b"x").unwrap_err();
        assert!(err.to_string().starts_with("/proc/definitely/not/writable"), "{err}");
    }
}
