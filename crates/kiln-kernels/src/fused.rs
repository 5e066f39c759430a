//! Fused kernels that a backend crate supplies for kiln's composite ops, found by backend type.
//!
//! kiln's kernels are generic over burn's `Backend` and compose tensor ops, which runs anywhere.
//! A few have a much faster fused form on one backend — on kiln-cpu, attention in blocks with its
//! own backward pass, an LSTM step's gates as one autodiff node, batch and group normalisation
//! in two or three passes over the data, Adam's update in one — that generic code cannot call
//! without naming that backend, and burn 0.21 gives no op to override (its `Autodiff` always
//! decomposes `module::attention`, and has no LSTM cell, normalisation or optimiser op at all).
//! So the crate
//! that picks the backend (kiln-device, for the binaries) registers the fused kernel for that
//! backend type, and the generic op looks it up and uses it when there is one. Without
//! specialisation in Rust the lookup is by type: a read lock and a scan of a short list per
//! call, nothing next to the op itself.
//!
//! A kernel is a small `Copy` struct wrapping a function pointer, one struct per op, so that the
//! type alone names both the op and the backend.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use std::any::{Any, TypeId};
use std::sync::RwLock;

/// Registered kernels, keyed by their type.
static KERNELS: RwLock<Vec<(TypeId, Box<dyn Any + Send + Sync>)>> = RwLock::new(Vec::new());

/// Registers `kernel` for its op and backend, replacing an earlier one of the same type.
pub fn register<K: Any + Copy + Send + Sync>(kernel: K) {
    let mut kernels = KERNELS.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    kernels.retain(|(id, _)| *id != TypeId::of::<K>());
    kernels.push((TypeId::of::<K>(), Box::new(kernel)));
}

/// The kernel of type `K`, if one was registered.
pub fn find<K: Any + Copy>() -> Option<K> {
    let kernels = KERNELS.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    kernels.iter().find(|(id, _)| *id == TypeId::of::<K>()).and_then(|(_, k)| k.downcast_ref::<K>().copied())
}

/// Scaled dot-product attention with its gradient on backend `B` (an autodiff backend), for
/// [`crate::scaled_dot_product_attention`] without a mask: `(q, k, v, causal, scale)` →
/// `softmax(q·kᵀ·scale)·v`, shapes as there. Returns `None` where the kernel does not apply
/// (a dtype or shape it does not handle), and the composed attention runs instead.
pub struct AttentionKernel<B: Backend>(
    #[allow(clippy::type_complexity)] // the op's signature, spelled once
    pub  fn(&FloatTensor<B>, &FloatTensor<B>, &FloatTensor<B>, bool, f64) -> Option<FloatTensor<B>>,
);

/// The element-wise half of an LSTM step with its gradient on backend `B` (an autodiff
/// backend): `(gates, c)` → `[2, B, H]` holding `h'` then `c'`, for gate pre-activations
/// `[B, 4H]` in PyTorch's order i, f, g, o and the cell state `[B, H]`:
/// `c' = σ(f)·c + σ(i)·tanh(g)`, `h' = σ(o)·tanh(c')`. `None` where the kernel does not apply.
pub struct LstmCellKernel<B: Backend>(pub fn(&FloatTensor<B>, &FloatTensor<B>) -> Option<FloatTensor<B>>);

/// Normalisation with a per-image affine transform and its gradient on backend `B` (an autodiff
/// backend), for [`crate::norm`]: `(x, gamma, beta, groups, eps)` → `(y, mean, var)`.
///
/// `x` is `[N, C, H, W]`; `gamma` and `beta` are `[R, C]` with `R` = 1 (one row for every image)
/// or `R` = N (a row per image, as in conditional batch norm). `groups` `None` normalises each
/// channel over the batch and the image (batch norm); `Some(G)` each image's `G` groups of
/// `C / G` channels (group norm). `y = (x − mean)/√(var + eps)·γ + β`; `mean` and `var` (biased)
/// are the statistics per group, `[C]` or `[N, G]` flattened, for a running average. `None`
/// where the kernel does not apply.
pub struct NormKernel<B: Backend>(
    #[allow(clippy::type_complexity)] // the op's signature, spelled once
    pub  fn(
        &FloatTensor<B>,
        &FloatTensor<B>,
        &FloatTensor<B>,
        Option<usize>,
        f64,
    ) -> Option<(FloatTensor<B>, Vec<f32>, Vec<f32>)>,
);

/// The scalars of one Adam or AdamW update (kiln-optim's `Optim::step`), already in `f32`.
///
/// Applied element by element in this order, each optional step skipped when `None`:
/// `g ← g·grad_scale`; `g ← g + w·l2`; `m ← m·β₁ + g·(1 − β₁)` (`g·(1 − β₁)` on the first update);
/// `v ← v·β₂ + (g·g)·(1 − β₂)` (likewise); `w ← w·decay`; `w ← w − (m / (√v·inv_sqrt_bc2 + eps))·step_size`.
/// A kernel that keeps this order and rounds each product and sum to `f32` gives the same bits
/// as the composed tensor ops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamUpdate {
    /// Gradient scale (accumulation mean, clipping).
    pub grad_scale: Option<f32>,
    /// Adam's L2 weight decay, added to the gradient.
    pub l2: Option<f32>,
    /// β₁.
    pub beta1: f32,
    /// 1 − β₁, rounded once in `f64`.
    pub one_minus_beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// 1 − β₂, rounded once in `f64`.
    pub one_minus_beta2: f32,
    /// `1/√(1 − β₂ᵗ)`, the second moment's bias correction.
    pub inv_sqrt_bc2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// AdamW's weight factor `1 − lr·wd`.
    pub decay: Option<f32>,
    /// `lr / (1 − β₁ᵗ)`.
    pub step_size: f32,
}

/// One Adam/AdamW update of a flattened parameter on backend `B` (an optimiser's inner,
/// non-autodiff backend): `(update, w, g, Some((m, v)))` → `[w', m', v']`; no moments yet on the
/// first update. The moments are handed over so that the kernel may update them in place; where
/// the kernel does not apply it gives them back (`Err`).
pub struct AdamKernel<B: Backend>(
    #[allow(clippy::type_complexity)] // the op's signature, spelled once
    pub  fn(
        &AdamUpdate,
        &FloatTensor<B>,
        &FloatTensor<B>,
        Option<(FloatTensor<B>, FloatTensor<B>)>,
    ) -> Result<[FloatTensor<B>; 3], Option<(FloatTensor<B>, FloatTensor<B>)>>,
);

/// Kernel types are function-pointer wrappers: `Copy` whatever `B` is (a derive would ask `B: Copy`).
macro_rules! copy_kernel {
    ($($kernel:ident),*) => {$(
        impl<B: Backend> Clone for $kernel<B> {
            fn clone(&self) -> Self {
                *self
            }
        }

        impl<B: Backend> Copy for $kernel<B> {}
    )*};
}

copy_kernel!(AttentionKernel, LstmCellKernel, NormKernel, AdamKernel);

/// Leaky ReLU with its gradient on backend `B` (an autodiff backend), for
/// [`crate::activation::leaky_relu`]: `(x, negative_slope)` → `y`, any shape. `None` where the
/// kernel does not apply.
pub struct LeakyReluKernel<B: Backend>(pub fn(&FloatTensor<B>, f64) -> Option<FloatTensor<B>>);

/// SiLU (`x·σ(x)`) with its gradient on backend `B` (an autodiff backend), for
/// [`crate::activation::silu`]. `None` where the kernel does not apply.
pub struct SiluKernel<B: Backend>(pub fn(&FloatTensor<B>) -> Option<FloatTensor<B>>);

copy_kernel!(LeakyReluKernel, SiluKernel);

/// A separable resample without autodiff on backend `B`, for [`crate::resize`]:
/// `(x, rows, cols, [out_h, out_w])` → `rows · x · colsᵀ` per plane of `x` `[N, C, H, W]`, with
/// the weight matrices `rows` `[out_h, H]` and `cols` `[out_w, W]` row-major. `None` where the
/// kernel does not apply.
pub struct ResampleKernel<B: Backend>(
    #[allow(clippy::type_complexity)] // the op's signature, spelled once
    pub  fn(&FloatTensor<B>, &[f32], &[f32], [usize; 2]) -> Option<FloatTensor<B>>,
);

copy_kernel!(ResampleKernel);

/// One axis of DRAW's Gaussian filterbank with its gradient on backend `B` (an autodiff
/// backend), for [`crate::draw::filterbanks`]: `(centre, delta, sigma2, n, size, eps)` →
/// `F` `[B, n, size]` with `F[b, i, a] ∝ exp(−(a − μ)² / 2σ²)`, `μ = centre + (i − n/2 − 0.5)·δ`
/// for `i`, `a` from 1, each row divided by its sum clamped to at least `eps`. The three inputs
/// are `[B]`. `None` where the kernel does not apply.
pub struct FilterbankKernel<B: Backend>(
    #[allow(clippy::type_complexity)] // the op's signature, spelled once
    pub  fn(&FloatTensor<B>, &FloatTensor<B>, &FloatTensor<B>, usize, usize, f64) -> Option<FloatTensor<B>>,
);

copy_kernel!(FilterbankKernel);

/// Runs the shards of one batch at the same time on backend `B` (an autodiff backend), for
/// `kiln_optim::backward_shards`: `(shards, f)` calls `f(0)`, …, `f(shards − 1)`, each from its
/// own thread, and returns when all have. Every shard's work must stay on its thread (its own
/// thread pool, not the one the caller runs on), so that shards do not fight over the cores.
///
/// Why a backend supplies it: a model of many small ops (DRAW's 64 LSTM steps at batch 64) gains
/// nothing from splitting each op over the cores — every op is too small to pay for waking the
/// other threads — but two halves of the batch, each stepped through the whole network on its
/// own core, keep both busy. How to give a shard its own core is the CPU backend's business;
/// elsewhere (a GPU) the shards run one after the other, which gives the same result.
pub struct ShardRunner<B: Backend>(pub fn(usize, &(dyn Fn(usize) + Sync)), pub std::marker::PhantomData<fn() -> B>);

impl<B: Backend> ShardRunner<B> {
    /// The runner `run` for backend `B`.
    pub fn new(run: fn(usize, &(dyn Fn(usize) + Sync))) -> Self {
        Self(run, std::marker::PhantomData)
    }
}

copy_kernel!(ShardRunner);
