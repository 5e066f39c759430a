//! A symmetric eigensolver in `f64` for covariance-sized matrices (up to a few thousand rows).
//!
//! Householder reduction to tridiagonal form, then implicit QL with Wilkinson shifts (the pairing
//! of Golub & Van Loan §8.3 and the EISPACK `tql2` lineage), written for this crate. Three
//! details make it fast enough for D = 2048 on a small machine:
//! * the reduction touches only the lower triangle and fuses each step's update with the next
//!   step's matrix–vector product, one pass over half the matrix per step ([`tridiagonalize`]);
//! * the QL sweeps on the tridiagonal matrix never look at the eigenvectors, so their plane
//!   rotations are first *recorded* and then replayed onto the eigenvector matrix one column panel
//!   at a time; a panel stays in cache for a million rotations instead of the whole matrix
//!   streaming through memory once per sweep;
//! * the Householder vectors are accumulated into `Qᵀ` row by row (a dot product and an axpy per
//!   row), which is contiguous and parallel.
//!
//! And two make it accurate where FID needs it: a normwise deflation test for the covariances
//! (always converges, even on a rank-deficient one) and a relative one for the graded matrix
//! whose eigenvalues are square-rooted ([`Deflation`], and `trace_sqrt_product` in `fid.rs`).
//!
//! Matrices are row-major and contiguous; parallel work is split in fixed pieces, so results do
//! not depend on the number of threads.

use rayon::prelude::*;

use crate::error::{MetricsError, Result};
use crate::gemm::dot;

/// Eigenvalues and orthonormal eigenvectors of a symmetric matrix, in no particular order.
#[derive(Debug, Clone)]
pub(crate) struct SymEigen {
    /// `values[i]` belongs to eigenvector `i`.
    pub values: Vec<f64>,
    /// Row-major `n × n`; **row** `i` is the unit eigenvector of `values[i]`.
    pub vectors: Vec<f64>,
}

/// A symmetric matrix reduced to tridiagonal form `A = Q T Qᵀ`, from which eigenvalues (cheap)
/// and, if wanted, eigenvectors (the expensive part) are computed.
pub(crate) struct Tridiagonal {
    n: usize,
    /// The reduced matrix; row `k` holds the Householder vector of step `k`.
    reflectors: Vec<f64>,
    tau: Vec<f64>,
    d: Vec<f64>,
    e: Vec<f64>,
    /// Factor to scale eigenvalues back with (see [`prepare`]).
    scale: f64,
}

impl Tridiagonal {
    /// Reduces the symmetric `n × n` matrix `a` (consumed as workspace). `a` is symmetrised as
    /// `(A + Aᵀ)/2` first, so a covariance that is symmetric only up to rounding gives the same
    /// answer whichever triangle carries the rounding.
    pub(crate) fn new(a: Vec<f64>, n: usize) -> Self {
        let (mut a, scale) = prepare(a, n);
        let (d, e, tau) = tridiagonalize(&mut a, n);
        Self { n, reflectors: a, tau, d, e, scale }
    }

    /// Eigenvalues, in no particular order.
    pub(crate) fn eigenvalues(&self) -> Result<Vec<f64>> {
        let (mut d, mut e) = (self.d.clone(), self.e.clone());
        tridiagonal_ql(&mut d, &mut e, Deflation::Normwise, None)?;
        d.iter_mut().for_each(|v| *v *= self.scale);
        Ok(d)
    }

    /// Eigenvalues of a matrix whose diagonal is graded from large (top left) to small, computed
    /// so that the small ones keep their relative accuracy. QL deflates from the top while its
    /// rotations chase upwards from the bottom, which keeps small eigenvalues accurate when the
    /// large entries sit at the *bottom* of `T`; the top-down Householder reduction leaves `T`
    /// graded like its input, so `T` is reversed before QL. (On the golden "badly scaled" case
    /// this is the difference between 3e-13 and 4e-10 relative error in FD.)
    pub(crate) fn eigenvalues_of_graded(&self) -> Result<Vec<f64>> {
        let (mut d, mut e) = (self.d.clone(), self.e.clone());
        let n = self.n;
        if n > 1 {
            d.reverse();
            e[..n - 1].reverse();
        }
        tridiagonal_ql(&mut d, &mut e, Deflation::Relative, None)?;
        d.iter_mut().for_each(|v| *v *= self.scale);
        Ok(d)
    }

    /// Eigenvalues and orthonormal eigenvectors, in no particular order.
    pub(crate) fn eigen(self) -> Result<SymEigen> {
        let Self { n, reflectors, tau, mut d, mut e, scale } = self;
        let qt = accumulate_qt(&reflectors, &tau, n);
        drop(reflectors);
        let mut panels = to_panels(&qt, n);
        drop(qt);
        let mut log = RotationLog::default();
        tridiagonal_ql(&mut d, &mut e, Deflation::Normwise, Some((&mut log, &mut panels, n)))?;
        log.replay(&mut panels, n);
        let vectors = from_panels(&panels, n);
        d.iter_mut().for_each(|v| *v *= scale);
        Ok(SymEigen { values: d, vectors })
    }
}

/// Eigen-decomposition of the symmetric `n × n` matrix `a`; see [`Tridiagonal::new`].
#[cfg(test)]
pub(crate) fn sym_eigen(a: Vec<f64>, n: usize) -> Result<SymEigen> {
    Tridiagonal::new(a, n).eigen()
}

/// Eigenvalues of the symmetric `n × n` matrix `a`; see [`Tridiagonal::new`].
#[cfg(test)]
pub(crate) fn sym_eigenvalues(a: Vec<f64>, n: usize) -> Result<Vec<f64>> {
    Tridiagonal::new(a, n).eigenvalues()
}

/// Symmetrises and scales to unit max-norm (so squares in the Householder norms can neither
/// overflow nor underflow); returns the factor to scale eigenvalues back with.
fn prepare(mut a: Vec<f64>, n: usize) -> (Vec<f64>, f64) {
    debug_assert_eq!(a.len(), n * n);
    for i in 0..n {
        for j in 0..i {
            let v = 0.5 * (a[i * n + j] + a[j * n + i]);
            a[i * n + j] = v;
            a[j * n + i] = v;
        }
    }
    let max = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if max > 0.0 && max.is_finite() {
        let inv = 1.0 / max;
        a.iter_mut().for_each(|v| *v *= inv);
        (a, max)
    } else {
        (a, 1.0)
    }
}

/// Householder reduction `A = Q T Qᵀ` of a symmetric matrix, reading and updating only its lower
/// triangle (row-major, full `n × n` storage).
///
/// Returns the diagonal `d` and the off-diagonal `e` of `T` (`e[i]` couples `i` and `i + 1`;
/// `e[n-1] = 0`), and the scalars `τ` of the reflectors `H_k = I − τ_k v_k v_kᵀ`, whose vectors
/// are left in the unused upper triangle, `a[k][k+1..]` (with the leading 1 stored explicitly).
/// `Q = H_0 H_1 ⋯ H_{n-3}`.
///
/// Step `k` needs `p = τ S v` for the trailing block `S` and then updates
/// `S ← S − v wᵀ − w vᵀ`. Done naively that is two passes over `S` per step, and at D = 2048 the
/// reduction is bound by memory traffic, not arithmetic. Here step `k` first updates only the
/// next column of `S`, builds the next reflector from it, and then updates the rest of `S` and
/// forms the next step's `S v` in the same pass, row by row over the lower triangle: one pass per
/// step over half the matrix instead of two over all of it.
fn tridiagonalize(a: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    let mut tau = vec![0.0; n];
    match n {
        0 => return (d, e, tau),
        1 => {
            d[0] = a[0];
            return (d, e, tau);
        }
        2 => {
            d[0] = a[0];
            d[1] = a[3];
            e[0] = a[2];
            return (d, e, tau);
        }
        _ => {}
    }
    // Reflector of step 0 from column 0 below the diagonal, and p = τ S v over rows 1..n.
    d[0] = a[0];
    let column: Vec<f64> = (1..n).map(|i| a[i * n]).collect();
    let (t, beta) = store_reflector(a, n, 0, column);
    tau[0] = t;
    e[0] = beta;
    let mut p = sweep(a, n, 1, None, 0, t);
    for k in 0..n - 2 {
        // Trailing block S = A[c.., c..] with c = k + 1; v, w are indexed from c.
        let c = k + 1;
        let t = tau[k];
        let v: Vec<f64> = a[k * n + c..k * n + n].to_vec();
        // w = p − (τ/2)(pᵀv) v
        let half = -0.5 * t * dot(&p, &v);
        let w: Vec<f64> = p.iter().zip(&v).map(|(p, v)| p + half * v).collect();
        if k + 3 == n {
            // The last step: S is 2 × 2; update it and read off the end of T.
            for i in c..n {
                for j in c..=i {
                    a[i * n + j] -= v[i - c] * w[j - c] + w[i - c] * v[j - c];
                }
            }
            d[n - 2] = a[(n - 2) * n + n - 2];
            d[n - 1] = a[(n - 1) * n + n - 1];
            e[n - 2] = a[(n - 1) * n + n - 2];
            break;
        }
        // Column c of S (rows c..n), then the reflector of step c from it.
        for i in c..n {
            a[i * n + c] -= v[i - c] * w[0] + w[i - c] * v[0];
        }
        d[c] = a[c * n + c];
        let column: Vec<f64> = (c + 1..n).map(|i| a[i * n + c]).collect();
        let (t_next, beta) = store_reflector(a, n, c, column);
        tau[c] = t_next;
        e[c] = beta;
        // The rest of S, and the next p, in one pass over rows c+1..n.
        p = sweep(a, n, c + 1, Some((&v, &w, c)), c, t_next);
    }
    (d, e, tau)
}

/// Makes the reflector `H = I − τ v vᵀ` that sends `x` (column `k` of the current matrix below
/// the diagonal) to `β e₁`, stores `v` (with `v₀ = 1`) in `a[k][k+1..]`, and returns `(τ, β)`.
fn store_reflector(a: &mut [f64], n: usize, k: usize, x: Vec<f64>) -> (f64, f64) {
    let alpha = x[0];
    let xnorm = x[1..].iter().map(|v| v * v).sum::<f64>().sqrt();
    let dst = &mut a[k * n + k + 1..k * n + n];
    if xnorm == 0.0 {
        dst.fill(0.0);
        dst[0] = 1.0;
        return (0.0, alpha);
    }
    let beta = -alpha.hypot(xnorm).copysign(alpha);
    let inv = 1.0 / (alpha - beta);
    dst[0] = 1.0;
    dst[1..].iter_mut().zip(&x[1..]).for_each(|(d, x)| *d = x * inv);
    ((beta - alpha) / beta, beta)
}

/// Rows of the lower triangle handled by one parallel task in [`sweep`] are chosen to hold about
/// equal areas; this many tasks (a fixed number, so results do not depend on the thread count).
const SWEEP_PARTS: usize = 8;

/// One pass over rows `r0..n` of the lower triangle, columns `r0..=i`:
/// * with `update = Some((v, w, c))`, first `a[i][j] −= v_i w_j + w_i v_j` (vectors indexed
///   from `c`);
/// * then accumulates `τ · S u` for the symmetric block `S = A[r0.., r0..]` and the reflector `u`
///   stored in `a[k][r0..]` (`r0 = k + 1`), and returns it.
fn sweep(a: &mut [f64], n: usize, r0: usize, update: Option<(&[f64], &[f64], usize)>, k: usize, t: f64) -> Vec<f64> {
    let m = n - r0;
    let (head, rows) = a.split_at_mut(r0 * n);
    let u: &[f64] = &head[k * n + r0..k * n + n];
    // Split the rows into parts of about equal triangle area.
    let parts = if m >= 256 { SWEEP_PARTS } else { 1 };
    let mut bounds = vec![0usize];
    for part in 1..parts {
        let target = (m as f64) * (part as f64 / parts as f64).sqrt();
        bounds.push((target as usize).clamp(bounds[part - 1], m));
    }
    bounds.push(m);
    let mut tasks: Vec<(usize, &mut [f64])> = Vec::with_capacity(parts);
    let mut rest = rows;
    for part in 0..parts {
        let (mine, tail) = rest.split_at_mut((bounds[part + 1] - bounds[part]) * n);
        tasks.push((bounds[part], mine));
        rest = tail;
    }
    let run = |(first, rows): (usize, &mut [f64])| -> (usize, Vec<f64>, Vec<f64>) {
        let count = rows.len() / n;
        // dots[li]: Σ_{j ≤ i} S_ij u_j for the task's own rows; spill[j]: Σ_{i > j} S_ij u_i over
        // them, i.e. the contribution of the strict lower triangle to the rows above.
        let mut dots = vec![0.0; count];
        let mut spill = vec![0.0; first + count];
        for (li, row) in rows.chunks_exact_mut(n).enumerate() {
            let i = first + li; // local index within S
            let row = &mut row[r0..=r0 + i];
            if let Some((v, w, c)) = update {
                let off = r0 - c;
                let (vi, wi) = (v[off + i], w[off + i]);
                let (vs, ws) = (&v[off..=off + i], &w[off..=off + i]);
                for ((x, vj), wj) in row.iter_mut().zip(vs).zip(ws) {
                    *x -= vi * wj + wi * vj;
                }
            }
            let ui = u[i];
            let (strict, diag) = row.split_at(i);
            let mut acc = [0.0; 4];
            let (sc, uc, pc) = (strict.chunks_exact(4), u[..i].chunks_exact(4), spill[..i].chunks_exact_mut(4));
            let (srem, urem) = (sc.remainder(), uc.remainder());
            for ((s, uu), p) in sc.zip(uc).zip(pc) {
                for l in 0..4 {
                    acc[l] += s[l] * uu[l];
                    p[l] += s[l] * ui;
                }
            }
            let base = i - srem.len();
            let mut tail = 0.0;
            for (l, (s, uu)) in srem.iter().zip(urem).enumerate() {
                tail += s * uu;
                spill[base + l] += s * ui;
            }
            dots[li] = (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail + diag[0] * ui;
        }
        (first, dots, spill)
    };
    let results: Vec<(usize, Vec<f64>, Vec<f64>)> =
        if parts > 1 { tasks.into_par_iter().map(run).collect() } else { tasks.into_iter().map(run).collect() };
    let mut p = vec![0.0; m];
    for (first, dots, spill) in &results {
        p[*first..*first + dots.len()].iter_mut().zip(dots).for_each(|(p, d)| *p += d);
        p[..spill.len()].iter_mut().zip(spill).for_each(|(p, s)| *p += s);
    }
    p.iter_mut().for_each(|p| *p *= t);
    p
}

/// `Qᵀ = H_{n-3} ⋯ H_1 H_0` from the reflectors left by [`tridiagonalize`], built backwards:
/// `H_k` only touches columns `k+1..` of `Qᵀ`, and at the time it is applied rows `..=k` of those
/// columns are still zero, so each step is `row ← row − τ (row·v) v` for the rows `k+1..`.
fn accumulate_qt(a: &[f64], tau: &[f64], n: usize) -> Vec<f64> {
    let mut qt = vec![0.0; n * n];
    for i in 0..n {
        qt[i * n + i] = 1.0;
    }
    for k in (0..n.saturating_sub(2)).rev() {
        let t = tau[k];
        if t == 0.0 {
            continue;
        }
        let v = &a[k * n + k + 1..k * n + n];
        let apply = |row: &mut [f64]| {
            let row = &mut row[k + 1..];
            let s = t * dot(row, v);
            row.iter_mut().zip(v).for_each(|(r, v)| *r -= s * v);
        };
        let rows = &mut qt[(k + 1) * n..];
        if n - k >= 256 {
            rows.par_chunks_mut(n).with_min_len(16).for_each(apply);
        } else {
            rows.chunks_mut(n).for_each(apply);
        }
    }
    qt
}

/// Width of a column panel of the eigenvector matrix: `n × 16` doubles is 256 KiB at n = 2048,
/// which stays in a core's L2 cache while rotations are replayed onto it.
const PANEL: usize = 16;
/// Rotations recorded before they are replayed (bounds the log at 24 MiB).
const LOG_CAPACITY: usize = 1 << 20;

/// Rearranges `Zᵀ` (row `j` = vector `j`) into column panels: panel `b` holds, for every vector
/// `j`, its components `b·PANEL..(b+1)·PANEL` contiguously, so a rotation of vectors `i, i+1`
/// touches two short contiguous rows of each panel.
fn to_panels(zt: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    let mut offset = 0;
    for c0 in (0..n).step_by(PANEL) {
        let w = PANEL.min(n - c0);
        for j in 0..n {
            out[offset + j * w..offset + (j + 1) * w].copy_from_slice(&zt[j * n + c0..j * n + c0 + w]);
        }
        offset += n * w;
    }
    out
}

/// Inverse of [`to_panels`].
fn from_panels(panels: &[f64], n: usize) -> Vec<f64> {
    let mut zt = vec![0.0; n * n];
    let mut offset = 0;
    for c0 in (0..n).step_by(PANEL) {
        let w = PANEL.min(n - c0);
        for j in 0..n {
            zt[j * n + c0..j * n + c0 + w].copy_from_slice(&panels[offset + j * w..offset + (j + 1) * w]);
        }
        offset += n * w;
    }
    zt
}

/// One plane rotation of vectors `i` and `i + 1`: `(zᵢ, zᵢ₊₁) ← (c zᵢ − s zᵢ₊₁, s zᵢ + c zᵢ₊₁)`.
#[derive(Debug, Clone, Copy)]
struct Rotation {
    i: usize,
    c: f64,
    s: f64,
}

#[derive(Debug, Default)]
struct RotationLog {
    rotations: Vec<Rotation>,
}

impl RotationLog {
    /// Applies the recorded rotations, in order, to every panel (panels in parallel), and clears.
    fn replay(&mut self, panels: &mut [f64], n: usize) {
        if self.rotations.is_empty() || n == 0 {
            return;
        }
        let rotations = &self.rotations;
        panels.par_chunks_mut(n * PANEL).for_each(|panel| {
            if panel.len() == n * PANEL {
                replay_full_panel(panel, rotations);
            } else {
                let w = panel.len() / n;
                for r in rotations {
                    let (lo, hi) = panel[r.i * w..(r.i + 2) * w].split_at_mut(w);
                    for (zi, zj) in lo.iter_mut().zip(hi.iter_mut()) {
                        let f = *zj;
                        *zj = r.s * *zi + r.c * f;
                        *zi = r.c * *zi - r.s * f;
                    }
                }
            }
        });
        self.rotations.clear();
    }
}

/// [`RotationLog::replay`] on a panel of full width. A QL sweep rotates `(m−1, m)`, then
/// `(m−2, m−1)`, …, so the lower row of one rotation is the upper row of the next: it is carried
/// in registers rather than stored and reloaded, halving the loads and stores per rotation.
fn replay_full_panel(panel: &mut [f64], rotations: &[Rotation]) {
    let mut carry = [0.0f64; PANEL];
    let mut carry_row = usize::MAX; // the row `carry` holds, not yet written back
    for r in rotations {
        if carry_row != r.i + 1 {
            if carry_row != usize::MAX {
                panel[carry_row * PANEL..(carry_row + 1) * PANEL].copy_from_slice(&carry);
            }
            carry.copy_from_slice(&panel[(r.i + 1) * PANEL..(r.i + 2) * PANEL]);
        }
        let (lo, hi) = panel[r.i * PANEL..(r.i + 2) * PANEL].split_at_mut(PANEL);
        for ((zi, zj), f) in lo.iter().zip(hi.iter_mut()).zip(carry.iter_mut()) {
            let (x, y) = (*zi, *f);
            *zj = r.s * x + r.c * y;
            *f = r.c * x - r.s * y;
        }
        carry_row = r.i;
    }
    if carry_row != usize::MAX {
        panel[carry_row * PANEL..(carry_row + 1) * PANEL].copy_from_slice(&carry);
    }
}

/// Most QL sweeps one eigenvalue may take; two or three is typical.
const MAX_SWEEPS: usize = 60;
/// Sweeps after which [`Deflation::Relative`] falls back to the normwise test.
const RELATIVE_SWEEPS: usize = 30;

/// When an off-diagonal entry `e_m` of `T` counts as zero, splitting `T` in two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deflation {
    /// `|e_m| ≤ ε‖T‖`: perturbs `T` by no more than the reduction's own rounding, so every
    /// eigenvalue keeps an absolute error of order `ε‖T‖`; this is always reached. A relative
    /// test alone is not: on a rank-deficient covariance the null space turns into a block of
    /// entries ~`ε‖T‖` whose relative size every sweep re-randomises with rounding carried up
    /// from the large block, and QL never converges.
    Normwise,
    /// `|e_m| ≤ ε(|d_m| + |d_{m+1}|)` first, which keeps the small eigenvalues of a graded matrix
    /// accurate to their own size; an eigenvalue that has not split off after
    /// [`RELATIVE_SWEEPS`] sweeps falls back to the normwise test.
    Relative,
}

/// Eigenvalues of the symmetric tridiagonal matrix (`d`, `e`) by implicit QL with Wilkinson
/// shifts, left in `d`. With `vectors`, the rotations are recorded and replayed onto the panels.
fn tridiagonal_ql(
    d: &mut [f64],
    e: &mut [f64],
    deflation: Deflation,
    mut vectors: Option<(&mut RotationLog, &mut [f64], usize)>,
) -> Result<()> {
    let n = d.len();
    let norm = (0..n).fold(0.0f64, |m, i| m.max(d[i].abs() + e[i].abs() + if i > 0 { e[i - 1].abs() } else { 0.0 }));
    let normwise_floor = f64::EPSILON * norm;
    for l in 0..n {
        let mut sweeps = 0;
        loop {
            let relative = deflation == Deflation::Relative && sweeps < RELATIVE_SWEEPS;
            // The unreduced block starting at l ends at the first negligible off-diagonal.
            let mut m = l;
            while m + 1 < n {
                let floor = if relative { f64::EPSILON * (d[m].abs() + d[m + 1].abs()) } else { normwise_floor };
                if e[m].abs() <= floor {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            sweeps += 1;
            if sweeps > MAX_SWEEPS {
                return Err(MetricsError::NoConvergence { dim: n });
            }
            // Shift: the eigenvalue of the leading 2 × 2 block closer to d[l].
            let g0 = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let r0 = g0.hypot(1.0);
            let mut g = d[m] - d[l] + e[l] / (g0 + r0.copysign(g0));
            let (mut s, mut c, mut p) = (1.0f64, 1.0f64, 0.0f64);
            let mut deflated_early = false;
            for i in (l..m).rev() {
                let f = s * e[i];
                let b = c * e[i];
                let r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    // The chase met an exact zero: the block splits here; restart the search.
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    deflated_early = true;
                    break;
                }
                s = f / r;
                c = g / r;
                let g1 = d[i + 1] - p;
                let r1 = (d[i] - g1) * s + 2.0 * c * b;
                p = s * r1;
                d[i + 1] = g1 + p;
                g = c * r1 - b;
                if let Some((log, panels, n)) = vectors.as_mut() {
                    log.rotations.push(Rotation { i, c, s });
                    if log.rotations.len() >= LOG_CAPACITY {
                        log.replay(panels, *n);
                    }
                }
            }
            if deflated_early {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    Ok(())
}

/// Indices of the eigenvalues above the noise floor `n·ε·max|λ|` (see `trace_sqrt_product` in `fid.rs`).
pub(crate) fn significant(values: &[f64]) -> Vec<usize> {
    let max = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let floor = values.len() as f64 * f64::EPSILON * max;
    (0..values.len()).filter(|&i| values[i] > floor).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::test_util::{naive_product, random};
    use crate::gemm::transpose;
    use crate::rng::SplitMix64;

    /// Largest |A v − λ v| and largest |vᵢ·vⱼ − δᵢⱼ| over the decomposition.
    fn residuals(a: &[f64], eig: &SymEigen, n: usize) -> (f64, f64) {
        let mut res = 0.0f64;
        let mut orth = 0.0f64;
        for i in 0..n {
            let v = &eig.vectors[i * n..(i + 1) * n];
            for r in 0..n {
                let av = dot(&a[r * n..(r + 1) * n], v);
                res = res.max((av - eig.values[i] * v[r]).abs());
            }
            for j in 0..=i {
                let w = &eig.vectors[j * n..(j + 1) * n];
                let want = if i == j { 1.0 } else { 0.0 };
                orth = orth.max((dot(v, w) - want).abs());
            }
        }
        (res, orth)
    }

    #[test]
    fn eigen_decomposition_of_random_symmetric_matrices() {
        let mut rng = SplitMix64::new(3);
        for n in [1, 2, 3, 10, 64, 300] {
            let mut a = random(&mut rng, n * n);
            for i in 0..n {
                for j in 0..i {
                    a[i * n + j] = a[j * n + i];
                }
            }
            let eig = sym_eigen(a.clone(), n).unwrap();
            let (res, orth) = residuals(&a, &eig, n);
            assert!(res < 1e-12 * n as f64, "n = {n}: residual {res}");
            assert!(orth < 1e-13 * n as f64, "n = {n}: orthogonality {orth}");
            let mut only = sym_eigenvalues(a, n).unwrap();
            let mut with = eig.values.clone();
            only.sort_by(f64::total_cmp);
            with.sort_by(f64::total_cmp);
            for (x, y) in only.iter().zip(&with) {
                assert!((x - y).abs() < 1e-12 * n as f64);
            }
        }
    }

    #[test]
    fn eigenvalues_of_a_known_spectrum() {
        // A = H diag(λ) H with a Householder reflection H: eigenvalues exactly λ, including
        // repeated ones and zeros, which stress deflation.
        let n = 50;
        let mut rng = SplitMix64::new(4);
        let u = random(&mut rng, n);
        let uu = dot(&u, &u);
        let h: Vec<f64> =
            (0..n * n).map(|t| f64::from(u8::from(t / n == t % n)) - 2.0 * u[t / n] * u[t % n] / uu).collect();
        let lambda: Vec<f64> = (0..n).map(|i| [0.0, 1.0, 1.0, 2.5, 1e-9][i % 5] * (1 + i / 5) as f64).collect();
        let mut hl = h.clone();
        for i in 0..n {
            for j in 0..n {
                hl[i * n + j] *= lambda[j];
            }
        }
        let a = naive_product(&hl, &h, n, n, n);
        let mut got = sym_eigen(a.clone(), n).unwrap();
        let (res, orth) = residuals(&a, &got, n);
        assert!(res < 1e-12 && orth < 1e-12, "{res} {orth}");
        got.values.sort_by(f64::total_cmp);
        let mut want = lambda;
        want.sort_by(f64::total_cmp);
        for (g, w) in got.values.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
    }

    #[test]
    fn rank_deficient_covariance_converges() {
        // 50 rows in 128 dimensions: rank 49 and a 79-dimensional null space whose eigenvalues
        // are rounding noise. A purely relative deflation test never converges on it.
        let (rows, n) = (50, 128);
        let mut rng = SplitMix64::new(7);
        let x: Vec<f32> = (0..rows * n).map(|_| (rng.next_f64() - 0.5) as f32).collect();
        let cov = crate::FeatureStats::from_rows(&x, rows, n).unwrap().covariance().unwrap();
        let eig = sym_eigen(cov.clone(), n).unwrap();
        let (res, orth) = residuals(&cov, &eig, n);
        assert!(res < 1e-14 && orth < 1e-12, "{res} {orth}");
        assert_eq!(significant(&eig.values).len(), rows - 1);
        let values = sym_eigenvalues(cov, n).unwrap();
        assert_eq!(significant(&values).len(), rows - 1);
    }

    #[test]
    fn graded_eigenvalues_keep_relative_accuracy() {
        // M = D^{1/2} C D^{1/2}, C = L Lᵀ well conditioned, D = diag(1, 1e-4, …, 1e-20): the
        // eigenvalues span 20 decades and their product must still equal det M = det C · Π Dᵢ.
        // Absolute errors of order ε·max λ (what a normwise method guarantees) would wreck the
        // smallest ones and the product with them.
        let n = 6;
        let mut rng = SplitMix64::new(8);
        let mut l = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..i {
                l[i * n + j] = 0.3 * (rng.next_f64() - 0.5);
            }
            l[i * n + i] = 1.0 + 0.5 * rng.next_f64();
        }
        let c = naive_product(&l, &transpose(&l, n, n), n, n, n);
        let scale: Vec<f64> = (0..n).map(|i| 10f64.powi(-4 * i as i32)).collect();
        let m: Vec<f64> = (0..n * n).map(|t| c[t] * (scale[t / n] * scale[t % n]).sqrt()).collect();
        let mu = Tridiagonal::new(m, n).eigenvalues_of_graded().unwrap();
        let det: f64 = (0..n).map(|i| l[i * n + i] * l[i * n + i] * scale[i]).product();
        let product: f64 = mu.iter().product();
        assert!((product / det - 1.0).abs() < 1e-10, "Π μ = {product:e}, det = {det:e}");
    }

    #[test]
    fn diagonal_and_zero_matrices() {
        let n = 6;
        let mut a = vec![0.0; n * n];
        let eig = sym_eigen(a.clone(), n).unwrap();
        assert!(eig.values.iter().all(|&v| v == 0.0));
        for i in 0..n {
            a[i * n + i] = i as f64 - 2.0;
        }
        let mut values = sym_eigenvalues(a, n).unwrap();
        values.sort_by(f64::total_cmp);
        assert_eq!(values, vec![-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]);
    }
}
