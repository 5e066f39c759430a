//! Activations that burn 0.21's autodiff composes from several tracked ops, with a backend's
//! fused kernel used where one is registered (see [`crate::fused`]).
//!
//! burn's leaky ReLU is a comparison, a scaled copy and a masked select; its SiLU a sigmoid and
//! a product: three or four passes forward and as many backward, where a fused kernel needs one
//! each way. Everywhere else these are burn's own functions.

use crate::fused::{self, LeakyReluKernel, SiluKernel};
use burn::tensor::{Tensor, TensorPrimitive, activation, backend::Backend};

/// Leaky ReLU: `x` where `x ≥ 0`, `negative_slope · x` below.
pub fn leaky_relu<B: Backend, const D: usize>(x: Tensor<B, D>, negative_slope: f64) -> Tensor<B, D> {
    if let Some(LeakyReluKernel(kernel)) = fused::find::<LeakyReluKernel<B>>()
        && let Some(y) = kernel(&x.clone().into_primitive().tensor(), negative_slope)
    {
        return Tensor::from_primitive(TensorPrimitive::Float(y));
    }
    activation::leaky_relu(x, negative_slope)
}

/// SiLU (swish): `x · σ(x)`.
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if let Some(SiluKernel(kernel)) = fused::find::<SiluKernel<B>>()
        && let Some(y) = kernel(&x.clone().into_primitive().tensor())
    {
        return Tensor::from_primitive(TensorPrimitive::Float(y));
    }
    activation::silu(x)
}
