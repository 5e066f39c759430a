//! An exponential moving average of a module's weights, the copy GANs and diffusion models sample
//! from: `ema ← decay·ema + (1 − decay)·live` after each update.

use std::marker::PhantomData;
use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;

use crate::state::state_err;
use crate::{OptimError, load_module, save_module, zip_map_params};

/// The running average of a module (on the inner backend: it is never trained, only read).
#[derive(Debug, Clone)]
pub struct Ema<B: Backend, M: Module<B>> {
    module: M,
    decay: f64,
    warmup: bool,
    updates: usize,
    backend: PhantomData<B>,
}

impl<B: Backend, M: Module<B>> Ema<B, M> {
    /// Starts the average at `module` (a copy of the live weights).
    pub fn new(module: M, decay: f64) -> Result<Self, OptimError> {
        if !(0.0..1.0).contains(&decay) {
            return Err(OptimError::Config {
                field: "ema_decay",
                value: decay.to_string(),
                reason: "must be in [0, 1)",
            });
        }
        Ok(Self { module, decay, warmup: false, updates: 0, backend: PhantomData })
    }

    /// Warms the average up: update `t` (from 0) uses `min(decay, (1 + t) / (10 + t))`, so the
    /// first updates follow the live weights closely instead of dragging the random
    /// initialisation along for ~`1 / (1 − decay)` updates (TensorFlow's
    /// `ExponentialMovingAverage(num_updates=…)`). GANs sample from such an average from the
    /// first preview on.
    pub fn with_warmup(mut self) -> Self {
        self.warmup = true;
        self
    }

    /// The averaged module.
    pub fn module(&self) -> &M {
        &self.module
    }

    /// The decay.
    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// Updates folded in so far.
    pub fn updates(&self) -> usize {
        self.updates
    }

    /// Folds in the current live weights (`live.valid()` for a training module). Every float
    /// parameter is averaged, batch-norm statistics included.
    pub fn update(&mut self, live: &M) {
        let t = self.updates as f64;
        let d = if self.warmup { self.decay.min((1.0 + t) / (10.0 + t)) } else { self.decay };
        let module = self.module.clone();
        self.module = zip_map_params(module, live, |ema, w| ema.mul_scalar(d) + w.mul_scalar(1.0 - d));
        self.updates += 1;
    }

    /// Writes the average as safetensors.
    pub fn save(&self, path: &Path) -> Result<(), OptimError> {
        save_module(
            &self.module,
            path,
            &[("kiln.kind", "ema".into()), ("updates", self.updates.to_string()), ("decay", self.decay.to_string())],
        )
    }

    /// Restores an average written by [`Ema::save`].
    pub fn load(&mut self, path: &Path) -> Result<(), OptimError> {
        let updates = read_updates(path)?;
        self.module = load_module(self.module.clone(), path)?;
        self.updates = updates;
        Ok(())
    }
}

fn read_updates(path: &Path) -> Result<usize, OptimError> {
    let bytes = std::fs::read(path).map_err(|e| state_err(path, e.to_string()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| state_err(path, format!("not a safetensors file: {e}")))?;
    let raw = header.metadata().as_ref().and_then(|m| m.get("updates")).cloned();
    raw.as_deref()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| state_err(path, "not a kiln EMA file (metadata has no `updates` count)"))
}
