//! The numeric core of kiln's evaluation metrics, on plain `f32` feature rows (`N × D`, row after
//! row in one slice) with all arithmetic in `f64`:
//!
//! * [`frechet_distance`] / [`fid()`] — Fréchet distance between Gaussians fitted to features
//!   (Heusel et al. 2017), from streaming [`FeatureStats`];
//! * [`kid()`] — Kernel Inception Distance, unbiased polynomial-kernel MMD² over seeded subsets
//!   (Bińkowski et al. 2018);
//! * [`inception_score`] — from softmax rows, in splits (Salimans et al. 2016);
//! * [`precision_recall()`] — k-NN manifold precision and recall (Kynkäänniemi et al. 2019).
//!
//! Which network produces the features (Inception-v3 pool3 for FID/KID/PR, its logits' softmax for
//! IS) is the caller's business; this crate depends on neither burn nor a BLAS, so it builds in
//! seconds and its numbers can be checked on their own. The golden tests compare it with
//! scipy/numpy references and a 40-digit mpmath ground truth (`golden/make_golden.py`).
//!
//! # Streaming
//! FID needs only the mean and covariance: push batches into a [`FeatureStats`] and memory stays
//! at `D²` doubles however many images go through. KID and precision/recall compare samples, so
//! they need the rows: a [`FeatureSet`] keeps them all, or a seeded uniform reservoir of them.
//!
//! ```
//! use kiln_metrics::{FeatureSet, FeatureStats, KidConfig, fid, kid};
//!
//! let dim = 4;
//! let (mut real, mut fake) = (FeatureStats::new(dim), FeatureStats::new(dim));
//! let mut fake_rows = FeatureSet::with_reservoir(dim, 1_000, 7);
//! let mut real_rows = FeatureSet::new(dim);
//! for batch in 0..8 {
//!     // Stand-ins for network features: 16 rows of `dim` values per batch.
//!     let r: Vec<f32> = (0..16 * dim).map(|i| ((i * 7 + batch * 3) % 11) as f32).collect();
//!     let f: Vec<f32> = (0..16 * dim).map(|i| ((i * 5 + batch) % 13) as f32 * 0.9).collect();
//!     real.push(&r, 16, dim)?;
//!     fake.push(&f, 16, dim)?;
//!     real_rows.push(&r, 16, dim)?;
//!     fake_rows.push(&f, 16, dim)?;
//! }
//! let distance = fid(&real, &fake)?;
//! let kid = kid(real_rows.rows(), fake_rows.rows(), &KidConfig { subset_size: 50, subsets: 10, seed: 0 })?;
//! assert!(distance > 0.0 && kid.mean.is_finite());
//! # Ok::<(), kiln_metrics::MetricsError>(())
//! ```
//!
//! # Cost
//! Measured on the 2-core development VM (x86-64 baseline SSE2, no BLAS, shared with other
//! builds), D = 2048: FID between two covariances ~15–20 s; KID ~2 s per subset of 1000 (so the
//! default 100 subsets take minutes); precision/recall ~7 s for 2000 rows per set, growing with
//! the square of the set size. `tests/timing.rs` (ignored) reproduces these.

#![warn(missing_docs)]

mod eigen;
mod error;
mod fid;
mod gemm;
mod inception;
mod kid;
mod precision_recall;
mod rng;
mod rows;
mod set;
mod stats;

pub use error::{MetricsError, Result};
pub use fid::{fid, frechet_distance};
pub use inception::{DEFAULT_SPLITS, inception_score};
pub use kid::{KidConfig, KidSubset, kid, kid_on_subsets, kid_subsets, mmd2_unbiased};
pub use precision_recall::{DEFAULT_K, PrecisionRecall, knn_radii, precision_recall};
pub use rows::Rows;
pub use set::FeatureSet;
pub use stats::{FeatureStats, Moments};

/// A score averaged over subsets or splits, with its spread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanStd {
    /// Mean over subsets/splits.
    pub mean: f64,
    /// Population standard deviation (divisor = number of subsets/splits), as the reference
    /// implementations (`np.std`) report it.
    pub std: f64,
}

#[cfg(test)]
mod tests;
