// values: crates/kiln-kernels/golden/make_golden.py (torch 2.15 F.interpolate, antialias on and
// off; Pillow 13 Image.resize on 'F' images), file golden/resize.json.
//
// Tolerance 1e-5 absolute on N(0, 1) inputs: the weights are computed in f64 and applied in f32,
// PyTorch computes them in f32; both round at about 1e-7 per term.

use burn::tensor::{Distribution, Tensor};
use serde_json::Value;

use super::*;
use crate::resize::{Cubic, Filter, ResizeOptions, ResizeTarget, resize};

const TOL: f32 = 1e-5;

fn case_options(case: &Value) -> (ResizeTarget, ResizeOptions) {
    let antialias = case["antialias"].as_bool().expect("antialias");
    let filter = match case["filter"].as_str().expect("filter") {
        "nearest" => Filter::Nearest,
        "nearest-exact" => Filter::NearestExact,
        "bilinear" => Filter::Bilinear,
        // PyTorch's antialiased bicubic uses PIL's a = -0.5.
        "bicubic" if antialias => Filter::Bicubic(Cubic::Pil),
        "bicubic" => Filter::Bicubic(Cubic::Torch),
        "bicubic-pil" => Filter::Bicubic(Cubic::Pil),
        "area" => Filter::Area,
        other => panic!("unknown filter {other}"),
    };
    let target = if case["size"].is_array() {
        let s = case["size"].as_array().expect("size");
        ResizeTarget::Size { height: s[0].as_u64().expect("h") as usize, width: s[1].as_u64().expect("w") as usize }
    } else {
        let s = case["scale"].as_array().expect("scale");
        ResizeTarget::Scale { height: s[0].as_f64().expect("h"), width: s[1].as_f64().expect("w") }
    };
    let options = ResizeOptions::new(filter)
        .with_align_corners(case["align_corners"].as_bool().expect("align_corners"))
        .with_antialias(antialias);
    (target, options)
}

#[test]
fn matches_pytorch_and_pil() {
    let device = device();
    let cases = golden("resize.json");
    assert!(cases.len() > 60);
    for (name, case) in &cases {
        let (target, options) = case_options(case);
        let x: Tensor<TestBackend, 4> = tensor(&case["input"], &device);
        let y = resize(x, target, &options).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_close(y, &case["output"], TOL, name);
    }
}

#[test]
fn gradients_match_pytorch() {
    let device = device();
    let mut checked = 0;
    for (name, case) in &golden("resize.json") {
        if case.get("grad_input").is_none() {
            continue;
        }
        let (target, options) = case_options(case);
        let x: Tensor<TestAutodiff, 4> = tensor::<TestAutodiff, 4>(&case["input"], &device).require_grad();
        let g: Tensor<TestAutodiff, 4> = tensor(&case["grad_out"], &device);
        let y = resize(x.clone(), target, &options).expect("valid case");
        let grads = (y * g).sum().backward();
        let dx = x.grad(&grads).expect("x has a gradient");
        assert_close(dx, &case["grad_input"], TOL, name);
        checked += 1;
    }
    assert_eq!(checked, 13);
}

fn smooth_options() -> Vec<ResizeOptions> {
    let mut all = Vec::new();
    for filter in [Filter::Bilinear, Filter::Bicubic(Cubic::Torch), Filter::Bicubic(Cubic::Pil)] {
        for ac in [false, true] {
            for aa in [false, true] {
                all.push(ResizeOptions::new(filter).with_align_corners(ac).with_antialias(aa));
            }
        }
    }
    all.push(ResizeOptions::new(Filter::Area));
    all.push(ResizeOptions::new(Filter::Nearest));
    all.push(ResizeOptions::new(Filter::NearestExact));
    all
}

#[test]
fn constant_image_stays_constant() {
    let device = device();
    let x = Tensor::<TestBackend, 4>::full([2, 3, 13, 10], 0.37, &device);
    for options in smooth_options() {
        for (h, w) in [(4, 3), (29, 17), (13, 10), (1, 40)] {
            let target = ResizeTarget::Size { height: h, width: w };
            let y = resize(x.clone(), target, &options).expect("valid");
            assert_eq!(y.dims(), [2, 3, h, w]);
            let v = to_vec(y);
            let worst = v.iter().map(|a| (a - 0.37).abs()).fold(0.0, f32::max);
            assert!(worst < 1e-6, "{options:?} {h}x{w}: {worst}");
        }
    }
}

#[test]
fn unit_scale_is_identity() {
    let device = device();
    let x = Tensor::<TestBackend, 4>::random([2, 3, 11, 8], Distribution::Normal(0.0, 1.0), &device);
    let want = to_vec(x.clone());
    for options in smooth_options() {
        for target in [ResizeTarget::Size { height: 11, width: 8 }, ResizeTarget::Scale { height: 1.0, width: 1.0 }] {
            let y = resize(x.clone(), target, &options).expect("valid");
            assert_slice_close(&to_vec(y), &want, 1e-6, &format!("{options:?}"));
        }
    }
}

#[test]
fn user_sizes_are_errors_not_panics() {
    let device = device();
    let x = Tensor::<TestBackend, 4>::zeros([1, 1, 4, 4], &device);
    let bilinear = ResizeOptions::new(Filter::Bilinear);
    let zero = ResizeTarget::Size { height: 0, width: 3 };
    assert!(resize(x.clone(), zero, &bilinear).is_err());
    let tiny = ResizeTarget::Scale { height: 0.2, width: 1.0 };
    assert!(resize(x.clone(), tiny, &bilinear).is_err());
    let area_aa = ResizeOptions::new(Filter::Area).with_antialias(true);
    let ok = ResizeTarget::Size { height: 2, width: 2 };
    assert!(resize(x, ok, &area_aa).is_err());
}

#[test]
fn banded_products_equal_the_dense_matrices() {
    use crate::resize::resample_matrix;
    let device = device();
    let (h, w) = (96, 80);
    let x = Tensor::<TestBackend, 4>::random([1, 2, h, w], Distribution::Normal(0.0, 1.0), &device);
    let xv = to_vec(x.clone());
    for (options, (oh, ow)) in [
        (ResizeOptions::new(Filter::Bilinear).with_antialias(true), (24, 20)),
        (ResizeOptions::new(Filter::Bicubic(Cubic::Torch)), (200, 170)),
        (ResizeOptions::new(Filter::Area), (30, 17)),
    ] {
        let target = ResizeTarget::Size { height: oh, width: ow };
        let y = to_vec(resize(x.clone(), target, &options).expect("valid"));
        let rh = resample_matrix(h, oh, None, &options).expect("valid");
        let rw = resample_matrix(w, ow, None, &options).expect("valid");
        let mut want = vec![0.0f32; 2 * oh * ow];
        for ch in 0..2 {
            for o in 0..oh {
                for p in 0..ow {
                    let mut acc = 0.0f64;
                    for i in 0..h {
                        for j in 0..w {
                            acc += (rh[o * h + i] * rw[p * w + j] * xv[(ch * h + i) * w + j]) as f64;
                        }
                    }
                    want[(ch * oh + o) * ow + p] = acc as f32;
                }
            }
        }
        assert_slice_close(&y, &want, 1e-5, &format!("{options:?}"));
    }
}

type KilnCpu = kiln_cpu::KilnCpu<burn_flex::Flex>;

static RESAMPLES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn counted_resample(
    x: &burn::tensor::ops::FloatTensor<KilnCpu>,
    rows: &[f32],
    cols: &[f32],
    out: [usize; 2],
) -> Option<burn::tensor::ops::FloatTensor<KilnCpu>> {
    RESAMPLES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    kiln_cpu::resample::<burn_flex::Flex>(x, rows, cols, out)
}

/// kiln-cpu's tap loops, registered as kiln-device does, give PyTorch's and PIL's numbers on
/// every golden case they run for (at least every antialiased one).
#[test]
fn a_registered_resample_kernel_matches_pytorch_and_pil() {
    use crate::fused::{self, ResampleKernel};
    fused::register(ResampleKernel::<KilnCpu>(counted_resample));
    let device = Default::default();
    let cases = golden("resize.json");
    for (name, case) in &cases {
        let (target, options) = case_options(case);
        let x: Tensor<KilnCpu, 4> = tensor(&case["input"], &device);
        let y = resize(x, target, &options).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_close(y, &case["output"], TOL, &format!("{name} (tap loops)"));
    }
    let antialiased = cases.values().filter(|c| c["antialias"].as_bool() == Some(true)).count();
    let ran = RESAMPLES.load(std::sync::atomic::Ordering::SeqCst);
    assert!(antialiased > 10 && ran >= antialiased, "the kernel ran {ran} times for {antialiased} antialiased cases");
}
