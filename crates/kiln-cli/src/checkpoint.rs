//! Run and checkpoint directories, whichever family wrote them.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The run directory a checkpoint belongs to: itself, or `RUN` for `RUN/checkpoints/step-N`.
pub fn run_dir_of(checkpoint: &Path) -> Result<PathBuf> {
    if checkpoint.join("experiment.toml").is_file() {
        return Ok(checkpoint.to_path_buf());
    }
    match checkpoint.parent().and_then(Path::parent) {
        Some(run) if run.join("experiment.toml").is_file() => Ok(run.to_path_buf()),
        _ => bail!("{}: no experiment.toml here or two levels up, so the run's data is unknown", checkpoint.display()),
    }
}
