use burn::tensor::{Distribution, Tensor};

use super::*;
use crate::draw::{DrawAttentionConfig, FilterbankParams, filterbanks, read, write};

/// Raw parameters near zero with a stride below the full-image one (log δ̃ ≈ −0.5) keep every
/// filter's Gaussian on the image; one that lies far off it underflows to a zero row, which no
/// normalisation can make sum to one.
fn raw_params(b: usize) -> Tensor<TestBackend, 2> {
    let shift = Tensor::<TestBackend, 2>::from_floats([[0.0, 0.0, 0.0, -0.5, 0.0]], &device());
    Tensor::random([b, 5], Distribution::Normal(0.0, 0.1), &device()) + shift
}

#[test]
fn filterbank_rows_sum_to_one_and_centre_on_g() {
    let (w, h, n) = (28, 20, 5);
    let params = FilterbankParams::from_raw(raw_params(4), w, h, n);
    let banks = filterbanks(&params, w, h, n, 1e-8);
    assert_eq!(banks.fx.dims(), [4, n, w]);
    assert_eq!(banks.fy.dims(), [4, n, h]);
    for (bank, size) in [(banks.fx.clone(), w), (banks.fy.clone(), h)] {
        let sums = to_vec(bank.sum_dim(2));
        assert_slice_close(&sums, &vec![1.0; sums.len()], 1e-5, "row sums");
        assert!(size > 0);
    }
    // Zero raw parameters: the grid is centred on the image, unit stride scaled to cover it.
    let zero = Tensor::<TestBackend, 2>::zeros([1, 5], &device());
    let params = FilterbankParams::from_raw(zero, w, h, n);
    assert_eq!(to_vec(params.gx.clone()), vec![14.5]);
    assert_eq!(to_vec(params.gy.clone()), vec![10.5]);
    assert_eq!(to_vec(params.delta.clone()), vec![27.0 / 4.0]);
    // The middle filter of an odd grid is centred on g: its mean position is g.
    let banks = filterbanks(&params, w, h, n, 1e-8);
    let fx = to_vec(banks.fx);
    let mid = &fx[2 * w..3 * w];
    let mean: f32 = mid.iter().enumerate().map(|(a, p)| (a + 1) as f32 * p).sum();
    assert!((mean - 14.5).abs() < 1e-3, "{mean}");
}

#[test]
fn read_and_write_are_adjoint_and_preserve_constants() {
    let (w, h, n, c) = (12, 9, 4, 3);
    let params = FilterbankParams::from_raw(raw_params(2), w, h, n);
    let banks = filterbanks(&params, w, h, n, 1e-8);
    let ones = Tensor::<TestBackend, 1>::ones([2], &device());
    // Rows sum to one, so a constant image reads as the same constant (γ = 1).
    let x = Tensor::<TestBackend, 4>::full([2, c, h, w], 0.25, &device());
    let g = to_vec(read(x, &banks, ones.clone()));
    assert_slice_close(&g, &vec![0.25; g.len()], 1e-6, "constant glimpse");
    // ⟨read(x), p⟩ = ⟨x, write(p)⟩ for γ = 1.
    let x = Tensor::<TestBackend, 4>::random([2, c, h, w], Distribution::Normal(0.0, 1.0), &device());
    let p = Tensor::<TestBackend, 4>::random([2, c, n, n], Distribution::Normal(0.0, 1.0), &device());
    let lhs = to_vec((read(x.clone(), &banks, ones.clone()) * p.clone()).sum())[0];
    let rhs = to_vec((x * write(p, &banks, ones)).sum())[0];
    assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
}

#[test]
fn attention_module_is_differentiable() {
    let device = device();
    let att = DrawAttentionConfig::new(16, 10, 8, 3).init::<TestAutodiff>(&device);
    let hdec = Tensor::<TestAutodiff, 2>::random([2, 16], Distribution::Normal(0.0, 1.0), &device);
    let x = Tensor::<TestAutodiff, 4>::random([2, 1, 8, 10], Distribution::Normal(0.0, 1.0), &device);
    let glimpse = att.read(x, hdec.clone());
    assert_eq!(glimpse.dims(), [2, 1, 3, 3]);
    let canvas = att.write(glimpse, hdec);
    assert_eq!(canvas.dims(), [2, 1, 8, 10]);
    let grads = canvas.square().sum().backward();
    let dw = att.params.weight.grad(&grads).expect("linear weight gradient");
    assert!(to_vec(dw.abs().sum())[0] > 0.0);
}

type Fused = burn::backend::Autodiff<kiln_cpu::KilnCpu<burn_flex::Flex>>;

static FILTERBANK_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn counted_filterbank(
    centre: &burn::tensor::ops::FloatTensor<Fused>,
    delta: &burn::tensor::ops::FloatTensor<Fused>,
    sigma2: &burn::tensor::ops::FloatTensor<Fused>,
    n: usize,
    size: usize,
    eps: f64,
) -> Option<burn::tensor::ops::FloatTensor<Fused>> {
    FILTERBANK_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    kiln_cpu::filterbank_autodiff::<burn_flex::Flex, NoCheckpointing>(centre, delta, sigma2, n, size, eps)
}

/// `F_X`, `F_Y` and the gradient of the raw parameters under a weighted sum of both, on `B`.
fn banks_and_grad<B: burn::tensor::backend::AutodiffBackend>(raw: &[f32], r: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let device = Default::default();
    let raw = Tensor::<B, 2>::from_data(TensorData::new(raw.to_vec(), [4, 5]), &device).require_grad();
    let params = FilterbankParams::from_raw(raw.clone(), 28, 20, 5);
    let banks = filterbanks(&params, 28, 20, 5, 1e-8);
    let flat = Tensor::cat(vec![banks.fx.reshape([-1]), banks.fy.reshape([-1])], 0);
    let r = Tensor::<B, 1>::from_data(TensorData::new(r.to_vec(), [r.len()]), &device);
    let grads = (flat.clone() * r).sum().backward();
    (to_vec(flat), to_vec(raw.grad(&grads).expect("raw grad")))
}

/// A registered fused filterbank (kiln-cpu's, counted) builds both axes and agrees with the
/// composed one, values and the gradient of the raw parameters (1e-5 absolute).
#[test]
fn a_registered_fused_filterbank_runs_and_agrees() {
    crate::fused::register(crate::fused::FilterbankKernel::<Fused>(counted_filterbank));
    let raw = to_vec(raw_params(4));
    let r = to_vec(Tensor::<TestBackend, 1>::random([4 * 5 * 48], Distribution::Default, &device()));
    let before = FILTERBANK_CALLS.load(std::sync::atomic::Ordering::SeqCst);
    let fused = banks_and_grad::<Fused>(&raw, &r);
    assert_eq!(FILTERBANK_CALLS.load(std::sync::atomic::Ordering::SeqCst) - before, 2, "one call per axis");
    let composed = banks_and_grad::<TestAutodiff>(&raw, &r);
    assert_slice_close(&fused.0, &composed.0, 1e-5, "filterbanks");
    assert_slice_close(&fused.1, &composed.1, 1e-5, "raw parameter gradient");
}
