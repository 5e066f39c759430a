// values: crates/kiln-kernels/golden/make_golden.py (torch 2.15 F.batch_norm in training mode and
// F.group_norm, times γ plus β per image and channel; with the gradients of x, γ and β), file
// golden/norm.json. Tolerance 1e-4 absolute (inputs of scale 3, γ up to 1.5: the outputs and
// gradients are of order 1–10, and the two sum in different orders).

use super::*;
use crate::fused::{self, NormKernel};
use crate::norm::{batch_norm, group_norm};
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;
use std::sync::atomic::{AtomicUsize, Ordering};

const TOL: f32 = 1e-4;

/// The layer on `B`, with the batch statistics for batch norm; checks `y` and every gradient.
fn check<B: AutodiffBackend>(name: &str, case: &serde_json::Value) {
    let device = Default::default();
    let x = tensor::<B, 4>(&case["x"], &device).require_grad();
    let gamma = tensor::<B, 2>(&case["gamma"], &device).require_grad();
    let beta = tensor::<B, 2>(&case["beta"], &device).require_grad();
    let eps = case["eps"].as_f64().expect("eps");
    let y = match case["groups"].as_u64() {
        None => {
            let (y, mean, var) = batch_norm(x.clone(), gamma.clone(), beta.clone(), eps);
            assert_close(mean, &case["mean"], TOL, &format!("{name} mean"));
            assert_close(var, &case["var"], TOL, &format!("{name} var"));
            y
        }
        Some(groups) => {
            let c = gamma.dims()[1];
            // group_norm takes γ, β per channel: the cases with a row per image are batch norms.
            let (g, b) = (gamma.clone().reshape([c]), beta.clone().reshape([c]));
            group_norm(x.clone(), groups as usize, Some(g), Some(b), eps)
        }
    };
    assert_close(y.clone(), &case["output"], TOL, name);
    let grads = (y * tensor::<B, 4>(&case["grad_out"], &device)).sum().backward();
    assert_close(x.grad(&grads).expect("x grad"), &case["grad_x"], TOL, &format!("{name} grad_x"));
    assert_close(gamma.grad(&grads).expect("γ grad"), &case["grad_gamma"], TOL, &format!("{name} grad_gamma"));
    assert_close(beta.grad(&grads).expect("β grad"), &case["grad_beta"], TOL, &format!("{name} grad_beta"));
}

#[test]
fn composed_norms_match_pytorch() {
    for (name, case) in &golden("norm.json") {
        check::<TestAutodiff>(name, case);
    }
}

type Fused = burn::backend::Autodiff<kiln_cpu::KilnCpu<burn_flex::Flex>>;

static FUSED_CALLS: AtomicUsize = AtomicUsize::new(0);

#[allow(clippy::type_complexity)] // the kernel's signature
fn counted(
    x: &FloatTensor<Fused>,
    gamma: &FloatTensor<Fused>,
    beta: &FloatTensor<Fused>,
    groups: Option<usize>,
    eps: f64,
) -> Option<(FloatTensor<Fused>, Vec<f32>, Vec<f32>)> {
    FUSED_CALLS.fetch_add(1, Ordering::SeqCst);
    kiln_cpu::norm_autodiff::<burn_flex::Flex, NoCheckpointing>(x, gamma, beta, groups, eps)
}

#[test]
fn a_registered_fused_norm_runs_and_matches_pytorch() {
    fused::register(NormKernel::<Fused>(counted));
    let cases = golden("norm.json");
    for (name, case) in &cases {
        check::<Fused>(name, case);
    }
    assert_eq!(FUSED_CALLS.load(Ordering::SeqCst), cases.len(), "the fused kernel ran once per layer");
}
