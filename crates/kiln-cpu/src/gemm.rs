//! A safe, bounds-checked front for the `gemm` crate's f32 matrix product.
//!
//! `gemm::gemm` takes raw pointers and strides, so it is `unsafe`. This module is the only place
//! in the crate that calls it (hence the local `allow(unsafe_code)` against the workspace's
//! `deny`): every call first checks that the last element each matrix can reach lies inside its
//! slice, and that the destination does not alias an input (it is a `&mut` borrow).
#![allow(unsafe_code)]

/// A row-major-or-strided view of a matrix inside a slice: element `(i, j)` is at
/// `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows × cols` matrix at the start of `data`.
    pub fn row_major(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of this view (no copy: the strides swap).
    pub fn t(self) -> Self {
        Self { data: self.data, row_stride: self.col_stride, col_stride: self.row_stride }
    }
}

fn last_index(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> usize {
    (rows - 1) * row_stride + (cols - 1) * col_stride
}

/// `dst[m × n] (row-major, row stride dst_stride) = (accumulate ? dst : 0) + a[m × k] · b[k × n]`,
/// threaded with rayon when `parallel` is set.
#[allow(clippy::too_many_arguments)] // a BLAS-style call: three shapes, three operands, two flags
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    dst: &mut [f32],
    dst_stride: usize,
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_stride..i * dst_stride + n].fill(0.0);
            }
        }
        return;
    }
    assert!(last_index(m, k, a.row_stride, a.col_stride) < a.data.len(), "sgemm: lhs out of bounds");
    assert!(last_index(k, n, b.row_stride, b.col_stride) < b.data.len(), "sgemm: rhs out of bounds");
    assert!(last_index(m, n, dst_stride, 1) < dst.len(), "sgemm: dst out of bounds");
    let parallelism = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above keep every element gemm reads or writes inside the three slices;
    // `dst` is an exclusive borrow so it cannot overlap `a` or `b`; strides fit in isize because
    // the reached offsets are valid slice indices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
