//! f32 2-D convolution kernels: im2col / col2im around one GEMM per batch chunk.
//!
//! All six ops reduce to three patterns over a [`Geometry`] that relates an *image* side
//! (`channels × ih × iw`, the side the kernel window slides over) to a *column* side
//! (`oh × ow`, one position per window):
//!
//! - [`im2col_gemm`]: `out[b] = A · im2col(img[b])` — conv2d forward; conv_transpose2d input
//!   gradient (the image is the transposed conv's output gradient).
//! - [`gemm_col2im`]: `img[b] = col2im(Aᵀ · y[b])` — conv2d input gradient; conv_transpose2d
//!   forward.
//! - [`weight_grad`]: `dA = Σ_b y[b] · im2col(img[b])ᵀ` — both weight gradients.
//!
//! `A` is the weight viewed as a `rows × (channels·kh·kw)` matrix, which is how both
//! `conv2d` (`[out, in, kh, kw]`) and `conv_transpose2d` (`[in, out, kh, kw]`) store it.
//!
//! Images of a batch are processed in chunks whose column matrix stays near
//! [`COL_BUDGET`] floats, and each chunk's columns for all its images sit side by side, so a
//! chunk is one large GEMM (threaded inside `gemm`) rather than many small per-image ones:
//! DCGAN's deepest layer has only 16 output positions per image, far too few for a GEMM.
//! im2col, col2im and the layout copies are threaded over rows or planes with rayon.

use crate::CpuInner;
use crate::gemm::{MatRef, sgemm};
use burn_backend::TensorMetadata;
use burn_backend::ops::{ConvOptions, ConvTransposeOptions};
use burn_backend::tensor::FloatTensor;
use rayon::prelude::*;

/// Target size, in floats, of one chunk's column matrix (16 MiB). Large enough that the GEMM
/// of every DCGAN-64 layer has a few hundred columns or more, small enough to stay near cache.
const COL_BUDGET: usize = 1 << 22;

/// How a kernel window maps an image (`channels × in_h × in_w`) onto column positions
/// (`out_h × out_w`): position `(oh, ow)` and tap `(kh, kw)` read image pixel
/// `(oh·sh + kh·dh − ph, ow·sw + kw·dw − pw)`, zero outside the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub channels: usize,
    pub in_size: [usize; 2],
    pub out_size: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl Geometry {
    fn image_len(&self) -> usize {
        self.channels * self.in_size[0] * self.in_size[1]
    }
    fn positions(&self) -> usize {
        self.out_size[0] * self.out_size[1]
    }
    fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }
    /// Rows of the column matrix: `channels · kh · kw`.
    fn col_rows(&self) -> usize {
        self.channels * self.taps()
    }

    /// Images per chunk so that one chunk's column matrix stays near [`COL_BUDGET`].
    fn chunk(&self, batch: usize) -> usize {
        let per_image = (self.col_rows() * self.positions()).max(1);
        (COL_BUDGET / per_image).clamp(1, batch.max(1))
    }

    /// The range of output positions `o` along axis `axis` for which
    /// `o·stride + k·dilation − padding` lands inside the image, for tap offset `k`.
    fn valid(&self, axis: usize, k: usize) -> (usize, usize) {
        let (s, p, n_in, n_out) = (self.stride[axis], self.padding[axis], self.in_size[axis], self.out_size[axis]);
        let off = k * self.dilation[axis];
        // smallest o with o*s + off >= p
        let lo = if off >= p { 0 } else { (p - off).div_ceil(s) };
        // largest o with o*s + off - p <= n_in - 1, i.e. o*s <= n_in - 1 + p - off
        let hi = if n_in + p <= off { 0 } else { ((n_in - 1 + p - off) / s + 1).min(n_out) };
        (lo.min(hi), hi)
    }
}

/// Fewer column positions per image than this and the op goes to the inner backend: with one
/// output pixel per image (DCGAN's last discriminator and first generator layers) im2col is all
/// overhead, and flex's direct kernels were 2–10× faster there.
const MIN_POSITIONS: usize = 4;

/// Column positions per image from which each image gets its own GEMM (threads split the
/// batch) instead of a chunk-wide one: the GEMM is then wide enough on its own, and one image's
/// column matrix (≤ 1 MiB on DCGAN) stays in the core's L2 between im2col and the GEMM, with no
/// layout copies at all.
const PER_IMAGE_POSITIONS: usize = 256;

thread_local! {
    /// Reusable scratch buffers. Fresh large allocations cost page faults that, on the VMs this
    /// was measured on, took longer than the GEMM itself; buffers are kept per thread instead.
    static SCRATCH: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch slice of `len` floats (contents unspecified) borrowed from this
/// thread's pool; nested calls get distinct buffers.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let out = f(&mut buf[..len]);
    SCRATCH.with(|s| s.borrow_mut().push(buf));
    out
}

/// Fills `dst` (`positions` floats) with tap row `row = (c, kh, kw)` of one image's im2col.
fn im2col_row(g: &Geometry, img: &[f32], row: usize, dst: &mut [f32]) {
    let [ih, iw] = g.in_size;
    let [oh, ow] = g.out_size;
    let c = row / g.taps();
    let (kh, kw) = ((row % g.taps()) / g.kernel[1], row % g.kernel[1]);
    let (y_lo, y_hi) = g.valid(0, kh);
    let (x_lo, x_hi) = g.valid(1, kw);
    let src = &img[c * ih * iw..][..ih * iw];
    for y in 0..oh {
        let out = &mut dst[y * ow..][..ow];
        if y < y_lo || y >= y_hi || x_lo >= x_hi {
            out.fill(0.0);
            continue;
        }
        let sy = y * g.stride[0] + kh * g.dilation[0] - g.padding[0];
        let src_row = &src[sy * iw..][..iw];
        out[..x_lo].fill(0.0);
        out[x_hi..].fill(0.0);
        let sx0 = x_lo * g.stride[1] + kw * g.dilation[1] - g.padding[1];
        let (s, n) = (g.stride[1], x_hi - x_lo);
        if s == 1 {
            out[x_lo..x_hi].copy_from_slice(&src_row[sx0..sx0 + n]);
        } else {
            for (o, v) in out[x_lo..x_hi].iter_mut().zip(src_row[sx0..].iter().step_by(s)) {
                *o = *v;
            }
        }
    }
}

/// Adds tap row `row` (`positions` floats) of an im2col matrix into image plane `dst` of channel
/// `row / taps`: the adjoint of [`im2col_row`].
fn col2im_row(g: &Geometry, src: &[f32], row: usize, dst: &mut [f32]) {
    let iw = g.in_size[1];
    let ow = g.out_size[1];
    let (kh, kw) = ((row % g.taps()) / g.kernel[1], row % g.kernel[1]);
    let (y_lo, y_hi) = g.valid(0, kh);
    let (x_lo, x_hi) = g.valid(1, kw);
    if x_lo >= x_hi {
        return;
    }
    for y in y_lo..y_hi {
        let sy = y * g.stride[0] + kh * g.dilation[0] - g.padding[0];
        let dst_row = &mut dst[sy * iw..][..iw];
        let src_row = &src[y * ow + x_lo..y * ow + x_hi];
        let sx0 = x_lo * g.stride[1] + kw * g.dilation[1] - g.padding[1];
        if g.stride[1] == 1 {
            for (d, v) in dst_row[sx0..sx0 + src_row.len()].iter_mut().zip(src_row) {
                *d += *v;
            }
        } else {
            for (d, v) in dst_row[sx0..].iter_mut().step_by(g.stride[1]).zip(src_row) {
                *d += *v;
            }
        }
    }
}

/// Segments per rayon task for work split into `len`-float segments: at least ~8K floats per
/// task, or the 1-float segments of DCGAN's last layer become half a million tasks.
fn grain(len: usize) -> usize {
    (8192 / len.max(1)).max(1)
}

/// Writes the chunk-wide column matrix `col[(c, kh, kw), (b, oh, ow)]` (row-major,
/// `nb · positions` columns) for the `nb` images in `img`, threaded over (row, image) segments.
fn im2col_chunk(g: &Geometry, img: &[f32], nb: usize, col: &mut [f32]) {
    let positions = g.positions();
    col[..g.col_rows() * nb * positions].par_chunks_mut(positions).enumerate().with_min_len(grain(positions)).for_each(
        |(j, dst)| {
            let (row, b) = (j / nb, j % nb);
            im2col_row(g, &img[b * g.image_len()..][..g.image_len()], row, dst);
        },
    );
}

/// Adds a chunk-wide column matrix (layout of [`im2col_chunk`]) into the `nb` images in `img`,
/// threaded over image planes so no two threads write the same pixel.
fn col2im_chunk(g: &Geometry, col: &[f32], nb: usize, img: &mut [f32]) {
    let (plane, positions) = (g.in_size[0] * g.in_size[1], g.positions());
    let width = nb * positions;
    img[..nb * g.image_len()].par_chunks_mut(plane).enumerate().with_min_len(grain(plane)).for_each(|(bc, dst)| {
        let (b, c) = (bc / g.channels, bc % g.channels);
        for row in c * g.taps()..(c + 1) * g.taps() {
            col2im_row(g, &col[row * width + b * positions..][..positions], row, dst);
        }
    });
}

/// `[nb, rows, len]` → `[rows, nb · len]`: puts the images of a chunk side by side.
fn batch_to_cols(src: &[f32], nb: usize, rows: usize, len: usize, dst: &mut [f32]) {
    dst[..rows * nb * len].par_chunks_mut(len).enumerate().with_min_len(grain(len)).for_each(|(j, d)| {
        let (r, b) = (j / nb, j % nb);
        d.copy_from_slice(&src[(b * rows + r) * len..][..len]);
    });
}

/// `[rows, nb · len]` → `[nb, rows, len]`, adding `bias[r]` to row `r` when given.
fn cols_to_batch(src: &[f32], nb: usize, rows: usize, len: usize, bias: Option<&[f32]>, dst: &mut [f32]) {
    dst[..nb * rows * len].par_chunks_mut(len).enumerate().with_min_len(grain(len)).for_each(|(br, d)| {
        let (b, r) = (br / rows, br % rows);
        let s = &src[r * nb * len + b * len..][..len];
        match bias {
            Some(bias) => d.iter_mut().zip(s).for_each(|(d, s)| *d = *s + bias[r]),
            None => d.copy_from_slice(s),
        }
    });
}

fn add_bias(out: &mut [f32], positions: usize, bias: Option<&[f32]>) {
    if let Some(bias) = bias {
        out.chunks_mut(positions).zip(bias.iter().cycle()).for_each(|(d, b)| d.iter_mut().for_each(|v| *v += *b));
    }
}

/// `out[b] = A · im2col(img[b]) (+ bias)` for `batch` images; `a` is `rows × col_rows`.
/// Returns `[batch, rows, positions]`.
pub(crate) fn im2col_gemm(
    g: &Geometry,
    img: &[f32],
    batch: usize,
    a: &[f32],
    rows: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (k, positions) = (g.col_rows(), g.positions());
    let mut out = vec![0.0; batch * rows * positions];
    let a = MatRef::row_major(a, k);
    if positions >= PER_IMAGE_POSITIONS {
        out.par_chunks_mut(rows * positions).zip(img.par_chunks(g.image_len())).for_each(|(dst, img)| {
            with_scratch(k * positions, |col| {
                (0..k).for_each(|r| im2col_row(g, img, r, &mut col[r * positions..][..positions]));
                sgemm(rows, positions, k, a, MatRef::row_major(col, positions), dst, positions, false, false);
            });
            add_bias(dst, positions, bias);
        });
        return out;
    }
    let chunk = g.chunk(batch);
    with_scratch(k * chunk * positions, |col| {
        with_scratch(rows * chunk * positions, |out_t| {
            for b0 in (0..batch).step_by(chunk) {
                let nb = chunk.min(batch - b0);
                let width = nb * positions;
                im2col_chunk(g, &img[b0 * g.image_len()..], nb, col);
                sgemm(rows, width, k, a, MatRef::row_major(col, width), out_t, width, false, true);
                let dst = &mut out[b0 * rows * positions..][..nb * rows * positions];
                cols_to_batch(out_t, nb, rows, positions, bias, dst);
            }
        })
    });
    out
}

/// `img[b] = col2im(Aᵀ · y[b])` for `batch` inputs `y` of shape `[rows, positions]`; `a` is
/// `rows × col_rows`. Returns `[batch, channels, in_h, in_w]`.
pub(crate) fn gemm_col2im(g: &Geometry, y: &[f32], batch: usize, a: &[f32], rows: usize) -> Vec<f32> {
    let (k, positions) = (g.col_rows(), g.positions());
    let plane = g.in_size[0] * g.in_size[1];
    let mut img = vec![0.0; batch * g.image_len()];
    let a_t = MatRef::row_major(a, k).t();
    if positions >= PER_IMAGE_POSITIONS {
        img.par_chunks_mut(g.image_len()).zip(y.par_chunks(rows * positions)).for_each(|(dst, y)| {
            with_scratch(k * positions, |col| {
                sgemm(k, positions, rows, a_t, MatRef::row_major(y, positions), col, positions, false, false);
                for (row, src) in col.chunks(positions).enumerate() {
                    col2im_row(g, src, row, &mut dst[row / g.taps() * plane..][..plane]);
                }
            });
        });
        return img;
    }
    let chunk = g.chunk(batch);
    with_scratch(k * chunk * positions, |col| {
        with_scratch(rows * chunk * positions, |y_t| {
            for b0 in (0..batch).step_by(chunk) {
                let nb = chunk.min(batch - b0);
                let width = nb * positions;
                batch_to_cols(&y[b0 * rows * positions..][..nb * rows * positions], nb, rows, positions, y_t);
                // col[k, width] = Aᵀ[k, rows] · y_t[rows, width]
                sgemm(k, width, rows, a_t, MatRef::row_major(y_t, width), col, width, false, true);
                col2im_chunk(g, col, nb, &mut img[b0 * g.image_len()..]);
            }
        })
    });
    img
}

/// `dA[rows, col_rows] = Σ_b y[b] · im2col(img[b])ᵀ` for `batch` pairs; `y` is
/// `[batch, rows, positions]`.
pub(crate) fn weight_grad(g: &Geometry, img: &[f32], y: &[f32], batch: usize, rows: usize) -> Vec<f32> {
    let (k, positions) = (g.col_rows(), g.positions());
    if positions >= PER_IMAGE_POSITIONS {
        // Each thread sums its images into its own partial gradient; the partials are added.
        return img
            .par_chunks(g.image_len())
            .zip(y.par_chunks(rows * positions))
            .fold(
                || vec![0.0; rows * k],
                |mut grad, (img, y)| {
                    with_scratch(k * positions, |col| {
                        (0..k).for_each(|r| im2col_row(g, img, r, &mut col[r * positions..][..positions]));
                        let col_t = MatRef::row_major(col, positions).t();
                        sgemm(rows, k, positions, MatRef::row_major(y, positions), col_t, &mut grad, k, true, false);
                    });
                    grad
                },
            )
            .reduce_with(|mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += *b);
                a
            })
            .unwrap_or_else(|| vec![0.0; rows * k]);
    }
    let mut grad = vec![0.0; rows * k];
    let chunk = g.chunk(batch);
    with_scratch(k * chunk * positions, |col| {
        with_scratch(rows * chunk * positions, |y_t| {
            for (i, b0) in (0..batch).step_by(chunk).enumerate() {
                let nb = chunk.min(batch - b0);
                let width = nb * positions;
                im2col_chunk(g, &img[b0 * g.image_len()..], nb, col);
                batch_to_cols(&y[b0 * rows * positions..][..nb * rows * positions], nb, rows, positions, y_t);
                // grad[rows, k] += y_t[rows, width] · colᵀ[width, k]
                let col_t = MatRef::row_major(col, width).t();
                sgemm(rows, k, width, MatRef::row_major(y_t, width), col_t, &mut grad, k, i > 0, true);
            }
        })
    });
    grad
}

fn dims4<B: CpuInner>(t: &FloatTensor<B>) -> Option<[usize; 4]> {
    let shape = t.shape();
    (shape.num_dims() == 4).then(|| [shape[0], shape[1], shape[2], shape[3]])
}

/// Output size of a transposed convolution along one axis, `None` if not positive.
fn transposed_size(input: usize, k: usize, s: usize, p: usize, d: usize, pad_out: usize) -> Option<usize> {
    ((input.checked_sub(1)? * s + d * (k - 1) + pad_out + 1).checked_sub(2 * p)).filter(|&n| n > 0)
}

/// Input size of a transposed convolution along one axis given its output size: the inverse of
/// [`transposed_size`].
fn transposed_input(out: usize, k: usize, s: usize, p: usize, d: usize, pad_out: usize) -> Option<usize> {
    let span = (out + 2 * p).checked_sub(d * (k - 1) + pad_out + 1)?;
    (span % s == 0).then_some(span / s + 1)
}

/// Output size of a convolution along one axis, `None` if the kernel does not fit.
fn conv_size(input: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    Some((input + 2 * p).checked_sub(d * (k - 1) + 1)? / s + 1)
}

fn nonempty(dims: &[[usize; 4]]) -> bool {
    dims.iter().all(|d| d.iter().all(|&n| n > 0))
}

/// The fast path of `conv2d`; `None` hands the op to the inner backend.
fn try_conv2d<B: CpuInner>(
    x: &FloatTensor<B>,
    w: &FloatTensor<B>,
    bias: Option<&FloatTensor<B>>,
    o: &ConvOptions<2>,
) -> Option<FloatTensor<B>> {
    let ([n, c, h, wd], [co, ci, kh, kw]) = (dims4::<B>(x)?, dims4::<B>(w)?);
    if o.groups != 1 || ci != c || !nonempty(&[[n, c, h, wd], [co, ci, kh, kw]]) {
        return None;
    }
    let oh = conv_size(h, kh, o.stride[0], o.padding[0], o.dilation[0])?;
    let ow = conv_size(wd, kw, o.stride[1], o.padding[1], o.dilation[1])?;
    let (xs, ws) = (B::f32_view(x)?, B::f32_view(w)?);
    let bs = match bias {
        Some(b) => Some(B::f32_view(b)?),
        None => None,
    };
    let g = Geometry {
        channels: c,
        in_size: [h, wd],
        out_size: [oh, ow],
        kernel: [kh, kw],
        stride: o.stride,
        padding: o.padding,
        dilation: o.dilation,
    };
    if g.positions() < MIN_POSITIONS {
        return None;
    }
    let out = im2col_gemm(&g, &xs, n, &ws, co, bs.as_deref());
    Some(B::f32_tensor(out, [n, co, oh, ow]))
}

fn try_conv2d_x_backward<B: CpuInner>(
    x: &FloatTensor<B>,
    w: &FloatTensor<B>,
    dy: &FloatTensor<B>,
    o: &ConvOptions<2>,
) -> Option<FloatTensor<B>> {
    let ([n, c, h, wd], [co, ci, kh, kw], [n2, co2, oh, ow]) = (dims4::<B>(x)?, dims4::<B>(w)?, dims4::<B>(dy)?);
    if o.groups != 1
        || ci != c
        || co2 != co
        || n2 != n
        || !nonempty(&[[n, c, h, wd], [co, ci, kh, kw], [n2, co2, oh, ow]])
    {
        return None;
    }
    let (ws, dys) = (B::f32_view(w)?, B::f32_view(dy)?);
    let g = Geometry {
        channels: c,
        in_size: [h, wd],
        out_size: [oh, ow],
        kernel: [kh, kw],
        stride: o.stride,
        padding: o.padding,
        dilation: o.dilation,
    };
    if g.positions() < MIN_POSITIONS {
        return None;
    }
    let dx = gemm_col2im(&g, &dys, n, &ws, co);
    Some(B::f32_tensor(dx, [n, c, h, wd]))
}

fn try_conv2d_weight_backward<B: CpuInner>(
    x: &FloatTensor<B>,
    w: &FloatTensor<B>,
    dy: &FloatTensor<B>,
    o: &ConvOptions<2>,
) -> Option<FloatTensor<B>> {
    let ([n, c, h, wd], [co, ci, kh, kw], [n2, co2, oh, ow]) = (dims4::<B>(x)?, dims4::<B>(w)?, dims4::<B>(dy)?);
    if o.groups != 1
        || ci != c
        || co2 != co
        || n2 != n
        || !nonempty(&[[n, c, h, wd], [co, ci, kh, kw], [n2, co2, oh, ow]])
    {
        return None;
    }
    let (xs, dys) = (B::f32_view(x)?, B::f32_view(dy)?);
    let g = Geometry {
        channels: c,
        in_size: [h, wd],
        out_size: [oh, ow],
        kernel: [kh, kw],
        stride: o.stride,
        padding: o.padding,
        dilation: o.dilation,
    };
    if g.positions() < MIN_POSITIONS {
        return None;
    }
    let dw = weight_grad(&g, &xs, &dys, n, co);
    Some(B::f32_tensor(dw, [co, ci, kh, kw]))
}

fn try_conv_transpose2d<B: CpuInner>(
    x: &FloatTensor<B>,
    w: &FloatTensor<B>,
    bias: Option<&FloatTensor<B>>,
    o: &ConvTransposeOptions<2>,
) -> Option<FloatTensor<B>> {
    let ([n, ci, h, wd], [ci2, co, kh, kw]) = (dims4::<B>(x)?, dims4::<B>(w)?);
    if o.groups != 1 || ci2 != ci || !nonempty(&[[n, ci, h, wd], [ci2, co, kh, kw]]) {
        return None;
    }
    let oh = transposed_size(h, kh, o.stride[0], o.padding[0], o.dilation[0], o.padding_out[0])?;
    let ow = transposed_size(wd, kw, o.stride[1], o.padding[1], o.dilation[1], o.padding_out[1])?;
    let (xs, ws) = (B::f32_view(x)?, B::f32_view(w)?);
    let bs = match bias {
        Some(b) => Some(B::f32_view(b)?),
        None => None,
    };
    let g = Geometry {
        channels: co,
        in_size: [oh, ow],
        out_size: [h, wd],
        kernel: [kh, kw],
        stride: o.stride,
        padding: o.padding,
        dilation: o.dilation,
    };
    if g.positions() < MIN_POSITIONS {
        return None;
    }
    let mut out = gemm_col2im(&g, &xs, n, &ws, ci);
    if let Some(bias) = bs {
        out.par_chunks_mut(oh * ow).enumerate().with_min_len(grain(oh * ow)).for_each(|(bc, plane)| {
            let b = bias[bc % co];
            plane.iter_mut().for_each(|v| *v += b);
        });
    }
    Some(B::f32_tensor(out, [n, co, oh, ow]))
}

fn try_conv_transpose2d_x_backward<B: CpuInner>(
    w: &FloatTensor<B>,
    dy: &FloatTensor<B>,
    o: &ConvTransposeOptions<2>,
) -> Option<FloatTensor<B>> {
    let ([ci, co, kh, kw], [n, co2, oh, ow]) = (dims4::<B>(w)?, dims4::<B>(dy)?);
    if o.groups != 1 || co2 != co || !nonempty(&[[ci, co, kh, kw], [n, co2, oh, ow]]) {
        return None;
    }
    let h = transposed_input(oh, kh, o.stride[0], o.padding[0], o.dilation[0], o.padding_out[0])?;
    let wd = transposed_input(ow, kw, o.stride[1], o.padding[1], o.dilation[1], o.padding_out[1])?;
    let (ws, dys) = (B::f32_view(w)?, B::f32_view(dy)?);
    let g = Geometry {
        channels: co,
        in_size: [oh, ow],
        out_size: [h, wd],
        kernel: [kh, kw],
        stride: o.stride,
        padding: o.padding,
        dilation: o.dilation,
    };
    if g.positions() < MIN_POSITIONS {
        return None;
    }
    let dx = im2col_gemm(&g, &dys, n, &ws, ci, None);
    Some(B::f32_tensor(dx, [n, ci, h, wd]))
}

fn try_conv_transpose2d_weight_backward<B: CpuInner>(
    x: &FloatTensor<B>,
    w: &FloatTensor<B>,
    dy: &FloatTensor<B>,
    o: &ConvTransposeOptions<2>,
) -> Option<FloatTensor<B>> {
    let ([n, ci, h, wd], [ci2, co, kh, kw], [n2, co2, oh, ow]) = (dims4::<B>(x)?, dims4::<B>(w)?, dims4::<B>(dy)?);
    if o.groups != 1
        || ci2 != ci
        || co2 != co
        || n2 != n
        || !nonempty(&[[n, ci, h, wd], [ci2, co, kh, kw], [n2, co2, oh, ow]])
    {
        return None;
    }
    let (xs, dys) = (B::f32_view(x)?, B::f32_view(dy)?);
    let g = Geometry {
        channels: co,
        in_size: [oh, ow],
        out_size: [h, wd],
        kernel: [kh, kw],
        stride: o.stride,
        padding: o.padding,
        dilation: o.dilation,
    };
    if g.positions() < MIN_POSITIONS {
        return None;
    }
    let dw = weight_grad(&g, &dys, &xs, n, ci);
    Some(B::f32_tensor(dw, [ci, co, kh, kw]))
}

/// `conv2d` for `KilnCpu<B>`: the f32 kernel, or `B`'s own.
pub(crate) fn conv2d<B: CpuInner>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    options: ConvOptions<2>,
) -> FloatTensor<B> {
    match try_conv2d::<B>(&x, &weight, bias.as_ref(), &options) {
        Some(out) => out,
        None => B::conv2d(x, weight, bias, options),
    }
}

/// `conv2d_x_backward` for `KilnCpu<B>`.
pub(crate) fn conv2d_x_backward<B: CpuInner>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    options: ConvOptions<2>,
) -> FloatTensor<B> {
    match try_conv2d_x_backward::<B>(&x, &weight, &output_grad, &options) {
        Some(out) => out,
        None => B::conv2d_x_backward(x, weight, output_grad, options),
    }
}

/// `conv2d_weight_backward` for `KilnCpu<B>`.
pub(crate) fn conv2d_weight_backward<B: CpuInner>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    options: ConvOptions<2>,
) -> FloatTensor<B> {
    match try_conv2d_weight_backward::<B>(&x, &weight, &output_grad, &options) {
        Some(out) => out,
        None => B::conv2d_weight_backward(x, weight, output_grad, options),
    }
}

/// `conv_transpose2d` for `KilnCpu<B>`.
pub(crate) fn conv_transpose2d<B: CpuInner>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    options: ConvTransposeOptions<2>,
) -> FloatTensor<B> {
    match try_conv_transpose2d::<B>(&x, &weight, bias.as_ref(), &options) {
        Some(out) => out,
        None => B::conv_transpose2d(x, weight, bias, options),
    }
}

/// `conv_transpose2d_x_backward` for `KilnCpu<B>`.
pub(crate) fn conv_transpose2d_x_backward<B: CpuInner>(
    weight: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    options: ConvTransposeOptions<2>,
) -> FloatTensor<B> {
    match try_conv_transpose2d_x_backward::<B>(&weight, &output_grad, &options) {
        Some(out) => out,
        None => B::conv_transpose2d_x_backward(weight, output_grad, options),
    }
}

/// `conv_transpose2d_weight_backward` for `KilnCpu<B>`.
pub(crate) fn conv_transpose2d_weight_backward<B: CpuInner>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    options: ConvTransposeOptions<2>,
) -> FloatTensor<B> {
    match try_conv_transpose2d_weight_backward::<B>(&x, &weight, &output_grad, &options) {
        Some(out) => out,
        None => B::conv_transpose2d_weight_backward(x, weight, output_grad, options),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_backend::TensorData;
    use burn_flex::{Flex, FlexTensor};

    fn geometry(n_in: usize, k: usize, s: usize, p: usize, d: usize) -> Geometry {
        let n_out = conv_size(n_in, k, s, p, d).expect("kernel fits");
        Geometry {
            channels: 1,
            in_size: [n_in, n_in],
            out_size: [n_out, n_out],
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            dilation: [d, d],
        }
    }

    #[test]
    fn valid_range_is_exactly_the_in_bounds_positions() {
        for (n_in, k, s, p, d) in [(5, 3, 1, 1, 1), (7, 4, 2, 1, 1), (6, 3, 3, 2, 2), (1, 4, 1, 3, 1), (9, 2, 2, 0, 3)]
        {
            let g = geometry(n_in, k, s, p, d);
            for tap in 0..k {
                let (lo, hi) = g.valid(0, tap);
                for o in 0..g.out_size[0] {
                    let pos = (o * s + tap * d) as isize - p as isize;
                    let inside = pos >= 0 && (pos as usize) < n_in;
                    assert_eq!(inside, (lo..hi).contains(&o), "n_in {n_in} k {k} s {s} p {p} d {d} tap {tap} o {o}");
                }
            }
        }
    }

    #[test]
    fn transposed_sizes_invert() {
        for (h, k, s, p, d, po) in [(4, 4, 2, 1, 1, 0), (1, 4, 1, 0, 1, 0), (5, 3, 2, 1, 2, 1), (3, 2, 3, 0, 1, 2)] {
            let out = transposed_size(h, k, s, p, d, po).expect("positive");
            assert_eq!(transposed_input(out, k, s, p, d, po), Some(h));
        }
    }

    fn tensor(shape: [usize; 4]) -> FlexTensor {
        let n = shape.iter().product::<usize>();
        FlexTensor::from_data(TensorData::new((0..n).map(|i| i as f32 * 0.01).collect::<Vec<_>>(), shape))
    }

    #[test]
    fn f32_convolutions_take_the_fast_path_and_the_rest_do_not() {
        let (x, w, dy) = (tensor([2, 3, 8, 8]), tensor([4, 3, 3, 3]), tensor([2, 4, 8, 8]));
        let o = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        assert!(try_conv2d::<Flex>(&x, &w, None, &o).is_some());
        assert!(try_conv2d_x_backward::<Flex>(&x, &w, &dy, &o).is_some());
        assert!(try_conv2d_weight_backward::<Flex>(&x, &w, &dy, &o).is_some());
        let t = ConvTransposeOptions::new([1, 1], [1, 1], [0, 0], [1, 1], 1);
        let wt = tensor([3, 4, 3, 3]);
        assert!(try_conv_transpose2d::<Flex>(&x, &wt, None, &t).is_some());
        assert!(try_conv_transpose2d_x_backward::<Flex>(&wt, &dy, &t).is_some());
        assert!(try_conv_transpose2d_weight_backward::<Flex>(&x, &wt, &dy, &t).is_some());
        // Grouped convolutions and other dtypes go to the inner backend.
        let grouped = ConvOptions::new([1, 1], [1, 1], [1, 1], 3);
        assert!(try_conv2d::<Flex>(&x, &tensor([3, 1, 3, 3]), None, &grouped).is_none());
        let x64 = FlexTensor::from_data(TensorData::new(vec![0.0f64; 2 * 3 * 8 * 8], [2, 3, 8, 8]));
        assert!(try_conv2d::<Flex>(&x64, &w, None, &o).is_none());
    }
}
