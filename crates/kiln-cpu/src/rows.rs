//! Element loops over f32 rows, compiled twice: for the x86-64 baseline the crate is built for
//! (SSE2), and with AVX-512F, picked at run time when the CPU has it.
//!
//! The element-wise activations go through [`map`] and [`map2`]. The blocked attention's softmax runs `exp` over every score twice (forward, and again in the
//! backward pass), plus a max and a sum per row. Built for the baseline these loops ran at one
//! element at a time and took 43 % of the W6 attention step in perf, as much as its GEMMs. The
//! bodies below are written so that LLVM vectorises them — no reduction carried through one
//! accumulator (16 independent lanes instead), no early exits — and [`crate::activation::exp_f32`]
//! is branch-free, so with 512-bit registers each loop handles 16 floats per instruction.
//!
//! Every result is bit-identical between the two builds and on any CPU: the lanes are explicit
//! in the code, so vectorising changes which instructions run, not the order of any sum, and
//! Rust never fuses a multiply and an add on its own.
#![allow(unsafe_code)]

use crate::activation::exp_f32;

/// Independent accumulators of the reductions: one 512-bit register's worth.
pub(crate) const LANES: usize = 16;

/// `max_j (scale · row[j])`; `−∞` for an empty row. NaN elements are skipped (`f32::max`),
/// and reach the result through the exponentials instead.
#[inline(always)]
fn scaled_max_body(row: &[f32], scale: f32) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(scale * c[i]);
        }
    }
    let head = acc.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    tail.iter().fold(head, |m, &x| m.max(scale * x))
}

/// `Σ_j row[j]` in [`LANES`] independent accumulators (also the batch norm's row sums).
#[inline(always)]
pub(crate) fn lane_sum(row: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// `row[j] ← exp(scale · row[j] − shift)`, and the sum of the results.
#[inline(always)]
fn exp_sum_body(row: &mut [f32], scale: f32, shift: f32) -> f32 {
    for x in row.iter_mut() {
        *x = exp_f32(scale * *x - shift);
    }
    lane_sum(row)
}

/// `ds[j] ← scale · p[j] · (ds[j] − delta)`.
#[inline(always)]
fn softmax_grad_body(ds: &mut [f32], p: &[f32], scale: f32, delta: f32) {
    let n = ds.len().min(p.len());
    let (ds, p) = (&mut ds[..n], &p[..n]);
    for i in 0..n {
        ds[i] = scale * p[i] * (ds[i] - delta);
    }
}

/// Defines `$name` calling `$body` through a copy compiled with AVX-512F when the CPU has it
/// (also used by `crate::lstm`).
macro_rules! dispatched {
    ($(#[$doc:meta])* fn $name:ident / $fast:ident ($($arg:ident: $ty:ty),*) -> $ret:ty = $body:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        fn $fast($($arg: $ty),*) -> $ret {
            $body($($arg),*)
        }

        $(#[$doc])*
        #[allow(unsafe_code)] // the one call below, behind the feature test
        pub(crate) fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU was just found to have AVX-512F, the one feature `$fast` is
                // compiled for; its body is safe code.
                return unsafe { $fast($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}

pub(crate) use dispatched;

dispatched! {
    /// `max_j (scale · row[j])` (the softmax's shift).
    fn scaled_max / scaled_max_avx512(row: &[f32], scale: f32) -> f32 = scaled_max_body
}

dispatched! {
    /// `row[j] ← exp(scale · row[j] − shift)`; returns `Σ_j row[j]` after.
    fn exp_sum / exp_sum_avx512(row: &mut [f32], scale: f32, shift: f32) -> f32 = exp_sum_body
}

dispatched! {
    /// The softmax's backward on a row, in place: `ds[j] ← scale · p[j] · (ds[j] − delta)`,
    /// `ds` holding `dP` on entry.
    fn softmax_grad / softmax_grad_avx512(ds: &mut [f32], p: &[f32], scale: f32, delta: f32) -> () = softmax_grad_body
}

/// `out[i] ← f(src[i])` (`out` as long as `src`), through the AVX-512F copy when the CPU has
/// it: the element-wise activations (`exp`, `tanh`, the sigmoid, GELU) are this loop with an
/// inlined, branch-free `f`.
pub(crate) fn map(out: &mut [f32], src: &[f32], f: &(impl Fn(f32) -> f32 + Sync)) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: as in `dispatched!`: AVX-512F was just detected.
        return unsafe { map_avx512(out, src, f) };
    }
    map_body(out, src, f)
}

/// `out[i] ← f(a[i], b[i])`, as [`map`].
pub(crate) fn map2(out: &mut [f32], a: &[f32], b: &[f32], f: &(impl Fn(f32, f32) -> f32 + Sync)) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: as in `dispatched!`: AVX-512F was just detected.
        return unsafe { map2_avx512(out, a, b, f) };
    }
    map2_body(out, a, b, f)
}

// Index loops over slices cut to one length, not iterator adapters: a three-way `zip` was
// left as an out-of-line `fold`, compiled without AVX-512.
#[inline(always)]
fn map_body(out: &mut [f32], src: &[f32], f: &impl Fn(f32) -> f32) {
    let n = out.len().min(src.len());
    let (out, src) = (&mut out[..n], &src[..n]);
    for i in 0..n {
        out[i] = f(src[i]);
    }
}

#[inline(always)]
fn map2_body(out: &mut [f32], a: &[f32], b: &[f32], f: &impl Fn(f32, f32) -> f32) {
    let n = out.len().min(a.len()).min(b.len());
    let (out, a, b) = (&mut out[..n], &a[..n], &b[..n]);
    for i in 0..n {
        out[i] = f(a[i], b[i]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn map_avx512(out: &mut [f32], src: &[f32], f: &impl Fn(f32) -> f32) {
    map_body(out, src, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn map2_avx512(out: &mut [f32], a: &[f32], b: &[f32], f: &impl Fn(f32, f32) -> f32) {
    map2_body(out, a, b, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect()
    }

    #[test]
    fn dispatched_loops_match_their_baseline_bodies_bit_for_bit() {
        for n in [0, 1, 15, 16, 17, 100] {
            let r = row(n);
            assert_eq!(scaled_max(&r, -0.5).to_bits(), scaled_max_body(&r, -0.5).to_bits(), "max, n = {n}");
            let (mut a, mut b) = (r.clone(), r.clone());
            assert_eq!(exp_sum(&mut a, 0.3, 1.0).to_bits(), exp_sum_body(&mut b, 0.3, 1.0).to_bits(), "sum, n = {n}");
            assert_eq!(a, b, "exp, n = {n}");
            let (mut c, mut d) = (r.clone(), r.clone());
            softmax_grad(&mut c, &a, 0.3, 0.2);
            softmax_grad_body(&mut d, &b, 0.3, 0.2);
            assert_eq!(c, d, "softmax gradient, n = {n}");
        }
    }

    #[test]
    fn max_and_sum_are_what_they_say() {
        let r = row(37);
        let want = r.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(-2.0 * x));
        assert_eq!(scaled_max(&r, -2.0), want);
        assert_eq!(scaled_max(&[], 1.0), f32::NEG_INFINITY);
        let mut e = r.clone();
        let sum = exp_sum(&mut e, 1.0, 3.0);
        let want: f64 = r.iter().map(|&x| (x as f64 - 3.0).exp()).sum();
        assert!((sum as f64 - want).abs() <= 1e-5 * want, "{sum} vs {want}");
    }
}
