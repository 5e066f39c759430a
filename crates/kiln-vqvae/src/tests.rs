//! Unit tests on tiny shapes. The backend is named here and nowhere else in the crate: burn-flex by
//! default, burn-ndarray with `--features test-ndarray`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, Tolerance};
use kiln_core::{Generative, SampleError, SampleRequest, Task};
use kiln_data::{Mnist, PixelRange, Split, gather};

use crate::*;

#[cfg(not(feature = "test-ndarray"))]
type TestBackend = burn::backend::Flex;
#[cfg(feature = "test-ndarray")]
type TestBackend = burn::backend::NdArray;
type TestAutodiff = Autodiff<TestBackend>;

fn device() -> burn::tensor::Device<TestBackend> {
    Default::default()
}

/// The backend keeps one global random generator, and tests run in parallel threads: a test that
/// seeds it and needs the same draws twice (the resume test) holds this lock, and so does every
/// test that draws, so that none draws in between.
fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-vqvae-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mnist_sample() -> Arc<kiln_data::ImageSet> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/mnist-sample");
    Arc::new(Mnist::load(&dir, Split::Train).expect("bundled MNIST sample"))
}

/// A small model for the state tests: 1×8×8 → 4×4 codes of a 6-entry book.
fn tiny() -> VqVaeConfig {
    VqVaeConfig::new()
        .with_image_size(8)
        .with_downsamples(1)
        .with_hidden(4)
        .with_res_hidden(2)
        .with_codebook_size(6)
        .with_code_dim(3)
}

fn digits(set: &kiln_data::ImageSet, range: std::ops::Range<usize>) -> Tensor<TestBackend, 4> {
    gather::<TestBackend>(set, &range.collect::<Vec<_>>(), PixelRange::ZeroOne, &device()).images
}

fn bits<const D: usize>(t: Tensor<TestBackend, D>) -> Vec<u32> {
    t.into_data().iter::<f32>().map(f32::to_bits).collect()
}

#[test]
fn shapes_of_every_preset() {
    let _rng = rng_lock();
    for (config, grid, n) in
        [(VqVaeConfig::mnist28(), 7, 3), (VqVaeConfig::emoji32(), 8, 2), (VqVaeConfig::cifar(), 8, 1)]
    {
        TestBackend::seed(&device(), 0);
        let model = config.init::<TestBackend>(&device());
        let s = config.image_size;
        let x = Tensor::<TestBackend, 4>::random([n, config.channels, s, s], Distribution::Default, &device());
        assert_eq!(model.encode_latents(x.clone()).dims(), [n, config.code_dim, grid, grid]);
        let indices = model.encode(x.clone());
        assert_eq!(indices.dims(), [n, grid, grid]);
        assert_eq!(model.decode_indices(indices).dims(), [n, config.channels, s, s]);
        let loss = model.loss(x);
        assert_eq!(loss.latents.dims(), [n * grid * grid, config.code_dim]);
        assert_eq!(loss.counts.clone().sum().into_scalar() as usize, n * grid * grid);
        assert!(loss.loss.into_scalar().is_finite());
    }
}

/// The promise of the crate: a short run on a small batch of real digits lowers the
/// reconstruction error by a clear margin, and the codebook is in use.
#[test]
fn it_learns_real_digits() {
    let _rng = rng_lock();
    let set = mnist_sample();
    TestAutodiff::seed(&device(), 3);
    let settings = VqVaeTaskConfig {
        optim: kiln_optim::OptimConfig { lr: 2e-3, ..Default::default() },
        data_variance: 0.095,
        ..Default::default()
    };
    let fixed = digits(&set, 0..8);
    // The mnist28 preset at half width: the same shape of network, cheap enough for burn-ndarray's
    // convolutions (the full preset takes minutes there).
    let small = VqVaeConfig::mnist28().with_hidden(32).with_res_hidden(16);
    let mut task = VqVaeTask::<TestAutodiff>::new(small, &settings, 60, fixed, &device()).unwrap();
    // 16 digits, seen again and again: an overfit run.
    let batch = kiln_core::ImageBatch {
        images: Tensor::from_inner(digits(&set, 0..16)),
        labels: Tensor::<TestAutodiff, 1, Int>::zeros([16], &device()),
    };
    let metric = |out: &kiln_core::StepOutput, name: &str| {
        out.metrics.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).unwrap()
    };
    let first = task.step(batch.clone(), 0);
    let mut last = first.clone();
    for step in 1..60 {
        TestAutodiff::seed(&device(), step as u64);
        last = task.step(batch.clone(), step);
    }
    let (m0, m1) = (metric(&first, "recon_mse"), metric(&last, "recon_mse"));
    // Untrained: the decoder outputs ~0.5 everywhere, MSE ≈ mean of (x − 0.5)² ≈ 0.2 on digits.
    assert!(m0 > 0.1, "untrained reconstruction MSE should be near 0.2, got {m0}");
    assert!(m1 < 0.4 * m0, "reconstruction MSE fell only from {m0:.4} to {m1:.4}");
    assert!(metric(&last, "perplexity") > 2.0, "codebook collapsed: {:?}", last.metrics);
    let psnr = metric(&last, "psnr");
    assert!((psnr - (-10.0 * m1.log10())).abs() < 1e-3, "psnr {psnr} vs mse {m1}");
    assert!((metric(&last, "nmse") - m1 / 0.095).abs() < 1e-6);
    let previews = task.previews();
    assert_eq!(previews[0].images.dims(), [16, 1, 28, 28]);
    assert_eq!(previews[1].name, "codes");
    assert_eq!(previews[1].images.dims(), [1, 3, 96, 512]);
}

#[test]
fn indices_to_codes_give_the_quantized_tensor() {
    let _rng = rng_lock();
    TestBackend::seed(&device(), 5);
    let model = tiny().init::<TestBackend>(&device());
    let x = Tensor::<TestBackend, 4>::random([2, 1, 8, 8], Distribution::Default, &device());
    let out = model.loss(x.clone());
    let indices = model.encode(x.clone());
    assert_eq!(indices.clone().into_data(), out.indices.clone().into_data());
    // Every code vector is exactly its codebook row.
    let codes = model.codes(indices.clone()); // [2, 3, 4, 4]
    let rows = codes.clone().permute([0, 2, 3, 1]).reshape([32, 3]);
    let book = model.codebook().select(0, indices.clone().reshape([32]));
    assert_eq!(bits(rows), bits(book));
    // The straight-through tensor the decoder sees in training has the value of those codes.
    let z = model.encode_latents(x.clone());
    let st = kiln_kernels::vq::straight_through(z.clone(), codes.clone());
    st.into_data().assert_approx_eq::<f32>(&codes.clone().into_data(), Tolerance::absolute(1e-6));
    // And decoding the indices is the decoder applied to the quantized encoding.
    assert_eq!(bits(model.decode_indices(indices)), bits(model.decode_latents(codes).clamp(0.0, 1.0)));
    assert_eq!(bits(model.reconstruct(x.clone())), bits(Generative::reconstruct(&model, x).unwrap()));
}

#[test]
fn the_ema_codebook_moves_towards_its_vectors() {
    let _rng = rng_lock();
    TestBackend::seed(&device(), 6);
    let model = tiny().init::<TestBackend>(&device());
    let target = Tensor::<TestBackend, 2>::from_data([[2.0f32, -1.0, 0.5]], &device());
    let latents =
        target.clone().repeat_dim(0, 10) + Tensor::random([10, 3], Distribution::Uniform(-0.01, 0.01), &device()); // [10, 3]
    let indices = Tensor::<TestBackend, 1, Int>::zeros([10], &device());
    let distance =
        |m: &VqVae<TestBackend>| (m.codebook().narrow(0, 0, 1) - target.clone()).square().sum().into_scalar().sqrt();
    let before = distance(&model);
    let once = model.clone().ema_update(latents.clone(), indices.clone(), 0.9, 1e-5, None);
    let after = distance(&once);
    assert!(after < before, "code 0 moved away: {before} → {after}");
    // Its count is γ·1 + (1 − γ)·10.
    let size: Vec<f32> = once.cluster_size().into_data().to_vec().unwrap();
    assert!((size[0] - 1.9).abs() < 1e-5 && (size[1] - 0.9).abs() < 1e-5, "{size:?}");
    let mut m = once;
    for _ in 0..100 {
        m = m.ema_update(latents.clone(), indices.clone(), 0.9, 1e-5, None);
    }
    assert!(distance(&m) < 0.05, "after 100 updates code 0 is still {} away", distance(&m));
}

#[test]
fn dead_codes_are_restarted_from_the_batch() {
    let _rng = rng_lock();
    TestBackend::seed(&device(), 7);
    let model = tiny().init::<TestBackend>(&device());
    let latents = Tensor::<TestBackend, 2>::random([5, 3], Distribution::Uniform(10.0, 11.0), &device());
    let indices = Tensor::<TestBackend, 1, Int>::zeros([5], &device());
    // γ = 0.5: every unassigned code's count falls from 1 to 0.5, below the threshold 0.6.
    let m = model.ema_update(latents.clone(), indices, 0.5, 1e-5, Some(0.6));
    let book: Vec<f32> = m.codebook().into_data().to_vec().unwrap();
    let rows: Vec<f32> = latents.into_data().to_vec().unwrap();
    let size: Vec<f32> = m.cluster_size().into_data().to_vec().unwrap();
    assert!((size[0] - 3.0).abs() < 1e-5, "code 0 was used 5 times: {size:?}");
    for k in 1..6 {
        let code = &book[3 * k..3 * k + 3];
        assert!(rows.chunks(3).any(|r| r == code), "code {k} = {code:?} is not a batch vector");
        assert_eq!(size[k], 1.0, "a restarted code starts with count 1");
    }
    // Code 0 is live: an EMA mean of the batch (near 10.5), not a restart.
    assert!(book[..3].iter().all(|&v| v > 4.0 && v < 11.0), "{:?}", &book[..3]);
}

#[test]
fn checkpoint_round_trip_is_bit_exact() {
    let _rng = rng_lock();
    TestBackend::seed(&device(), 8);
    let config = tiny();
    let x = Tensor::<TestBackend, 4>::random([2, 1, 8, 8], Distribution::Default, &device());
    // Move the codebook and its statistics away from their initial values first.
    let model = config.init::<TestBackend>(&device());
    let out = model.loss(x.clone());
    let model = model.ema_update(out.latents, out.indices.reshape([32]), 0.99, 1e-5, Some(0.95));
    let dir = tmp("roundtrip");
    model.save(&config, &dir).unwrap();
    assert!(dir.join("kiln.json").is_file());
    let (loaded_config, loaded) = VqVae::<TestBackend>::load(&dir, &device()).unwrap();
    assert_eq!(loaded_config.codebook_size, config.codebook_size);
    assert_eq!(bits(model.reconstruct(x.clone())), bits(loaded.reconstruct(x)));
    assert_eq!(bits(model.codebook()), bits(loaded.codebook()));
    assert_eq!(bits(model.cluster_size()), bits(loaded.cluster_size()));

    // A checkpoint of another shape is a clear error.
    std::fs::write(dir.join(CONFIG_FILE), serde_json::to_string(&config.clone().with_code_dim(4)).unwrap()).unwrap();
    let err = VqVae::<TestBackend>::load(&dir, &device()).unwrap_err().to_string();
    assert!(err.contains(WEIGHTS_FILE) && err.contains("not a checkpoint of this VQ-VAE"), "{err}");
    std::fs::write(dir.join(CONFIG_FILE), "{\"hidden\": \"wide\"}").unwrap();
    let err = VqVae::<TestBackend>::load(&dir, &device()).unwrap_err().to_string();
    assert!(err.contains("vqvae.json: not a VQ-VAE config"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `save_state` after N steps, `load_state` into a fresh task, M more steps: the same weights,
/// codebook and statistics as N + M steps without a stop.
#[test]
fn resume_is_bit_exact() {
    let _rng = rng_lock();
    let set = mnist_sample();
    let config = tiny().with_image_size(28).with_downsamples(2);
    // A threshold above the starting counts, so that restarts (and their random draws) happen.
    let settings = VqVaeTaskConfig { restart_threshold: Some(0.995), data_variance: 0.1, ..Default::default() };
    let batch = |step: usize| kiln_core::ImageBatch {
        images: Tensor::<TestAutodiff, 4>::from_inner(digits(&set, 8 * step..8 * step + 8)),
        labels: Tensor::<TestAutodiff, 1, Int>::zeros([8], &device()),
    };
    let fixed = digits(&set, 0..8);
    let run = |task: &mut VqVaeTask<TestAutodiff>, steps: std::ops::Range<usize>| {
        for step in steps {
            // As the trainer does: the backend RNG seeded per step.
            TestAutodiff::seed(&device(), 1000 + step as u64);
            task.step(batch(step), step);
        }
    };
    TestAutodiff::seed(&device(), 9);
    let mut straight = VqVaeTask::<TestAutodiff>::new(config.clone(), &settings, 6, fixed.clone(), &device()).unwrap();
    run(&mut straight, 0..6);

    TestAutodiff::seed(&device(), 9);
    let mut first = VqVaeTask::<TestAutodiff>::new(config.clone(), &settings, 6, fixed.clone(), &device()).unwrap();
    run(&mut first, 0..3);
    let dir = tmp("resume");
    first.save_state(&dir).unwrap();
    TestAutodiff::seed(&device(), 10); // a different initialisation, overwritten by the load
    let mut resumed = VqVaeTask::<TestAutodiff>::new(config, &settings, 6, fixed, &device()).unwrap();
    resumed.load_state(&dir).unwrap();
    run(&mut resumed, 3..6);

    let (a, b) = (straight.trained(), resumed.trained());
    let x = digits(&set, 100..104);
    assert_eq!(bits(a.encode_latents(x.clone())), bits(b.encode_latents(x.clone())));
    assert_eq!(bits(a.reconstruct(x.clone())), bits(b.reconstruct(x)));
    assert_eq!(bits(a.codebook()), bits(b.codebook()));
    assert_eq!(bits(a.cluster_size()), bits(b.cluster_size()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sampling_is_refused_and_points_to_a_prior() {
    let _rng = rng_lock();
    let model = tiny().init::<TestBackend>(&device());
    let err = model.sample(&SampleRequest::new(4, 0), &device()).err().unwrap();
    assert!(matches!(err, SampleError::Incapable(_)));
    let text = err.to_string();
    assert!(text.contains("no prior of its own") && text.contains("train a prior over its codes"), "{text}");
    assert!(model.latent_space().is_none());
    assert_eq!(model.card().image, [1, 8, 8]);
    let wrong = Tensor::<TestBackend, 4>::zeros([1, 3, 8, 8], &device());
    let err = Generative::reconstruct(&model, wrong).unwrap_err().to_string();
    assert!(err.contains("[1, 8, 8]") && err.contains("[3, 8, 8]"), "{err}");
}

#[test]
fn invalid_configs_name_the_field() {
    let err = VqVaeConfig::new().with_image_size(30).validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "VQ-VAE config: image_size = 30: must be a positive multiple of 2^2 = 4 (one halving per stage)"
    );
    let err = VqVaeConfig::new().with_codebook_size(0).validate().unwrap_err();
    assert!(err.to_string().starts_with("VQ-VAE config: codebook_size = 0"), "{err}");
    let err = VqVaeConfig::new().with_commitment(-1.0).validate().unwrap_err();
    assert!(err.to_string().contains("commitment = -1"), "{err}");
    let err = VqVaeConfig::new().with_downsamples(0).validate().unwrap_err();
    assert!(err.to_string().contains("downsamples = 0"), "{err}");
    let bad = VqVaeTaskConfig { decay: 1.0, ..Default::default() };
    assert!(bad.validate().unwrap_err().to_string().contains("decay = 1"));
    let bad = VqVaeTaskConfig { restart_threshold: Some(-0.5), ..Default::default() };
    assert!(bad.validate().unwrap_err().to_string().contains("restart_threshold = -0.5"));
    let bad = VqVaeTaskConfig { data_variance: 0.0, ..Default::default() };
    assert!(bad.validate().unwrap_err().to_string().contains("data_variance = 0"));
    let fixed = Tensor::<TestBackend, 4>::zeros([8, 1, 28, 28], &device());
    let err = VqVaeTask::<TestAutodiff>::new(
        VqVaeConfig::new().with_hidden(1),
        &VqVaeTaskConfig::default(),
        1,
        fixed,
        &device(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("hidden = 1"), "{err}");
}

#[test]
fn the_code_histogram_sorts_and_colours_its_bars() {
    let image = crate::task::histogram_image::<TestBackend>(&[1.0, 4.0, 0.0, 2.0], 0.5, &device());
    // 4 codes → bars 128 px wide; the tallest (count 4) first, full height.
    assert_eq!(image.dims(), [1, 3, 96, 512]);
    let px = |c: usize, y: usize, x: usize| image.clone().slice([0..1, c..c + 1, y..y + 1, x..x + 1]).into_scalar();
    assert!(px(2, 0, 0) > 0.5 && px(0, 0, 0) < 0.5, "the top of the first bar is blue");
    assert_eq!(px(0, 0, 200), 1.0, "the second bar (count 2) is half height: white at the top");
    assert!(px(2, 95, 200) > 0.5, "blue at its foot");
    assert!(px(0, 95, 511) > 0.5 && px(2, 95, 511) < 0.5, "the dead code is a red stub");
    assert_eq!(px(0, 94, 511), 1.0);
}
