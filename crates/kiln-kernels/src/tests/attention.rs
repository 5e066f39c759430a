// values: crates/kiln-kernels/golden/make_golden.py (torch 2.15 F.scaled_dot_product_attention,
// and softmax((QKᵀ + αM)/√d)·V written out for the scaled additive mask; with gradients of q, k,
// v), file golden/attention.json. Tolerance 1e-5 absolute.

use burn::module::Param;
use burn::tensor::{Bool, Distribution, Tensor};

use super::*;
use crate::attention::{AttentionMask, SdpaOptions, attention_weights, scaled_dot_product_attention};
use crate::fused::{self, AttentionKernel};
use crate::self_attention::SelfAttention2dConfig;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::tensor::ops::FloatTensor;
use std::sync::atomic::{AtomicUsize, Ordering};

const TOL: f32 = 1e-5;

fn golden_mask<B: burn::tensor::backend::Backend>(case: &serde_json::Value, device: &B::Device) -> AttentionMask<B> {
    if case.get("mask_bool").is_some() {
        AttentionMask::Keep(bool_tensor(&case["mask_bool"], device))
    } else if let Some(m) = case.get("mask_float") {
        match case.get("alpha").and_then(|a| a.as_f64()) {
            Some(alpha) => AttentionMask::ScaledAdditive { mask: tensor(m, device), alpha },
            None => AttentionMask::Additive(tensor(m, device)),
        }
    } else {
        AttentionMask::None
    }
}

fn golden_options(case: &serde_json::Value) -> SdpaOptions {
    SdpaOptions { causal: case["causal"].as_bool().expect("causal"), scale: case["scale"].as_f64() }
}

#[test]
fn matches_pytorch() {
    let device = device();
    for (name, case) in &golden("attention.json") {
        let q: Tensor<TestBackend, 4> = tensor(&case["q"], &device);
        let k = tensor(&case["k"], &device);
        let v = tensor(&case["v"], &device);
        let y = scaled_dot_product_attention(q, k, v, golden_mask(case, &device), golden_options(case));
        assert_close(y, &case["output"], TOL, name);
    }
}

#[test]
fn gradients_match_pytorch() {
    let device = device();
    for (name, case) in &golden("attention.json") {
        let q = tensor::<TestAutodiff, 4>(&case["q"], &device).require_grad();
        let k = tensor::<TestAutodiff, 4>(&case["k"], &device).require_grad();
        let v = tensor::<TestAutodiff, 4>(&case["v"], &device).require_grad();
        let g: Tensor<TestAutodiff, 4> = tensor(&case["grad_out"], &device);
        let y = scaled_dot_product_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            golden_mask(case, &device),
            golden_options(case),
        );
        let grads = (y * g).sum().backward();
        for (t, key) in [(q, "grad_q"), (k, "grad_k"), (v, "grad_v")] {
            let dt = t.grad(&grads).expect("gradient");
            assert_close(dt, &case[key], TOL, &format!("{name} {key}"));
        }
    }
}

/// kiln-cpu's blocked attention as a registered fused kernel, counted so that the test below
/// knows it ran.
static FUSED_CALLS: AtomicUsize = AtomicUsize::new(0);
type Fused = burn::backend::Autodiff<kiln_cpu::KilnCpu<burn_flex::Flex>>;

fn counted(
    q: &FloatTensor<Fused>,
    k: &FloatTensor<Fused>,
    v: &FloatTensor<Fused>,
    causal: bool,
    scale: f64,
) -> Option<FloatTensor<Fused>> {
    FUSED_CALLS.fetch_add(1, Ordering::SeqCst);
    kiln_cpu::attention_autodiff::<burn_flex::Flex, NoCheckpointing>(q, k, v, causal, scale)
}

#[test]
fn a_registered_fused_kernel_runs_unmasked_and_matches_pytorch() {
    assert!(fused::find::<AttentionKernel<Fused>>().is_none(), "nothing is registered until someone registers it");
    fused::register(AttentionKernel::<Fused>(counted));
    let device = Default::default();
    for (name, case) in &golden("attention.json") {
        let q = tensor::<Fused, 4>(&case["q"], &device).require_grad();
        let k = tensor::<Fused, 4>(&case["k"], &device).require_grad();
        let v = tensor::<Fused, 4>(&case["v"], &device).require_grad();
        let g: Tensor<Fused, 4> = tensor(&case["grad_out"], &device);
        let mask = golden_mask(case, &device);
        let unmasked = matches!(mask, AttentionMask::None);
        let before = FUSED_CALLS.load(Ordering::SeqCst);
        let y = scaled_dot_product_attention(q.clone(), k.clone(), v.clone(), mask, golden_options(case));
        let ran = FUSED_CALLS.load(Ordering::SeqCst) - before;
        assert_eq!(ran, usize::from(unmasked), "{name}: the fused kernel runs exactly when there is no mask");
        assert_close(y.clone(), &case["output"], TOL, name);
        let grads = (y * g).sum().backward();
        for (t, key) in [(q, "grad_q"), (k, "grad_k"), (v, "grad_v")] {
            let dt = t.grad(&grads).expect("gradient");
            assert_close(dt, &case[key], TOL, &format!("{name} {key} (fused: {unmasked})"));
        }
    }
}

fn random(shape: [usize; 4]) -> Tensor<TestBackend, 4> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device())
}

#[test]
fn rows_sum_to_one_and_masked_keys_get_no_weight() {
    let device = device();
    let (q, k) = (random([2, 2, 5, 8]), random([2, 2, 9, 8]));
    // Keep every other key, and key 0 always.
    let keep: Vec<bool> = (0..9).map(|j| j % 2 == 0).collect();
    let keep = Tensor::<TestBackend, 1, Bool>::from_data(burn::tensor::TensorData::new(keep.clone(), [9]), &device)
        .reshape([1, 1, 1, 9]);
    for (mask, causal) in [
        (AttentionMask::None, false),
        (AttentionMask::Keep(keep.clone()), false),
        (AttentionMask::Keep(keep), true),
        (AttentionMask::None, true),
    ] {
        let masked = matches!(mask, AttentionMask::Keep(_));
        let options = SdpaOptions { causal, scale: None };
        let w = attention_weights(q.clone(), k.clone(), mask, options);
        let rows = to_vec(w.clone().sum_dim(3));
        assert_slice_close(&rows, &vec![1.0; rows.len()], 1e-5, "row sums");
        let w = to_vec(w);
        for (idx, &p) in w.iter().enumerate() {
            let j = idx % 9;
            let i = (idx / 9) % 5;
            let blocked = (masked && j % 2 == 1) || (causal && j > i);
            if blocked {
                assert_eq!(p, 0.0, "weight on a masked key (i {i}, j {j})");
            }
        }
    }
}

#[test]
fn self_attention_starts_as_identity_and_learns_gamma() {
    let device = device();
    let block = SelfAttention2dConfig::new(16).init::<TestAutodiff>(&device);
    assert_eq!(block.query.weight.val().dims(), [2, 16, 1, 1]);
    let x = Tensor::<TestAutodiff, 4>::random([2, 16, 5, 6], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let y = block.forward(x.clone());
    assert_slice_close(&to_vec(y.clone()), &to_vec(x.clone()), 0.0, "γ = 0 gives the input");
    let grads = y.square().sum().backward();
    let dgamma = block.gamma.grad(&grads).expect("γ has a gradient");
    assert!(to_vec(dgamma)[0].abs() > 0.0);

    // With γ = 1 the block must add the attention output.
    let mut block = block;
    block.gamma = Param::from_tensor(Tensor::ones([1], &device));
    let y = block.forward(x.clone());
    let diff = to_vec((y - x).abs().max());
    assert!(diff[0] > 1e-3);
}
