//! Adam's update of one flattened parameter in one pass over the parameter, its gradient and the
//! two moments.
//!
//! Composed from tensor ops the update is about twelve passes per parameter — the moments' two
//! products and a sum each, the square, the square root, the denominator's scale and shift, the
//! quotient, the step — each writing a fresh tensor. On the DCGAN (6.4 M parameters) that is
//! ~1 GB of memory traffic per step; here it is reading four arrays and writing three.
//!
//! The arithmetic is the composed ops', in their order and rounded to `f32` after every product
//! and sum (Rust never fuses a multiply and an add on its own), so the result is the same bits.

use crate::CpuInner;
use burn_backend::TensorMetadata;
use burn_backend::tensor::FloatTensor;
use rayon::prelude::*;

/// The scalars of one update, in the order they are applied (kiln-kernels' `AdamUpdate`
/// documents the formula; kiln-device passes its fields through).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    /// `g ← g·grad_scale`.
    pub grad_scale: Option<f32>,
    /// `g ← g + w·l2`.
    pub l2: Option<f32>,
    /// β₁ and 1 − β₁.
    pub beta1: (f32, f32),
    /// β₂ and 1 − β₂.
    pub beta2: (f32, f32),
    /// `1/√(1 − β₂ᵗ)`.
    pub inv_sqrt_bc2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// `w ← w·decay` (AdamW).
    pub decay: Option<f32>,
    /// `lr / (1 − β₁ᵗ)`.
    pub step_size: f32,
}

/// Elements per parallel task.
const CHUNK: usize = 1 << 15;

/// The update of one element with moments `mv` (`None` on the first update).
#[inline(always)]
fn element(s: &AdamStep, w: f32, g: f32, mv: Option<(f32, f32)>) -> (f32, f32, f32) {
    let mut g = g;
    if let Some(k) = s.grad_scale {
        g *= k;
    }
    if let Some(k) = s.l2 {
        g += w * k;
    }
    let (m, v) = match mv {
        Some((m, v)) => (m * s.beta1.0 + g * s.beta1.1, v * s.beta2.0 + (g * g) * s.beta2.1),
        None => (g * s.beta1.1, (g * g) * s.beta2.1),
    };
    let denom = v.sqrt() * s.inv_sqrt_bc2 + s.eps;
    let mut w = w;
    if let Some(k) = s.decay {
        w *= k;
    }
    (w - (m / denom) * s.step_size, m, v)
}

#[inline(always)]
fn update_body(s: &AdamStep, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let n = w.len().min(g.len()).min(m.len()).min(v.len());
    let (w, g, m, v) = (&mut w[..n], &g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        (w[i], m[i], v[i]) = element(s, w[i], g[i], Some((m[i], v[i])));
    }
}

#[inline(always)]
fn first_body(s: &AdamStep, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let n = w.len().min(g.len()).min(m.len()).min(v.len());
    let (w, g, m, v) = (&mut w[..n], &g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        (w[i], m[i], v[i]) = element(s, w[i], g[i], None);
    }
}

crate::rows::dispatched! {
    /// [`update_body`]: `w`, `m`, `v` updated in place.
    fn update / update_avx512(s: &AdamStep, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) -> () = update_body
}

crate::rows::dispatched! {
    /// [`first_body`]: the first update, `m` and `v` written.
    fn first / first_avx512(s: &AdamStep, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) -> () = first_body
}

/// One Adam/AdamW update of `w` with gradient `g` and moments `moments` (`None` on the first
/// update): `[w', m', v']`. `None` (and the composed ops should run) when a tensor is not f32
/// or the lengths differ.
pub fn adam_update<B: CpuInner>(
    step: &AdamStep,
    w: &FloatTensor<B>,
    g: &FloatTensor<B>,
    moments: Option<(&FloatTensor<B>, &FloatTensor<B>)>,
) -> Option<[FloatTensor<B>; 3]> {
    let shape = w.shape();
    let mut wn = B::f32_view(w)?.into_owned();
    let gs = B::f32_view(g)?;
    let n = wn.len();
    let (mut m, mut v, first_update) = match moments {
        Some((m, v)) => (B::f32_view(m)?.into_owned(), B::f32_view(v)?.into_owned(), false),
        None => (vec![0.0f32; n], vec![0.0f32; n], true),
    };
    if gs.len() != n || m.len() != n || v.len() != n {
        return None;
    }
    let kernel = if first_update { first } else { update };
    let chunks =
        wn.par_chunks_mut(CHUNK).zip(gs.par_chunks(CHUNK)).zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)));
    chunks.for_each(|((w, g), (m, v))| kernel(step, w, g, m, v));
    Some([B::f32_tensor(wn, shape.clone()), B::f32_tensor(m, shape.clone()), B::f32_tensor(v, shape)])
}
