//! Checkpoint directories: `checkpoints/step-00001200/`, each written whole under a temporary name
//! and renamed into place, so a crash at any moment leaves either the old set or the new one.

use std::path::{Path, PathBuf};

use kiln_core::{LoadError, LoaderPosition, SaveError};
use serde::{Deserialize, Serialize};

/// The trainer's own part of a checkpoint (`trainer.json`); the task writes the rest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Steps completed.
    pub step: usize,
    /// The run's seed (the per-step generator is reseeded from it and the step).
    pub seed: u64,
    /// Where the data stream stands.
    pub loader_epoch: u64,
    /// Batches taken in that epoch.
    pub loader_batch: u64,
    /// The loader's augmentation generator.
    pub loader_rng: u64,
    /// Examples trained on so far.
    pub examples: u64,
    /// Seconds spent in training steps so far, over all sessions of the run.
    pub train_s: f64,
}

impl TrainerState {
    pub(crate) fn position(&self) -> LoaderPosition {
        LoaderPosition { epoch: self.loader_epoch, batch: self.loader_batch, rng: self.loader_rng }
    }
}

/// The file the trainer writes in each checkpoint directory.
pub const TRAINER_FILE: &str = "trainer.json";

/// `out/checkpoints`.
pub fn checkpoints_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// The completed checkpoints under `out`, oldest first, as `(step, dir)`.
pub fn list_checkpoints(out: &Path) -> Vec<(usize, PathBuf)> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(checkpoints_dir(out))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let step = name.strip_prefix("step-")?.parse().ok()?;
            Some((step, entry.path()))
        })
        .collect();
    found.sort();
    found
}

/// The newest checkpoint under `out`, if any.
pub fn latest_checkpoint(out: &Path) -> Option<(usize, PathBuf)> {
    list_checkpoints(out).pop()
}

/// Writes a checkpoint for `state.step`: `write_task` fills a temporary directory, then the
/// trainer state goes in, then the directory is renamed to its final name and older checkpoints
/// beyond `keep` are removed.
pub(crate) fn write_checkpoint(
    out: &Path,
    state: &TrainerState,
    keep: usize,
    write_task: impl FnOnce(&Path) -> Result<(), SaveError>,
) -> Result<PathBuf, SaveError> {
    let root = checkpoints_dir(out);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SaveError::Io { path: path.clone(), source }
    };
    let final_dir = root.join(format!("step-{:08}", state.step));
    let tmp = root.join(format!(".tmp-step-{:08}-{}", state.step, std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    write_task(&tmp)?;
    let json = serde_json::to_string_pretty(state)
        .map_err(|e| SaveError::Encode { path: tmp.join(TRAINER_FILE), message: e.to_string() })?;
    kiln_core::atomic_write(&tmp.join(TRAINER_FILE), json.as_bytes())?;
    // Every file of the checkpoint, the task's and the trainer's, gets its checksum in kiln.json.
    kiln_core::ModelManifest::seal(&tmp)?;
    if final_dir.exists() {
        // The same step saved twice (a resumed run that stops where it started): replace it.
        discard(&root, &final_dir).map_err(io(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    // Make the rename itself durable before deleting anything older.
    if let Ok(dir) = std::fs::File::open(&root) {
        let _ = dir.sync_all();
    }
    let all = list_checkpoints(out);
    for (_, old) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        discard(&root, old).map_err(io(old))?;
    }
    // Temporary and half-deleted directories of killed processes are garbage now.
    for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".tmp-step-") || name.starts_with(".old-step-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(final_dir)
}

/// Removes a checkpoint directory without ever leaving it half-deleted under its final name:
/// deleting a directory is not atomic (a kill between two files would leave a `step-N` without
/// its `trainer.json`), so it is first renamed out of the way, which is.
fn discard(root: &Path, dir: &Path) -> std::io::Result<()> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let trash = root.join(format!(".old-{name}-{}", std::process::id()));
    if trash.exists() {
        std::fs::remove_dir_all(&trash)?;
    }
    std::fs::rename(dir, &trash)?;
    std::fs::remove_dir_all(&trash)
}

/// Reads `dir/trainer.json`.
pub fn read_trainer_state(dir: &Path) -> Result<TrainerState, LoadError> {
    let path = dir.join(TRAINER_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| LoadError { path: path.clone(), message: e.to_string() })?;
    serde_json::from_str(&text).map_err(|e| LoadError { path, message: format!("not a kiln trainer state: {e}") })
}

/// Moves `dir` (a `step-N` checkpoint) into `checkpoints/set-aside/`, under a name no listing
/// takes for a checkpoint, so a resume from an older step never runs into it again — and nothing
/// is deleted. Returns where it went.
pub(crate) fn set_aside(out: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    let aside = checkpoints_dir(out).join("set-aside");
    std::fs::create_dir_all(&aside)?;
    let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut target = aside.join(&name);
    let mut i = 1;
    while target.exists() {
        target = aside.join(format!("{name}.{i}"));
        i += 1;
    }
    std::fs::rename(dir, &target)?;
    Ok(target)
}
