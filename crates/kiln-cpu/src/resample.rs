//! Separable resampling (kiln-kernels' resize without autodiff) as tap loops instead of matrix
//! products.
//!
//! kiln-kernels resizes with `Y = R_h · X · R_wᵀ` per channel, cut into bands so that the GEMMs
//! skip most of the zeros of the banded weight matrices. A band is still dozens of columns wide
//! where a filter has a handful of taps (4 × antialiased bilinear 256 → 64: 9 taps, bands of
//! 64), and each band is a product call, a narrowed copy and a concatenation: W6's antialiased
//! bilinear ran at 0.60–0.75× PyTorch. Here each output row of the first pass is the sum of its
//! few input rows times their weights — whole rows, so the loop is one vectorised
//! multiply-add per tap — and the second pass is the same on the transposed plane. One plane per
//! rayon task; the weights are the same matrices, read by their non-zero range.

use crate::CpuInner;
use crate::transpose::transpose_serial;
use burn_backend::tensor::FloatTensor;
use burn_backend::{Shape, TensorMetadata};
use rayon::prelude::*;

/// One axis: for output `o`, the first input it reads and its weights.
struct Taps {
    start: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

impl Taps {
    /// The non-zero range of each row of `matrix` (`[out, input]`, row-major).
    fn new(matrix: &[f32], input: usize) -> Self {
        let (mut start, mut weights) = (Vec::new(), Vec::new());
        for row in matrix.chunks_exact(input) {
            let lo = row.iter().position(|&v| v != 0.0).unwrap_or(0);
            let hi = row.iter().rposition(|&v| v != 0.0).map_or(lo, |i| i + 1);
            start.push(lo);
            weights.push(row[lo..hi].to_vec());
        }
        Self { start, weights }
    }

    /// `dst` row `o` ← `Σ_k w[o][k] · src` row `start[o] + k`, rows `len` long.
    fn apply(&self, src: &[f32], dst: &mut [f32], len: usize) {
        for (o, row) in dst.chunks_exact_mut(len).enumerate() {
            row.fill(0.0);
            for (k, &w) in self.weights[o].iter().enumerate() {
                let s = (self.start[o] + k) * len;
                axpy(row, &src[s..s + len], w);
            }
        }
    }
}

#[inline(always)]
fn axpy_body(dst: &mut [f32], src: &[f32], a: f32) {
    let n = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..n], &src[..n]);
    for i in 0..n {
        dst[i] += a * src[i];
    }
}

crate::rows::dispatched! {
    /// [`axpy_body`]: `dst += a · src`.
    fn axpy / axpy_avx512(dst: &mut [f32], src: &[f32], a: f32) -> () = axpy_body
}

/// `x` `[N, C, H, W]` resampled to `[N, C, out_h, out_w]` with the weight matrices `rows`
/// (`[out_h, H]`) and `cols` (`[out_w, W]`): `Y = rows · X · colsᵀ` per plane.
///
/// `None` (and the caller should multiply the matrices) for a dtype other than f32, a tensor
/// that is not 4-D, or matrices of the wrong size.
pub fn resample<B: CpuInner>(
    x: &FloatTensor<B>,
    rows: &[f32],
    cols: &[f32],
    [out_h, out_w]: [usize; 2],
) -> Option<FloatTensor<B>> {
    let shape = x.shape();
    if shape.num_dims() != 4 {
        return None;
    }
    let (planes, h, w) = (shape[0] * shape[1], shape[2], shape[3]);
    if h == 0 || w == 0 || rows.len() != out_h * h || cols.len() != out_w * w {
        return None;
    }
    let xs = B::f32_view(x)?;
    let (rt, ct) = (Taps::new(rows, h), Taps::new(cols, w));
    let mut y = vec![0.0f32; planes * out_h * out_w];
    if out_h > 0 && out_w > 0 {
        let scratch = || (vec![0.0f32; out_h * w], vec![0.0f32; w * out_h], vec![0.0f32; out_w * out_h]);
        let work = y.par_chunks_mut(out_h * out_w).zip(xs.par_chunks(h * w));
        work.for_each_init(scratch, |(t, tt, ot), (out, plane)| {
            rt.apply(plane, t, w); // [out_h, W]: whole rows
            transpose_serial(t, out_h, w, tt); // [W, out_h]
            ct.apply(tt, ot, out_h); // [out_w, out_h]
            transpose_serial(ot, out_w, out_h, out); // [out_h, out_w]
        });
    }
    Some(B::f32_tensor(y, Shape::from(vec![shape[0], shape[1], out_h, out_w])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_keep_each_rows_non_zero_range() {
        let m = [0.0, 0.5, 0.5, 0.0, /**/ 0.0, 0.0, 0.0, 1.0, /**/ 0.25, 0.0, 0.75, 0.0];
        let t = Taps::new(&m, 4);
        assert_eq!(t.start, [1, 3, 0]);
        assert_eq!(t.weights, [vec![0.5, 0.5], vec![1.0], vec![0.25, 0.0, 0.75]]);
        // Rows of 2: out 0 = (in1 + in2)/2, out 1 = in3, out 2 = in0/4 + 3·in2/4.
        let src = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let mut dst = [9.0; 6];
        t.apply(&src, &mut dst, 2);
        assert_eq!(dst, [4.0, 5.0, 7.0, 8.0, 4.0, 5.0]);
    }
}
