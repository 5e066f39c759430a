use burn::tensor::{Distribution, Int, Tensor, TensorData};

use super::*;
use crate::vq::{
    EmaCodebook, code_counts, dead_codes, lookup, nearest_code, perplexity, quantize, restart_dead_codes,
    squared_distances, usage,
};

fn randn(shape: [usize; 2]) -> Tensor<TestBackend, 2> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device())
}

#[test]
fn nearest_code_matches_brute_force() {
    let (n, k, d) = (200, 37, 9);
    let x = randn([n, d]);
    let cb = randn([k, d]);
    let idx = to_ints(nearest_code(x.clone(), cb.clone()));
    let (xv, cv) = (to_vec(x.clone()), to_vec(cb.clone()));
    let dist = to_vec(squared_distances(x, cb));
    for i in 0..n {
        let exact: Vec<f32> = (0..k).map(|j| (0..d).map(|t| (xv[i * d + t] - cv[j * d + t]).powi(2)).sum()).collect();
        let best = (0..k).min_by(|&a, &b| exact[a].total_cmp(&exact[b])).expect("k > 0");
        assert_eq!(idx[i] as usize, best, "row {i}");
        for j in 0..k {
            assert!((dist[i * k + j] - exact[j]).abs() < 1e-4);
        }
    }
}

#[test]
fn indices_to_codes_give_the_same_quantized_tensor() {
    let x = randn([64, 8]);
    let cb = randn([16, 8]);
    let out = quantize(x, cb.clone());
    let again = lookup(cb.clone(), out.indices.clone());
    assert_slice_close(&to_vec(out.quantized), &to_vec(again.clone()), 1e-6, "quantized");
    // Quantizing codes returns them unchanged.
    let back = quantize(again.clone(), cb);
    assert_eq!(to_ints(back.indices), to_ints(out.indices));
    assert_slice_close(&to_vec(back.quantized), &to_vec(again), 0.0, "codes are fixed points");
}

#[test]
fn straight_through_and_losses_route_gradients() {
    let device = device();
    let x = Tensor::<TestAutodiff, 2>::random([32, 4], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let cb = Tensor::<TestAutodiff, 2>::random([8, 4], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let g = Tensor::<TestAutodiff, 2>::random([32, 4], Distribution::Normal(0.0, 1.0), &device);

    // The estimator passes the output gradient to x unchanged and none to the codebook.
    let out = quantize(x.clone(), cb.clone());
    let grads = (out.quantized * g.clone()).sum().backward();
    assert_slice_close(&to_vec(x.grad(&grads).expect("dx")), &to_vec(g.inner()), 1e-6, "STE");
    assert!(cb.grad(&grads).is_none());

    // Commitment loss trains x only, codebook loss the codebook only.
    let out = quantize(x.clone(), cb.clone());
    let grads = out.commitment_loss.backward();
    assert!(x.grad(&grads).is_some() && cb.grad(&grads).is_none());
    let out = quantize(x.clone(), cb.clone());
    let q = lookup(cb.clone().inner(), out.indices.clone().inner());
    let grads = out.codebook_loss.backward();
    assert!(x.grad(&grads).is_none());
    // d/dc mean((x − c)²) = −2/(N·D) Σ (x − c) over the rows assigned to c.
    let dc = to_vec(cb.grad(&grads).expect("dc"));
    let diff = to_vec(x.clone().inner() - q);
    let idx = to_ints(out.indices.inner());
    let mut want = vec![0.0f32; 8 * 4];
    for (i, &c) in idx.iter().enumerate() {
        for t in 0..4 {
            want[c as usize * 4 + t] -= 2.0 / 128.0 * diff[i * 4 + t];
        }
    }
    assert_slice_close(&dc, &want, 1e-6, "codebook gradient");
}

#[test]
fn usage_statistics() {
    let device = device();
    let idx = Tensor::<TestBackend, 1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3, 0, 1, 2, 3], [8]), &device);
    let counts = code_counts(idx, 8);
    assert_eq!(to_vec(counts.clone()), vec![2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
    assert!((to_vec(perplexity(counts.clone()))[0] - 4.0).abs() < 1e-4);
    assert!((to_vec(usage(counts))[0] - 0.5).abs() < 1e-6);
    let collapsed = Tensor::<TestBackend, 1>::from_floats([5.0, 0.0, 0.0], &device);
    assert!((to_vec(perplexity(collapsed))[0] - 1.0).abs() < 1e-4);
}

#[test]
fn ema_update_matches_hand_computation() {
    let device = device();
    let cb = Tensor::<TestBackend, 2>::from_floats([[0.0, 0.0], [10.0, 10.0], [-5.0, 5.0]], &device);
    let x = Tensor::<TestBackend, 2>::from_floats([[1.0, 0.0], [0.0, 1.0], [9.0, 11.0]], &device);
    let idx = nearest_code(x.clone(), cb.clone());
    assert_eq!(to_ints(idx.clone()), vec![0, 0, 1]);
    let (decay, eps) = (0.9, 1e-5);
    let (state, new_cb) = EmaCodebook::new(cb).update(x, idx, decay, eps);
    // N = 0.9·1 + 0.1·[2, 1, 0]; m = 0.9·c + 0.1·Σx.
    let n = [1.1f64, 1.0, 0.9];
    let m = [[0.1f64, 0.1], [9.9, 10.1], [-4.5, 4.5]];
    let total: f64 = n.iter().sum();
    let mut want = Vec::new();
    for k in 0..3 {
        let smoothed = (n[k] + eps) / (total + 3.0 * eps) * total;
        want.extend(m[k].iter().map(|v| (v / smoothed) as f32));
    }
    assert_slice_close(&to_vec(state.cluster_size), &n.map(|v| v as f32), 1e-6, "N");
    assert_slice_close(&to_vec(new_cb), &want, 1e-5, "codebook");
}

#[test]
fn dead_codes_restart_from_the_batch() {
    let device = device();
    TestBackend::seed(&device, 7);
    let cb = Tensor::<TestBackend, 2>::from_floats([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], &device);
    let cluster = Tensor::<TestBackend, 1>::from_floats([5.0, 0.001, 3.0, 0.0], &device);
    let x = randn([10, 2]).add_scalar(100.0);
    let dead = dead_codes(cluster, 0.01);
    let new_cb = to_vec(restart_dead_codes(cb, dead, x.clone()));
    let xs = to_vec(x);
    assert_eq!(&new_cb[0..2], &[0.0, 0.0]);
    assert_eq!(&new_cb[4..6], &[2.0, 2.0]);
    for code in [1, 3] {
        let row = &new_cb[code * 2..code * 2 + 2];
        assert!(xs.chunks(2).any(|r| r == row), "code {code} is not a batch vector");
    }
}
