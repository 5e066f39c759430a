//! Noise schedules of the discrete-time process: `β_1 … β_T` and `ᾱ_t = Π_{s≤t} (1 − β_s)`,
//! computed once on the host in `f64`.
//!
//! - **Linear** (Ho et al. 2020, section 4): `β` evenly from `1e-4` to `0.02` over `T = 1000`.
//!   For another `T` both ends are scaled by `1000 / T`, as Nichol & Dhariwal's code does, so the
//!   total noise added stays the same.
//! - **Cosine** (Nichol & Dhariwal 2021, arXiv:2102.09672, eq. 17):
//!   `ᾱ_t = f(t) / f(0)`, `f(t) = cos²(((t/T) + s) / (1 + s) · π/2)`, `s = 0.008`,
//!   `β_t = min(1 − ᾱ_t / ᾱ_{t−1}, 0.999)`. It destroys information more slowly at the start, which
//!   matters at 28–32 pixels where the linear schedule's last quarter is nearly pure noise.
//!
//! Step indices are 0-based here: index `i` is the paper's `t = i + 1`.

use burn::config::Config;

/// The shape of `β_t`.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum BetaSchedule {
    /// `β` linear from `beta_start` to `beta_end` (at `T = 1000`; scaled by `1000/T` otherwise).
    Linear {
        /// `β_1` at `T = 1000` (the paper: `1e-4`).
        beta_start: f64,
        /// `β_T` at `T = 1000` (the paper: `0.02`).
        beta_end: f64,
    },
    /// Nichol & Dhariwal's cosine `ᾱ` with offset `s`.
    Cosine {
        /// The small offset that keeps `β_1` from vanishing (the paper: 0.008).
        offset: f64,
    },
}

impl BetaSchedule {
    /// Ho et al.'s linear schedule.
    pub const LINEAR: Self = Self::Linear { beta_start: 1e-4, beta_end: 0.02 };
    /// Nichol & Dhariwal's cosine schedule.
    pub const COSINE: Self = Self::Cosine { offset: 0.008 };
}

/// `β` and `ᾱ` for every step.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    alpha_bars: Vec<f64>,
}

/// The cap on `β_t` of the cosine schedule (its last steps would otherwise reach 1).
pub const MAX_BETA: f64 = 0.999;

impl NoiseSchedule {
    /// The schedule of `kind` over `timesteps ≥ 1` steps.
    pub fn new(kind: BetaSchedule, timesteps: usize) -> Self {
        let t = timesteps.max(1);
        let betas: Vec<f64> = match kind {
            BetaSchedule::Linear { beta_start, beta_end } => {
                let scale = 1000.0 / t as f64;
                let (a, b) = (beta_start * scale, (beta_end * scale).min(MAX_BETA));
                (0..t).map(|i| if t == 1 { a } else { a + (b - a) * i as f64 / (t - 1) as f64 }).collect()
            }
            BetaSchedule::Cosine { offset } => {
                let f = |i: usize| {
                    ((i as f64 / t as f64 + offset) / (1.0 + offset) * std::f64::consts::FRAC_PI_2).cos().powi(2)
                };
                (1..=t).map(|i| (1.0 - f(i) / f(i - 1)).min(MAX_BETA)).collect()
            }
        };
        let mut alpha_bars = Vec::with_capacity(t);
        let mut prod = 1.0;
        for b in &betas {
            prod *= 1.0 - b;
            alpha_bars.push(prod);
        }
        Self { betas, alpha_bars }
    }

    /// `T`.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Always false: a schedule has at least one step.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// `β` of step `i` (0-based).
    pub fn beta(&self, i: usize) -> f64 {
        self.betas[i]
    }

    /// `ᾱ` after step `i` (0-based); `alpha_bar(T − 1)` is close to 0.
    pub fn alpha_bar(&self, i: usize) -> f64 {
        self.alpha_bars[i]
    }

    /// Every `ᾱ`.
    pub fn alpha_bars(&self) -> &[f64] {
        &self.alpha_bars
    }

    /// Signal-to-noise ratio `ᾱ / (1 − ᾱ)` of step `i`.
    pub fn snr(&self, i: usize) -> f64 {
        let a = self.alpha_bars[i];
        a / (1.0 - a)
    }

    /// `steps` step indices spread evenly over `[0, T)`, first `T − 1` down to `0` — the
    /// subsequence a sampler with fewer steps visits (DDIM's `τ`, Improved DDPM's respacing).
    pub fn respaced(&self, steps: usize) -> Vec<usize> {
        let t = self.len();
        let steps = steps.clamp(1, t);
        if steps == 1 {
            return vec![t - 1];
        }
        let mut out: Vec<usize> =
            (0..steps).map(|k| ((t - 1) as f64 * k as f64 / (steps - 1) as f64).round() as usize).collect();
        out.dedup();
        out.reverse();
        out
    }
}
