//! The port against pytorch-fid 0.3.0 itself, with stand-in weights.
//!
//! values: golden/make_golden.py (torch 2.15.0, pytorch-fid 0.3.0 with torchvision 0.29.2's
//! Inception3, numpy 2.4.6). The script fills the network with weights from a formula that
//! `kiln_inception::standin` repeats bit for bit, so the golden files hold only outputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use kiln_inception::{
    FidInception, InceptionConfig, InceptionError, preprocess, read_state_dict, standin, state_dict_layout,
};
use kiln_metrics::FeatureStats;

type B = burn_flex::Flex;

#[derive(serde::Deserialize)]
struct Golden {
    producer: String,
    image_sizes: Vec<usize>,
    features: Vec<Vec<f32>>,
    logits: Vec<Vec<f32>>,
    fid_sets: [[usize; 2]; 2],
    fid_exact: f64,
    fid_pytorch_fid: f64,
    resize_input: ResizeInput,
    resizes: Vec<Resize>,
    state_dict: Vec<(String, Vec<usize>)>,
}

#[derive(serde::Deserialize)]
struct ResizeInput {
    shape: [usize; 4],
}

#[derive(serde::Deserialize)]
struct Resize {
    size: [usize; 2],
    values: Vec<f32>,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn golden() -> Golden {
    let text = std::fs::read_to_string(golden_dir().join("golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden.json parses")
}

fn images(indices: &[usize], size: usize) -> Tensor<B, 4> {
    let data: Vec<f32> = indices.iter().flat_map(|&i| standin::image(i, size)).collect();
    Tensor::from_data(TensorData::new(data, [indices.len(), 3, size, size]), &Default::default())
}

fn rows(t: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [_, d] = t.dims();
    let v = t.into_data().into_vec::<f32>().expect("f32 rows");
    v.chunks(d).map(<[f32]>::to_vec).collect()
}

/// Largest |a - b| over all entries, and the largest |b|.
fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f64, f64) {
    let mut diff = 0.0f64;
    let mut scale = 0.0f64;
    for (ra, rb) in a.iter().zip(b) {
        assert_eq!(ra.len(), rb.len());
        for (&x, &y) in ra.iter().zip(rb) {
            diff = diff.max((f64::from(x) - f64::from(y)).abs());
            scale = scale.max(f64::from(y).abs());
        }
    }
    (diff, scale)
}

/// Rows minus their mean over the rows: the part of the features that depends on the image.
fn centred(rows: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let n = rows.len() as f64;
    let d = rows[0].len();
    let mean: Vec<f64> = (0..d).map(|j| rows.iter().map(|r| f64::from(r[j])).sum::<f64>() / n).collect();
    rows.iter().map(|r| r.iter().zip(&mean).map(|(&x, m)| (f64::from(x) - m) as f32).collect()).collect()
}

fn fid(rows: &[Vec<f32>], sets: [[usize; 2]; 2]) -> f64 {
    let dim = rows[0].len();
    let stats = sets.map(|set| {
        let mut stats = FeatureStats::new(dim);
        let flat: Vec<f32> = set.iter().flat_map(|&i| rows[i].clone()).collect();
        stats.push(&flat, set.len(), dim).expect("push rows");
        stats
    });
    kiln_metrics::fid(&stats[0], &stats[1]).expect("fid")
}

/// The whole network, weights loaded from a safetensors file through the public `load`, against
/// pytorch-fid: features, logits and an FID.
///
/// Tolerances. f32 everywhere; the two sides sum in different orders (im2col + gemm here, oneDNN
/// there) and the batch norms are folded here, so results differ by rounding that grows over the
/// 94 convolutions. Measured (flex, x86-64): max |Δ| ≈ 6e-7 of the largest feature or logit,
/// 6e-6 of the largest centred feature, FID 4e-7 relative. Allowed: 1e-4 of the largest |value|
/// for features and logits; 1e-3 of the largest centred feature for the part that varies between
/// images (only ~5% of the features with noise images, so the first bound alone would let it
/// drift by 0.2%); 1e-4 relative for the FID. A real porting slip is far outside these: using
/// average instead of max pooling in `Mixed_7c` moves features by 2.4, `align_corners = true` in
/// the resize by 0.12.
#[test]
fn matches_pytorch_fid() {
    let golden = golden();
    // The crate's layout is pytorch-fid's state dict, key for key and in order.
    assert_eq!(state_dict_layout(), golden.state_dict);
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-inception-standin.safetensors");
    standin::write_safetensors(&path).expect("write stand-in weights");
    let net = FidInception::<B>::load(&path, &Default::default()).expect("stand-in loads");
    std::fs::remove_file(&path).expect("remove temp file");

    // pytorch-fid ran each image alone; here each size goes through as one batch of two.
    assert_eq!(golden.image_sizes, [32, 32, 64, 64]);
    let mut features = Vec::new();
    let mut logits = Vec::new();
    for (indices, size) in [([0, 1], 32), ([2, 3], 64)] {
        let out = net.forward(images(&indices, size)).expect("forward");
        assert_eq!(out.features.dims(), [2, 2048]);
        assert_eq!(out.logits.dims(), [2, 1008]);
        features.extend(rows(out.features));
        logits.extend(rows(out.logits));
    }

    let (diff, scale) = max_diff(&features, &golden.features);
    println!("features: max |Δ| {diff:.3e}, max |ref| {scale:.3} ({})", golden.producer);
    assert!(diff <= 1e-4 * scale, "features differ by {diff:.3e} (max |ref| {scale})");
    let (diff, scale) = max_diff(&centred(&features), &centred(&golden.features));
    println!("centred features: max |Δ| {diff:.3e}, max |ref| {scale:.3}");
    assert!(diff <= 1e-3 * scale, "centred features differ by {diff:.3e} (max {scale})");
    let (diff, scale) = max_diff(&logits, &golden.logits);
    println!("logits: max |Δ| {diff:.3e}, max |ref| {scale:.3}");
    assert!(diff <= 1e-4 * scale, "logits differ by {diff:.3e} (max |ref| {scale})");

    // FID of our features (kiln-metrics) against the exact FID of pytorch-fid's features.
    let ours = fid(&features, golden.fid_sets);
    println!(
        "FID: ours {ours:.6}, reference exact {:.6}, pytorch-fid's sqrtm {:.6}",
        golden.fid_exact, golden.fid_pytorch_fid
    );
    assert!((ours - golden.fid_exact).abs() <= 1e-4 * golden.fid_exact);
}

/// burn-store's PyTorch reader on files torch wrote, in both of torch's formats (the published
/// weights predate the zip format), gives the stand-in tensors bit for bit.
#[test]
fn reads_torch_files() {
    for file in ["stem.pth", "stem_legacy.pth"] {
        let tensors = read_state_dict(golden_dir().join(file)).expect(file);
        let mut floats = 0;
        for (name, data) in &tensors {
            if name.ends_with("num_batches_tracked") {
                continue; // an int64 scalar the loader ignores
            }
            let shape = data.shape.to_vec();
            let values = data.clone().into_vec::<f32>().expect("f32 tensor");
            assert!(values == standin::tensor(name, &shape), "{file}: {name} differs");
            floats += 1;
        }
        // Two BasicConv2d: conv weight + four batch-norm tensors each.
        assert_eq!(floats, 10, "{file}: {:?}", tensors.keys().collect::<Vec<_>>());
    }
}

#[test]
fn errors_name_the_file_and_tensor() {
    let device = Default::default();
    let stem = golden_dir().join("stem.pth");
    match FidInception::<B>::load(&stem, &device) {
        Err(err @ InceptionError::MissingTensor { .. }) => {
            let text = err.to_string();
            assert!(text.contains("stem.pth") && text.contains("`Conv2d_2b_3x3.conv.weight`"), "{text}");
        }
        other => panic!("expected a missing tensor, got {:?}", other.map(|_| ())),
    }

    let bad = golden_dir().join("bad_shape.pth");
    match FidInception::<B>::load(&bad, &device) {
        Err(InceptionError::ShapeMismatch { path, tensor, expected, found }) => {
            assert_eq!(path, bad);
            assert_eq!(tensor, "Conv2d_1a_3x3.conv.weight");
            assert_eq!((expected, found), (vec![32, 3, 3, 3], vec![3, 32, 3, 3]));
        }
        other => panic!("expected a shape mismatch, got {:?}", other.map(|_| ())),
    }

    for not_weights in [golden_dir().join("golden.json"), golden_dir().join("no-such-file.pth")] {
        match InceptionConfig::new().load::<B>(&not_weights, &device) {
            Err(InceptionError::Read { path, .. }) => assert_eq!(path, not_weights),
            other => panic!("expected a read error, got {:?}", other.map(|_| ())),
        }
    }

    // In memory, a tensor of the right shape but an integer dtype.
    let mut tensors: HashMap<String, TensorData> = HashMap::new();
    tensors.insert("Conv2d_1a_3x3.conv.weight".into(), TensorData::new(vec![0i64; 864], [32, 3, 3, 3]));
    match InceptionConfig::new().from_tensors::<B>(tensors, &device) {
        Err(err @ InceptionError::BadTensor { .. }) => {
            assert!(err.to_string().contains("<memory>: tensor `Conv2d_1a_3x3.conv.weight`"), "{err}");
        }
        other => panic!("expected a bad tensor, got {:?}", other.map(|_| ())),
    }
}

/// The resize is `F.interpolate(..., mode='bilinear', align_corners=False)`, up and down.
#[test]
fn resize_matches_torch_interpolate() {
    let golden = golden();
    let shape = golden.resize_input.shape;
    let input: Vec<f32> = standin::uniform("resize", shape.iter().product()).map(|u| u as f32).collect();
    let x = Tensor::<B, 4>::from_data(TensorData::new(input, shape), &Default::default());
    for resize in &golden.resizes {
        let y = kiln_inception::resize_bilinear(x.clone(), resize.size);
        assert_eq!(y.dims(), [shape[0], shape[1], resize.size[0], resize.size[1]]);
        let y = y.into_data().into_vec::<f32>().expect("f32");
        let diff = y.iter().zip(&resize.values).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        // Values in [0, 1); torch computes the source coordinate in f32, burn in f64.
        assert!(diff <= 1e-6, "resize to {:?} differs by {diff}", resize.size);
    }
}

#[test]
fn preprocessing_follows_pytorch_fid() {
    let device = Default::default();
    // Greyscale is the same image on all three channels.
    let grey =
        Tensor::<B, 4>::from_data(TensorData::new(standin::image(7, 20)[..400].to_vec(), [1, 1, 20, 20]), &device);
    let rgb = grey.clone().repeat_dim(1, 3);
    let a = preprocess(grey, true).expect("grey").into_data();
    let b = preprocess(rgb, true).expect("rgb").into_data();
    assert_eq!(a.shape.to_vec(), vec![1, 3, 299, 299]);
    assert_eq!(a, b);

    // [0, 1] → [-1, 1]; a constant image stays constant through the resize.
    let half = preprocess(Tensor::<B, 4>::full([2, 3, 40, 50], 0.75, &device), true).expect("ok");
    let values = half.into_data().into_vec::<f32>().expect("f32");
    assert!(values.iter().all(|&v| (v - 0.5).abs() < 1e-6));

    for (shape, resize) in [([1, 2, 32, 32], true), ([0, 3, 32, 32], true), ([1, 3, 74, 299], false)] {
        let refused = preprocess(Tensor::<B, 4>::zeros(shape, &device), resize);
        assert!(matches!(refused, Err(InceptionError::InputShape { .. })), "{shape:?} accepted");
    }
    assert!(preprocess(Tensor::<B, 4>::zeros([1, 3, 75, 80], &device), false).is_ok());
}

/// Throughput of `features` on a batch of 32 images at 299×299 (no resize work). Ignored: a
/// measurement, not a check. `cargo test --release -p kiln-inception -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run by hand"]
fn throughput() {
    let tensors: HashMap<String, TensorData> = state_dict_layout()
        .iter()
        .map(|(name, shape)| (name.clone(), TensorData::new(standin::tensor(name, shape), shape.clone())))
        .collect();
    let device = Default::default();
    let net = InceptionConfig::new().from_tensors::<B>(tensors, &device).expect("stand-in builds");
    let batch = 32;
    let x = Tensor::<B, 4>::from_data(
        TensorData::new(
            standin::uniform("throughput", batch * 3 * 299 * 299).map(|u| u as f32).collect(),
            [batch, 3, 299, 299],
        ),
        &device,
    );
    // Warm-up, then the timed runs; `into_data` forces the computation.
    let _ = net.features(x.clone()).expect("forward").into_data();
    let runs = 3;
    let start = std::time::Instant::now();
    for _ in 0..runs {
        let _ = net.features(x.clone()).expect("forward").into_data();
    }
    let seconds = start.elapsed().as_secs_f64() / runs as f64;
    println!("batch {batch} at 299×299: {seconds:.2} s per batch, {:.2} images/s", batch as f64 / seconds);
}
