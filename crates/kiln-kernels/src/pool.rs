//! 2-D pooling with PyTorch's sizes and numbers: max, average, adaptive average, max with
//! indices, and max-unpooling.
//!
//! These wrap burn's pooling ops (and so their backward passes). Two things are added: the
//! arguments are checked and reported as [`KernelError`]s instead of panicking, and the output
//! size follows PyTorch's `ceil_mode` rule — a last window that would start in the right-hand
//! padding is dropped — which burn's `calculate_pool_output_size` lacks; the extra row or column
//! burn computes in that case is sliced off.

use burn::tensor::{IndexingUpdateOp, Int, Tensor, backend::Backend, module};

use crate::error::{KernelError, Result};

/// Window geometry of a 2-D pooling, `[height, width]` pairs as in PyTorch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2d {
    /// Window size.
    pub kernel: [usize; 2],
    /// Step between windows (PyTorch's default is the kernel size).
    pub stride: [usize; 2],
    /// Implicit padding on both sides (`-inf` for max, zeros for average).
    pub padding: [usize; 2],
    /// Spacing between window elements (max pooling only).
    pub dilation: [usize; 2],
    /// Round the output size up instead of down.
    pub ceil_mode: bool,
}

impl Pool2d {
    /// A `kernel`-sized window with stride = kernel, no padding, no dilation, floor mode.
    pub fn new(kernel: [usize; 2]) -> Self {
        Self { kernel, stride: kernel, padding: [0, 0], dilation: [1, 1], ceil_mode: false }
    }

    /// Sets the stride.
    pub fn with_stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the padding.
    pub fn with_padding(mut self, padding: [usize; 2]) -> Self {
        self.padding = padding;
        self
    }

    /// Sets the dilation.
    pub fn with_dilation(mut self, dilation: [usize; 2]) -> Self {
        self.dilation = dilation;
        self
    }

    /// Sets `ceil_mode`.
    pub fn with_ceil_mode(mut self, ceil_mode: bool) -> Self {
        self.ceil_mode = ceil_mode;
        self
    }

    /// PyTorch's `pooling_output_shape` for an input of `[height, width]`, after checking the
    /// arguments as PyTorch does (positive kernel, stride and dilation; padding at most half the
    /// kernel; a non-empty output).
    pub fn output_size(&self, input: [usize; 2]) -> Result<[usize; 2]> {
        let mut out = [0; 2];
        for axis in 0..2 {
            let name = ["height", "width"][axis];
            let (k, s, p, d) = (self.kernel[axis], self.stride[axis], self.padding[axis], self.dilation[axis]);
            for (what, v) in [("pool kernel", k), ("pool stride", s), ("pool dilation", d)] {
                if v == 0 {
                    return Err(KernelError::ZeroSize { what, value: v });
                }
            }
            if 2 * p > k {
                return Err(KernelError::OutOfRange {
                    what: "pool padding",
                    allowed: "at most half the kernel size",
                    value: format!("{p} for kernel {k}"),
                });
            }
            let span = d * (k - 1) + 1;
            let padded = input[axis] + 2 * p;
            if padded < span {
                return Err(KernelError::OutOfRange {
                    what: "pool input",
                    allowed: "at least as large as the dilated kernel after padding",
                    value: format!("{name} {} (+2·{p}) for a window of {span}", input[axis]),
                });
            }
            let num = padded - span;
            let mut o = if self.ceil_mode { num.div_ceil(s) + 1 } else { num / s + 1 };
            // The last window must start inside the input or the left padding.
            if self.ceil_mode && (o - 1) * s >= input[axis] + p {
                o -= 1;
            }
            out[axis] = o;
        }
        Ok(out)
    }
}

fn crop<B: Backend, K>(x: Tensor<B, 4, K>, size: [usize; 2]) -> Tensor<B, 4, K>
where
    K: burn::tensor::BasicOps<B>,
{
    let [n, c, h, w] = x.dims();
    if [h, w] == size { x } else { x.slice([0..n, 0..c, 0..size[0], 0..size[1]]) }
}

/// Max pooling, `[N, C, H, W]` → `[N, C, H', W']`.
pub fn max_pool2d<B: Backend>(x: Tensor<B, 4>, pool: &Pool2d) -> Result<Tensor<B, 4>> {
    let [_, _, h, w] = x.dims();
    let size = pool.output_size([h, w])?;
    let y = module::max_pool2d(x, pool.kernel, pool.stride, pool.padding, pool.dilation, pool.ceil_mode);
    Ok(crop(y, size))
}

/// Max pooling that also returns, per output, the flat index `h · W + w` of the chosen input
/// element within its `[H, W]` plane (PyTorch's `return_indices=True`).
pub fn max_pool2d_with_indices<B: Backend>(
    x: Tensor<B, 4>,
    pool: &Pool2d,
) -> Result<(Tensor<B, 4>, Tensor<B, 4, Int>)> {
    let [_, _, h, w] = x.dims();
    let size = pool.output_size([h, w])?;
    let (y, idx) =
        module::max_pool2d_with_indices(x, pool.kernel, pool.stride, pool.padding, pool.dilation, pool.ceil_mode);
    Ok((crop(y, size), crop(idx, size)))
}

/// Average pooling. With `count_include_pad` the padding zeros count in the divisor (PyTorch's
/// default); without, only the input elements under the window do. Dilation must be 1, as in
/// PyTorch.
pub fn avg_pool2d<B: Backend>(x: Tensor<B, 4>, pool: &Pool2d, count_include_pad: bool) -> Result<Tensor<B, 4>> {
    if pool.dilation != [1, 1] {
        return Err(KernelError::Unsupported { option: "dilation", filter: "average pooling" });
    }
    let [_, _, h, w] = x.dims();
    let size = pool.output_size([h, w])?;
    let y = module::avg_pool2d(x, pool.kernel, pool.stride, pool.padding, count_include_pad, pool.ceil_mode);
    Ok(crop(y, size))
}

/// Adaptive average pooling to `[H', W']`: output cell `i` averages input rows
/// `floor(i·H/H') .. ceil((i+1)·H/H')`, likewise for columns.
pub fn adaptive_avg_pool2d<B: Backend>(x: Tensor<B, 4>, output: [usize; 2]) -> Result<Tensor<B, 4>> {
    let [_, _, h, w] = x.dims();
    for (what, v) in
        [("output height", output[0]), ("output width", output[1]), ("input height", h), ("input width", w)]
    {
        if v == 0 {
            return Err(KernelError::ZeroSize { what, value: v });
        }
    }
    Ok(module::adaptive_avg_pool2d(x, output))
}

/// Max-unpooling, the partial inverse of [`max_pool2d_with_indices`]: each value goes to the
/// position its index names in a zero `[N, C, H_out, W_out]` tensor (PyTorch `max_unpool2d`).
///
/// `output` defaults to `(H - 1)·stride - 2·padding + kernel` per axis. The indices must come
/// from a max-pooling of an input of that size. Where windows overlap, two outputs can name the
/// same position with the same value; it is written once, as in PyTorch (the scatter adds and
/// divides by the number of writers; on the backward pass each writer gets its share of the
/// gradient, where PyTorch gives each the whole).
pub fn max_unpool2d<B: Backend>(
    x: Tensor<B, 4>,
    indices: Tensor<B, 4, Int>,
    pool: &Pool2d,
    output: Option<[usize; 2]>,
) -> Result<Tensor<B, 4>> {
    let [n, c, h, w] = x.dims();
    if indices.dims() != x.dims() {
        return Err(KernelError::ShapeMismatch {
            what: "max_unpool2d indices",
            expected: format!("{:?}", x.dims()),
            got: format!("{:?}", indices.dims()),
        });
    }
    let default = |axis: usize, size: usize| -> Result<usize> {
        let full = (size.max(1) - 1) * pool.stride[axis] + pool.kernel[axis];
        full.checked_sub(2 * pool.padding[axis])
            .filter(|&o| o > 0)
            .ok_or(KernelError::ZeroSize { what: "max_unpool2d output", value: 0 })
    };
    let [oh, ow] = match output {
        Some(size) => size,
        None => [default(0, h)?, default(1, w)?],
    };
    if oh == 0 || ow == 0 {
        return Err(KernelError::ZeroSize { what: "max_unpool2d output", value: 0 });
    }
    let device = x.device();
    let idx = indices.reshape([n, c, h * w]);
    let zeros = || Tensor::<B, 3>::zeros([n, c, oh * ow], &device);
    let writers = zeros().scatter(2, idx.clone(), Tensor::ones([n, c, h * w], &device), IndexingUpdateOp::Add);
    let sums = zeros().scatter(2, idx, x.reshape([n, c, h * w]), IndexingUpdateOp::Add);
    Ok((sums / writers.clamp_min(1.0)).reshape([n, c, oh, ow]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_mode_drops_a_window_that_starts_in_padding() {
        // PyTorch: nn.MaxPool2d(2, 2, padding=1, ceil_mode=True) on 5×5 gives 3×3.
        let pool = Pool2d::new([2, 2]).with_padding([1, 1]).with_ceil_mode(true);
        assert_eq!(pool.output_size([5, 5]), Ok([3, 3]));
        assert_eq!(Pool2d::new([3, 3]).with_ceil_mode(true).output_size([7, 8]), Ok([3, 3]));
    }

    #[test]
    fn rejects_bad_windows() {
        assert!(Pool2d::new([0, 2]).output_size([4, 4]).is_err());
        assert!(Pool2d::new([2, 2]).with_padding([2, 0]).output_size([4, 4]).is_err());
        assert!(Pool2d::new([5, 5]).output_size([4, 4]).is_err());
    }
}
