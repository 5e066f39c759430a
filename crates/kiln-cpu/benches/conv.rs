//! Per-op profile of the DCGAN-64 convolutions (batch 64) on burn-flex and on `KilnCpu<Flex>`,
//! a `gemm`-crate ceiling for the same shapes, and a full DCGAN-64 train step on both backends.
//!
//! `cargo bench -p kiln-cpu --bench conv [-- ops|kiln|gemm|step|all] [reps]` (`kiln`: the per-op
//! table without flex's column, which takes most of the run time)
//!
//! Baseline and KilnCpu are interleaved op by op (and step by step), and the load average is
//! printed with every table: other builds on the same two cores disturb the figures, so only
//! figures from one run should be compared.
#![allow(unsafe_code)] // the gemm ceiling calls `gemm::gemm` directly; bounds are checked below.

use burn::backend::Autodiff;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::activation::{leaky_relu, relu, softplus, tanh};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, FloatTensor};
use burn::tensor::{Distribution, Tensor};
use burn_flex::Flex;
use kiln_cpu::KilnCpu;
use std::time::Instant;

type Kiln = KilnCpu<Flex>;
const BATCH: usize = 64;

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Best of `reps` timed runs after one warm-up, in milliseconds. The minimum, not the median:
/// on a shared machine the noise only ever adds time, so the fastest run is the best estimate.
fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[0]
}

fn rand(shape: [usize; 4]) -> FloatTensor<Flex> {
    Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, 1.0), &Default::default()).into_primitive().tensor()
}

/// One DCGAN-64 layer: a conv (discriminator) or a transposed conv (generator).
struct Layer {
    name: &'static str,
    transposed: bool,
    cin: usize,
    cout: usize,
    /// Spatial size of the layer's input.
    size: usize,
    stride: usize,
    padding: usize,
}

impl Layer {
    fn out_size(&self) -> usize {
        if self.transposed {
            (self.size - 1) * self.stride + 4 - 2 * self.padding
        } else {
            (self.size + 2 * self.padding - 4) / self.stride + 1
        }
    }
    /// Multiply-adds × 2 of the forward op (each backward op costs the same).
    fn flops(&self) -> f64 {
        let positions = if self.transposed { self.size } else { self.out_size() };
        2.0 * (BATCH * self.cin * self.cout * 16 * positions * positions) as f64
    }
}

const LAYERS: [Layer; 10] = [
    Layer { name: "D1 conv 3→64 64²→32²", transposed: false, cin: 3, cout: 64, size: 64, stride: 2, padding: 1 },
    Layer {
        name: "D2 conv 64→128 32²→16²", transposed: false, cin: 64, cout: 128, size: 32, stride: 2, padding: 1
    },
    Layer {
        name: "D3 conv 128→256 16²→8²", transposed: false, cin: 128, cout: 256, size: 16, stride: 2, padding: 1
    },
    Layer {
        name: "D4 conv 256→512 8²→4²", transposed: false, cin: 256, cout: 512, size: 8, stride: 2, padding: 1
    },
    Layer { name: "D5 conv 512→1 4²→1²", transposed: false, cin: 512, cout: 1, size: 4, stride: 1, padding: 0 },
    Layer {
        name: "G1 convT 100→512 1²→4²", transposed: true, cin: 100, cout: 512, size: 1, stride: 1, padding: 0
    },
    Layer {
        name: "G2 convT 512→256 4²→8²", transposed: true, cin: 512, cout: 256, size: 4, stride: 2, padding: 1
    },
    Layer {
        name: "G3 convT 256→128 8²→16²", transposed: true, cin: 256, cout: 128, size: 8, stride: 2, padding: 1
    },
    Layer {
        name: "G4 convT 128→64 16²→32²", transposed: true, cin: 128, cout: 64, size: 16, stride: 2, padding: 1
    },
    Layer { name: "G5 convT 64→3 32²→64²", transposed: true, cin: 64, cout: 3, size: 32, stride: 2, padding: 1 },
];

/// Times forward, input gradient and weight gradient of `l` on backend `B` (whose primitives
/// are flex's), in ms.
fn time_layer<B: Backend<FloatTensorPrimitive = FloatTensor<Flex>>>(l: &Layer, reps: usize) -> [f64; 3] {
    let (s, o) = (l.size, l.out_size());
    let x = rand([BATCH, l.cin, s, s]);
    let dy = rand([BATCH, l.cout, o, o]);
    if l.transposed {
        let w = rand([l.cin, l.cout, 4, 4]);
        let opt = ConvTransposeOptions::new([l.stride; 2], [l.padding; 2], [0, 0], [1, 1], 1);
        [
            time_ms(reps, || drop(B::conv_transpose2d(x.clone(), w.clone(), None, opt.clone()))),
            time_ms(reps, || drop(B::conv_transpose2d_x_backward(w.clone(), dy.clone(), opt.clone()))),
            time_ms(reps, || drop(B::conv_transpose2d_weight_backward(x.clone(), w.clone(), dy.clone(), opt.clone()))),
        ]
    } else {
        let w = rand([l.cout, l.cin, 4, 4]);
        let opt = ConvOptions::new([l.stride; 2], [l.padding; 2], [1, 1], 1);
        [
            time_ms(reps, || drop(B::conv2d(x.clone(), w.clone(), None, opt.clone()))),
            time_ms(reps, || drop(B::conv2d_x_backward(x.clone(), w.clone(), dy.clone(), opt.clone()))),
            time_ms(reps, || drop(B::conv2d_weight_backward(x.clone(), w.clone(), dy.clone(), opt.clone()))),
        ]
    }
}

/// `with_flex = false` times only kiln (flex's ops take most of the run time).
fn ops(reps: usize, with_flex: bool) {
    println!("\n## Per-op times, batch {BATCH} (best of {reps}; load before: {})\n", load());
    println!("| layer | GFLOP | op | flex ms | flex GFLOP/s | kiln ms | kiln GFLOP/s | speed-up |");
    println!("|---|---|---|---|---|---|---|---|");
    let (mut tf, mut tk) = ([0.0; 2], [0.0; 2]);
    // `KILN_BENCH_LAYER=D1` restricts the table to matching layers (for profiling one op).
    let filter = std::env::var("KILN_BENCH_LAYER").unwrap_or_default();
    for l in LAYERS.iter().filter(|l| l.name.contains(filter.as_str())) {
        let f = if with_flex { time_layer::<Flex>(l, reps) } else { [f64::NAN; 3] };
        let k = time_layer::<Kiln>(l, reps);
        let gf = l.flops() / 1e9;
        for (i, op) in ["fwd", "dx", "dw"].iter().enumerate() {
            println!(
                "| {} | {gf:.2} | {op} | {:.1} | {:.0} | {:.1} | {:.0} | {:.1}× |",
                l.name,
                f[i],
                gf / f[i] * 1e3,
                k[i],
                gf / k[i] * 1e3,
                f[i] / k[i]
            );
        }
        let side = usize::from(l.transposed);
        tf[side] += f.iter().sum::<f64>();
        tk[side] += k.iter().sum::<f64>();
    }
    // A DCGAN step runs D forward and backward three times (real, fake for D, fake for G) and G
    // once; every pass here computes both gradients, so this slightly over-counts.
    let step = |t: [f64; 2]| 3.0 * t[0] + t[1];
    println!(
        "\nconv time per DCGAN step (3×D + 1×G, fwd+dx+dw): flex {:.0} ms ({:.1} img/s ceiling), kiln {:.0} ms ({:.1} img/s ceiling); load after: {}",
        step(tf),
        BATCH as f64 / step(tf) * 1e3,
        step(tk),
        BATCH as f64 / step(tk) * 1e3,
        load()
    );
}

/// The GEMM each layer reduces to (m = out channels, n = batch·positions, k = in·16) on the
/// `gemm` crate, one call with all its threads: the ceiling for an im2col convolution.
fn gemm_ceiling(reps: usize) {
    println!("\n## gemm 0.19 ceiling on the im2col shapes (best of {reps}; load: {})\n", load());
    println!("| layer | m | n | k | ms | GFLOP/s |");
    println!("|---|---|---|---|---|---|");
    for l in &LAYERS {
        let positions = if l.transposed { l.size } else { l.out_size() };
        let (m, n, k) = if l.transposed {
            (l.cout * 16, BATCH * positions * positions, l.cin)
        } else {
            (l.cout, BATCH * positions * positions, l.cin * 16)
        };
        let a = vec![1.0f32; m * k];
        let b = vec![1.0f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let ms = time_ms(reps, || {
            // SAFETY: a is m×k, b is k×n and c is m×n, all row-major and fully allocated above.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(0),
                )
            }
        });
        println!("| {} | {m} | {n} | {k} | {ms:.1} | {:.0} |", l.name, l.flops() / ms / 1e6);
    }
}

#[derive(Module, Debug)]
struct Generator<B: Backend> {
    convs: Vec<ConvTranspose2d<B>>,
    norms: Vec<BatchNorm<B>>,
}

#[derive(Module, Debug)]
struct Discriminator<B: Backend> {
    convs: Vec<Conv2d<B>>,
    norms: Vec<BatchNorm<B>>,
}

impl<B: Backend> Generator<B> {
    fn new(device: &B::Device) -> Self {
        let ch = [100, 512, 256, 128, 64, 3];
        let convs = (0..5)
            .map(|i| {
                let (s, p) = if i == 0 { (1, 0) } else { (2, 1) };
                ConvTranspose2dConfig::new([ch[i], ch[i + 1]], [4, 4])
                    .with_stride([s, s])
                    .with_padding([p, p])
                    .with_bias(false)
                    .init(device)
            })
            .collect();
        let norms = (1..5).map(|i| BatchNormConfig::new(ch[i]).init(device)).collect();
        Self { convs, norms }
    }
    fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = z; // [N, 100, 1, 1]
        for (conv, norm) in self.convs.iter().zip(&self.norms) {
            x = relu(norm.forward(conv.forward(x)));
        }
        tanh(self.convs[4].forward(x)) // [N, 3, 64, 64]
    }
}

impl<B: Backend> Discriminator<B> {
    fn new(device: &B::Device) -> Self {
        let ch = [3, 64, 128, 256, 512, 1];
        let convs = (0..5)
            .map(|i| {
                let (s, p) = if i == 4 { (1, 0) } else { (2, 1) };
                Conv2dConfig::new([ch[i], ch[i + 1]], [4, 4])
                    .with_stride([s, s])
                    .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                    .with_bias(false)
                    .init(device)
            })
            .collect();
        let norms = (2..5).map(|i| BatchNormConfig::new(ch[i]).init(device)).collect();
        Self { convs, norms }
    }
    /// Logits, `[N]`.
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 1> {
        let mut x = leaky_relu(self.convs[0].forward(x), 0.2); // [N, 64, 32, 32]
        for (conv, norm) in self.convs[1..4].iter().zip(&self.norms) {
            x = leaky_relu(norm.forward(conv.forward(x)), 0.2);
        }
        self.convs[4].forward(x).flatten(0, 3) // [N]
    }
}

/// Seconds per DCGAN-64 train step (pytorch/examples dcgan: Adam 2e-4, β1 0.5), best of `reps`.
fn step_time<B: AutodiffBackend>(reps: usize) -> f64 {
    let device = Default::default();
    B::seed(&device, 0);
    let mut g = Generator::<B>::new(&device);
    let mut d = Discriminator::<B>::new(&device);
    let mut opt_g = AdamConfig::new().with_beta_1(0.5).init::<B, Generator<B>>();
    let mut opt_d = AdamConfig::new().with_beta_1(0.5).init::<B, Discriminator<B>>();
    let real = Tensor::<B, 4>::random([BATCH, 3, 64, 64], Distribution::Uniform(-1.0, 1.0), &device);
    let mut times = Vec::new();
    for _ in 0..reps + 1 {
        let start = Instant::now();
        let z = Tensor::<B, 4>::random([BATCH, 100, 1, 1], Distribution::Normal(0.0, 1.0), &device);
        let fake = g.forward(z);
        // D step: log D(real) + log(1 − D(G(z))), as softplus of the logits.
        let loss_d = softplus(d.forward(real.clone()).neg(), 1.0).mean()
            + softplus(d.forward(fake.clone().detach()), 1.0).mean();
        let grads = GradientsParams::from_grads(loss_d.backward(), &d);
        d = opt_d.step(2e-4, d, grads);
        // G step: −log D(G(z)).
        let loss_g = softplus(d.forward(fake).neg(), 1.0).mean();
        let grads = GradientsParams::from_grads(loss_g.backward(), &g);
        g = opt_g.step(2e-4, g, grads);
        let _ = loss_g.into_scalar();
        times.push(start.elapsed().as_secs_f64());
    }
    times.remove(0);
    times.sort_by(f64::total_cmp);
    times[0]
}

fn step(reps: usize) {
    println!("\n## Full DCGAN-64 train step, batch {BATCH} (best of {reps}; load before: {})\n", load());
    println!("| round | flex s/step | flex img/s | kiln s/step | kiln img/s |");
    println!("|---|---|---|---|---|");
    for round in 0..2 {
        let f = step_time::<Autodiff<Flex>>(reps);
        let k = step_time::<Autodiff<Kiln>>(reps);
        println!("| {round} | {f:.3} | {:.1} | {k:.3} | {:.1} |", BATCH as f64 / f, BATCH as f64 / k);
    }
    println!("\nload after: {}", load());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let what = args.first().map(String::as_str).unwrap_or("all");
    let reps = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(3);
    println!("threads: {}", rayon::current_num_threads());
    if matches!(what, "ops" | "all") {
        ops(reps, true);
    }
    if what == "kiln" {
        ops(reps, false);
    }
    if matches!(what, "gemm" | "all") {
        gemm_ceiling(reps);
    }
    if matches!(what, "step" | "all") {
        step(reps);
    }
}
