//! Opening a run directory as a model.

use std::path::Path;

use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use kiln_vae::{Vae, VaeConfig};

/// Loads the model in run directory `dir`.
pub fn load_vae<B: Backend>(dir: &Path, device: &B::Device) -> Result<(VaeConfig, Vae<B>)> {
    if !dir.is_dir() {
        bail!("{}: no such checkpoint directory", dir.display());
    }
    if !dir.join(kiln_vae::CONFIG_FILE).is_file() {
        bail!("{}: not a kiln checkpoint (no {} here)", dir.display(), kiln_vae::CONFIG_FILE);
    }
    Ok(Vae::load(dir, device)?)
}
