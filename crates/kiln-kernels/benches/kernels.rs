//! Criterion benchmarks of kiln-kernels on Flex (burn-flex with its default features: rayon
//! threads and SIMD). `golden/bench_torch.py` times the same operations in PyTorch.
//!
//! Run with `cargo bench -p kiln-kernels --bench kernels`. Throughput is reported per element of
//! the larger side of a resize (the input when downscaling, the output when upscaling), and
//! per floating-point operation for attention and the VQ search (see each group).

use std::time::Duration;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_kernels::vq::nearest_code;
use kiln_kernels::{
    AttentionMask, Cubic, Filter, ResizeOptions, ResizeTarget, SdpaOptions, resize, scaled_dot_product_attention,
};

type B = Flex;

/// As in the `kiln` binary: freed large blocks are reused instead of being faulted in afresh.
#[global_allocator]
static ALLOC: kiln_cpu::BlockCache = kiln_cpu::BlockCache::new();

fn sync(device: &burn::tensor::Device<B>) {
    B::sync(device).expect("flex sync");
}

fn resize_benches(c: &mut Criterion) {
    let device = Default::default();
    let mut group = c.benchmark_group("resize");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));

    let cases = [
        ("bilinear_aa", Filter::Bilinear, true),
        ("bicubic_aa", Filter::Bicubic(Cubic::Pil), true),
        ("bilinear", Filter::Bilinear, false),
        ("bicubic", Filter::Bicubic(Cubic::Torch), false),
    ];
    let big = Tensor::<B, 4>::random([64, 3, 256, 256], Distribution::Default, &device);
    let small = Tensor::<B, 4>::random([64, 3, 64, 64], Distribution::Default, &device);
    for (name, filter, antialias) in cases {
        let options = ResizeOptions::new(filter).with_antialias(antialias);
        if antialias {
            group.throughput(Throughput::Elements((64 * 3 * 256 * 256) as u64));
            group.bench_function(format!("{name}_256_to_64"), |b| {
                b.iter(|| {
                    let target = ResizeTarget::Size { height: 64, width: 64 };
                    let y = resize(big.clone(), target, &options).expect("valid");
                    sync(&device);
                    y
                })
            });
        } else {
            group.throughput(Throughput::Elements((64 * 3 * 256 * 256) as u64));
            group.bench_function(format!("{name}_64_to_256"), |b| {
                b.iter(|| {
                    let target = ResizeTarget::Size { height: 256, width: 256 };
                    let y = resize(small.clone(), target, &options).expect("valid");
                    sync(&device);
                    y
                })
            });
        }
    }
    group.finish();
}

fn attention_benches(c: &mut Criterion) {
    type AB = Autodiff<Flex>;
    let device = Default::default();
    let (b, h, l, d): (usize, usize, usize, usize) = (8, 8, 1024, 64);
    let mut group = c.benchmark_group("attention");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    // Forward 4·B·H·L²·D (QKᵀ and PV), backward twice that (dQ, dK, dP, dV).
    group.throughput(Throughput::Elements((12 * b * h * l * l * d) as u64));
    let make = || Tensor::<AB, 4>::random([b, h, l, d], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let (q, k, v) = (make(), make(), make());
    group.bench_function("sdpa_b8_h8_l1024_d64_fwd_bwd", |bench| {
        bench.iter(|| {
            let y = scaled_dot_product_attention(
                q.clone(),
                k.clone(),
                v.clone(),
                AttentionMask::None,
                SdpaOptions::default(),
            );
            let grads = y.sum().backward();
            let dq = q.grad(&grads);
            sync(&device);
            dq
        })
    });
    group.finish();
}

fn vq_benches(c: &mut Criterion) {
    let device = Default::default();
    let (n, d, k): (usize, usize, usize) = (65536, 64, 512);
    let mut group = c.benchmark_group("vq");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    // The [N, K] GEMM, 2·N·K·D, dominates.
    group.throughput(Throughput::Elements((2 * n * k * d) as u64));
    let x = Tensor::<B, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &device);
    let codebook = Tensor::<B, 2>::random([k, d], Distribution::Normal(0.0, 1.0), &device);
    group.bench_function("nearest_code_n65536_d64_k512", |bench| {
        bench.iter(|| {
            let idx = nearest_code(x.clone(), codebook.clone());
            sync(&device);
            idx
        })
    });
    group.finish();
}

criterion_group!(benches, resize_benches, attention_benches, vq_benches);
criterion_main!(benches);
