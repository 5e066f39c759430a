//! Batch and group normalisation with their affine transform as one autodiff op.
//!
//! Composed from tensor ops a training-mode normalisation layer is about twenty passes over its
//! activations (two reductions, the centring, a square, the scale and shift forward; each again,
//! and the broadcasts' sums, backward), each an autodiff node and a fresh buffer. Here the
//! forward pass is three passes over `x` (row sums, squared deviations from the group mean, the
//! output) and the backward pass two (the row sums of `dy` and `dy·x̂`, then `dx`), with `x̂`
//! recomputed from the saved `x` and the group statistics instead of kept.
//!
//! A *row* is one `(image, channel)` plane of `H·W` values; a *group* is the set of rows that
//! share statistics: a channel across the batch (batch norm), or `C / G` consecutive channels of
//! one image (group norm). `γ`, `β` are `[R, C]` with one row for every image or a row per image.
//! Backward, with `M` values per group and `a = Σ dy`, `b = Σ dy·x̂` per row:
//! `dβ = a`, `dγ = b` (summed over the images that share a row of `γ`), and
//! `dx = rstd·(γ·dy − Σ_g γa / M − x̂·Σ_g γb / M)`, which per row is `p·dy + q·x + s`.

use crate::inner::contiguous;
use crate::rows::{LANES, lane_sum};
use crate::{CpuInner, KilnCpu};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_backend::tensor::FloatTensor;
use burn_backend::{Shape, TensorMetadata};
use rayon::prelude::*;

/// Rows handed to one rayon task at least: a 4×4 plane is 16 values, too little to schedule.
const TASK_VALUES: usize = 1 << 14;

/// The layout of one call.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    hw: usize,
    /// `None`: batch norm; `Some(G)`: group norm.
    groups: Option<usize>,
    /// Rows of `γ`, `β`: 1 or `n`.
    affine_rows: usize,
}

impl Geometry {
    fn num_groups(&self) -> usize {
        self.groups.map_or(self.c, |g| self.n * g)
    }

    /// The group of row `r` (`r = image·C + channel`).
    fn group(&self, r: usize) -> usize {
        let (image, channel) = (r / self.c, r % self.c);
        match self.groups {
            None => channel,
            Some(g) => image * g + channel / (self.c / g),
        }
    }

    /// Values per group.
    fn count(&self) -> usize {
        self.groups.map_or(self.n * self.hw, |g| self.c / g * self.hw)
    }

    /// The index into `γ`/`β` of row `r`.
    fn affine(&self, r: usize) -> usize {
        if self.affine_rows == 1 { r % self.c } else { r }
    }

    fn min_rows(&self) -> usize {
        (TASK_VALUES / self.hw).max(1)
    }
}

#[inline(always)]
fn squares_body(row: &[f32], mean: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().map(|&x| (x - mean) * (x - mean)).sum::<f32>()
}

#[inline(always)]
fn affine_body(out: &mut [f32], x: &[f32], scale: f32, shift: f32) {
    let n = out.len().min(x.len());
    let (out, x) = (&mut out[..n], &x[..n]);
    for i in 0..n {
        out[i] = x[i] * scale + shift;
    }
}

/// `(Σ dy, Σ dy·x̂)` over a row, `x̂ = (x − mean)·rstd`.
#[inline(always)]
fn grad_sums_body(dy: &[f32], x: &[f32], mean: f32, rstd: f32) -> (f32, f32) {
    let n = dy.len().min(x.len());
    let (dy, x) = (&dy[..n], &x[..n]);
    let (mut a, mut b) = ([0.0f32; LANES], [0.0f32; LANES]);
    let full = n / LANES * LANES;
    for j in (0..full).step_by(LANES) {
        for i in 0..LANES {
            a[i] += dy[j + i];
            b[i] += dy[j + i] * ((x[j + i] - mean) * rstd);
        }
    }
    let (mut sa, mut sb) = (a.iter().sum::<f32>(), b.iter().sum::<f32>());
    for j in full..n {
        sa += dy[j];
        sb += dy[j] * ((x[j] - mean) * rstd);
    }
    (sa, sb)
}

#[inline(always)]
fn grad_x_body(dx: &mut [f32], dy: &[f32], x: &[f32], p: f32, q: f32, s: f32) {
    let n = dx.len().min(dy.len()).min(x.len());
    let (dx, dy, x) = (&mut dx[..n], &dy[..n], &x[..n]);
    for i in 0..n {
        dx[i] = p * dy[i] + q * x[i] + s;
    }
}

crate::rows::dispatched! {
    /// [`lane_sum`]: `Σ x` over a row.
    fn row_sum / row_sum_avx512(row: &[f32]) -> f32 = lane_sum
}
crate::rows::dispatched! {
    /// [`squares_body`]: `Σ (x − mean)²` over a row.
    fn row_squares / row_squares_avx512(row: &[f32], mean: f32) -> f32 = squares_body
}
crate::rows::dispatched! {
    /// [`affine_body`]: `out = x·scale + shift`.
    fn row_affine / row_affine_avx512(out: &mut [f32], x: &[f32], scale: f32, shift: f32) -> () = affine_body
}
crate::rows::dispatched! {
    /// [`grad_sums_body`].
    fn row_grad_sums / row_grad_sums_avx512(dy: &[f32], x: &[f32], mean: f32, rstd: f32) -> (f32, f32) = grad_sums_body
}
crate::rows::dispatched! {
    /// [`grad_x_body`]: `dx = p·dy + q·x + s`.
    fn row_grad_x / row_grad_x_avx512(dx: &mut [f32], dy: &[f32], x: &[f32], p: f32, q: f32, s: f32) -> () = grad_x_body
}

/// Sums `per_row` into the groups, in `f64`, in row order (the same float on every run).
fn group_sums(g: Geometry, per_row: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut sums = vec![0.0f64; g.num_groups()];
    for (r, v) in per_row.enumerate() {
        sums[g.group(r)] += v;
    }
    sums
}

/// The per-group mean and biased variance of `x`, both in two passes (the second about the
/// mean, as the composed ops do, so no cancellation).
fn statistics(x: &[f32], g: Geometry) -> (Vec<f32>, Vec<f32>) {
    let count = g.count() as f64;
    let sums: Vec<f32> = x.par_chunks(g.hw).with_min_len(g.min_rows()).map(row_sum).collect();
    let mean: Vec<f32> =
        group_sums(g, sums.iter().map(|&s| s as f64)).into_iter().map(|s| (s / count) as f32).collect();
    let squares: Vec<f32> = x
        .par_chunks(g.hw)
        .with_min_len(g.min_rows())
        .enumerate()
        .map(|(r, row)| row_squares(row, mean[g.group(r)]))
        .collect();
    let var = group_sums(g, squares.iter().map(|&s| s as f64)).into_iter().map(|s| (s / count) as f32).collect();
    (mean, var)
}

fn rstd(var: &[f32], eps: f64) -> Vec<f32> {
    var.iter().map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32).collect()
}

/// `y` for `x` and the statistics.
fn forward(x: &[f32], gamma: &[f32], beta: &[f32], mean: &[f32], rstd: &[f32], g: Geometry) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(g.hw).zip(x.par_chunks(g.hw)).with_min_len(g.min_rows()).enumerate().for_each(
        |(r, (out, row))| {
            let (k, a) = (g.group(r), g.affine(r));
            let scale = rstd[k] * gamma[a];
            row_affine(out, row, scale, beta[a] - mean[k] * scale);
        },
    );
    y
}

/// What the backward pass reads.
#[derive(Debug, Clone)]
struct State<B: CpuInner> {
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    geometry: Geometry,
}

#[derive(Debug)]
struct Normalize;

impl<B: CpuInner> Backward<KilnCpu<B>, 3> for Normalize {
    type State = State<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<KilnCpu<B>>(&ops.node);
        let State { x, gamma, mean, rstd, geometry: g } = ops.state;
        let (Some(xs), Some(gs)) = (B::f32_view(&x), B::f32_view(&gamma)) else {
            unreachable!("the forward pass checked that the inputs are f32");
        };
        let dys = B::f32_view(&dy).expect("the gradient of an f32 output is f32");
        let sums: Vec<(f32, f32)> = dys
            .par_chunks(g.hw)
            .zip(xs.par_chunks(g.hw))
            .with_min_len(g.min_rows())
            .enumerate()
            .map(|(r, (dy, x))| {
                let k = g.group(r);
                row_grad_sums(dy, x, mean[k], rstd[k])
            })
            .collect();
        let [node_x, node_gamma, node_beta] = ops.parents;
        if let Some(node) = node_x {
            let m = g.count() as f64;
            let ga = group_sums(g, sums.iter().enumerate().map(|(r, s)| gs[g.affine(r)] as f64 * s.0 as f64));
            let gb = group_sums(g, sums.iter().enumerate().map(|(r, s)| gs[g.affine(r)] as f64 * s.1 as f64));
            let mut dx = vec![0.0f32; xs.len()];
            let rows = dx.par_chunks_mut(g.hw).zip(dys.par_chunks(g.hw).zip(xs.par_chunks(g.hw)));
            rows.with_min_len(g.min_rows()).enumerate().for_each(|(r, (dx, (dy, x)))| {
                let k = g.group(r);
                let (rs, mu) = (rstd[k] as f64, mean[k] as f64);
                let (mean_ga, mean_gb) = (ga[k] / m, gb[k] / m);
                // dx = rs·(γ·dy − mean_ga − (x − μ)·rs·mean_gb)
                let p = rs * gs[g.affine(r)] as f64;
                let q = -rs * rs * mean_gb;
                let s = rs * rs * mean_gb * mu - rs * mean_ga;
                row_grad_x(dx, dy, x, p as f32, q as f32, s as f32);
            });
            grads.register::<KilnCpu<B>>(node.id, B::f32_tensor(dx, x.shape()));
        }
        // γ and β rows: one for all images (summed over the batch) or one per image.
        let per_affine_row = |pick: fn(&(f32, f32)) -> f32| {
            let mut out = vec![0.0f64; g.affine_rows * g.c];
            for (r, s) in sums.iter().enumerate() {
                out[g.affine(r)] += pick(s) as f64;
            }
            out.into_iter().map(|v| v as f32).collect::<Vec<f32>>()
        };
        let affine_shape = Shape::from(vec![g.affine_rows, g.c]);
        if let Some(node) = node_gamma {
            grads.register::<KilnCpu<B>>(node.id, B::f32_tensor(per_affine_row(|s| s.1), affine_shape.clone()));
        }
        if let Some(node) = node_beta {
            grads.register::<KilnCpu<B>>(node.id, B::f32_tensor(per_affine_row(|s| s.0), affine_shape));
        }
    }
}

/// The layout of a call, or `None` where the op does not apply.
fn geometry(x: &Shape, gamma: &Shape, beta: &Shape, groups: Option<usize>) -> Option<Geometry> {
    if x.num_dims() != 4 || gamma.num_dims() != 2 || gamma != beta {
        return None;
    }
    let (n, c, hw) = (x[0], x[1], x[2] * x[3]);
    let affine_rows = gamma[0];
    if n == 0 || c == 0 || hw == 0 || gamma[1] != c || !(affine_rows == 1 || affine_rows == n) {
        return None;
    }
    if let Some(g) = groups
        && (g == 0 || !c.is_multiple_of(g))
    {
        return None;
    }
    Some(Geometry { n, c, hw, groups, affine_rows })
}

/// Batch norm (`groups` `None`) or group norm (`Some(G)`) with a per-image affine transform on
/// `Autodiff<KilnCpu<B>>` (module docs): `x` `[N, C, H, W]`, `gamma` and `beta` `[1 or N, C]` →
/// `(y, mean, var)`, the statistics per group (biased variance) for a running average.
///
/// `None` when it does not apply (a dtype other than f32, shapes that do not agree, an empty
/// axis, groups that do not divide `C`), and the caller should compose the layer from tensor ops.
#[allow(clippy::type_complexity)] // the kernel signature kiln-kernels names
pub fn norm_autodiff<B: CpuInner, C: CheckpointStrategy>(
    x: &FloatTensor<Autodiff<KilnCpu<B>, C>>,
    gamma: &FloatTensor<Autodiff<KilnCpu<B>, C>>,
    beta: &FloatTensor<Autodiff<KilnCpu<B>, C>>,
    groups: Option<usize>,
    eps: f64,
) -> Option<(FloatTensor<Autodiff<KilnCpu<B>, C>>, Vec<f32>, Vec<f32>)> {
    let g = geometry(&x.primitive.shape(), &gamma.primitive.shape(), &beta.primitive.shape(), groups)?;
    let (xp, gp) = (contiguous::<B>(&x.primitive), contiguous::<B>(&gamma.primitive));
    let (mean, var, rstd, y) = {
        let (xs, gs, bs) = (B::f32_view(&xp)?, B::f32_view(&gp)?, B::f32_view(&beta.primitive)?);
        let (mean, var) = statistics(&xs, g);
        let rstd = rstd(&var, eps);
        let y = forward(&xs, &gs, &bs, &mean, &rstd, g);
        (mean, var, rstd, y)
    };
    let y = B::f32_tensor(y, xp.shape());
    let parents = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
    let out = match Normalize.prepare::<C>(parents).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(State { x: xp, gamma: gp, mean: mean.clone(), rstd, geometry: g }, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some((out, mean, var))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_rows_and_affine_rows_are_laid_out_as_documented() {
        let bn = Geometry { n: 2, c: 6, hw: 4, groups: None, affine_rows: 1 };
        assert_eq!((bn.num_groups(), bn.count()), (6, 8));
        assert_eq!((0..12).map(|r| bn.group(r)).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]);
        let gn = Geometry { n: 2, c: 6, hw: 4, groups: Some(3), affine_rows: 2 };
        assert_eq!((gn.num_groups(), gn.count()), (6, 8));
        assert_eq!((0..12).map(|r| gn.group(r)).collect::<Vec<_>>(), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        assert_eq!(gn.affine(7), 7);
        assert_eq!(bn.affine(7), 1);
    }

    #[test]
    fn dispatched_row_loops_match_their_bodies() {
        let x: Vec<f32> = (0..37).map(|i| ((i * 29 % 17) as f32 - 8.0) / 3.0).collect();
        let dy: Vec<f32> = (0..37).map(|i| ((i * 13 % 11) as f32 - 5.0) / 4.0).collect();
        assert_eq!(row_sum(&x).to_bits(), lane_sum(&x).to_bits());
        assert_eq!(row_squares(&x, 0.3).to_bits(), squares_body(&x, 0.3).to_bits());
        assert_eq!(row_grad_sums(&dy, &x, 0.3, 1.7), grad_sums_body(&dy, &x, 0.3, 1.7));
        let (mut a, mut b) = (vec![0.0; 37], vec![0.0; 37]);
        row_grad_x(&mut a, &dy, &x, 0.5, -0.2, 0.1);
        grad_x_body(&mut b, &dy, &x, 0.5, -0.2, 0.1);
        assert_eq!(a, b);
    }
}
