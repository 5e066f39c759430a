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
use burn_backend::tensor::FloatTensor;
use burn_backend::{DType, TensorMetadata};
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

/// [`update`] or [`first`].
type Loop = fn(&AdamStep, &mut [f32], &[f32], &mut [f32], &mut [f32]);

/// The moments of a parameter, handed back when the update does not apply.
pub type Moments<B> = (FloatTensor<B>, FloatTensor<B>);

/// One Adam/AdamW update of `w` with gradient `g` and moments `moments` (`None` on the first
/// update): `[w', m', v']`. The moments are updated in place when nothing else holds their
/// buffers (an optimiser that hands them over keeps no copy); `w` is written to a new buffer
/// if the model still holds the old one.
///
/// `Err` with the moments given (and the composed ops should run) when a tensor is not f32 or
/// the lengths differ.
pub fn adam_update<B: CpuInner>(
    step: &AdamStep,
    w: &FloatTensor<B>,
    g: &FloatTensor<B>,
    moments: Option<Moments<B>>,
) -> Result<[FloatTensor<B>; 3], Option<Moments<B>>> {
    let n = w.shape().num_elements();
    let f32_of_len = |t: &FloatTensor<B>| t.dtype() == DType::F32 && t.shape().num_elements() == n;
    let usable = f32_of_len(w) && f32_of_len(g) && moments.as_ref().is_none_or(|(m, v)| f32_of_len(m) && f32_of_len(v));
    let gs = match B::f32_view(g) {
        Some(gs) if usable => gs,
        _ => return Err(moments),
    };
    let shape = w.shape();
    let (m, v, kernel): (_, _, Loop) = match moments {
        Some((m, v)) => (m, v, update),
        None => (B::f32_tensor(vec![0.0; n], shape.clone()), B::f32_tensor(vec![0.0; n], shape.clone()), first),
    };
    // Three nested in-place rewrites, so the one loop sees all three buffers.
    let (mut m_out, mut v_out) = (None, None);
    let w_out = B::f32_update(w.clone(), |ws| {
        m_out = B::f32_update(m, |ms| {
            v_out = B::f32_update(v, |vs| {
                let chunks = ws.par_chunks_mut(CHUNK).zip(gs.par_chunks(CHUNK));
                let moments = ms.par_chunks_mut(CHUNK).zip(vs.par_chunks_mut(CHUNK));
                chunks.zip(moments).for_each(|((w, g), (m, v))| kernel(step, w, g, m, v));
            });
        });
    });
    match (w_out, m_out, v_out) {
        (Some(w), Some(m), Some(v)) => Ok([w, m, v]),
        _ => unreachable!("every tensor was checked to be f32"),
    }
}
