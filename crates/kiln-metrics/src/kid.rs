//! Kernel Inception Distance (Bińkowski, Sutherland, Arbel & Gretton 2018, arXiv:1801.01401):
//! the unbiased estimate of the squared MMD between real and fake features under the polynomial
//! kernel `k(x, y) = (xᵀy / d + 1)³`, averaged over random subsets.

use crate::MeanStd;
use crate::error::{MetricsError, Result};
use crate::gemm::{Part, gemm, transpose};
use crate::rng::SplitMix64;
use crate::rows::{Rows, check_finite, check_same_dim, mean_std};

/// How [`kid`] draws its subsets. The defaults (100 subsets of 1000 rows) are torch-fidelity's
/// (`kid_subsets`, `kid_subset_size`), so numbers are comparable with what it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KidConfig {
    /// Rows per subset, drawn without replacement from each set (≥ 2, ≤ the size of each set).
    pub subset_size: usize,
    /// Number of subsets averaged (≥ 1).
    pub subsets: usize,
    /// Seed of the SplitMix64 stream the subsets are drawn from.
    pub seed: u64,
}

impl Default for KidConfig {
    fn default() -> Self {
        Self { subset_size: 1000, subsets: 100, seed: 0 }
    }
}

/// Row indices of one KID subset: which real rows and which fake rows it compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KidSubset {
    /// Indices into the real rows.
    pub real: Vec<usize>,
    /// Indices into the fake rows.
    pub fake: Vec<usize>,
}

/// KID: mean and population standard deviation (divisor `subsets`, as torch-fidelity reports it)
/// of the unbiased MMD² over `config.subsets` random subset pairs.
///
/// Cost: each subset forms three `subset_size²` kernel matrices at `subset_size² × d` multiply-adds
/// each (the two within-set ones at half that), in `f64`: about 4 × 10⁹ multiply-adds per subset
/// at the defaults and d = 2048, ~2 s on the 2-core development VM, so the default 100 subsets
/// take a few minutes there. Fewer subsets trade the std estimate for time. Memory: a few
/// `subset_size × d` and `subset_size²` double matrices at a time (~100 MB at the defaults).
///
/// # Errors
/// [`MetricsError::DimMismatch`], [`MetricsError::NonFinite`] naming the row,
/// [`MetricsError::InvalidSetting`] for `subsets == 0` or `subset_size < 2`,
/// [`MetricsError::TooFewSamples`] if a set has fewer rows than `subset_size`.
pub fn kid(real: Rows<'_>, fake: Rows<'_>, config: &KidConfig) -> Result<MeanStd> {
    check_inputs(real, fake)?;
    let subsets = kid_subsets(real.count(), fake.count(), config)?;
    kid_on_subsets(real, fake, &subsets)
}

/// The subsets [`kid`] evaluates for these set sizes and settings: for each subset, first
/// `subset_size` distinct real indices, then `subset_size` distinct fake indices, all from one
/// SplitMix64 stream seeded with `config.seed`.
///
/// # Errors
/// As [`kid`], for the settings and set sizes.
pub fn kid_subsets(real_len: usize, fake_len: usize, config: &KidConfig) -> Result<Vec<KidSubset>> {
    if config.subsets == 0 {
        return Err(MetricsError::InvalidSetting {
            name: "KID subsets",
            value: "0".into(),
            why: "at least one subset is needed",
        });
    }
    if config.subset_size < 2 {
        return Err(MetricsError::InvalidSetting {
            name: "KID subset size",
            value: config.subset_size.to_string(),
            why: "the unbiased estimate needs at least two rows per subset",
        });
    }
    for (what, have) in [("real features", real_len), ("fake features", fake_len)] {
        if have < config.subset_size {
            return Err(MetricsError::TooFewSamples {
                what,
                have,
                need: config.subset_size,
                why: "KID draws subsets of this size without replacement",
            });
        }
    }
    let mut rng = SplitMix64::new(config.seed);
    Ok((0..config.subsets)
        .map(|_| {
            let real = rng.sample_without_replacement(real_len, config.subset_size);
            let fake = rng.sample_without_replacement(fake_len, config.subset_size);
            KidSubset { real, fake }
        })
        .collect())
}

/// KID over explicit subsets (mean and population std of their unbiased MMD²). The real and fake
/// halves of a subset may differ in size.
///
/// # Errors
/// As [`kid`]; [`MetricsError::IndexOutOfRange`] for an index past the end of its set; a subset
/// half with fewer than two indices is [`MetricsError::TooFewSamples`].
pub fn kid_on_subsets(real: Rows<'_>, fake: Rows<'_>, subsets: &[KidSubset]) -> Result<MeanStd> {
    check_inputs(real, fake)?;
    if subsets.is_empty() {
        return Err(MetricsError::InvalidSetting {
            name: "KID subsets",
            value: "0".into(),
            why: "at least one subset is needed",
        });
    }
    for (s, subset) in subsets.iter().enumerate() {
        for (what, indices, len) in
            [("real features", &subset.real, real.count()), ("fake features", &subset.fake, fake.count())]
        {
            if indices.len() < 2 {
                return Err(MetricsError::TooFewSamples {
                    what,
                    have: indices.len(),
                    need: 2,
                    why: "the unbiased MMD estimate needs two rows per subset",
                });
            }
            if let Some(&index) = indices.iter().find(|&&i| i >= len) {
                return Err(MetricsError::IndexOutOfRange { what, subset: s, index, len });
            }
        }
    }
    let values: Vec<f64> = subsets
        .iter()
        .map(|s| mmd2_of(&gather(real, &s.real), s.real.len(), &gather(fake, &s.fake), s.fake.len(), real.dim()))
        .collect();
    Ok(mean_std(&values))
}

/// Unbiased MMD² between two whole sets under the KID kernel:
/// `Σ_{i≠j} k(xᵢ,xⱼ)/(m(m−1)) + Σ_{i≠j} k(yᵢ,yⱼ)/(n(n−1)) − 2 Σ_{i,j} k(xᵢ,yⱼ)/(mn)`.
/// It is an unbiased estimate of a non-negative quantity, so it can come out slightly negative.
///
/// # Errors
/// [`MetricsError::DimMismatch`], [`MetricsError::NonFinite`], and
/// [`MetricsError::TooFewSamples`] if a set has fewer than two rows.
pub fn mmd2_unbiased(real: Rows<'_>, fake: Rows<'_>) -> Result<f64> {
    check_inputs(real, fake)?;
    for (what, have) in [("real features", real.count()), ("fake features", fake.count())] {
        if have < 2 {
            return Err(MetricsError::TooFewSamples {
                what,
                have,
                need: 2,
                why: "the unbiased MMD estimate leaves out the diagonal",
            });
        }
    }
    let all = |r: Rows<'_>| r.as_slice().iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
    Ok(mmd2_of(&all(real), real.count(), &all(fake), fake.count(), real.dim()))
}

fn check_inputs(real: Rows<'_>, fake: Rows<'_>) -> Result<()> {
    check_same_dim("real features", real.dim(), "fake features", fake.dim())?;
    check_finite("real features", real.as_slice(), real.dim(), 0)?;
    check_finite("fake features", fake.as_slice(), fake.dim(), 0)
}

fn gather(rows: Rows<'_>, indices: &[usize]) -> Vec<f64> {
    indices.iter().flat_map(|&i| rows.row(i).iter().map(|&v| f64::from(v))).collect()
}

/// `(m × d)` and `(n × d)` row-major sets in `f64`.
fn mmd2_of(x: &[f64], m: usize, y: &[f64], n: usize, d: usize) -> f64 {
    let (mf, nf) = (m as f64, n as f64);
    let xx = kernel_sum(x, m, x, m, d, true);
    let yy = kernel_sum(y, n, y, n, d, true);
    let xy = kernel_sum(x, m, y, n, d, false);
    xx / (mf * (mf - 1.0)) + yy / (nf * (nf - 1.0)) - 2.0 * xy / (mf * nf)
}

/// `Σ k(aᵢ, bⱼ)` over all pairs, or over `i ≠ j` when `a` and `b` are the same set (`within`),
/// where only the strict upper triangle is formed and counted twice.
fn kernel_sum(a: &[f64], m: usize, b: &[f64], n: usize, d: usize, within: bool) -> f64 {
    let bt = transpose(b, n, d);
    let mut g = vec![0.0; m * n];
    gemm(&mut g, a, &bt, m, d, n, if within { Part::Upper } else { Part::Full });
    let inv_d = 1.0 / d as f64;
    let kernel = |dot: f64| {
        let base = dot * inv_d + 1.0;
        base * base * base
    };
    // Row sums first, then their sum: a short pairwise reduction instead of one long running sum.
    let rows: Vec<f64> = g
        .chunks_exact(n)
        .enumerate()
        .map(|(i, row)| {
            let start = if within { i + 1 } else { 0 };
            row[start..].iter().map(|&v| kernel(v)).sum()
        })
        .collect();
    let total: f64 = rows.iter().sum();
    if within { 2.0 * total } else { total }
}
