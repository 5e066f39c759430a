//! `linear` and its three gradients as single GEMMs over the flattened rows.
//!
//! burn's default bodies treat a `[B, T, K]` input as a batch of `B` matrices: the forward and
//! `dx` broadcast the weight to `[1, K, N]` and run `B` products of `T` rows each, and `dW` runs
//! `B` products `xᵢᵀ · dyᵢ` into a `[B, K, N]` buffer that is then summed over the batch (another
//! full pass over `B·K·N` floats, 14 MB per layer for the W4 transformer). A linear layer does not
//! care where the rows came from, so here every leading axis is folded into one `M = B·T` and each
//! op is one GEMM: `y = x · W (+ b)`, `dx = dy · Wᵀ`, `dW = xᵀ · dy` (inner dimension `M`, no
//! batch buffer), and `db` is a column sum of `dy` in one pass. The bias is written into `y`
//! first and the product accumulated onto it, so the forward has no separate broadcast add.

use crate::CpuInner;
use crate::gemm::{MatRef, sgemm};
use crate::threads::sum_in_order;
use crate::transpose::transpose_batch;
use burn_backend::Shape;
use burn_backend::TensorMetadata;
use burn_backend::tensor::FloatTensor;
use rayon::prelude::*;

/// Products smaller than this many multiply-adds run on one thread: below it, waking the pool
/// costs more than it saves (DRAW's LSTM steps, `[64, 256] · [256, 1024]` and smaller, ran 10–30 %
/// slower threaded). burn-flex's matmul uses the same bound.
const PARALLEL_MACS: usize = 192 * 192 * 192;

fn parallel(m: usize, n: usize, k: usize) -> bool {
    m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MACS
}

/// `(rows, cols)` of a tensor seen as a matrix whose rows are all its leading axes folded.
fn as_rows<B: CpuInner>(t: &FloatTensor<B>) -> Option<(usize, usize)> {
    let shape = t.shape();
    let dims = shape.num_dims();
    if dims < 2 {
        return None;
    }
    let cols = shape[dims - 1];
    let rows = shape.num_elements() / cols.max(1);
    (rows > 0 && cols > 0).then_some((rows, cols))
}

/// `(rows, cols)` of a rank-2 tensor (a weight), `None` for any other rank.
fn matrix<B: CpuInner>(t: &FloatTensor<B>) -> Option<(usize, usize)> {
    let shape = t.shape();
    (shape.num_dims() == 2).then(|| (shape[0], shape[1]))
}

/// `shape` with its last axis replaced by `last`.
fn with_last(shape: &Shape, last: usize) -> Shape {
    let mut dims: Vec<usize> = (0..shape.num_dims()).map(|i| shape[i]).collect();
    if let Some(d) = dims.last_mut() {
        *d = last;
    }
    Shape::from(dims)
}

fn try_linear<B: CpuInner>(
    x: &FloatTensor<B>,
    weight: &FloatTensor<B>,
    bias: Option<&FloatTensor<B>>,
) -> Option<FloatTensor<B>> {
    let (m, k) = as_rows::<B>(x)?;
    let (wk, n) = matrix::<B>(weight)?;
    if wk != k || n == 0 || bias.is_some_and(|b| b.shape().num_elements() != n) {
        return None;
    }
    let xs = B::f32_view(x)?;
    let ws = B::f32_view(weight)?;
    let bs = match bias {
        Some(b) => Some(B::f32_view(b)?),
        None => None,
    };
    let mut out = vec![0.0f32; m * n];
    if let Some(b) = &bs {
        out.par_chunks_mut(n).for_each(|row| row.copy_from_slice(b));
    }
    // out[m × n] (+)= x[m × k] · W[k × n]
    sgemm(m, n, k, MatRef::row_major(&xs, k), MatRef::row_major(&ws, n), &mut out, n, bs.is_some(), parallel(m, n, k));
    Some(B::f32_tensor(out, with_last(&x.shape(), n)))
}

fn try_x_backward<B: CpuInner>(weight: &FloatTensor<B>, dy: &FloatTensor<B>) -> Option<FloatTensor<B>> {
    let (m, n) = as_rows::<B>(dy)?;
    let (k, wn) = matrix::<B>(weight)?;
    if wn != n || k == 0 {
        return None;
    }
    let dys = B::f32_view(dy)?;
    let ws = B::f32_view(weight)?;
    let mut dx = vec![0.0f32; m * k];
    // `gemm` packs whichever operand it sees as its left one into panels of 16 rows, and it sees
    // the product transposed whenever the destination is row-major, so here it packs `W`
    // (`k × n`) — with a gather, as `W` is contiguous along the wrong axis. When `dy` has fewer
    // rows than `W` (DRAW's LSTM steps: 64 rows against 256–356), computing `dxᵀ = W · dyᵀ`
    // instead makes it gather `dy`'s `m × n`, and the `m × k` result costs one transpose.
    // Measured on the 2-core EPYC (kiln-bench W5, two interleaved rounds): 1.20–1.47× per step.
    if m < k {
        let mut dx_t = vec![0.0f32; k * m];
        // dxᵀ[k × m] = W[k × n] · dyᵀ[n × m]
        sgemm(
            k,
            m,
            n,
            MatRef::row_major(&ws, n),
            MatRef::row_major(&dys, n).t(),
            &mut dx_t,
            m,
            false,
            parallel(m, n, k),
        );
        transpose_batch(&dx_t, 1, k, m, &mut dx);
    } else {
        // dx[m × k] = dy[m × n] · Wᵀ[n × k]
        sgemm(m, k, n, MatRef::row_major(&dys, n), MatRef::row_major(&ws, n).t(), &mut dx, k, false, parallel(m, n, k));
    }
    Some(B::f32_tensor(dx, with_last(&dy.shape(), k)))
}

fn try_weight_backward<B: CpuInner>(x: &FloatTensor<B>, dy: &FloatTensor<B>) -> Option<FloatTensor<B>> {
    let (m, k) = as_rows::<B>(x)?;
    let (dm, n) = as_rows::<B>(dy)?;
    if dm != m {
        return None;
    }
    let xs = B::f32_view(x)?;
    let dys = B::f32_view(dy)?;
    let mut dw = vec![0.0f32; k * n];
    // dW[k × n] = xᵀ[k × m] · dy[m × n]: one product with inner dimension m = all rows
    sgemm(k, n, m, MatRef::row_major(&xs, k).t(), MatRef::row_major(&dys, n), &mut dw, n, false, parallel(m, n, k));
    Some(B::f32_tensor(dw, Shape::new([k, n])))
}

/// Rows per task of the column sum: enough work per task to pay for the split.
const SUM_ROWS: usize = 256;

fn try_bias_backward<B: CpuInner>(dy: &FloatTensor<B>) -> Option<FloatTensor<B>> {
    let (m, n) = as_rows::<B>(dy)?;
    let dys = B::f32_view(dy)?;
    let add_rows = |rows: &[f32]| {
        let mut acc = vec![0.0f32; n];
        for row in rows.chunks_exact(n) {
            acc.iter_mut().zip(row).for_each(|(a, v)| *a += *v);
        }
        acc
    };
    // db[n] = Σ_rows dy[row, ·]: partial sums over blocks of rows, then the partials added in
    // block order (`sum_in_order`: repeatable, unlike rayon's `reduce`).
    let db = if m > SUM_ROWS {
        sum_in_order(dys.par_chunks(SUM_ROWS * n).map(add_rows).collect(), n)
    } else {
        add_rows(&dys)
    };
    Some(B::f32_tensor(db, Shape::new([n])))
}

/// `linear` for `KilnCpu<B>`: one GEMM with the bias folded in, or `B`'s own.
pub(crate) fn linear<B: CpuInner>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
) -> FloatTensor<B> {
    match try_linear::<B>(&x, &weight, bias.as_ref()) {
        Some(y) => y,
        None => B::linear(x, weight, bias),
    }
}

/// `linear_x_backward` for `KilnCpu<B>`.
pub(crate) fn linear_x_backward<B: CpuInner>(weight: FloatTensor<B>, output_grad: FloatTensor<B>) -> FloatTensor<B> {
    match try_x_backward::<B>(&weight, &output_grad) {
        Some(dx) => dx,
        None => B::linear_x_backward(weight, output_grad),
    }
}

/// `linear_weight_backward` for `KilnCpu<B>`.
pub(crate) fn linear_weight_backward<B: CpuInner>(x: FloatTensor<B>, output_grad: FloatTensor<B>) -> FloatTensor<B> {
    match try_weight_backward::<B>(&x, &output_grad) {
        Some(dw) => dw,
        None => B::linear_weight_backward(x, output_grad),
    }
}

/// `linear_bias_backward` for `KilnCpu<B>`.
pub(crate) fn linear_bias_backward<B: CpuInner>(output_grad: FloatTensor<B>) -> FloatTensor<B> {
    match try_bias_backward::<B>(&output_grad) {
        Some(db) => db,
        None => B::linear_bias_backward(output_grad),
    }
}
