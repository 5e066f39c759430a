//! Model families in the `kiln` binary: one adapter file each, one registry.
//!
//! Outside this folder the binary names no family: `kiln train` reads an experiment's
//! `family = "…"` and asks [`registry`] for the adapter; `sample`, `interpolate`, `reconstruct` and
//! `eval` open a model directory through [`registry::open`], which reads its `kiln.json`, and from
//! then on talk to a [`kiln_core::Generative`] — whatever the family, a request in, images in
//! `[0, 1]` out. (A test, `outside_family_no_model_crate_is_named`, keeps it so.)
//!
//! # Adding a model family
//! What a new family `foo` writes, and nothing else:
//! 1. **Its crate**, `crates/kiln-foo`: `FooConfig` → `init(&device)` → typed methods; a
//!    `kiln_core::Task` for training; `kiln_core::Generative` on the trained model (its card says
//!    which request options it accepts — the checks and error messages come with
//!    `SampleRequest::check`); save/load that writes `kiln.json` (`kiln_core::ModelManifest`) and
//!    exports `FAMILY` and `FORMAT`. Its tests (tiny shapes, "it learns", round trips) and, if it
//!    should run again on burn-ndarray in CI, a `test-ndarray` feature: `cargo xtask ci` finds the
//!    crates that declare one.
//! 2. **One adapter**, `family/foo.rs`: a type implementing [`Family`]. It owns the `[model]` and
//!    `[train.foo]` tables (a `deny_unknown_fields` struct read with
//!    [`crate::experiment::strict`], laid over the crate's preset with
//!    [`crate::experiment::overlay`]), trains through [`crate::train::TrainRun`], writes its
//!    evaluation (if any) and opens a saved model.
//! 3. **One registry line**: the type in the `families!` list in `registry.rs` (and the adapter's
//!    `mod foo;` below, which Rust needs to see the file).
//! 4. **Experiment files**, `experiments/foo-*.toml`, each reading like a lab note.
//! 5. **Tests**: the adapter's parsing in its file; an end-to-end run in `tests/cli.rs` if the
//!    family adds behaviour the generic commands do not already cover.

pub mod classifier;
mod dalle;
mod diffusion;
mod draw;
mod gan;
pub mod registry;
mod vae;
mod vqvae;

use std::path::Path;

use anyhow::Result;
use burn::tensor::backend::{AutodiffBackend, Backend};
use kiln_core::Generative;
use serde::Serialize;

use crate::experiment::Experiment;
use crate::train::{DataInfo, TrainRun};

/// A model family as the `kiln` binary sees it.
pub trait Family {
    /// The name experiment files and `kiln.json` use.
    const NAME: &'static str;
    /// One line for `kiln families`.
    const ABOUT: &'static str;
    /// Whether a trained model generates images (so `kiln eval` and `cargo xtask experiment` score it).
    const GENERATOR: bool;
    /// The newest directory layout this kiln reads (the model crate's `FORMAT`).
    const FORMAT: u32;
    /// The file that marks a model directory of this family written before `kiln.json` existed.
    const LEGACY_FILE: Option<&'static str>;

    /// Everything the family trains from, resolved: the model config and the training settings
    /// after presets, overrides and the data's facts. Written to the run as `resolved.json`.
    type Resolved: Serialize;

    /// Reads and checks the family's tables of `exp`. `data` is `None` when the file is checked
    /// before its data is loaded (then data-dependent values take placeholders).
    fn resolve(exp: &Experiment, data: Option<&DataInfo>) -> Result<Self::Resolved>;

    /// An experiment file to train before this one, into `RUN/tokenizer` (a DALL·E's VQ-VAE, when
    /// its `model.tokenizer` names an experiment rather than a trained model). `kiln train` runs
    /// it first, resumes it if it was cut short, and skips it once it is complete.
    fn first_stage(exp: &Experiment) -> Result<Option<std::path::PathBuf>> {
        let _ = exp;
        Ok(None)
    }

    /// Trains, evaluates what the family evaluates, and reports.
    fn train<B: AutodiffBackend>(run: TrainRun<'_>, resolved: Self::Resolved, device: &B::Device) -> Result<()>;

    /// Opens a saved model directory of this family for generation.
    fn open<B: Backend>(dir: &Path, device: &B::Device) -> Result<Box<dyn Generative<B>>>;
}
