use burn::module::{AutodiffModule, Initializer};
use burn::nn::LinearConfig;
use burn::tensor::{Distribution, Tensor};

use super::*;
use crate::spectral::{SnConv2dConfig, SnLinearConfig, SpectralNormConfig};

/// Largest singular value of a row-major `[rows, cols]` matrix (host power iteration in f64).
fn sigma_max(m: &[f32], rows: usize, cols: usize) -> f64 {
    crate::largest_singular_value(m, rows, cols, 500)
}

#[test]
fn linear_weight_has_unit_spectral_norm() {
    let device = device();
    // A standard-normal weight has σ ≈ √12 + √7, far from 1.
    let linear = LinearConfig::new(12, 7).with_initializer(Initializer::Normal { mean: 0.0, std: 1.0 });
    let layer = SnLinearConfig::new(linear).init::<TestAutodiff>(&device);
    let x = Tensor::<TestAutodiff, 2>::random([3, 12], Distribution::Normal(0.0, 1.0), &device);
    // Each training forward pass is one power iteration; u converges over the steps, at the rate
    // (σ₂/σ₁)² per step. The weight is random (unseeded), and for an unlucky draw with σ₂ close to
    // σ₁ thirty steps were not enough (a failure seen once in CI-like runs); two hundred are.
    for _ in 0..200 {
        let _ = layer.forward(x.clone());
    }
    let w = to_vec(layer.weight().inner());
    let sigma = sigma_max(&w, 12, 7);
    assert!((sigma - 1.0).abs() < 1e-3, "σ = {sigma}");
    // The raw weight is not normalised, so this is not trivially true.
    let raw = to_vec(layer.linear.weight.val().inner());
    assert!(sigma_max(&raw, 12, 7) > 2.0);
    // Gradients reach the raw weight; evaluation (no autodiff) gives the same weight.
    let grads = layer.forward(x).sum().backward();
    assert!(layer.linear.weight.grad(&grads).is_some());
    let valid = layer.valid();
    assert_slice_close(&to_vec(valid.weight()), &w, 1e-4, "eval weight");
}

#[test]
fn conv_weight_has_unit_spectral_norm() {
    let device = device();
    let conv = SnConv2dConfig::new([3, 8], [3, 3])
        .with_padding([1, 1])
        .with_norm(SpectralNormConfig::new().with_power_iterations(4))
        .init::<TestAutodiff>(&device);
    let x = Tensor::<TestAutodiff, 4>::random([2, 3, 6, 6], Distribution::Normal(0.0, 1.0), &device);
    for _ in 0..200 {
        let y = conv.forward(x.clone());
        assert_eq!(y.dims(), [2, 8, 6, 6]);
    }
    let w = to_vec(conv.weight().inner());
    let sigma = sigma_max(&w, 8, 27);
    assert!((sigma - 1.0).abs() < 1e-3, "σ = {sigma}");
}
