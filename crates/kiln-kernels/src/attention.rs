//! Scaled dot-product attention over `[B, H, L, D]` tensors, with PyTorch's conventions.
//!
//! Without autodiff this calls burn's `module::attention`, which Flex fuses. Under `Autodiff`,
//! where burn falls back to a decomposition with many passes over the `[L_q, L_k]` scores, it
//! runs the backend's fused [`AttentionKernel`] when one is registered (see [`crate::fused`];
//! kiln-cpu's never builds the scores) and there is no mask besides the causal one; otherwise a
//! leaner decomposition of its own (`attention_for_training`), except with a bool mask, which
//! keeps burn's NaN-safe fallback. It adds what burn leaves to the caller:
//! PyTorch's mask conventions (a bool mask marks the positions that *may* be attended to, as in
//! `F.scaled_dot_product_attention`; burn's marks the ones that may not), PyTorch's top-left
//! causal alignment when the query and key lengths differ (burn aligns bottom-right), masks that
//! broadcast, and the scaled additive mask `A = softmax((QKᵀ + αM) / √d)`.
//!
//! One deliberate difference: a row whose every key is masked gets zero weights (burn's NaN-safe
//! softmax), where PyTorch returns NaN.

use crate::fused::{self, AttentionKernel};
use burn::tensor::{Bool, Tensor, TensorPrimitive, backend::Backend, module, ops::AttentionModuleOptions};

/// A mask on the attention scores, broadcastable to `[B, H, L_q, L_k]`.
#[derive(Debug, Clone)]
pub enum AttentionMask<B: Backend> {
    /// No mask.
    None,
    /// `true` where a query may attend to a key (PyTorch's bool `attn_mask`).
    Keep(Tensor<B, 4, Bool>),
    /// Added to the scaled scores, `softmax(QKᵀ/√d + M)` (PyTorch's float `attn_mask`); use
    /// `-inf` to forbid a position.
    Additive(Tensor<B, 4>),
    /// Added before scaling with a weight, `softmax((QKᵀ + αM) / √d)`: the form used where a
    /// mask or bias lives on the same scale as the raw scores.
    ScaledAdditive {
        /// The mask `M`.
        mask: Tensor<B, 4>,
        /// Its weight `α`.
        alpha: f64,
    },
}

/// Options of [`scaled_dot_product_attention`]; the default is non-causal with scale `1/√D`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SdpaOptions {
    /// Each query `i` attends only to keys `j ≤ i` (top-left aligned, as PyTorch's `is_causal`).
    pub causal: bool,
    /// The scale of `QKᵀ`; `None` means `1/√D`.
    pub scale: Option<f64>,
}

impl SdpaOptions {
    /// Causal attention with the default scale.
    pub fn causal() -> Self {
        Self { causal: true, scale: None }
    }

    /// Sets the scale of `QKᵀ`.
    pub fn with_scale(mut self, scale: f64) -> Self {
        self.scale = Some(scale);
        self
    }
}

/// `softmax(QKᵀ · scale + mask) · V`.
///
/// Shapes: `q` `[B, H, L_q, D]`, `k` `[B, H, L_k, D]`, `v` `[B, H, L_k, D_v]` → `[B, H, L_q, D_v]`.
///
/// # Panics
/// On mismatched shapes (a mistake in the calling model, not user input).
pub fn scaled_dot_product_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: AttentionMask<B>,
    options: SdpaOptions,
) -> Tensor<B, 4> {
    let [b, h, lq, d] = q.dims();
    let [kb, kh, lk, kd] = k.dims();
    let [vb, vh, vl, _] = v.dims();
    assert!(
        [kb, kh, kd] == [b, h, d] && [vb, vh, vl] == [b, h, lk],
        "attention: q {:?}, k {:?}, v {:?} do not agree",
        q.dims(),
        k.dims(),
        v.dims()
    );
    let scale = options.scale.unwrap_or(1.0 / (d as f64).sqrt());
    if B::ad_enabled(&q.device()) && !matches!(mask, AttentionMask::Keep(_)) {
        if matches!(mask, AttentionMask::None)
            && let Some(AttentionKernel(kernel)) = fused::find::<AttentionKernel<B>>()
        {
            let (qp, kp, vp) = (
                q.clone().into_primitive().tensor(),
                k.clone().into_primitive().tensor(),
                v.clone().into_primitive().tensor(),
            );
            if let Some(out) = kernel(&qp, &kp, &vp, options.causal, scale) {
                return Tensor::from_primitive(TensorPrimitive::Float(out));
            }
        }
        return attention_for_training(q, k, v, mask, options.causal, scale);
    }
    let (bool_mask, bias) = lower_mask(mask, options.causal, [b, h, lq, lk], scale, &q);
    module::attention(
        q,
        k,
        v,
        bool_mask,
        bias,
        AttentionModuleOptions {
            scale: Some(scale),
            softcap: None,
            // burn aligns its causal mask bottom-right; for square attention that is the same.
            is_causal: options.causal && lq == lk,
        },
    )
}

/// The decomposed attention for autodiff, with fewer passes over the `[B, H, L_q, L_k]` scores
/// than burn's fallback: the scale is applied to `Q` (`[L, D]`, not `[L, L]`), the softmax's max
/// is detached, it normalises after the product with `V`, and there are no clamps. Without a bool
/// mask no row can be fully masked (a causal row always sees key 0), so the clamps that make
/// burn's fallback NaN-safe are not needed; an additive mask of all `-inf` on a row gives NaN, as
/// in PyTorch.
///
/// All heads go through at once. Cutting them into cache-sized groups made the forward pass a
/// little faster but the backward much slower: autodiff's gradient of each `narrow` is a zero
/// tensor of the full input's size with the slice written in, so `G` groups cost `G` full-size
/// writes per input (64 groups: 1.10 s a step on the benchmark, against 0.58 s in one). Memory: the scores and
/// their exponentials, `[B·H, L_q, L_k]` each, live until the backward pass.
fn attention_for_training<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: AttentionMask<B>,
    causal: bool,
    scale: f64,
) -> Tensor<B, 4> {
    let [b, h, lq, d] = q.dims();
    let [_, _, lk, dv] = v.dims();
    let bh = b * h;
    let q = q.mul_scalar(scale).reshape([bh, lq, d]);
    let k = k.reshape([bh, lk, d]);
    let v = v.reshape([bh, lk, dv]);
    let scores = q.matmul(k.swap_dims(1, 2)); // [B·H, Lq, Lk]
    let scores = match mask {
        AttentionMask::Additive(m) => scores + m.expand([b, h, lq, lk]).reshape([bh, lq, lk]),
        AttentionMask::ScaledAdditive { mask, alpha } => {
            scores + mask.mul_scalar(alpha * scale).expand([b, h, lq, lk]).reshape([bh, lq, lk])
        }
        AttentionMask::None | AttentionMask::Keep(_) => scores,
    };
    let scores = if causal {
        let future = Tensor::<B, 2, Bool>::tril_mask([lq, lk], 0, &scores.device()).unsqueeze::<3>();
        scores.mask_fill(future.expand([bh, lq, lk]), f32::NEG_INFINITY)
    } else {
        scores
    };
    // softmax(S)·V = (E·V) / Σ_j E with E = exp(S − max S): the normalisation happens on the
    // [Lq, Dv] output rather than the [Lq, Lk] weights, which saves two passes over the scores
    // forward and three backward. The max is detached: the value does not depend on it.
    let max = scores.clone().detach().max_dim(2); // [B·H, Lq, 1]
    let e = (scores - max).exp(); // [B·H, Lq, Lk]
    let z = e.clone().sum_dim(2); // [B·H, Lq, 1]
    (e.matmul(v) / z).reshape([b, h, lq, dv]) // [B, H, Lq, Dv]
}

/// The attention weights `softmax(QKᵀ · scale + mask)`, `[B, H, L_q, L_k]`: for inspection and
/// tests; [`scaled_dot_product_attention`] does not build them separately.
pub fn attention_weights<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    mask: AttentionMask<B>,
    options: SdpaOptions,
) -> Tensor<B, 4> {
    // Attending to the identity matrix returns the weights themselves.
    let [b, h, _, _] = q.dims();
    let lk = k.dims()[2];
    let eye = Tensor::<B, 2>::eye(lk, &q.device()).unsqueeze::<4>().expand([b, h, lk, lk]);
    let options = SdpaOptions { scale: Some(options.scale.unwrap_or(1.0 / (q.dims()[3] as f64).sqrt())), ..options };
    scaled_dot_product_attention(q, k, eye, mask, options)
}

/// Turns a PyTorch-convention mask into burn's bool mask (true = blocked) and additive bias.
fn lower_mask<B: Backend>(
    mask: AttentionMask<B>,
    causal: bool,
    shape: [usize; 4],
    scale: f64,
    like: &Tensor<B, 4>,
) -> (Option<Tensor<B, 4, Bool>>, Option<Tensor<B, 4>>) {
    let [_, _, lq, lk] = shape;
    let (mut blocked, bias) = match mask {
        AttentionMask::None => (None, None),
        AttentionMask::Keep(keep) => (Some(keep.expand(shape).bool_not()), None),
        AttentionMask::Additive(m) => (None, Some(m.expand(shape))),
        AttentionMask::ScaledAdditive { mask, alpha } => (None, Some(mask.mul_scalar(alpha * scale).expand(shape))),
    };
    if causal && lq != lk {
        let future = Tensor::<B, 2, Bool>::tril_mask([lq, lk], 0, &like.device()).unsqueeze::<4>().expand(shape);
        blocked = Some(match blocked {
            Some(m) => m.bool_or(future),
            None => future,
        });
    }
    (blocked, bias)
}
