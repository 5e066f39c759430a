//! Row-major copies of strided f32 views: what a `reshape` of a permuted tensor needs.
//!
//! burn-flex makes a permuted view contiguous with a tiled copy when its layout collapses to two
//! dimensions, and otherwise walks it one element at a time through a general strided iterator.
//! A transformer's head split and merge (`[B, T, H, D]` ↔ `[B, H, T, D]`) and the VQ-VAE's
//! `NCHW → rows` are three- and four-dimensional, so they took that walk: in perf, 13 % of the W4
//! gpt-mini training step (`to_contiguous` plus `StridedIter::next`, through `float_reshape` and
//! its backward) and 5 % of the W7 U-Net's. Both patterns keep whole runs contiguous, though: the
//! head split moves runs of `D` floats, and a permutation that moves the last axis is a batch of
//! 2-D transposes. [`gather`] copies those two shapes of layout with `copy_from_slice` runs or the
//! SSE block transpose, threaded, and declines the rest (negative strides, gathers with no
//! contiguous axis), which stay with flex.

use crate::threads::grain;
use crate::transpose::transpose_batch;
use rayon::prelude::*;

/// `(size, stride)` pairs of a layout with size-1 axes dropped and axes merged wherever the outer
/// one steps exactly over the inner one (`stride[i] = stride[i + 1] · size[i + 1]`).
fn collapse(shape: &[usize], strides: &[isize]) -> Vec<(usize, isize)> {
    let mut axes: Vec<(usize, isize)> = Vec::with_capacity(shape.len());
    for (&n, &s) in shape.iter().zip(strides) {
        if n == 1 {
            continue;
        }
        match axes.last_mut() {
            Some((m, t)) if *t == s * n as isize => {
                *m *= n;
                *t = s;
            }
            _ => axes.push((n, s)),
        }
    }
    axes
}

/// The elements of the view `(shape, strides, offset)` of `src`, in row-major order, or `None`
/// for a layout this module does not copy faster than flex (see the module docs).
pub(crate) fn gather(src: &[f32], shape: &[usize], strides: &[isize], offset: usize) -> Option<Vec<f32>> {
    let len: usize = shape.iter().product();
    if shape.len() != strides.len() || strides.iter().any(|&s| s < 0) {
        return None;
    }
    // Every element the view reaches must lie inside `src`.
    let last = offset + shape.iter().zip(strides).map(|(&n, &s)| n.saturating_sub(1) * s as usize).sum::<usize>();
    if len == 0 || last >= src.len() {
        return None;
    }
    let axes = collapse(shape, strides);
    match axes.as_slice() {
        [] => Some(vec![src[offset]]),
        [.., (run, 1)] if *run >= 4 => Some(runs(src, &axes, offset, len)),
        _ => transposes(src, &axes, offset, len),
    }
}

/// Copies a view whose innermost axis is contiguous, one `copy_from_slice` per run, the runs
/// split across threads.
fn runs(src: &[f32], axes: &[(usize, isize)], offset: usize, len: usize) -> Vec<f32> {
    let (run, _) = axes[axes.len() - 1];
    let outer = &axes[..axes.len() - 1];
    let mut out = vec![0.0f32; len];
    out.par_chunks_mut(run).enumerate().with_min_len(grain(run)).for_each(|(i, dst)| {
        // Source offset of run `i`: its outer index, axis by axis from the innermost.
        let (mut rest, mut at) = (i, offset);
        for &(n, s) in outer.iter().rev() {
            at += (rest % n) * s as usize;
            rest /= n;
        }
        dst.copy_from_slice(&src[at..at + run]);
    });
    out
}

/// Copies a view that is a batch of transposes: collapsed to `[batch…, rows, cols]` with the
/// `rows` axis of stride 1 and the `cols` axis of stride `rows`, so that each matrix is the
/// transpose of a row-major `cols × rows` block of the source. Declines anything else.
fn transposes(src: &[f32], axes: &[(usize, isize)], offset: usize, len: usize) -> Option<Vec<f32>> {
    let n = axes.len();
    if n < 2 {
        return None;
    }
    let ((rows, r_stride), (cols, c_stride)) = (axes[n - 2], axes[n - 1]);
    // Source block: `cols` rows of `rows` contiguous floats, row stride `c_stride`.
    if r_stride != 1 || c_stride as usize != rows || rows < 4 || cols < 4 {
        return None;
    }
    let plane = rows * cols;
    let batch = &axes[..n - 2];
    let mut out = vec![0.0f32; len];
    let contiguous_batch = batch.len() <= 1 && batch.first().is_none_or(|&(_, s)| s as usize == plane);
    if contiguous_batch {
        let count = len / plane;
        transpose_batch(&src[offset..offset + count * plane], count, cols, rows, &mut out);
        return Some(out);
    }
    // Each matrix separately, found by its batch index.
    out.par_chunks_mut(plane).enumerate().for_each(|(i, dst)| {
        let (mut rest, mut at) = (i, offset);
        for &(m, s) in batch.iter().rev() {
            at += (rest % m) * s as usize;
            rest /= m;
        }
        transpose_batch(&src[at..at + plane], 1, cols, rows, dst);
    });
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row-major elements of a view by the definition.
    fn reference(src: &[f32], shape: &[usize], strides: &[isize], offset: usize) -> Vec<f32> {
        let len: usize = shape.iter().product();
        (0..len)
            .map(|i| {
                let (mut rest, mut at) = (i, offset as isize);
                for (&n, &s) in shape.iter().zip(strides).rev() {
                    at += (rest % n) as isize * s;
                    rest /= n;
                }
                src[at as usize]
            })
            .collect()
    }

    /// Strides of a row-major `shape`, permuted by `axes` (what `permute` makes).
    fn permuted(shape: &[usize], axes: &[usize]) -> (Vec<usize>, Vec<isize>) {
        let mut strides = vec![1isize; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1] as isize;
        }
        (axes.iter().map(|&a| shape[a]).collect(), axes.iter().map(|&a| strides[a]).collect())
    }

    #[test]
    fn permutations_copy_as_the_definition_says() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[2, 5, 3, 8], &[0, 2, 1, 3]),  // head split: runs of 8
            (&[2, 3, 5, 8], &[0, 2, 1, 3]),  // head merge
            (&[3, 16, 7, 7], &[0, 2, 3, 1]), // NCHW → NHWC: a batch of transposes
            (&[4, 6, 5], &[0, 2, 1]),        // last two axes swapped
            (&[6, 5], &[1, 0]),              // one transpose
            (&[2, 4, 6, 5], &[1, 0, 3, 2]),  // transposes whose batch is not contiguous
            (&[2, 3, 2, 5], &[3, 1, 0, 2]),  // no contiguous axis: declined
            (&[1, 9, 1, 4], &[2, 0, 3, 1]),  // size-1 axes
        ];
        for &(shape, axes) in cases {
            let src: Vec<f32> = (0..shape.iter().product::<usize>() + 3).map(|i| i as f32).collect();
            let (view, strides) = permuted(shape, axes);
            let want = reference(&src[3..], &view, &strides, 0);
            match gather(&src, &view, &strides, 3) {
                Some(got) => assert_eq!(got, want, "{shape:?} permuted by {axes:?}"),
                None => assert_eq!(axes, &[3, 1, 0, 2], "{shape:?} by {axes:?} was declined"),
            }
        }
        // Out of bounds, negative strides: declined, not read.
        assert!(gather(&[0.0; 10], &[3, 4], &[4, 1], 0).is_none());
        assert!(gather(&[0.0; 12], &[3, 4], &[-4, 1], 8).is_none());
    }
}
