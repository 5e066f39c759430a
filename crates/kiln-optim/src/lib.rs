//! Optimisation for kiln models: Adam and AdamW, learning-rate schedules, gradient clipping by
//! global norm, gradient accumulation, an exponential moving average (EMA) of weights, and the
//! safetensors files that hold all of their state.
//!
//! # Why not `burn::optim`
//! burn's `OptimizerAdaptor` keys its state by `ParamId`, which a freshly built model does not
//! share with the one that was saved, and records it with burn's recorder rather than safetensors;
//! its gradient clipping is per parameter, not by the global norm people mean by "clip to 1.0".
//! kiln needs state that survives a process restart **bit for bit** (a resumed run must end with
//! the same weights as an uninterrupted one), so [`Optim`] keys every tensor by its module path
//! (`encoder.0.weight`), keeps it on the device between steps, and writes it as a plain
//! safetensors file a person can inspect. The update itself is the textbook one (Kingma & Ba 2014;
//! Loshchilov & Hutter 2017 for decoupled weight decay), a few element-wise ops per parameter.
//!
//! ```no_run
//! # use burn::tensor::backend::AutodiffBackend;
//! # use burn::module::AutodiffModule;
//! # fn demo<B: AutodiffBackend, M: AutodiffModule<B>>(mut model: M, loss: burn::tensor::Tensor<B, 1>) {
//! use kiln_optim::{Decay, Optim, OptimConfig};
//! let config = OptimConfig { lr: 2e-4, warmup: 100, decay: Decay::Cosine, clip_norm: Some(1.0), ..OptimConfig::default() };
//! let mut optim = Optim::<B>::new(config, 10_000).expect("valid settings");
//! let grads = loss.backward();
//! model = optim.step(model, &grads);
//! # }
//! ```
#![warn(missing_docs)]

mod ema;
mod error;
mod optim;
mod params;
mod schedule;
mod shard;
mod state;
pub mod sync;
mod train_state;

pub use ema::Ema;
pub use error::OptimError;
pub use optim::{Optim, OptimConfig, OptimKind};
pub use params::{param_paths, zip_map_params};
pub use schedule::{Decay, Schedule};
pub use shard::{Shard, backward_shards, batch_means, shard_ranges};
pub use state::{TensorFile, load_module, load_module_bytes, save_module};
pub use sync::{GradSync, SyncError};
pub use train_state::{EMA_FILE, LIVE_FILE, ModelEma, OPTIM_FILE, load_train_state, save_train_state};

#[cfg(test)]
mod tests;
