//! A Gaussian mixture over the latent space, fitted after training to where the encoder puts the
//! training images: the prior a trained VAE samples from when it has one.
//!
//! Why: a VAE is trained to make `q(z | x)` close to `N(0, I)`, but the aggregate of the
//! posteriors never fills `N(0, I)` — prior draws land in holes the decoder never saw and decode
//! to blurred in-between shapes. Fitting a density to the encoded training set after training
//! ("ex-post density estimation", Ghosh et al. 2020, arXiv:1903.12436, §4, who use a
//! 10-component full-covariance mixture) samples where the decoder was trained. Measured with
//! kiln's own extractor on the MNIST sample: see `experiments/vae-mnist.toml`.
//!
//! The fit is EM on the host in f64 (k-means++ seeding, a few Lloyd rounds, then EM to a tolerance):
//! the latents are small (thousands × tens), so it takes milliseconds and needs no backend.

use std::path::Path;

use kiln_core::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::vae::VaeError;

/// The mixture's file in a model directory.
pub const PRIOR_FILE: &str = "prior.json";

/// Added to each covariance's diagonal, relative to the data's mean variance: keeps every
/// component's Cholesky factor well defined when a component sits on few points.
const RIDGE: f64 = 1e-4;
/// EM stops when the mean log-likelihood gains less than this per round.
const TOLERANCE: f64 = 1e-6;
const MAX_ROUNDS: usize = 200;
const LLOYD_ROUNDS: usize = 10;

/// A `K`-component Gaussian mixture in `d` dimensions with full covariances, each stored as its
/// lower Cholesky factor `L` (`Σ = L Lᵀ`), row-major `d × d`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatentMixture {
    /// Dimension of each point.
    pub dim: usize,
    /// Mixing weights, positive, summing to 1.
    pub weights: Vec<f64>,
    /// Component means, `K × d`.
    pub means: Vec<Vec<f64>>,
    /// Lower Cholesky factors of the covariances, `K × (d·d)`, row-major.
    pub cholesky: Vec<Vec<f64>>,
    /// How many points it was fitted to.
    pub fitted_on: usize,
    /// Their mean log-density under the mixture (nats per point).
    pub mean_log_likelihood: f64,
}

impl LatentMixture {
    /// Fits `components` Gaussians to `points` (`n × dim`, row-major) by EM, seeded by `seed`.
    /// Fewer points than components is an error; a point that is not finite is one too.
    pub fn fit(points: &[f32], dim: usize, components: usize, seed: u64) -> Result<Self, VaeError> {
        let bad =
            |field: &'static str, value: String, reason: &str| VaeError::Config { field, value, reason: reason.into() };
        if dim == 0 || points.is_empty() || !points.len().is_multiple_of(dim) {
            return Err(bad(
                "prior points",
                format!("{} values", points.len()),
                "must be whole points of the latent size",
            ));
        }
        let n = points.len() / dim;
        if components == 0 || components > n {
            return Err(bad("prior_components", components.to_string(), &format!("must be in 1..={n} (the points)")));
        }
        if let Some(i) = points.iter().position(|v| !v.is_finite()) {
            return Err(bad("prior points", format!("value at {i}"), "every latent must be finite"));
        }
        let x: Vec<f64> = points.iter().map(|&v| f64::from(v)).collect();
        let row = |i: usize| &x[i * dim..(i + 1) * dim];
        let k = components;
        // The data's mean variance sets the ridge's scale.
        let mut mean = vec![0.0; dim];
        for i in 0..n {
            for (m, v) in mean.iter_mut().zip(row(i)) {
                *m += v / n as f64;
            }
        }
        let spread = (0..n).map(|i| dist2(row(i), &mean)).sum::<f64>() / (n * dim) as f64;
        let ridge = RIDGE * spread.max(1e-12);

        // k-means++ seeding, then Lloyd rounds: hard assignments to start EM from.
        let mut rng = SplitMix64::new(seed);
        let mut centers = vec![row(rng.below(n)).to_vec()];
        let mut nearest: Vec<f64> = (0..n).map(|i| dist2(row(i), &centers[0])).collect();
        while centers.len() < k {
            let total: f64 = nearest.iter().sum();
            let pick = if total > 0.0 {
                let mut target = rng.uniform() * total;
                nearest.iter().position(|&d| {
                    target -= d;
                    target <= 0.0
                })
            } else {
                None
            }
            .unwrap_or_else(|| rng.below(n));
            centers.push(row(pick).to_vec());
            let c = centers.last().expect("just pushed");
            for (i, d) in nearest.iter_mut().enumerate() {
                *d = d.min(dist2(row(i), c));
            }
        }
        let mut resp = vec![0.0; n * k]; // responsibilities, n × k
        for _ in 0..LLOYD_ROUNDS {
            resp.iter_mut().for_each(|r| *r = 0.0);
            for i in 0..n {
                let best = (0..k).min_by(|&a, &b| dist2(row(i), &centers[a]).total_cmp(&dist2(row(i), &centers[b])));
                resp[i * k + best.expect("k ≥ 1")] = 1.0;
            }
            centers = weighted_means(&x, &resp, n, dim, k).into_iter().map(|(_, mu)| mu).collect();
        }

        let mut mixture = Self {
            dim,
            weights: vec![],
            means: vec![],
            cholesky: vec![],
            fitted_on: n,
            mean_log_likelihood: f64::NEG_INFINITY,
        };
        let mut previous = f64::NEG_INFINITY;
        for _ in 0..MAX_ROUNDS {
            let (weights, means, cholesky) = m_step(&x, &resp, n, dim, k, ridge);
            mixture.weights = weights;
            mixture.means = means;
            mixture.cholesky = cholesky;
            // E step: responsibilities from the log-densities, normalised per point.
            let mut total = 0.0;
            let mut logp = vec![0.0; k];
            for i in 0..n {
                for (j, lp) in logp.iter_mut().enumerate() {
                    *lp = mixture.weights[j].ln() + mixture.log_gaussian(j, row(i));
                }
                let top = logp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let norm = top + logp.iter().map(|lp| (lp - top).exp()).sum::<f64>().ln();
                total += norm;
                for j in 0..k {
                    resp[i * k + j] = (logp[j] - norm).exp();
                }
            }
            mixture.mean_log_likelihood = total / n as f64;
            if mixture.mean_log_likelihood - previous < TOLERANCE {
                break;
            }
            previous = mixture.mean_log_likelihood;
        }
        Ok(mixture)
    }

    /// Number of components.
    pub fn components(&self) -> usize {
        self.weights.len()
    }

    /// `n` points (`n × dim`, row-major) drawn from the mixture with `seed`: component by weight,
    /// then `μ + L ε` with `ε ~ N(0, I)`. With `truncation`, the entries of `ε` are redrawn
    /// outside `[−T, T]` (the truncation trick, applied within each component).
    pub fn sample(&self, n: usize, seed: u64, truncation: Option<f64>) -> Vec<f32> {
        let d = self.dim;
        let eps = kiln_core::standard_normal(n * d, seed, truncation);
        let mut pick = SplitMix64::new(seed ^ COMPONENT_STREAM);
        let mut out = Vec::with_capacity(n * d);
        for e in eps.chunks_exact(d) {
            let mut u = pick.uniform();
            let j = self.weights.iter().position(|&w| {
                u -= w;
                u <= 0.0
            });
            let j = j.unwrap_or(self.weights.len() - 1);
            let (mu, l) = (&self.means[j], &self.cholesky[j]);
            for r in 0..d {
                let lz: f64 = (0..=r).map(|c| l[r * d + c] * f64::from(e[c])).sum();
                out.push((mu[r] + lz) as f32);
            }
        }
        out
    }

    /// `log N(x; μ_j, Σ_j)`.
    fn log_gaussian(&self, j: usize, x: &[f64]) -> f64 {
        let d = self.dim;
        let (mu, l) = (&self.means[j], &self.cholesky[j]);
        // Forward substitution: y = L⁻¹ (x − μ); log det Σ = 2 Σ log L_ii.
        let mut y = vec![0.0; d];
        let mut log_det = 0.0;
        for r in 0..d {
            let s: f64 = (0..r).map(|c| l[r * d + c] * y[c]).sum();
            y[r] = (x[r] - mu[r] - s) / l[r * d + r];
            log_det += 2.0 * l[r * d + r].ln();
        }
        -0.5 * (d as f64 * (2.0 * std::f64::consts::PI).ln() + log_det + y.iter().map(|v| v * v).sum::<f64>())
    }

    /// Writes `prior.json` into `dir`, atomically.
    pub fn save(&self, dir: &Path) -> Result<(), VaeError> {
        let path = dir.join(PRIOR_FILE);
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| kiln_core::SaveError::Encode { path: path.clone(), message: e.to_string() })?;
        kiln_core::atomic_write(&path, json.as_bytes())?;
        Ok(())
    }

    /// Reads `dir/prior.json` if there is one, checked against a latent size of `dim`: every
    /// field must hold together (sizes, weights summing to 1, a positive Cholesky diagonal).
    pub fn load(dir: &Path, dim: usize) -> Result<Option<Self>, VaeError> {
        let path = dir.join(PRIOR_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let bad = |message: String| VaeError::Checkpoint { path: path.clone(), message };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let m: Self = serde_json::from_str(&text).map_err(|e| bad(format!("not a latent mixture: {e}")))?;
        let k = m.weights.len();
        if m.dim != dim {
            return Err(bad(format!("dim = {}, but the model's latent size is {dim}", m.dim)));
        }
        if k == 0 || m.means.len() != k || m.cholesky.len() != k {
            return Err(bad(format!(
                "{k} weights, {} means, {} Cholesky factors: they must agree",
                m.means.len(),
                m.cholesky.len()
            )));
        }
        if let Some(j) = m.means.iter().position(|v| v.len() != dim || v.iter().any(|x| !x.is_finite())) {
            return Err(bad(format!("means[{j}] must hold {dim} finite numbers")));
        }
        let diagonal_ok = |l: &Vec<f64>| (0..dim).all(|r| l[r * dim + r] > 0.0);
        if let Some(j) =
            m.cholesky.iter().position(|l| l.len() != dim * dim || l.iter().any(|x| !x.is_finite()) || !diagonal_ok(l))
        {
            return Err(bad(format!("cholesky[{j}] must be {dim}×{dim} finite numbers with a positive diagonal")));
        }
        let sum: f64 = m.weights.iter().sum();
        if m.weights.iter().any(|w| !(w.is_finite() && *w > 0.0)) || (sum - 1.0).abs() > 1e-6 {
            return Err(bad(format!("weights must be positive and sum to 1 (they sum to {sum})")));
        }
        Ok(Some(m))
    }
}

/// Mixed into a sampling seed for the component choices, so they are not the stream `ε` uses.
const COMPONENT_STREAM: u64 = 0x3C6E_F372_FE94_F82B;

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Each component's mass (the sum of its responsibilities in `resp`, `n × k`) and mean. A
/// component left with no points (mass `None`) takes every point at weight 1 — the data's mean —
/// so that none divides by zero.
fn weighted_means(x: &[f64], resp: &[f64], n: usize, d: usize, k: usize) -> Vec<(Option<f64>, Vec<f64>)> {
    (0..k)
        .map(|j| {
            let mass: f64 = (0..n).map(|i| resp[i * k + j]).sum();
            let mass = (mass >= 1e-9).then_some(mass);
            let mut mu = vec![0.0; d];
            for i in 0..n {
                let w = if mass.is_some() { resp[i * k + j] } else { 1.0 };
                for (m, v) in mu.iter_mut().zip(&x[i * d..(i + 1) * d]) {
                    *m += w * v;
                }
            }
            let total = mass.unwrap_or(n as f64);
            mu.iter_mut().for_each(|m| *m /= total);
            (mass, mu)
        })
        .collect()
}

/// The M step from responsibilities `resp` (`n × k`): weights, means and the Cholesky factors
/// of the ridged covariances. A component left with no points is re-seeded at the data's mean
/// with the data's covariance (and a negligible weight).
fn m_step(
    x: &[f64],
    resp: &[f64],
    n: usize,
    d: usize,
    k: usize,
    ridge: f64,
) -> (Vec<f64>, Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let (mut weights, mut means, mut factors) = (Vec::with_capacity(k), Vec::with_capacity(k), Vec::with_capacity(k));
    for (j, (mass, mu)) in weighted_means(x, resp, n, d, k).into_iter().enumerate() {
        let r = |i: usize| if mass.is_some() { resp[i * k + j] } else { 1.0 };
        let total = mass.unwrap_or(n as f64);
        let mut cov = vec![0.0; d * d];
        for i in 0..n {
            let w = r(i);
            let p = &x[i * d..(i + 1) * d];
            for a in 0..d {
                let da = w * (p[a] - mu[a]);
                for b in 0..=a {
                    cov[a * d + b] += da * (p[b] - mu[b]);
                }
            }
        }
        for a in 0..d {
            for b in 0..=a {
                cov[a * d + b] /= total;
            }
            cov[a * d + a] += ridge;
        }
        weights.push(mass.map_or(1e-12, |m| m / n as f64));
        factors.push(cholesky(&cov, d, ridge));
        means.push(mu);
    }
    let total: f64 = weights.iter().sum();
    weights.iter_mut().for_each(|w| *w /= total);
    (weights, means, factors)
}

/// The lower Cholesky factor of the symmetric matrix whose lower triangle `a` holds; a pivot
/// that is not positive (rounding on a nearly singular matrix) is raised to `ridge`.
fn cholesky(a: &[f64], d: usize, ridge: f64) -> Vec<f64> {
    let mut l = vec![0.0; d * d];
    for r in 0..d {
        for c in 0..=r {
            let s: f64 = (0..c).map(|t| l[r * d + t] * l[c * d + t]).sum();
            if r == c {
                l[r * d + r] = (a[r * d + r] - s).max(ridge).sqrt();
            } else {
                l[r * d + c] = (a[r * d + c] - s) / l[c * d + c];
            }
        }
    }
    l
}
