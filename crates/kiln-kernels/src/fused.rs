//! Fused kernels that a backend crate supplies for kiln's composite ops, found by backend type.
//!
//! kiln's kernels are generic over burn's `Backend` and compose tensor ops, which runs anywhere.
//! A few have a much faster fused form on one backend — on kiln-cpu, attention in blocks with its
//! own backward pass, and an LSTM step's gates as one autodiff node — that generic code cannot call without naming that backend, and burn 0.21
//! gives no op to override (its `Autodiff` always decomposes `module::attention`, and has no
//! LSTM cell op at all). So the crate
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

impl<B: Backend> Clone for AttentionKernel<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for AttentionKernel<B> {}

/// The element-wise half of an LSTM step with its gradient on backend `B` (an autodiff
/// backend): `(gates, c)` → `[2, B, H]` holding `h'` then `c'`, for gate pre-activations
/// `[B, 4H]` in PyTorch's order i, f, g, o and the cell state `[B, H]`:
/// `c' = σ(f)·c + σ(i)·tanh(g)`, `h' = σ(o)·tanh(c')`. `None` where the kernel does not apply.
pub struct LstmCellKernel<B: Backend>(pub fn(&FloatTensor<B>, &FloatTensor<B>) -> Option<FloatTensor<B>>);

impl<B: Backend> Clone for LstmCellKernel<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for LstmCellKernel<B> {}
