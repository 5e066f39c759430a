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
//! Two strategies, chosen by the number of column positions per image, the image's channels and
//! the kernel:
//!
//! - **Per image** (≥ [`PER_IMAGE_POSITIONS`]; large maps, usually few channels; and any map
//!   when the image has under [`MIN_CHANNELS_LAST`] channels or the kernel is 1 × 1): threads
//!   split the batch, each image's NCHW column matrix is built in a reused thread-local buffer
//!   that stays in L2 — or, for a 1 × 1 kernel, *is* the image, with no copy at all — and a
//!   single-threaded GEMM writes straight into the NCHW output. Moving the 1 × 1 and
//!   one-channel layers of the MNIST VQ-VAE here: 0.95–1.12× its step (median 1.06×, four
//!   interleaved pairs of 200-step runs).
//! - **Chunk-wide, channels-last** (small, deep maps down to one position): the images of a
//!   chunk are transposed to NHWC, their patches laid out as rows `(b, oy, ox)` of
//!   `(ty, tx, c)` — every tap one contiguous copy of `channels` floats — and the chunk is one
//!   large GEMM threaded inside `gemm`, with both operands row-major (the layout `gemm` 0.19
//!   runs fastest). The chunk's column matrix stays near [`COL_BUDGET`] floats. Results are
//!   transposed back to NCHW (`crate::transpose`, SSE 4 × 4 blocks).
//!
//! Measured on the 2-core EPYC (`cargo bench -p kiln-cpu --bench conv -- kiln`), moving the
//! deep DCGAN-64 layers from an NCHW chunk-wide im2col to channels-last patches: D3's weight
//! gradient 25 → 14 ms, G3's 25 → 14, D4's 20 → 14, D3's forward 19 → 13; the 1 × 1-output
//! layers (D5, G1), which went to flex before, 17 → 3 ms for all six ops.

use crate::CpuInner;
use crate::gemm::{MatRef, sgemm};
use crate::threads::{grain, sum_in_order};
use crate::transpose::{transpose_batch, transpose_serial};
use burn_backend::ops::{ConvOptions, ConvTransposeOptions};
use burn_backend::tensor::FloatTensor;
use burn_backend::{Shape, TensorMetadata};
use rayon::prelude::*;

/// Target size, in floats, of one chunk's column matrix (4 MiB). Measured on the DCGAN-64 ops
/// (sum of the 30, min of 3 interleaved rounds): 16 MiB chunks 289 ms, 8 MiB 255, 4 MiB 247,
/// 1 MiB 288 — small enough that the patches are still in the shared L3 when `gemm` packs them,
/// large enough that each GEMM has hundreds of rows.
const COL_BUDGET: usize = 1 << 20;

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

    /// A 1 × 1 kernel with unit stride and no padding: the image *is* its column matrix.
    fn pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0] && self.in_size == self.out_size
    }

    /// Whether the per-image strategy runs (see [`PER_IMAGE_POSITIONS`]).
    fn per_image(&self) -> bool {
        self.positions() >= PER_IMAGE_POSITIONS || self.pointwise() || self.channels < MIN_CHANNELS_LAST
    }

    /// Images per chunk so that one chunk's column matrix stays near [`COL_BUDGET`].
    fn chunk(&self, batch: usize) -> usize {
        let per_image = (self.col_rows() * self.positions()).max(1);
        (COL_BUDGET / per_image).clamp(1, batch.max(1))
    }

    /// The image pixel `(sy, sx)` that tap `t` of column position `(oy, ox)` reads, `None` in
    /// the padding.
    fn source(&self, oy: usize, ox: usize, t: usize) -> Option<(usize, usize)> {
        let (ty, tx) = (t / self.kernel[1], t % self.kernel[1]);
        let sy = (oy * self.stride[0] + ty * self.dilation[0]).checked_sub(self.padding[0])?;
        let sx = (ox * self.stride[1] + tx * self.dilation[1]).checked_sub(self.padding[1])?;
        (sy < self.in_size[0] && sx < self.in_size[1]).then_some((sy, sx))
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

/// Column positions per image from which each image gets its own GEMM (threads split the
/// batch) instead of a chunk-wide one: the GEMM is then wide enough on its own, and one image's
/// column matrix stays in the core's L2 between im2col and the GEMM, with no layout copies at
/// all. Measured: with 256 positions (D2, G4: 64–128 channels) channels-last chunks were
/// 5–20 % faster on every op; with 1,024 (D1, G5: 3 channels, where a channels-last tap is a
/// 3-float copy) per-image was 1.2–2× faster.
const PER_IMAGE_POSITIONS: usize = 512;

/// Image channels below which a convolution runs per image whatever its map size: a
/// channels-last tap would be a copy of fewer floats than this (MNIST's one-channel first and
/// last layers).
const MIN_CHANNELS_LAST: usize = 4;

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

/// One thread's scratch buffers for a chunk of the channels-last path, each sized for a full
/// chunk: its images channels-last, its patch matrix, and a `rows × positions`-per-image matrix
/// (the output before its transpose, `y` after its transpose, or `y` side by side).
struct ChunkBuffers<'a> {
    nhwc: &'a mut [f32],
    patches: &'a mut [f32],
    per_row: &'a mut [f32],
}

/// Calls `f(first image, images, buffers)` for each chunk of a batch of `batch` images, in
/// order, with this thread's scratch buffers.
fn for_each_chunk(g: &Geometry, batch: usize, rows: usize, mut f: impl FnMut(usize, usize, ChunkBuffers<'_>)) {
    let (chunk, positions) = (g.chunk(batch), g.positions());
    with_scratch(chunk * g.image_len(), |nhwc| {
        with_scratch(g.col_rows() * chunk * positions, |patches| {
            with_scratch(rows * chunk * positions, |per_row| {
                for b0 in (0..batch).step_by(chunk) {
                    let buffers = ChunkBuffers { nhwc: &mut *nhwc, patches: &mut *patches, per_row: &mut *per_row };
                    f(b0, chunk.min(batch - b0), buffers);
                }
            })
        })
    });
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

/// Writes the chunk's channels-last patch matrix `patches[(b, oy, ox), (ty, tx, c)]` (row-major,
/// `nb · positions` rows of `taps · channels`) from `nhwc`, the chunk's `nb` images channels-last
/// (`[nb, ih, iw, channels]`). Every tap is one contiguous copy of `channels` floats, which is
/// why the chunk-wide path works channels-last: its maps are small (under
/// [`PER_IMAGE_POSITIONS`] positions) and usually deep, so an NCHW im2col row would be a handful
/// of strided floats per output row.
fn patches_chunk(g: &Geometry, nhwc: &[f32], nb: usize, patches: &mut [f32]) {
    let (c, [oh, ow], [_, iw], taps) = (g.channels, g.out_size, g.in_size, g.taps());
    let k = g.col_rows();
    patches[..nb * oh * ow * k].par_chunks_mut(ow * k).enumerate().with_min_len(grain(ow * k)).for_each(|(by, dst)| {
        let (b, oy) = (by / oh, by % oh);
        let img = &nhwc[b * g.image_len()..][..g.image_len()];
        for (ox, patch) in dst.chunks_mut(k).enumerate() {
            for (t, tap) in patch.chunks_mut(c).enumerate().take(taps) {
                match g.source(oy, ox, t) {
                    Some((sy, sx)) => tap.copy_from_slice(&img[(sy * iw + sx) * c..][..c]),
                    None => tap.fill(0.0),
                }
            }
        }
    });
}

/// Adds a patch matrix (layout of [`patches_chunk`]) into `nhwc`, the chunk's `nb` images
/// channels-last: the adjoint of [`patches_chunk`]. Threaded over images, so no two threads
/// write the same pixel.
fn patches_add_chunk(g: &Geometry, patches: &[f32], nb: usize, nhwc: &mut [f32]) {
    let (c, [oh, ow], [_, iw]) = (g.channels, g.out_size, g.in_size);
    let k = g.col_rows();
    nhwc[..nb * g.image_len()].par_chunks_mut(g.image_len()).enumerate().for_each(|(b, img)| {
        let rows = &patches[b * oh * ow * k..][..oh * ow * k];
        for (pos, patch) in rows.chunks(k).enumerate() {
            let (oy, ox) = (pos / ow, pos % ow);
            for (t, tap) in patch.chunks(c).enumerate() {
                if let Some((sy, sx)) = g.source(oy, ox, t) {
                    let dst = &mut img[(sy * iw + sx) * c..][..c];
                    dst.iter_mut().zip(tap).for_each(|(d, v)| *d += *v);
                }
            }
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

fn add_bias(out: &mut [f32], positions: usize, bias: Option<&[f32]>) {
    if let Some(bias) = bias {
        out.chunks_mut(positions).zip(bias.iter().cycle()).for_each(|(d, b)| d.iter_mut().for_each(|v| *v += *b));
    }
}

/// `A[rows, (c, ty, tx)]` → `A'[rows, (ty, tx, c)]`: a weight matrix in the column order of
/// [`patches_chunk`].
fn taps_major(g: &Geometry, a: &[f32], rows: usize) -> Vec<f32> {
    let mut out = vec![0.0; rows * g.col_rows()];
    transpose_batch(a, rows, g.channels, g.taps(), &mut out);
    out
}

/// `A[rows, (c, ty, tx)]` → `A'ᵀ[(ty, tx, c), rows]`: the transpose of [`taps_major`]'s matrix,
/// stored row-major so that the forward product is `patches · A'ᵀ` with both operands
/// row-major. `gemm` 0.19 runs a right operand stored column-major at half speed or less when
/// the contraction is long (D4's 256 × 512 × 4096: 6.9 ms against 2.9 ms).
///
/// One transpose, `A → Aᵀ[(c, ty, tx), rows]`, then a reordering of whole rows of `rows` floats
/// into `(ty, tx, c)` order: half the strided traffic of transposing twice (these permutations
/// were 8 % of the VAE-64 step in perf, `transpose_band`).
fn taps_major_t(g: &Geometry, a: &[f32], rows: usize) -> Vec<f32> {
    let (channels, taps) = (g.channels, g.taps());
    let mut at = vec![0.0; rows * g.col_rows()];
    transpose_batch(a, 1, rows, g.col_rows(), &mut at); // [(c, t), rows]
    let mut out = vec![0.0; rows * g.col_rows()];
    out.par_chunks_mut(rows).enumerate().with_min_len(grain(rows)).for_each(|(j, dst)| {
        let (t, c) = (j / channels, j % channels); // destination row (t, c)
        dst.copy_from_slice(&at[(c * taps + t) * rows..][..rows]);
    });
    out
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
    if g.per_image() {
        out.par_chunks_mut(rows * positions).zip(img.par_chunks(g.image_len())).for_each(|(dst, img)| {
            if g.pointwise() {
                sgemm(rows, positions, k, a, MatRef::row_major(img, positions), dst, positions, false, false);
            } else {
                with_scratch(k * positions, |col| {
                    (0..k).for_each(|r| im2col_row(g, img, r, &mut col[r * positions..][..positions]));
                    sgemm(rows, positions, k, a, MatRef::row_major(col, positions), dst, positions, false, false);
                });
            }
            add_bias(dst, positions, bias);
        });
        return out;
    }
    // Chunk-wide, channels-last: out_t[(b, p), r] = patches[(b, p), :] · A'[r, :].
    let a_tm_t = taps_major_t(g, a.data, rows);
    let plane = g.in_size[0] * g.in_size[1];
    for_each_chunk(g, batch, rows, |b0, nb, ChunkBuffers { nhwc, patches, per_row: out_t }| {
        transpose_batch(&img[b0 * g.image_len()..], nb, g.channels, plane, nhwc);
        patches_chunk(g, nhwc, nb, patches);
        let (p_m, a_m) = (MatRef::row_major(patches, k), MatRef::row_major(&a_tm_t, rows));
        sgemm(nb * positions, rows, k, p_m, a_m, out_t, rows, false, true);
        let dst = &mut out[b0 * rows * positions..][..nb * rows * positions];
        transpose_batch(out_t, nb, positions, rows, dst);
        dst.par_chunks_mut(rows * positions).for_each(|d| add_bias(d, positions, bias));
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
    if g.per_image() {
        img.par_chunks_mut(g.image_len()).zip(y.par_chunks(rows * positions)).for_each(|(dst, y)| {
            if g.pointwise() {
                sgemm(k, positions, rows, a_t, MatRef::row_major(y, positions), dst, positions, false, false);
                return;
            }
            with_scratch(k * positions, |col| {
                sgemm(k, positions, rows, a_t, MatRef::row_major(y, positions), col, positions, false, false);
                for (row, src) in col.chunks(positions).enumerate() {
                    col2im_row(g, src, row, &mut dst[row / g.taps() * plane..][..plane]);
                }
            });
        });
        return img;
    }
    // Chunk-wide, channels-last: patches[(b, p), :] = Σ_r y[b, r, p] · A'[r, :], added into the
    // chunk's channels-last images, which are transposed back at the end.
    let a_tm = taps_major(g, a, rows);
    for_each_chunk(g, batch, rows, |b0, nb, ChunkBuffers { nhwc, patches, per_row: y_t }| {
        transpose_batch(&y[b0 * rows * positions..], nb, rows, positions, y_t);
        let (y_m, a_m) = (MatRef::row_major(y_t, rows), MatRef::row_major(&a_tm, k));
        sgemm(nb * positions, k, rows, y_m, a_m, patches, k, false, true);
        nhwc[..nb * g.image_len()].fill(0.0);
        patches_add_chunk(g, patches, nb, nhwc);
        transpose_batch(nhwc, nb, plane, g.channels, &mut img[b0 * g.image_len()..]);
    });
    img
}

/// Partial gradients of the per-image weight gradient: up to 16 (enough to keep 16 threads busy),
/// fewer when the batch is smaller or the partials would pass 2²⁴ floats (64 MiB) together. A
/// function of the shapes only, so the summation order is the same on every run and thread count.
fn weight_grad_groups(batch: usize, grad_len: usize) -> usize {
    const MAX_GROUPS: usize = 16;
    const MAX_FLOATS: usize = 1 << 24;
    (MAX_FLOATS / grad_len.max(1)).clamp(1, MAX_GROUPS).min(batch.max(1))
}

/// [`weight_grad`] by the per-image strategy.
///
/// Fixed groups of consecutive images are each summed in order into their own partial gradient,
/// and the partials added in group order: the sum's order depends on the shapes alone, never on
/// which thread stole what, so a step repeats bit for bit (rayon's `fold` grouped images by work
/// stealing, and the float sum varied from run to run).
///
/// `gemm` gathers a column-major right operand into its panels element by element. Of the two
/// ways to orient the product, each image either adds `y · colᵀ` into `dA`, gathering its column
/// matrix, or transposes `y` (a SIMD copy) and adds `col · yᵀ` into `dAᵀ` with both operands
/// row-major. The second moves less when `rows < col_rows` (a 3 × 3 kernel's column matrix is
/// 9 × the channels): on kiln-bench W7 (the diffusion U-Net, 32 × 32 maps) the gather was 10 %
/// of the step.
fn weight_grad_per_image(g: &Geometry, img: &[f32], y: &[f32], batch: usize, rows: usize) -> Vec<f32> {
    let (k, positions) = (g.col_rows(), g.positions());
    let transposed = rows < k;
    let per_group = batch.div_ceil(weight_grad_groups(batch, rows * k));
    let partials: Vec<Vec<f32>> = img
        .par_chunks(per_group * g.image_len())
        .zip(y.par_chunks(per_group * rows * positions))
        .map(|(imgs, ys)| {
            let mut grad = vec![0.0; k * rows];
            with_scratch(if transposed { positions * rows } else { 0 }, |y_t| {
                for (img, y) in imgs.chunks(g.image_len()).zip(ys.chunks(rows * positions)) {
                    let mut add = |col: &[f32], grad: &mut [f32]| {
                        let col = MatRef::row_major(col, positions);
                        if transposed {
                            transpose_serial(y, rows, positions, y_t);
                            let y_t = MatRef::row_major(y_t, rows);
                            sgemm(k, rows, positions, col, y_t, grad, rows, true, false);
                        } else {
                            let y = MatRef::row_major(y, positions);
                            sgemm(rows, k, positions, y, col.t(), grad, k, true, false);
                        }
                    };
                    if g.pointwise() {
                        add(img, &mut grad); // a 1 × 1 kernel's column matrix is the image
                        continue;
                    }
                    with_scratch(k * positions, |col| {
                        (0..k).for_each(|r| im2col_row(g, img, r, &mut col[r * positions..][..positions]));
                        add(col, &mut grad);
                    });
                }
            });
            grad
        })
        .collect();
    let sum = sum_in_order(partials, rows * k);
    if !transposed {
        return sum;
    }
    let mut grad = vec![0.0; rows * k];
    transpose_batch(&sum, 1, k, rows, &mut grad); // dAᵀ → dA
    grad
}

/// `dA[rows, col_rows] = Σ_b y[b] · im2col(img[b])ᵀ` for `batch` pairs; `y` is
/// `[batch, rows, positions]`.
pub(crate) fn weight_grad(g: &Geometry, img: &[f32], y: &[f32], batch: usize, rows: usize) -> Vec<f32> {
    let (k, positions) = (g.col_rows(), g.positions());
    if g.per_image() {
        return weight_grad_per_image(g, img, y, batch, rows);
    }
    // Chunk-wide, channels-last: grad'[r, :] += Σ_(b, p) y[b, r, p] · patches[(b, p), :], a
    // product with both operands row-major, which `gemm` runs at its best.
    let mut grad_tm = vec![0.0; rows * k];
    let plane = g.in_size[0] * g.in_size[1];
    let mut first = true;
    for_each_chunk(g, batch, rows, |b0, nb, ChunkBuffers { nhwc, patches, per_row: y_cols }| {
        let width = nb * positions;
        transpose_batch(&img[b0 * g.image_len()..], nb, g.channels, plane, nhwc);
        patches_chunk(g, nhwc, nb, patches);
        batch_to_cols(&y[b0 * rows * positions..][..nb * rows * positions], nb, rows, positions, y_cols);
        let (y_m, p_m) = (MatRef::row_major(y_cols, width), MatRef::row_major(patches, k));
        sgemm(rows, k, width, y_m, p_m, &mut grad_tm, k, !first, true);
        first = false;
    });
    // [rows, (ty, tx, c)] → [rows, (c, ty, tx)]
    let mut grad = vec![0.0; rows * k];
    transpose_batch(&grad_tm, rows, g.taps(), g.channels, &mut grad);
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
    let out = im2col_gemm(&g, &xs, n, &ws, co, bs.as_deref());
    Some(B::f32_tensor(out, Shape::new([n, co, oh, ow])))
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
    let dx = gemm_col2im(&g, &dys, n, &ws, co);
    Some(B::f32_tensor(dx, Shape::new([n, c, h, wd])))
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
    let dw = weight_grad(&g, &xs, &dys, n, co);
    Some(B::f32_tensor(dw, Shape::new([co, ci, kh, kw])))
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
    let mut out = gemm_col2im(&g, &xs, n, &ws, ci);
    if let Some(bias) = bs {
        out.par_chunks_mut(oh * ow).enumerate().with_min_len(grain(oh * ow)).for_each(|(bc, plane)| {
            let b = bias[bc % co];
            plane.iter_mut().for_each(|v| *v += b);
        });
    }
    Some(B::f32_tensor(out, Shape::new([n, co, oh, ow])))
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
    let dx = im2col_gemm(&g, &dys, n, &ws, ci, None);
    Some(B::f32_tensor(dx, Shape::new([n, ci, h, wd])))
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
    let dw = weight_grad(&g, &dys, &xs, n, ci);
    Some(B::f32_tensor(dw, Shape::new([ci, co, kh, kw])))
}

/// The bias gradient of `conv2d` and `conv_transpose2d`: `output_grad` (`[n, c, h, w]`) summed
/// over all axes but the channel. burn's default body swaps the first two axes and reshapes,
/// which flex performs as an element-by-element strided copy before the sum: 8 % of a VAE-64
/// step in the profile.
fn try_bias_backward<B: CpuInner>(bias: &FloatTensor<B>, dy: &FloatTensor<B>) -> Option<FloatTensor<B>> {
    let [n, c, h, w] = dims4::<B>(dy)?;
    let shape = bias.shape();
    if shape.num_elements() != c || !nonempty(&[[n, c, h, w]]) {
        return None;
    }
    let dys = B::f32_view(dy)?;
    let plane = h * w;
    let mut grad = vec![0.0; c];
    grad.par_iter_mut().enumerate().for_each(|(ch, g)| {
        *g = (0..n).map(|b| sum(&dys[(b * c + ch) * plane..][..plane])).sum();
    });
    Some(B::f32_tensor(grad, shape))
}

/// Sum of `xs` in sixteen interleaved partial sums, which the compiler keeps in vector
/// registers (a plain `iter().sum()` must add in order, one element at a time).
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for chunk in &mut chunks {
        acc.iter_mut().zip(chunk).for_each(|(a, v)| *a += *v);
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `conv2d_bias_backward` / `conv_transpose2d_bias_backward` for `KilnCpu<B>` (the two default
/// bodies are the same sum).
pub(crate) fn bias_backward<B: CpuInner>(
    x: FloatTensor<B>,
    bias: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    transposed: bool,
) -> FloatTensor<B> {
    match try_bias_backward::<B>(&bias, &output_grad) {
        Some(grad) => grad,
        None if transposed => B::conv_transpose2d_bias_backward(x, bias, output_grad),
        None => B::conv2d_bias_backward(x, bias, output_grad),
    }
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
