//! Inception Score (Salimans et al. 2016, arXiv:1606.03498) from class-probability rows.

use crate::MeanStd;
use crate::error::{MetricsError, Result};
use crate::rows::{Rows, mean_std};

/// Splits of the original evaluation code (and of torch-fidelity).
pub const DEFAULT_SPLITS: usize = 10;

/// How far a row's sum may stray from 1: float32 softmax over ~1000 classes is within 1e-6, so
/// anything past 1e-3 is not a softmax output (logits passed by mistake, say).
const SUM_TOLERANCE: f64 = 1e-3;

/// Inception Score of `N × K` class probabilities `p(y|x)` (softmax outputs, one row per image).
///
/// The rows are cut into `splits` contiguous parts (part `s` is rows `s·N/splits ..
/// (s+1)·N/splits`, as in the reference code); in each part the marginal `p(y)` is the mean row
/// and the score is `exp(mean_x KL(p(y|x) ‖ p(y)))`. Returns the mean and the population standard
/// deviation over parts. Terms with `p(y|x) = 0` contribute 0 (the limit of `p log p`), where the
/// reference code would produce NaN. Computed in `f64`.
///
/// The score lies in `[1, K]`: 1 when every row is the same, `K` when rows are one-hot and the
/// classes are evenly used within each part.
///
/// # Errors
/// [`MetricsError::InvalidSetting`] for `splits == 0`, [`MetricsError::TooFewSamples`] for
/// fewer rows than splits, [`MetricsError::NotAProbability`] naming a row with a negative or
/// non-finite entry or a sum more than 1e-3 away from 1.
pub fn inception_score(probs: Rows<'_>, splits: usize) -> Result<MeanStd> {
    if splits == 0 {
        return Err(MetricsError::InvalidSetting {
            name: "Inception Score splits",
            value: "0".into(),
            why: "at least one split is needed",
        });
    }
    let (n, k) = (probs.count(), probs.dim());
    if n < splits {
        return Err(MetricsError::TooFewSamples {
            what: "class probabilities",
            have: n,
            need: splits,
            why: "every split needs at least one row",
        });
    }
    for i in 0..n {
        check_distribution(i, probs.row(i))?;
    }
    let scores: Vec<f64> = (0..splits)
        .map(|s| {
            let (start, end) = (s * n / splits, (s + 1) * n / splits);
            let rows = end - start;
            let mut marginal = vec![0.0f64; k];
            for i in start..end {
                marginal.iter_mut().zip(probs.row(i)).for_each(|(m, &p)| *m += f64::from(p));
            }
            marginal.iter_mut().for_each(|m| *m /= rows as f64);
            let log_marginal: Vec<f64> = marginal.iter().map(|m| m.ln()).collect();
            let kl_sum: f64 = (start..end)
                .map(|i| {
                    probs
                        .row(i)
                        .iter()
                        .zip(&log_marginal)
                        .filter(|(p, _)| **p > 0.0)
                        .map(|(&p, lm)| {
                            let p = f64::from(p);
                            p * (p.ln() - lm)
                        })
                        .sum::<f64>()
                })
                .sum();
            (kl_sum / rows as f64).exp()
        })
        .collect();
    Ok(mean_std(&scores))
}

fn check_distribution(row: usize, p: &[f32]) -> Result<()> {
    if let Some((col, v)) = p.iter().enumerate().find(|(_, v)| !v.is_finite() || **v < 0.0) {
        return Err(MetricsError::NotAProbability { row, why: format!("entry {col} is {v}") });
    }
    let sum: f64 = p.iter().map(|&v| f64::from(v)).sum();
    if (sum - 1.0).abs() > SUM_TOLERANCE {
        return Err(MetricsError::NotAProbability { row, why: format!("entries sum to {sum}, not 1") });
    }
    Ok(())
}
