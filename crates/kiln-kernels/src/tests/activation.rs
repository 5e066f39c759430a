// kiln's leaky ReLU and SiLU are burn's functions unless a fused kernel is registered; here one is
// (kiln-cpu's, counted) and must run and agree with burn's on Flex. Tolerance 1e-5 absolute
// (values of order 1; kiln-cpu's sigmoid is within 5e-7 relative of libm's).

use super::*;
use crate::activation::{leaky_relu, silu};
use crate::fused::{self, LeakyReluKernel, SiluKernel};
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::tensor::Distribution;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;
use std::sync::atomic::{AtomicUsize, Ordering};

type Fused = burn::backend::Autodiff<kiln_cpu::KilnCpu<burn_flex::Flex>>;

static CALLS: AtomicUsize = AtomicUsize::new(0);

fn counted_leaky(x: &FloatTensor<Fused>, slope: f64) -> Option<FloatTensor<Fused>> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    kiln_cpu::leaky_relu_autodiff::<burn_flex::Flex, NoCheckpointing>(x, slope)
}

fn counted_silu(x: &FloatTensor<Fused>) -> Option<FloatTensor<Fused>> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    kiln_cpu::silu_autodiff::<burn_flex::Flex, NoCheckpointing>(x)
}

/// `f(x)` and the gradient of `Σ f(x)·r` for fixed `x`, `r` `[3, 4, 5]`.
fn run<B: AutodiffBackend>(x: &[f32], r: &[f32], f: impl Fn(Tensor<B, 3>) -> Tensor<B, 3>) -> (Vec<f32>, Vec<f32>) {
    let device = Default::default();
    let x = Tensor::<B, 3>::from_data(TensorData::new(x.to_vec(), [3, 4, 5]), &device).require_grad();
    let r = Tensor::<B, 3>::from_data(TensorData::new(r.to_vec(), [3, 4, 5]), &device);
    let y = f(x.clone());
    let grads = (y.clone() * r).sum().backward();
    (to_vec(y), to_vec(x.grad(&grads).expect("x grad")))
}

#[test]
fn registered_fused_activations_run_and_agree_with_burns() {
    let x = to_vec(Tensor::<TestBackend, 1>::random([60], Distribution::Normal(0.0, 3.0), &device()));
    let r = to_vec(Tensor::<TestBackend, 1>::random([60], Distribution::Default, &device()));
    fused::register(LeakyReluKernel::<Fused>(counted_leaky));
    fused::register(SiluKernel::<Fused>(counted_silu));
    let before = CALLS.load(Ordering::SeqCst);
    let fused_leaky = run::<Fused>(&x, &r, |x| leaky_relu(x, 0.2));
    let fused_silu = run::<Fused>(&x, &r, silu);
    assert_eq!(CALLS.load(Ordering::SeqCst) - before, 2, "both fused kernels ran");
    let burn_leaky = run::<TestAutodiff>(&x, &r, |x| burn::tensor::activation::leaky_relu(x, 0.2));
    let burn_silu = run::<TestAutodiff>(&x, &r, burn::tensor::activation::silu);
    assert_slice_close(&fused_leaky.0, &burn_leaky.0, 1e-5, "leaky ReLU");
    assert_slice_close(&fused_leaky.1, &burn_leaky.1, 1e-5, "leaky ReLU gradient");
    assert_slice_close(&fused_silu.0, &burn_silu.0, 1e-5, "SiLU");
    assert_slice_close(&fused_silu.1, &burn_silu.1, 1e-5, "SiLU gradient");
}
