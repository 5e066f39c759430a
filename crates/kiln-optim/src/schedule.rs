//! Learning-rate schedules: an optional linear warm-up, then constant, cosine or linear decay.

use serde::{Deserialize, Serialize};

/// How the learning rate falls after warm-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decay {
    /// Stays at the base rate.
    #[default]
    Constant,
    /// Half a cosine from the base rate down to `min_factor ×` it at the last update.
    Cosine,
    /// A straight line from the base rate down to `min_factor ×` it at the last update.
    Linear,
}

/// The factor the base learning rate is multiplied by at each update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Updates of linear warm-up: update `u < warmup` uses `(u + 1) / warmup`.
    pub warmup: usize,
    /// What follows the warm-up.
    pub decay: Decay,
    /// The final factor of a decay, in `[0, 1]`.
    pub min_factor: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        Self { warmup: 0, decay: Decay::Constant, min_factor: 0.0 }
    }
}

impl Schedule {
    /// The factor for update `update` (counting from 0) of a run of `total` updates.
    pub fn factor(&self, update: usize, total: usize) -> f64 {
        if update < self.warmup {
            return (update + 1) as f64 / self.warmup as f64;
        }
        // Progress through the decay phase: 0 at its first update, 1 at the run's last.
        let span = total.saturating_sub(self.warmup).saturating_sub(1).max(1);
        let progress = ((update - self.warmup) as f64 / span as f64).min(1.0);
        let min = self.min_factor;
        match self.decay {
            Decay::Constant => 1.0,
            Decay::Cosine => min + (1.0 - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            Decay::Linear => min + (1.0 - min) * (1.0 - progress),
        }
    }
}
