//! `KilnCpu<Flex>` against burn-flex itself: every overridden op (the convolutions, `linear`, exp,
//! sigmoid and GELU) and the blocked attention, forward and the gradients
//! through `Autodiff`, on small random shapes covering stride, padding, dilation, output
//! padding, odd sizes whose last rows a strided conv drops, batch 1 and > 1, non-contiguous
//! inputs, and the fallbacks (groups > 1, f64).
//!
//! Tolerance: every compared tensor must satisfy `max|kiln − flex| ≤ 1e-4 · max|flex|` (the two
//! sum in different orders, so bit equality is not expected; observed errors are ~1e-7).

use burn::backend::Autodiff;
use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::activation::softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{Bool, ElementConversion, FloatDType, Tensor, TensorData, TensorPrimitive};
use burn_flex::Flex;
use kiln_cpu::KilnCpu;

type Ref = Autodiff<Flex>;
type Kiln = Autodiff<KilnCpu<Flex>>;

const TOL: f32 = 1e-4;

fn assert_close(what: &str, kiln: TensorData, flex: TensorData) {
    assert_eq!(kiln.shape, flex.shape, "{what}: shapes differ");
    let (a, b) =
        (kiln.convert::<f32>().into_vec::<f32>().expect("f32"), flex.convert::<f32>().into_vec::<f32>().expect("f32"));
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    let err = a.iter().zip(&b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(err <= TOL * scale, "{what}: max error {err:e} > {TOL:e} × {scale:e}");
}

/// Deterministic pseudo-random values in [-1, 1). Not burn's RNG: flex keeps one global seed
/// that the first random op after `seed` consumes, so tests running in parallel threads would
/// steal each other's seeds and the two backends would see different inputs.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn random(shape: [usize; 4], seed: u64) -> TensorData {
    TensorData::new(values(shape.iter().product(), seed), shape)
}

fn random1(n: usize, seed: u64) -> TensorData {
    TensorData::new(values(n, seed), [n])
}

/// The output and the gradients of x, weight and bias of `Σ op(x, w, b) · r` on backend `B`.
struct Run {
    y: TensorData,
    dx: TensorData,
    dw: TensorData,
    db: Option<TensorData>,
}

#[derive(Clone, Debug)]
enum Op {
    Conv(ConvOptions<2>),
    ConvT(ConvTransposeOptions<2>),
}

#[derive(Clone, Debug)]
struct Case {
    x: [usize; 4],
    w: [usize; 4],
    bias: bool,
    op: Op,
    /// Feed x as a transposed (non-contiguous) view of a `[n, c, w, h]` tensor.
    strided_x: bool,
}

fn run<B: AutodiffBackend>(case: &Case) -> Run {
    let device = Default::default();
    let xd = if case.strided_x {
        let [n, c, h, w] = case.x;
        Tensor::<B, 4>::from_data(random([n, c, w, h], 1), &device).swap_dims(2, 3)
    } else {
        Tensor::<B, 4>::from_data(random(case.x, 1), &device)
    };
    let x = xd.require_grad();
    let w = Tensor::<B, 4>::from_data(random(case.w, 2), &device).require_grad();
    let bias_len = match case.op {
        Op::Conv(_) => case.w[0],
        Op::ConvT(ref o) => case.w[1] * o.groups,
    };
    let b = case.bias.then(|| Tensor::<B, 1>::from_data(random1(bias_len, 3), &device).require_grad());
    let y = match &case.op {
        Op::Conv(o) => conv2d(x.clone(), w.clone(), b.clone(), o.clone()),
        Op::ConvT(o) => conv_transpose2d(x.clone(), w.clone(), b.clone(), o.clone()),
    };
    let r = Tensor::<B, 4>::from_data(random(y.dims(), 4), &device);
    let grads = (y.clone() * r).sum().backward();
    Run {
        y: y.into_data(),
        dx: x.grad(&grads).expect("x grad").into_data(),
        dw: w.grad(&grads).expect("w grad").into_data(),
        db: b.map(|b| b.grad(&grads).expect("b grad").into_data()),
    }
}

fn check(case: &Case) {
    let (k, f) = (run::<Kiln>(case), run::<Ref>(case));
    let what = format!("{case:?}");
    assert_close(&format!("output of {what}"), k.y, f.y);
    assert_close(&format!("x grad of {what}"), k.dx, f.dx);
    assert_close(&format!("weight grad of {what}"), k.dw, f.dw);
    if let (Some(kb), Some(fb)) = (k.db, f.db) {
        assert_close(&format!("bias grad of {what}"), kb, fb);
    }
}

/// A small deterministic generator for the random cases.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

#[test]
fn conv2d_matches_flex_on_random_shapes() {
    let mut rng = Lcg(7);
    let mut checked = 0;
    while checked < 40 {
        let (kh, kw) = (1 + rng.below(4), 1 + rng.below(4));
        let stride = [1 + rng.below(3), 1 + rng.below(3)];
        let dilation = [1 + rng.below(2), 1 + rng.below(2)];
        let padding = [rng.below(3), rng.below(3)];
        let (h, w) = (1 + rng.below(11), 1 + rng.below(11));
        // Skip shapes whose dilated kernel does not fit the padded input.
        if h + 2 * padding[0] < dilation[0] * (kh - 1) + 1 || w + 2 * padding[1] < dilation[1] * (kw - 1) + 1 {
            continue;
        }
        let (n, cin, cout) = (1 + rng.below(3), 1 + rng.below(5), 1 + rng.below(6));
        check(&Case {
            x: [n, cin, h, w],
            w: [cout, cin, kh, kw],
            bias: rng.below(2) == 0,
            op: Op::Conv(ConvOptions::new(stride, padding, dilation, 1)),
            strided_x: rng.below(4) == 0,
        });
        checked += 1;
    }
}

#[test]
fn conv_transpose2d_matches_flex_on_random_shapes() {
    let mut rng = Lcg(11);
    let mut checked = 0;
    while checked < 40 {
        let (kh, kw) = (1 + rng.below(4), 1 + rng.below(4));
        let stride = [1 + rng.below(3), 1 + rng.below(3)];
        let dilation = [1 + rng.below(2), 1 + rng.below(2)];
        let padding = [rng.below(3), rng.below(3)];
        // Output padding must be smaller than stride or dilation.
        let padding_out = [rng.below(stride[0].max(dilation[0])), rng.below(stride[1].max(dilation[1]))];
        let (h, w) = (1 + rng.below(7), 1 + rng.below(7));
        let out = |i: usize, k: usize, a: usize| {
            ((i - 1) * stride[a] + dilation[a] * (k - 1) + padding_out[a] + 1) as isize - 2 * padding[a] as isize
        };
        if out(h, kh, 0) < 1 || out(w, kw, 1) < 1 {
            continue;
        }
        let (n, cin, cout) = (1 + rng.below(3), 1 + rng.below(5), 1 + rng.below(6));
        check(&Case {
            x: [n, cin, h, w],
            w: [cin, cout, kh, kw],
            bias: rng.below(2) == 0,
            op: Op::ConvT(ConvTransposeOptions::new(stride, padding, padding_out, dilation, 1)),
            strided_x: rng.below(4) == 0,
        });
        checked += 1;
    }
}

#[test]
fn dcgan_shapes_match_flex() {
    // A DCGAN layer of each kind at reduced width: 4×4 kernels, stride 2, padding 1, and the
    // 1×1 → 4×4 first generator layer.
    let conv = ConvOptions::new([2, 2], [1, 1], [1, 1], 1);
    let convt = ConvTransposeOptions::new([2, 2], [1, 1], [0, 0], [1, 1], 1);
    let first = ConvTransposeOptions::new([1, 1], [0, 0], [0, 0], [1, 1], 1);
    let first_big = first.clone();
    let unit = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    for case in [
        Case { x: [4, 3, 16, 16], w: [8, 3, 4, 4], bias: false, op: Op::Conv(conv.clone()), strided_x: false },
        Case { x: [4, 16, 4, 4], w: [32, 16, 4, 4], bias: true, op: Op::Conv(conv), strided_x: false },
        Case { x: [4, 10, 1, 1], w: [10, 16, 4, 4], bias: false, op: Op::ConvT(first), strided_x: false },
        Case { x: [4, 16, 8, 8], w: [16, 3, 4, 4], bias: true, op: Op::ConvT(convt.clone()), strided_x: false },
        // ≥ 256 column positions per image: the per-image GEMM path.
        Case { x: [3, 3, 40, 40], w: [5, 3, 3, 3], bias: true, op: Op::Conv(unit.clone()), strided_x: false },
        Case { x: [3, 4, 20, 20], w: [4, 3, 4, 4], bias: true, op: Op::ConvT(convt), strided_x: true },
        // 8192-row column matrices, each above the chunk budget: the chunk-wide path runs one
        // chunk per image, and the weight gradient accumulates over the chunks.
        Case { x: [3, 512, 16, 16], w: [2, 512, 4, 4], bias: false, op: Op::Conv(unit), strided_x: false },
        Case { x: [3, 2, 15, 15], w: [2, 512, 4, 4], bias: true, op: Op::ConvT(first_big), strided_x: false },
        // One output position per image (DCGAN's last discriminator layer), once handed to flex.
        Case {
            x: [4, 16, 4, 4],
            w: [1, 16, 4, 4],
            bias: true,
            op: Op::Conv(ConvOptions::new([1, 1], [0, 0], [1, 1], 1)),
            strided_x: false,
        },
    ] {
        check(&case);
    }
}

#[test]
fn per_image_weight_gradients_repeat_bit_for_bit() {
    // The per-image strategy sums its weight gradient over threads: a 1 × 1 convolution, a
    // one-channel input and a map of over 512 positions all take it. Five runs each must agree
    // to the bit (checkpoints resume bit for bit only if a step is repeatable).
    let cases = [
        ([24, 8, 6, 6], [5, 8, 1, 1], ConvOptions::new([1, 1], [0, 0], [1, 1], 1)),
        ([24, 1, 12, 12], [6, 1, 4, 4], ConvOptions::new([2, 2], [1, 1], [1, 1], 1)),
        ([12, 2, 24, 24], [3, 2, 3, 3], ConvOptions::new([1, 1], [1, 1], [1, 1], 1)),
        // More output channels than column rows (20 > 2 · 3 · 3): the other orientation.
        ([8, 2, 24, 24], [20, 2, 3, 3], ConvOptions::new([1, 1], [1, 1], [1, 1], 1)),
    ];
    for (x, w, options) in cases {
        let case = Case { x, w, bias: true, op: Op::Conv(options), strided_x: false };
        check(&case);
        let first = run::<Kiln>(&case).dw.to_vec::<f32>().expect("f32");
        for _ in 0..4 {
            let again = run::<Kiln>(&case).dw.to_vec::<f32>().expect("f32");
            assert!(first.iter().zip(&again).all(|(a, b)| a.to_bits() == b.to_bits()), "{case:?}: runs differ");
        }
    }
}

#[test]
fn unhandled_cases_fall_back_to_flex() {
    // groups > 1 goes to flex's own kernels; the results must still agree.
    check(&Case {
        x: [2, 4, 6, 6],
        w: [6, 2, 3, 3],
        bias: true,
        op: Op::Conv(ConvOptions::new([1, 1], [1, 1], [1, 1], 2)),
        strided_x: false,
    });
    check(&Case {
        x: [2, 4, 5, 5],
        w: [4, 3, 3, 3],
        bias: true,
        op: Op::ConvT(ConvTransposeOptions::new([2, 2], [1, 1], [1, 1], [1, 1], 2)),
        strided_x: false,
    });
    // f64 tensors are not f32, so flex computes them.
    let device = Default::default();
    let x = Tensor::<KilnCpu<Flex>, 4>::from_data(random([2, 3, 7, 7], 1), &device).cast(FloatDType::F64);
    let w = Tensor::<KilnCpu<Flex>, 4>::from_data(random([5, 3, 3, 3], 2), &device).cast(FloatDType::F64);
    let xf = Tensor::<Flex, 4>::from_data(random([2, 3, 7, 7], 1), &device).cast(FloatDType::F64);
    let wf = Tensor::<Flex, 4>::from_data(random([5, 3, 3, 3], 2), &device).cast(FloatDType::F64);
    let o = ConvOptions::new([2, 1], [1, 0], [1, 2], 1);
    let y = conv2d(x, w, None, o.clone());
    let yf = conv2d(xf, wf, None, o);
    assert_eq!(y.dtype(), burn::tensor::DType::F64);
    assert_close("f64 fallback", y.into_data(), yf.into_data());
}

#[derive(Module, Debug)]
struct TinyNet<B: Backend> {
    down: Conv2d<B>,
    up: ConvTranspose2d<B>,
}

/// Losses of a few Adam steps of a conv → relu → transposed conv autoencoder on backend `B`.
///
/// The parameters are loaded from seeded data rather than drawn by the modules' initialisers:
/// flex consumes a seed on the first random op after `seed`, and later draws are not
/// reproducible.
fn train_losses<B: AutodiffBackend>() -> Vec<f32> {
    let device = Default::default();
    let param4 =
        |shape, seed| Param::from_tensor(Tensor::<B, 4>::from_data(random(shape, seed), &device).mul_scalar(0.2));
    let param1 = |n, seed| Param::from_tensor(Tensor::<B, 1>::from_data(random1(n, seed), &device).mul_scalar(0.2));
    let mut down = Conv2dConfig::new([3, 8], [4, 4])
        .with_stride([2, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(&device);
    down.weight = param4([8, 3, 4, 4], 20);
    down.bias = Some(param1(8, 21));
    let mut up = ConvTranspose2dConfig::new([8, 3], [4, 4]).with_stride([2, 2]).with_padding([1, 1]).init(&device);
    up.weight = param4([8, 3, 4, 4], 22);
    up.bias = Some(param1(3, 23));
    let mut net = TinyNet::<B> { down, up };
    let mut opt = AdamConfig::new().init::<B, TinyNet<B>>();
    let x = Tensor::<B, 4>::from_data(random([4, 3, 12, 12], 9), &device);
    (0..5)
        .map(|_| {
            let h = burn::tensor::activation::relu(net.down.forward(x.clone())); // [4, 8, 6, 6]
            let y = net.up.forward(h); // [4, 3, 12, 12]
            let loss = (y - x.clone()).powi_scalar(2).mean();
            let value = loss.clone().into_scalar().elem::<f32>();
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = opt.step(1e-2, net.clone(), grads);
            value
        })
        .collect()
}

#[test]
fn tiny_net_trains_identically() {
    let (k, f) = (train_losses::<Kiln>(), train_losses::<Ref>());
    for (i, (a, b)) in k.iter().zip(&f).enumerate() {
        assert!((a - b).abs() <= TOL * b.abs(), "step {i}: loss {a} on kiln vs {b} on flex");
    }
    assert!(k[4] < k[0], "the loss should fall: {k:?}");
}

/// Output and gradients of `Σ linear(x, w, b) · r` for an `x` of any rank (`x_dims`), fed as a
/// transposed view of its last two axes when `strided` (a non-contiguous input).
fn run_linear<B: AutodiffBackend, const D: usize>(x_dims: [usize; D], n: usize, bias: bool, strided: bool) -> Run {
    let device = Default::default();
    let k = x_dims[D - 1];
    let count: usize = x_dims.iter().product();
    let x = if strided {
        let mut swapped = x_dims;
        swapped.swap(D - 2, D - 1);
        Tensor::<B, D>::from_data(TensorData::new(values(count, 11), swapped), &device).swap_dims(D - 2, D - 1)
    } else {
        Tensor::<B, D>::from_data(TensorData::new(values(count, 11), x_dims), &device)
    }
    .require_grad();
    let w = Tensor::<B, 2>::from_data(TensorData::new(values(k * n, 12), [k, n]), &device).require_grad();
    let b = bias.then(|| Tensor::<B, 1>::from_data(random1(n, 13), &device).require_grad());
    let y = burn::tensor::module::linear(x.clone(), w.clone(), b.clone());
    let r = Tensor::<B, D>::from_data(TensorData::new(values(y.shape().num_elements(), 14), y.dims()), &device);
    let grads = (y.clone() * r).sum().backward();
    Run {
        y: y.into_data(),
        dx: x.grad(&grads).expect("x grad").into_data(),
        dw: w.grad(&grads).expect("w grad").into_data(),
        db: b.map(|b| b.grad(&grads).expect("b grad").into_data()),
    }
}

fn check_linear<const D: usize>(x_dims: [usize; D], n: usize, bias: bool, strided: bool) {
    let (k, f) = (run_linear::<Kiln, D>(x_dims, n, bias, strided), run_linear::<Ref, D>(x_dims, n, bias, strided));
    let what = format!("linear x {x_dims:?} → {n}, bias {bias}, strided {strided}");
    assert_close(&format!("output of {what}"), k.y, f.y);
    assert_close(&format!("x grad of {what}"), k.dx, f.dx);
    assert_close(&format!("weight grad of {what}"), k.dw, f.dw);
    match (k.db, f.db) {
        (Some(kb), Some(fb)) => assert_close(&format!("bias grad of {what}"), kb, fb),
        (None, None) => {}
        _ => panic!("{what}: one backend has a bias gradient and the other not"),
    }
}

#[test]
fn linear_matches_flex_for_every_rank() {
    // Rank 2 (an LSTM's gates), rank 3 (a transformer's [B, T, C]; over 256 rows so the bias
    // gradient's parallel column sum runs), rank 4, one row, and odd widths; fewer rows than
    // inputs ([5, 7], [1, 3]: `dx` through `dxᵀ = W · dyᵀ`) and more (the rest).
    for bias in [true, false] {
        check_linear([5, 7], 9, bias, false);
        check_linear([1, 3], 1, bias, false);
        check_linear([4, 80, 24], 40, bias, false);
        check_linear([2, 3, 5, 6], 11, bias, false);
        check_linear([3, 6, 5], 7, bias, true);
    }
    // f64 goes to flex's own matmul.
    let device = Default::default();
    let x =
        Tensor::<KilnCpu<Flex>, 3>::from_data(TensorData::new(values(30, 1), [2, 3, 5]), &device).cast(FloatDType::F64);
    let w =
        Tensor::<KilnCpu<Flex>, 2>::from_data(TensorData::new(values(20, 2), [5, 4]), &device).cast(FloatDType::F64);
    let xf = Tensor::<Flex, 3>::from_data(TensorData::new(values(30, 1), [2, 3, 5]), &device).cast(FloatDType::F64);
    let wf = Tensor::<Flex, 2>::from_data(TensorData::new(values(20, 2), [5, 4]), &device).cast(FloatDType::F64);
    let y = burn::tensor::module::linear(x, w, None);
    assert_eq!(y.dtype(), burn::tensor::DType::F64);
    assert_close("f64 linear fallback", y.into_data(), burn::tensor::module::linear(xf, wf, None).into_data());
}

/// `Σ act(x) · r` and its gradient at `x` for `act` in exp, sigmoid, GELU on backend `B`.
fn run_activation<B: AutodiffBackend>(which: &str) -> (TensorData, TensorData) {
    let device = Default::default();
    let n = 70_000; // over one parallel chunk, so the threaded path runs too
    let x = Tensor::<B, 2>::from_data(
        TensorData::new(values(n, 21).into_iter().map(|v| 12.0 * v).collect::<Vec<_>>(), [7, n / 7]),
        &device,
    )
    .require_grad();
    let y = match which {
        "exp" => (x.clone() * 0.5).exp(),
        "sigmoid" => burn::tensor::activation::sigmoid(x.clone()),
        "tanh" => x.clone().tanh(),
        _ => burn::tensor::activation::gelu(x.clone()),
    };
    let r = Tensor::<B, 2>::from_data(TensorData::new(values(n, 22), [7, n / 7]), &device);
    let grads = (y.clone() * r).sum().backward();
    (y.into_data(), x.grad(&grads).expect("x grad").into_data())
}

#[test]
fn exp_tanh_sigmoid_and_gelu_match_flex() {
    for which in ["exp", "tanh", "sigmoid", "gelu"] {
        let ((ky, kdx), (fy, fdx)) = (run_activation::<Kiln>(which), run_activation::<Ref>(which));
        assert_close(&format!("{which} output"), ky, fy);
        assert_close(&format!("{which} x grad"), kdx, fdx);
    }
}

fn run_permuted_reshape<B: AutodiffBackend>(dims: [usize; 4], axes: [usize; 4]) -> (TensorData, TensorData) {
    let device = Default::default();
    let n = dims.iter().product::<usize>();
    let x = Tensor::<B, 4>::from_data(TensorData::new(values(n, 31), dims), &device).require_grad();
    let y = x.clone().permute(axes).reshape([dims[0], n / dims[0]]); // what to_rows / a head merge do
    let r = Tensor::<B, 2>::from_data(TensorData::new(values(n, 32), [dims[0], n / dims[0]]), &device);
    let grads = (y.clone() * r).sum().backward();
    (y.into_data(), x.grad(&grads).expect("x grad").into_data())
}

#[test]
fn reshapes_of_permuted_views_match_flex() {
    // A head split (runs of the last axis), NCHW → NHWC (a batch of transposes), and a layout
    // with no contiguous axis (left to flex).
    for (dims, axes) in [([2, 6, 4, 8], [0, 2, 1, 3]), ([3, 16, 7, 7], [0, 2, 3, 1]), ([2, 3, 2, 5], [3, 1, 0, 2])] {
        let ((ky, kdx), (fy, fdx)) =
            (run_permuted_reshape::<Kiln>(dims, axes), run_permuted_reshape::<Ref>(dims, axes));
        assert_eq!(ky.to_vec::<f32>().expect("f32"), fy.to_vec::<f32>().expect("f32"), "{dims:?} by {axes:?}");
        assert_eq!(kdx.to_vec::<f32>().expect("f32"), fdx.to_vec::<f32>().expect("f32"), "grad {dims:?} by {axes:?}");
    }
}

/// `softmax(q·kᵀ·scale [+ causal mask]) · v` from tensor ops: the definition the blocked kernel
/// must match.
fn composed_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    causal: bool,
    scale: f64,
) -> Tensor<B, 4> {
    let [b, h, lq, _] = q.dims();
    let lk = k.dims()[2];
    let s = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale); // [B, H, Lq, Lk]
    let s = if causal {
        let future = Tensor::<B, 2, Bool>::tril_mask([lq, lk], 0, &s.device()).unsqueeze::<4>().expand([b, h, lq, lk]);
        s.mask_fill(future, f32::NEG_INFINITY)
    } else {
        s
    };
    softmax(s, 3).matmul(v)
}

/// The output and the three input gradients of `Σ attention(q, k, v) · r`, through kiln-cpu's
/// blocked kernel (`blocked`) or the composed ops. `permuted` feeds `q` as a transposed view.
fn run_attention<B: AutodiffBackend>(
    shape: [usize; 5],
    permuted: bool,
    attend: impl Fn(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>,
) -> [TensorData; 4] {
    let [b, h, lq, lk, d] = shape;
    let dv = d + 3;
    let device = Default::default();
    let q = if permuted {
        Tensor::<B, 4>::from_data(random([b, lq, h, d], 11), &device).swap_dims(1, 2)
    } else {
        Tensor::<B, 4>::from_data(random([b, h, lq, d], 11), &device)
    }
    .require_grad();
    let k = Tensor::<B, 4>::from_data(random([b, h, lk, d], 12), &device).require_grad();
    let v = Tensor::<B, 4>::from_data(random([b, h, lk, dv], 13), &device).require_grad();
    let y = attend(q.clone(), k.clone(), v.clone());
    let r = Tensor::<B, 4>::from_data(random(y.dims(), 14), &device);
    let grads = (y.clone() * r).sum().backward();
    let grad = |t: &Tensor<B, 4>| t.grad(&grads).expect("a gradient").into_data();
    [y.into_data(), grad(&q), grad(&k), grad(&v)]
}

#[test]
fn blocked_attention_matches_the_composed_ops() {
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    // [B, H, Lq, Lk, D]: one head (threaded GEMMs) and several (a head per task), query counts
    // that are and are not multiples of the 64-row block, Lq < Lk and Lq > Lk under the mask.
    let shapes = [[1, 1, 5, 7, 4], [2, 3, 70, 70, 8], [1, 2, 130, 40, 16], [2, 1, 33, 100, 8], [1, 1, 64, 64, 2]];
    for shape in shapes {
        for causal in [false, true] {
            for permuted in [false, true] {
                let scale = 0.7 / (shape[4] as f64).sqrt();
                let kiln = run_attention::<Kiln>(shape, permuted, |q, k, v| {
                    let [q, k, v] = [q, k, v].map(|t| t.into_primitive().tensor());
                    let y = kiln_cpu::attention_autodiff::<Flex, NoCheckpointing>(&q, &k, &v, causal, scale)
                        .expect("an f32 attention the kernel handles");
                    Tensor::from_primitive(TensorPrimitive::Float(y))
                });
                let flex = run_attention::<Ref>(shape, permuted, |q, k, v| composed_attention(q, k, v, causal, scale));
                let what = format!("attention {shape:?} causal {causal} permuted {permuted}");
                for (name, (a, b)) in ["output", "q grad", "k grad", "v grad"].iter().zip(kiln.into_iter().zip(flex)) {
                    assert_close(&format!("{name} of {what}"), a, b);
                }
            }
        }
    }
}

#[test]
fn blocked_attention_declines_what_it_does_not_handle() {
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    let device = Default::default();
    let t = |shape: [usize; 4]| Tensor::<Kiln, 4>::zeros(shape, &device).into_primitive().tensor();
    let attend = |q, k, v| kiln_cpu::attention_autodiff::<Flex, NoCheckpointing>(&q, &k, &v, false, 1.0);
    assert!(attend(t([1, 1, 4, 3]), t([1, 1, 5, 2]), t([1, 1, 5, 3])).is_none(), "q and k widths differ");
    assert!(attend(t([1, 1, 4, 3]), t([1, 1, 0, 3]), t([1, 1, 0, 3])).is_none(), "no keys");
    let f64s = Tensor::<Kiln, 4>::zeros([1, 1, 4, 3], &device).cast(FloatDType::F64).into_primitive().tensor();
    assert!(attend(f64s.clone(), f64s.clone(), f64s).is_none(), "f64");
    assert!(attend(t([1, 1, 4, 3]), t([1, 1, 5, 3]), t([1, 1, 5, 6])).is_some(), "a case it handles");
}

/// `h'` and `c'` stacked `[2, B, H]` and the gradients of the gates and the cell state under
/// `Σ out · r`, for one LSTM step computed by `step`. `strided` feeds the gates as a transposed view.
fn run_lstm_cell<B: AutodiffBackend>(
    b: usize,
    h: usize,
    strided: bool,
    step: impl Fn(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 3>,
) -> [TensorData; 3] {
    let device = Default::default();
    let scaled = |data: TensorData| Tensor::<B, 4>::from_data(data, &device).mul_scalar(3.0); // pre-activations in ±3
    let gates = if strided {
        scaled(random([1, 1, 4 * h, b], 21)).reshape([4 * h, b]).transpose()
    } else {
        scaled(random([1, 1, b, 4 * h], 21)).reshape([b, 4 * h])
    }
    .require_grad();
    let c = Tensor::<B, 4>::from_data(random([1, 1, b, h], 22), &device).reshape([b, h]).require_grad();
    let out = step(gates.clone(), c.clone());
    let r = Tensor::<B, 3>::from_data(TensorData::new(values(2 * b * h, 23), [2, b, h]), &device);
    let grads = (out.clone() * r).sum().backward();
    [out.into_data(), gates.grad(&grads).expect("gates grad").into_data(), c.grad(&grads).expect("c grad").into_data()]
}

/// The step from tensor ops, as kiln-draw's `LstmCell` composes it.
fn composed_lstm_cell<B: Backend>(gates: Tensor<B, 2>, c: Tensor<B, 2>) -> Tensor<B, 3> {
    use burn::tensor::activation::{sigmoid, tanh};
    let h = c.dims()[1];
    let [i, f, g, o] = [0, 1, 2, 3].map(|k| gates.clone().narrow(1, k * h, h));
    let c = sigmoid(f) * c + sigmoid(i) * tanh(g);
    let h = sigmoid(o) * tanh(c.clone());
    Tensor::stack(vec![h, c], 0)
}

#[test]
fn fused_lstm_cell_matches_the_composed_step() {
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    for (b, h, strided) in [(1, 1, false), (3, 17, false), (4, 40, true), (64, 32, false)] {
        let fused = run_lstm_cell::<Kiln>(b, h, strided, |gates, c| {
            let (g, c) = (gates.into_primitive().tensor(), c.into_primitive().tensor());
            let out = kiln_cpu::lstm_cell_autodiff::<Flex, NoCheckpointing>(&g, &c).expect("an f32 step it handles");
            Tensor::from_primitive(TensorPrimitive::Float(out))
        });
        let composed = run_lstm_cell::<Kiln>(b, h, strided, composed_lstm_cell);
        let flex = run_lstm_cell::<Ref>(b, h, strided, composed_lstm_cell);
        let what = format!("LSTM step B = {b}, H = {h}, strided gates {strided}");
        // Same activations in the same order as the composed ops on this backend: equal bits.
        assert_eq!(fused[0], composed[0], "{what}: output differs from the composed step on kiln-cpu");
        for (name, (a, f)) in ["output", "gates grad", "c grad"].iter().zip(fused.into_iter().zip(flex)) {
            assert_close(&format!("{name} of {what} against flex"), a, f);
        }
    }
    let device = Default::default();
    let t = |shape: [usize; 2]| Tensor::<Kiln, 2>::zeros(shape, &device).into_primitive().tensor();
    let step = |g, c| kiln_cpu::lstm_cell_autodiff::<Flex, NoCheckpointing>(&g, &c);
    assert!(step(t([2, 12]), t([2, 4])).is_none(), "gates must be 4 × H wide");
    assert!(step(t([3, 16]), t([2, 4])).is_none(), "batch sizes differ");
}

/// burn's `module::attention` without autodiff on `KilnCpu<Flex>` or `Flex`, inputs given as
/// `[B, L, H, D]` tensors seen as `[B, H, L, D]` (the permuted views a transformer passes).
fn run_inference_attention<B: Backend>(
    shape: [usize; 5],
    causal: bool,
    masked: bool,
    scale: Option<f64>,
) -> TensorData {
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    let [b, h, lq, lk, d] = shape;
    let device = Default::default();
    let view = |l: usize, seed: u64| Tensor::<B, 4>::from_data(random([b, l, h, d], seed), &device).swap_dims(1, 2);
    let (q, k, v) = (view(lq, 31), view(lk, 32), view(lk, 33));
    let mask = masked.then(|| {
        let keep: Vec<bool> = (0..lq * lk).map(|i| i % 3 == 0).collect();
        Tensor::<B, 2, Bool>::from_data(TensorData::new(keep, [lq, lk]), &device)
            .unsqueeze::<4>()
            .expand([b, h, lq, lk])
    });
    attention(q, k, v, mask, None, AttentionModuleOptions { scale, softcap: None, is_causal: causal }).into_data()
}

#[test]
fn inference_attention_matches_flex() {
    // Square and rectangular (more keys than queries: burn aligns the causal mask bottom-right),
    // more queries than keys under the mask and a bool mask (both left to flex).
    for shape in [[2, 3, 70, 70, 8], [1, 2, 5, 130, 16], [1, 1, 1, 9, 4], [1, 2, 9, 4, 4]] {
        for (causal, masked, scale) in
            [(false, false, None), (true, false, None), (false, false, Some(0.3)), (true, true, None)]
        {
            let kiln = run_inference_attention::<KilnCpu<Flex>>(shape, causal, masked, scale);
            let flex = run_inference_attention::<Flex>(shape, causal, masked, scale);
            assert_close(&format!("attention {shape:?} causal {causal} masked {masked} scale {scale:?}"), kiln, flex);
        }
    }
}

/// `y`, the gradients of `x`, `γ` and `β` under `Σ y · r`, and the statistics, for a
/// normalisation layer computed by `norm` (`x` `[N, C, H, W]`, `γ`/`β` `[R, C]`).
/// `strided` feeds `x` as a permuted view.
fn run_norm<B: AutodiffBackend>(
    [n, c, h, w]: [usize; 4],
    rows: usize,
    strided: bool,
    norm: impl Fn(Tensor<B, 4>, Tensor<B, 2>, Tensor<B, 2>) -> (Tensor<B, 4>, Vec<f32>),
) -> [TensorData; 5] {
    let device = Default::default();
    // An offset and a spread that differ per channel, as activations have.
    let x = if strided {
        Tensor::<B, 4>::from_data(random([n, h, w, c], 31), &device).permute([0, 3, 1, 2])
    } else {
        Tensor::<B, 4>::from_data(random([n, c, h, w], 31), &device)
    };
    let x = (x.mul_scalar(3.0).add_scalar(1.5)).detach().require_grad();
    let gamma = Tensor::<B, 4>::from_data(random([1, 1, rows, c], 32), &device).reshape([rows, c]).add_scalar(1.0);
    let beta = Tensor::<B, 4>::from_data(random([1, 1, rows, c], 33), &device).reshape([rows, c]);
    let (gamma, beta) = (gamma.require_grad(), beta.require_grad());
    let (y, stats) = norm(x.clone(), gamma.clone(), beta.clone());
    let r = Tensor::<B, 4>::from_data(random([n, c, h, w], 34), &device);
    let grads = (y.clone() * r).sum().backward();
    let len = stats.len();
    [
        y.into_data(),
        x.grad(&grads).expect("x grad").into_data(),
        gamma.grad(&grads).expect("γ grad").into_data(),
        beta.grad(&grads).expect("β grad").into_data(),
        TensorData::new(stats, [len]),
    ]
}

/// The layer from tensor ops, straight from the definition: statistics over each group,
/// `(x − μ)/√(σ² + ε)·γ + β`. Returns the means then the variances.
fn composed_norm<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 2>,
    beta: Tensor<B, 2>,
    groups: Option<usize>,
) -> (Tensor<B, 4>, Vec<f32>) {
    let [n, c, h, w] = x.dims();
    let rows = gamma.dims()[0];
    let (normed, mean, var) = match groups {
        None => {
            let t = x.swap_dims(0, 1).reshape([c, n * h * w]); // [C, N·H·W]
            let mean = t.clone().mean_dim(1);
            let var = (t.clone() - mean.clone()).square().mean_dim(1);
            let normed =
                ((t - mean.clone()) / var.clone().add_scalar(1e-5).sqrt()).reshape([c, n, h, w]).swap_dims(0, 1);
            (normed, mean, var)
        }
        Some(g) => {
            let t = x.reshape([n * g, c / g * h * w]);
            let mean = t.clone().mean_dim(1);
            let var = (t.clone() - mean.clone()).square().mean_dim(1);
            (((t - mean.clone()) / var.clone().add_scalar(1e-5).sqrt()).reshape([n, c, h, w]), mean, var)
        }
    };
    let stats = Tensor::cat(vec![mean.reshape([-1]), var.reshape([-1])], 0).into_data().into_vec::<f32>().expect("f32");
    (normed * gamma.reshape([rows, c, 1, 1]) + beta.reshape([rows, c, 1, 1]), stats)
}

#[test]
fn fused_norm_matches_the_composed_ops() {
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    let cases = [
        // shape, affine rows, groups, strided x
        ([2, 3, 4, 5], 1, None, false),    // batch norm, rows of 20 (not a multiple of 16)
        ([4, 6, 8, 8], 4, None, true),     // conditional batch norm (a γ row per image), permuted x
        ([1, 2, 1, 1], 1, None, false),    // one value per channel: zero variance
        ([16, 5, 4, 4], 1, None, false),   // many small rows per task
        ([2, 6, 3, 5], 1, Some(3), false), // group norm
        ([3, 8, 16, 16], 1, Some(1), true), // one group (layer norm over C·H·W)
        ([2, 4, 2, 2], 2, Some(4), false), // a group per channel (instance norm), a γ row per image
    ];
    for (shape, rows, groups, strided) in cases {
        let fused = run_norm::<Kiln>(shape, rows, strided, |x, g, b| {
            let p = |t: Tensor<Kiln, 2>| t.into_primitive().tensor();
            let (y, mean, var) = kiln_cpu::norm_autodiff::<Flex, NoCheckpointing>(
                &x.into_primitive().tensor(),
                &p(g),
                &p(b),
                groups,
                1e-5,
            )
            .expect("an f32 layer it handles");
            (Tensor::from_primitive(TensorPrimitive::Float(y)), [mean, var].concat())
        });
        let composed = run_norm::<Ref>(shape, rows, strided, |x, g, b| composed_norm(x, g, b, groups));
        let what = format!("{shape:?}, {rows} affine rows, groups {groups:?}, strided {strided}");
        for (name, (a, f)) in
            ["y", "x grad", "γ grad", "β grad", "mean and var"].iter().zip(fused.into_iter().zip(composed))
        {
            assert_close(&format!("{name} of {what}"), a, f);
        }
    }
    let device = Default::default();
    let t = |shape: [usize; 4]| Tensor::<Kiln, 4>::zeros(shape, &device).into_primitive().tensor();
    let a = |shape: [usize; 2]| Tensor::<Kiln, 2>::zeros(shape, &device).into_primitive().tensor();
    let norm = |x, g, b, groups| kiln_cpu::norm_autodiff::<Flex, NoCheckpointing>(&x, &g, &b, groups, 1e-5).is_some();
    assert!(!norm(t([2, 6, 2, 2]), a([1, 6]), a([1, 6]), Some(4)), "4 groups do not divide 6 channels");
    assert!(!norm(t([2, 6, 2, 2]), a([1, 5]), a([1, 5]), None), "γ must have a column per channel");
    assert!(!norm(t([2, 6, 2, 2]), a([3, 6]), a([3, 6]), None), "γ rows must be 1 or N");
    assert!(!norm(t([2, 6, 2, 2]), a([1, 6]), a([2, 6]), None), "γ and β shapes differ");
    assert!(!norm(t([0, 6, 2, 2]), a([1, 6]), a([1, 6]), None), "an empty batch");
    assert!(norm(t([2, 6, 2, 2]), a([2, 6]), a([2, 6]), Some(3)), "a layer it handles");
}

/// `f(x)` and the gradient of `Σ f(x) · r` for `x` of `shape` in ±4 (`strided`: a transposed view).
fn run_pointwise<B: AutodiffBackend>(strided: bool, f: impl Fn(Tensor<B, 2>) -> Tensor<B, 2>) -> [TensorData; 2] {
    let device = Default::default();
    let x = Tensor::<B, 4>::from_data(random([1, 1, 37, 1000], 41), &device).reshape([37, 1000]).mul_scalar(4.0);
    let x = if strided { x.transpose() } else { x }.detach().require_grad();
    let y = f(x.clone());
    let r = Tensor::<B, 2>::from_data(TensorData::new(values(37_000, 42), y.dims()), &device);
    let grads = (y.clone() * r).sum().backward();
    [y.into_data(), x.grad(&grads).expect("x grad").into_data()]
}

#[test]
fn fused_leaky_relu_and_silu_match_the_composed_ops() {
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::tensor::activation::{leaky_relu, silu};
    let fused_leaky = |x: Tensor<Kiln, 2>| {
        let y = kiln_cpu::leaky_relu_autodiff::<Flex, NoCheckpointing>(&x.into_primitive().tensor(), 0.2);
        Tensor::from_primitive(TensorPrimitive::Float(y.expect("f32")))
    };
    let fused_silu = |x: Tensor<Kiln, 2>| {
        let y = kiln_cpu::silu_autodiff::<Flex, NoCheckpointing>(&x.into_primitive().tensor());
        Tensor::from_primitive(TensorPrimitive::Float(y.expect("f32")))
    };
    for strided in [false, true] {
        let [leaky_y, leaky_dx] = run_pointwise::<Kiln>(strided, fused_leaky);
        let [silu_y, silu_dx] = run_pointwise::<Kiln>(strided, fused_silu);
        // The forward values are the composed ops' on this backend, bit for bit.
        let composed_leaky = run_pointwise::<Kiln>(strided, |x| leaky_relu(x, 0.2));
        let composed_silu = run_pointwise::<Kiln>(strided, silu);
        assert_eq!(leaky_y, composed_leaky[0], "leaky ReLU forward, strided {strided}");
        assert_eq!(silu_y, composed_silu[0], "SiLU forward, strided {strided}");
        // The gradients against flex's composed ops.
        let flex_leaky = run_pointwise::<Ref>(strided, |x| leaky_relu(x, 0.2));
        let flex_silu = run_pointwise::<Ref>(strided, silu);
        assert_close(&format!("leaky ReLU gradient, strided {strided}"), leaky_dx, flex_leaky[1].clone());
        assert_close(&format!("leaky ReLU, strided {strided}"), leaky_y, flex_leaky[0].clone());
        assert_close(&format!("SiLU gradient, strided {strided}"), silu_dx, flex_silu[1].clone());
        assert_close(&format!("SiLU, strided {strided}"), silu_y, flex_silu[0].clone());
    }
}

/// `x.permute(axes) + y` and `y + x.permute(axes)`, on `B` without autodiff.
fn run_permuted_add<B: Backend>(dims: [usize; 4], axes: [usize; 4]) -> [TensorData; 2] {
    let device = Default::default();
    let n = dims.iter().product::<usize>();
    let x = Tensor::<B, 4>::from_data(TensorData::new(values(n, 33), dims), &device).permute(axes);
    let y = Tensor::<B, 4>::from_data(TensorData::new(values(n, 34), x.dims()), &device);
    [(x.clone() + y.clone()).into_data(), (y + x).into_data()]
}

#[test]
fn adds_of_permuted_views_match_flex() {
    // NCHW ↔ NHWC views, a head split, and a layout with no contiguous axis (left to flex).
    for (dims, axes) in [([2, 6, 4, 8], [0, 2, 1, 3]), ([3, 16, 7, 7], [0, 2, 3, 1]), ([2, 3, 2, 5], [3, 1, 0, 2])] {
        let (kiln, flex) = (run_permuted_add::<KilnCpu<Flex>>(dims, axes), run_permuted_add::<Flex>(dims, axes));
        assert_eq!(kiln, flex, "{dims:?} by {axes:?}");
    }
}

/// One DRAW filterbank axis `[B, n, size]` and the gradients of its centre, stride and variance
/// under `Σ F · r`, computed by `bank`.
fn run_filterbank<B: AutodiffBackend>(
    centre: &[f32],
    n: usize,
    size: usize,
    bank: impl Fn(Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>) -> Tensor<B, 3>,
) -> [TensorData; 4] {
    let device = Default::default();
    let b = centre.len();
    let vector = |v: Vec<f32>| Tensor::<B, 1>::from_data(TensorData::new(v, [b]), &device).require_grad();
    let g = vector(centre.to_vec());
    let delta = vector((0..b).map(|i| 0.5 + 0.7 * i as f32).collect());
    let sigma2 = vector((0..b).map(|i| 0.6 + 1.3 * i as f32).collect());
    let f = bank(g.clone(), delta.clone(), sigma2.clone());
    let r = Tensor::<B, 3>::from_data(TensorData::new(values(b * n * size, 51), [b, n, size]), &device);
    let grads = (f.clone() * r).sum().backward();
    let grad = |t: Tensor<B, 1>| t.grad(&grads).expect("grad").into_data();
    [f.into_data(), grad(g), grad(delta), grad(sigma2)]
}

/// The axis from tensor ops, as kiln-kernels' `draw::filterbanks` composes it.
fn composed_filterbank<B: Backend>(
    centre: Tensor<B, 1>,
    delta: Tensor<B, 1>,
    sigma2: Tensor<B, 1>,
    n: usize,
    size: usize,
) -> Tensor<B, 3> {
    let device = centre.device();
    let b = centre.dims()[0];
    let offsets: Vec<f32> = (1..=n).map(|i| (i as f64 - n as f64 / 2.0 - 0.5) as f32).collect();
    let offsets = Tensor::<B, 1>::from_floats(offsets.as_slice(), &device).reshape([1, n, 1]);
    let positions: Vec<f32> = (1..=size).map(|a| a as f32).collect();
    let positions = Tensor::<B, 1>::from_floats(positions.as_slice(), &device).reshape([1, 1, size]);
    let mu = centre.reshape([b, 1, 1]) + offsets * delta.reshape([b, 1, 1]);
    let two_var = sigma2.reshape([b, 1, 1]).mul_scalar(2.0);
    let f = (positions - mu).square().neg().div(two_var).exp();
    let z = f.clone().sum_dim(2).clamp_min(1e-8);
    f / z
}

#[test]
fn fused_filterbank_matches_the_composed_ops() {
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    // Centres inside the image, at its edge, and far outside it (every weight underflows: the
    // clamp keeps the row at zero).
    let centre = [14.5, 1.0, 27.0, 500.0];
    for (n, size) in [(1, 28), (2, 28), (5, 28), (12, 9)] {
        let fused = run_filterbank::<Kiln>(&centre, n, size, |g, d, s| {
            let p = |t: Tensor<Kiln, 1>| t.into_primitive().tensor();
            let f = kiln_cpu::filterbank_autodiff::<Flex, NoCheckpointing>(&p(g), &p(d), &p(s), n, size, 1e-8);
            Tensor::from_primitive(TensorPrimitive::Float(f.expect("an f32 axis it handles")))
        });
        let composed = run_filterbank::<Ref>(&centre, n, size, |g, d, s| composed_filterbank(g, d, s, n, size));
        for (name, (a, f)) in
            ["F", "centre grad", "stride grad", "variance grad"].iter().zip(fused.into_iter().zip(composed))
        {
            assert_close(&format!("{name}, N = {n}, size = {size}"), a, f);
        }
    }
}
