//! Feature rows kept for the metrics that need the samples themselves (KID, precision/recall).

use crate::error::Result;
use crate::rng::SplitMix64;
use crate::rows::{Rows, check_finite, check_same_dim, check_shape};

/// Feature rows gathered batch by batch: every row, or a seeded uniform sample of them.
///
/// KID and precision/recall compare samples with samples, so unlike [`crate::FeatureStats`] they
/// need the rows. Keeping all of them costs `4 × N × D` bytes: 410 MB for 50 000 Inception
/// features (D = 2048), 82 MB for the 10 000 that precision/recall is usually run on. A reservoir
/// ([`FeatureSet::with_reservoir`]) bounds that at `4 × capacity × D` bytes while every row seen
/// keeps the same chance `capacity / seen` of being in the sample (Vitter's Algorithm R); which
/// rows are kept depends only on the seed and the order rows arrive in, not on batch sizes.
#[derive(Debug, Clone)]
pub struct FeatureSet {
    dim: usize,
    data: Vec<f32>,
    seen: usize,
    reservoir: Option<(usize, SplitMix64)>,
}

impl FeatureSet {
    /// Keeps every row pushed.
    pub fn new(dim: usize) -> Self {
        Self { dim, data: Vec::new(), seen: 0, reservoir: None }
    }

    /// Keeps a uniform sample of at most `capacity` rows, drawn with `seed`.
    pub fn with_reservoir(dim: usize, capacity: usize, seed: u64) -> Self {
        Self { dim, data: Vec::new(), seen: 0, reservoir: Some((capacity, SplitMix64::new(seed))) }
    }

    /// Adds `count` rows of `dim` values. Nothing is added if an error is returned.
    ///
    /// # Errors
    /// [`crate::MetricsError::BadShape`], [`crate::MetricsError::DimMismatch`], or
    /// [`crate::MetricsError::NonFinite`] naming the row (counted over every row pushed so far).
    pub fn push(&mut self, data: &[f32], count: usize, dim: usize) -> Result<()> {
        check_shape("pushed features", data.len(), count, dim)?;
        check_same_dim("feature set", self.dim, "pushed features", dim)?;
        check_finite("pushed features", data, dim, self.seen)?;
        match &mut self.reservoir {
            None => self.data.extend_from_slice(data),
            Some((capacity, rng)) => {
                for row in data.chunks_exact(dim) {
                    let kept = self.data.len() / dim;
                    if kept < *capacity {
                        self.data.extend_from_slice(row);
                    } else {
                        // Row number `seen` replaces a kept row with probability capacity/(seen+1).
                        let slot = rng.below(self.seen as u64 + 1) as usize;
                        if slot < *capacity {
                            self.data[slot * dim..(slot + 1) * dim].copy_from_slice(row);
                        }
                    }
                    self.seen += 1;
                }
                return Ok(());
            }
        }
        self.seen += count;
        Ok(())
    }

    /// The rows kept, in the order described above.
    pub fn rows(&self) -> Rows<'_> {
        Rows::from_parts(&self.data, self.len(), self.dim)
    }

    /// Rows kept.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Whether no row is kept.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Rows pushed so far (kept or not).
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }
}
