// values: crates/kiln-kernels/golden/make_golden.py (torch 2.15 F.max_pool2d with indices,
// F.max_unpool2d, F.avg_pool2d, F.adaptive_avg_pool2d, and their input gradients), file
// golden/pool.json. Tolerance 1e-5 absolute (sums of at most 99 f32 terms of N(0, 1) values).

use burn::tensor::Tensor;
use serde_json::Value;

use super::*;
use crate::pool::{Pool2d, adaptive_avg_pool2d, avg_pool2d, max_pool2d, max_pool2d_with_indices, max_unpool2d};

const TOL: f32 = 1e-5;

fn pair(v: &Value) -> [usize; 2] {
    let a = v.as_array().expect("pair");
    [a[0].as_u64().expect("int") as usize, a[1].as_u64().expect("int") as usize]
}

fn geometry(case: &Value) -> Pool2d {
    let mut pool = Pool2d::new(pair(&case["kernel"]))
        .with_stride(pair(&case["stride"]))
        .with_padding(pair(&case["padding"]))
        .with_ceil_mode(case["ceil_mode"].as_bool().expect("ceil_mode"));
    if case.get("dilation").is_some() {
        pool = pool.with_dilation(pair(&case["dilation"]));
    }
    pool
}

/// Runs one golden case on backend `B`, returning the output.
fn run<B: burn::tensor::backend::Backend>(case: &Value, x: Tensor<B, 4>) -> Tensor<B, 4> {
    match case["op"].as_str().expect("op") {
        "max" => max_pool2d(x, &geometry(case)).expect("valid"),
        "avg" => avg_pool2d(x, &geometry(case), case["count_include_pad"].as_bool().expect("flag")).expect("valid"),
        "adaptive" => adaptive_avg_pool2d(x, pair(&case["output_size"])).expect("valid"),
        other => panic!("unknown op {other}"),
    }
}

#[test]
fn outputs_match_pytorch() {
    let device = device();
    for (name, case) in &golden("pool.json") {
        let x: Tensor<TestBackend, 4> = tensor(&case["input"], &device);
        assert_close(run(case, x), &case["output"], TOL, name);
    }
}

#[test]
fn gradients_match_pytorch() {
    let device = device();
    for (name, case) in &golden("pool.json") {
        let x = tensor::<TestAutodiff, 4>(&case["input"], &device).require_grad();
        let g: Tensor<TestAutodiff, 4> = tensor(&case["grad_out"], &device);
        let grads = (run(case, x.clone()) * g).sum().backward();
        let dx = x.grad(&grads).expect("x has a gradient");
        assert_close(dx, &case["grad_input"], TOL, &format!("{name} grad"));
    }
}

#[test]
fn indices_and_unpooling_match_pytorch() {
    let device = device();
    let mut unpooled = 0;
    for (name, case) in &golden("pool.json") {
        if case["op"] != "max" {
            continue;
        }
        let x: Tensor<TestBackend, 4> = tensor(&case["input"], &device);
        let pool = geometry(case);
        let (y, idx) = max_pool2d_with_indices(x.clone(), &pool).expect("valid");
        let want: Vec<i64> =
            case["indices"].as_array().expect("indices").iter().map(|v| v.as_i64().expect("int")).collect();
        assert_eq!(to_ints(idx.clone()), want, "{name}: indices");
        if case["unpooled"].is_object() {
            let [_, _, h, w] = x.dims();
            let un = max_unpool2d(y, idx, &pool, Some([h, w])).expect("valid");
            // Three windows can share a maximum; (a + a + a)/3 rounds in the last bit.
            assert_close(un, &case["unpooled"], 1e-6, &format!("{name} unpool"));
            unpooled += 1;
        }
    }
    assert!(unpooled >= 4);
}

#[test]
fn unpool_default_size_inverts_non_overlapping_pooling() {
    let device = device();
    let x = Tensor::<TestBackend, 4>::from_floats(
        [[[[1.0, 5.0, 2.0, 0.0], [3.0, 4.0, 7.0, 8.0], [0.0, 0.0, 1.0, 1.0], [9.0, 0.0, 1.0, 2.0]]]],
        &device,
    );
    let pool = Pool2d::new([2, 2]);
    let (y, idx) = max_pool2d_with_indices(x, &pool).expect("valid");
    let un = max_unpool2d(y, idx, &pool, None).expect("valid");
    assert_eq!(to_vec(un), vec![0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 8.0, 0.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 2.0]);
}

#[test]
fn bad_windows_are_errors() {
    let device = device();
    let x = Tensor::<TestBackend, 4>::zeros([1, 1, 3, 3], &device);
    assert!(max_pool2d(x.clone(), &Pool2d::new([4, 4])).is_err());
    assert!(avg_pool2d(x.clone(), &Pool2d::new([0, 1]), true).is_err());
    assert!(adaptive_avg_pool2d(x, [0, 2]).is_err());
}
