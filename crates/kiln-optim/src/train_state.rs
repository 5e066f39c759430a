//! The training state of a one-optimizer task — live weights, optimizer moments and an optional
//! EMA — saved beside the exported model and loaded back bit for bit.
//!
//! Why it lives here: the VAE, DRAW and diffusion tasks all export their EMA weights as the model
//! (what sampling uses) and so must keep the live weights in a file of their own; three copies of
//! that rule drifted apart once already in review. The exported model itself stays the task's to
//! write (its file names and metadata are the family's).

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::Device;
use burn::tensor::backend::AutodiffBackend;
use kiln_core::{LoadError, SaveError};

use crate::{Ema, Optim, OptimError, load_module, save_module};

/// The optimizer's moments and step count.
pub const OPTIM_FILE: &str = "optim.safetensors";
/// The live (trained) weights, when the exported model holds the EMA instead.
pub const LIVE_FILE: &str = "live.safetensors";
/// The EMA's weights and update count.
pub const EMA_FILE: &str = "ema.safetensors";

/// The EMA of a task's model, on the backend without autodiff.
pub type ModelEma<B, M> = Ema<<B as AutodiffBackend>::InnerBackend, <M as AutodiffModule<B>>::InnerModule>;

/// Writes `optim` and, with an EMA, the live weights and the EMA into `dir`. Call it after writing
/// the exported model: without an EMA the exported weights *are* the live ones.
pub fn save_train_state<B: AutodiffBackend, M: AutodiffModule<B>>(
    dir: &Path,
    model: &M,
    optim: &Optim<B>,
    ema: Option<&ModelEma<B, M>>,
) -> Result<(), SaveError> {
    optim.save(&dir.join(OPTIM_FILE)).map_err(|e| save_error(dir, e))?;
    if let Some(ema) = ema {
        save_module(&model.valid(), &dir.join(LIVE_FILE), &[]).map_err(|e| save_error(dir, e))?;
        ema.save(&dir.join(EMA_FILE)).map_err(|e| save_error(dir, e))?;
    }
    Ok(())
}

/// Reads what [`save_train_state`] wrote: returns the live weights, loaded into `model` itself so
/// its parameters keep requiring gradients (`weights_file`, the exported model, holds them when
/// there is no EMA), and fills `optim` and `ema`.
pub fn load_train_state<B: AutodiffBackend, M: AutodiffModule<B>>(
    dir: &Path,
    model: M,
    weights_file: &str,
    optim: &mut Optim<B>,
    ema: Option<&mut ModelEma<B, M>>,
    device: &Device<B>,
) -> Result<M, LoadError> {
    let live = if ema.is_some() { dir.join(LIVE_FILE) } else { dir.join(weights_file) };
    let model = load_module(model, &live)?;
    optim.load(&dir.join(OPTIM_FILE), &model, device)?;
    if let Some(ema) = ema {
        ema.load(&dir.join(EMA_FILE))?;
    }
    Ok(model)
}

/// A write error as it is (it names its file); anything else names the checkpoint directory.
fn save_error(dir: &Path, e: OptimError) -> SaveError {
    match e {
        OptimError::Save(e) => e,
        other => SaveError::Encode { path: dir.to_path_buf(), message: other.to_string() },
    }
}
