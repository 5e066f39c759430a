//! Improved precision and recall (Kynkäänniemi, Karras, Laine, Lehtinen & Aila 2019,
//! arXiv:1904.06991): each set's manifold is estimated as the union of balls reaching from every
//! sample to its k-th nearest neighbour in the same set.

use rayon::prelude::*;

use crate::error::{MetricsError, Result};
use crate::gemm::{Part, gemm_rows};
use crate::rows::{Rows, check_finite, check_same_dim};

/// Neighbourhood size of the paper's headline numbers.
pub const DEFAULT_K: usize = 3;

/// Rows of the first set whose distances one task computes at a time.
const BLOCK_ROWS: usize = 64;
/// Rows of the second set converted and transposed per pass (`D × 1024` doubles: 16 MiB at
/// D = 2048).
const CHUNK_COLS: usize = 1024;

/// Result of [`precision_recall`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecisionRecall {
    /// Fraction of fake rows inside at least one real k-NN ball.
    pub precision: f64,
    /// Fraction of real rows inside at least one fake k-NN ball.
    pub recall: f64,
}

/// Precision and recall of `fake` against `real` with `k`-nearest-neighbour balls.
///
/// A point is inside a ball when its squared distance to the centre is at most the ball's
/// squared radius (boundary included, as in the NVlabs reference code). Distances are exact
/// (brute force, no approximate search), computed in `f64` as `‖a‖² + ‖b‖² − 2 aᵀb` with the dot
/// products from a blocked matrix product, a block of rows at a time, so memory stays at a few
/// tens of MiB however large the sets. Cost: `(N_real² + N_fake² + N_real·N_fake) · D`
/// multiply-adds; for 10 000 rows each at D = 2048 that is 6 × 10¹¹, minutes on a small CPU.
///
/// # Errors
/// [`MetricsError::DimMismatch`], [`MetricsError::NonFinite`] naming the row,
/// [`MetricsError::InvalidSetting`] for `k == 0`, [`MetricsError::TooFewSamples`] if a set has
/// `k` rows or fewer (the k-th neighbour of a row must be another row).
pub fn precision_recall(real: Rows<'_>, fake: Rows<'_>, k: usize) -> Result<PrecisionRecall> {
    check_same_dim("real features", real.dim(), "fake features", fake.dim())?;
    check_k(k)?;
    check_set("real features", real, k)?;
    check_set("fake features", fake, k)?;
    let real_r2 = kth_squared(real, k);
    let fake_r2 = kth_squared(fake, k);
    // One pass over real × fake distances serves both: a real row is recalled when it falls in
    // some fake ball; a fake row is precise when it falls in some real ball.
    let mut recalled = vec![false; real.count()];
    let mut precise = vec![false; fake.count()];
    distance_pass(real, fake, &mut recalled, 1, Some(&mut precise), |i, hit, j0, d2, col_hits| {
        let ri = real_r2[i];
        for (j, &d) in d2.iter().enumerate() {
            if d <= fake_r2[j0 + j] {
                hit[0] = true;
            }
            if d <= ri {
                col_hits[j] = true;
            }
        }
    });
    let fraction = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64 / v.len() as f64;
    Ok(PrecisionRecall { precision: fraction(&precise), recall: fraction(&recalled) })
}

/// Distance from every row to its `k`-th nearest other row of the same set: the radii of the
/// k-NN balls [`precision_recall`] uses. Duplicated rows are each other's neighbours at distance 0.
///
/// # Errors
/// [`MetricsError::NonFinite`], [`MetricsError::InvalidSetting`] for `k == 0`,
/// [`MetricsError::TooFewSamples`] with `k` rows or fewer.
pub fn knn_radii(points: Rows<'_>, k: usize) -> Result<Vec<f64>> {
    check_k(k)?;
    check_set("features", points, k)?;
    Ok(kth_squared(points, k).into_iter().map(f64::sqrt).collect())
}

fn check_k(k: usize) -> Result<()> {
    if k == 0 {
        return Err(MetricsError::InvalidSetting {
            name: "k",
            value: "0".into(),
            why: "the k-th nearest neighbour needs k >= 1",
        });
    }
    Ok(())
}

fn check_set(what: &'static str, rows: Rows<'_>, k: usize) -> Result<()> {
    check_finite(what, rows.as_slice(), rows.dim(), 0)?;
    if rows.count() <= k {
        return Err(MetricsError::TooFewSamples {
            what,
            have: rows.count(),
            need: k + 1,
            why: "the k-th nearest neighbour of a row is another row of its set",
        });
    }
    Ok(())
}

/// Squared distance from each row to its k-th nearest other row.
fn kth_squared(points: Rows<'_>, k: usize) -> Vec<f64> {
    // Per row, the k smallest squared distances so far, ascending.
    let mut nearest = vec![f64::INFINITY; points.count() * k];
    distance_pass(points, points, &mut nearest, k, None, |i, best, j0, d2, _| {
        for (j, &d) in d2.iter().enumerate() {
            if d < best[k - 1] && j0 + j != i {
                let mut at = k - 1;
                while at > 0 && best[at - 1] > d {
                    best[at] = best[at - 1];
                    at -= 1;
                }
                best[at] = d;
            }
        }
    });
    nearest.chunks_exact(k).map(|best| best[k - 1]).collect()
}

/// Walks every squared distance between rows of `a` and rows of `b`. For each row `i` of `a` and
/// each chunk of `b` rows starting at `j0`, calls `visit(i, state_i, j0, d2, col_hits)` with the
/// row's `per_row` state values, its squared distances to the chunk, and a chunk-sized flag
/// buffer; flags set there are OR-ed into `col_hits` (one flag per row of `b`) when given.
fn distance_pass<S, V>(
    a: Rows<'_>,
    b: Rows<'_>,
    state: &mut [S],
    per_row: usize,
    mut col_hits: Option<&mut [bool]>,
    visit: V,
) where
    S: Send,
    V: Fn(usize, &mut [S], usize, &[f64], &mut [bool]) + Sync,
{
    let d = a.dim();
    let norms = |r: Rows<'_>| -> Vec<f64> {
        (0..r.count()).map(|i| r.row(i).iter().map(|&v| f64::from(v) * f64::from(v)).sum()).collect()
    };
    let (a_norms, b_norms) = (norms(a), norms(b));
    let want_cols = col_hits.is_some();
    for j0 in (0..b.count()).step_by(CHUNK_COLS) {
        let cols = CHUNK_COLS.min(b.count() - j0);
        // The chunk of b, transposed to D × cols so the product below is A · Bᵀ in plain layout.
        let mut bt = vec![0.0; d * cols];
        for j in 0..cols {
            for (t, &v) in b.row(j0 + j).iter().enumerate() {
                bt[t * cols + j] = f64::from(v);
            }
        }
        let identity = || vec![false; if want_cols { cols } else { 0 }];
        let hits = state
            .par_chunks_mut(BLOCK_ROWS * per_row)
            .enumerate()
            .map(|(block, state)| {
                let i0 = block * BLOCK_ROWS;
                let rows = state.len() / per_row;
                let mut block_a = Vec::with_capacity(rows * d);
                for i in i0..i0 + rows {
                    block_a.extend(a.row(i).iter().map(|&v| f64::from(v)));
                }
                let mut d2 = vec![0.0; rows * cols];
                gemm_rows(&mut d2, &block_a, &bt, 0, d, cols, Part::Full);
                let mut local = identity();
                for (r, (row, st)) in d2.chunks_exact_mut(cols).zip(state.chunks_exact_mut(per_row)).enumerate() {
                    let na = a_norms[i0 + r];
                    for (v, nb) in row.iter_mut().zip(&b_norms[j0..j0 + cols]) {
                        // Rounding can push the distance of (near-)identical rows below zero.
                        *v = (na + nb - 2.0 * *v).max(0.0);
                    }
                    visit(i0 + r, st, j0, row, &mut local);
                }
                local
            })
            .reduce(identity, |mut x, y| {
                x.iter_mut().zip(y).for_each(|(x, y)| *x |= y);
                x
            });
        if let Some(col_hits) = col_hits.as_deref_mut() {
            col_hits[j0..j0 + cols].iter_mut().zip(hits).for_each(|(h, x)| *h |= x);
        }
    }
}
