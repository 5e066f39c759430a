//! Unit tests on tiny shapes. The backend is named here and nowhere else in the crate: burn-flex by
//! default, burn-ndarray with `--features test-ndarray`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, Tolerance};
use kiln_core::{Generative, SampleRequest, Task};
use kiln_data::{Batcher, Mnist, PixelRange, Split, gather};

use crate::*;

#[cfg(not(feature = "test-ndarray"))]
type TestBackend = burn::backend::Flex;
#[cfg(feature = "test-ndarray")]
type TestBackend = burn::backend::NdArray;
type TestAutodiff = Autodiff<TestBackend>;

fn device() -> burn::tensor::Device<TestBackend> {
    Default::default()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-vae-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mnist_sample() -> Arc<kiln_data::ImageSet> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/mnist-sample");
    Arc::new(Mnist::load(&dir, Split::Train).expect("bundled MNIST sample"))
}

#[test]
fn shapes_of_every_preset() {
    for (config, n) in [(VaeConfig::mnist(), 3), (VaeConfig::rgb32(), 2)] {
        TestBackend::seed(&device(), 0);
        let model = config.init::<TestBackend>(&device());
        let s = config.image_size;
        let x = Tensor::<TestBackend, 4>::zeros([n, config.channels, s, s], &device());
        let q = model.encode(x.clone());
        assert_eq!(q.mean.dims(), [n, config.latent]);
        assert_eq!(q.log_var.dims(), [n, config.latent]);
        assert_eq!(model.decode(q.sample()).dims(), [n, config.channels, s, s]);
        assert_eq!(
            model.sample(&SampleRequest::new(5, 0), &device()).unwrap().images.dims(),
            [5, config.channels, s, s]
        );
        let loss = model.loss(x);
        assert!(loss.loss.into_scalar().is_finite());
    }
}

#[test]
fn kl_is_zero_at_the_prior_and_positive_elsewhere() {
    let zeros = Tensor::<TestBackend, 2>::zeros([2, 3], &device());
    let q = Posterior { mean: zeros.clone(), log_var: zeros.clone() };
    q.kl().into_data().assert_approx_eq::<f32>(&TensorData::from([0.0, 0.0]), Tolerance::absolute(1e-6));
    // KL(N(1, e^0.5) ‖ N(0, 1)) per dim = (e^0.5 + 1 − 0.5 − 1) / 2.
    let q = Posterior { mean: zeros.clone().add_scalar(1.0), log_var: zeros.add_scalar(0.5) };
    let per_dim = (0.5f32.exp() + 1.0 - 0.5 - 1.0) / 2.0;
    q.kl().into_data().assert_approx_eq::<f32>(&TensorData::from([3.0 * per_dim; 2]), Tolerance::absolute(1e-5));
}

#[test]
fn bernoulli_reconstruction_term_matches_hand_computed_bce() {
    // With a zero decoder the logits are its output-layer bias only; compare the reconstruction
    // term against BCE computed on the host from those same logits.
    TestBackend::seed(&device(), 1);
    let config = VaeConfig::new().with_image_size(4).with_widths(vec![2]).with_hidden(0).with_latent(2);
    let model = config.init::<TestBackend>(&device());
    let x = Tensor::<TestBackend, 4>::from_data(
        TensorData::new((0..16).map(|i| i as f32 / 15.0).collect::<Vec<_>>(), [1, 1, 4, 4]),
        &device(),
    );
    let logits = model.decode_params(Tensor::zeros([1, 2], &device()));
    let nll = model.neg_log_likelihood(logits.clone(), x.clone()).into_scalar() as f64;
    let l: Vec<f32> = logits.into_data().to_vec().unwrap();
    let t: Vec<f32> = x.into_data().to_vec().unwrap();
    let expected: f64 = l
        .iter()
        .zip(&t)
        .map(|(&l, &t)| {
            let p = 1.0 / (1.0 + (-(l as f64)).exp());
            -(t as f64 * p.ln() + (1.0 - t as f64) * (1.0 - p).ln())
        })
        .sum();
    assert!((nll - expected).abs() < 1e-4, "{nll} vs {expected}");
}

#[test]
fn invalid_configs_name_the_field() {
    let err = VaeConfig::new().with_image_size(30).with_widths(vec![8, 8]).validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "VAE config: image_size = 30: must be a positive multiple of 2^2 = 4 (one halving per stage)"
    );
    let err = VaeConfig::new().with_latent(0).validate().unwrap_err();
    assert!(err.to_string().starts_with("VAE config: latent = 0"), "{err}");
    let err = VaeConfig::new().with_likelihood(Likelihood::Gaussian { sigma: -1.0 }).validate().unwrap_err();
    assert!(err.to_string().contains("likelihood.sigma = -1"), "{err}");
}

/// The promise of the crate: a short run on a small batch of real digits lowers the negative ELBO
/// by a clear margin.
#[test]
fn it_learns_real_digits() {
    let set = mnist_sample();
    TestAutodiff::seed(&device(), 3);
    let fixed = gather::<TestBackend>(&set, &(0..8).collect::<Vec<_>>(), PixelRange::ZeroOne, &device()).images;
    let task_config = VaeTaskConfig {
        optim: kiln_optim::OptimConfig { lr: 2e-3, ..Default::default() },
        ema_decay: Some(0.9),
        preview_samples: 8,
    };
    let mut task = VaeTask::<TestAutodiff>::new(VaeConfig::mnist(), &task_config, 80, fixed, &device()).unwrap();
    // 32 digits, seen again and again: an overfit run.
    let small = Arc::new(kiln_data::ImageSet {
        pixels: set.pixels[..32 * 784].to_vec(),
        labels: set.labels[..32].to_vec(),
        len: 32,
        ..(*set).clone()
    });
    let mut batches = Batcher::new(small, 32, PixelRange::ZeroOne, 0).unwrap();
    let first = task.step(batches.next_batch(&device()), 0).metrics[0].1;
    let mut last = first;
    for step in 1..80 {
        last = task.step(batches.next_batch(&device()), step).metrics[0].1;
    }
    assert!(first > 400.0, "untrained negative ELBO should be near 784·ln 2 ≈ 543, got {first}");
    assert!(last < 0.6 * first, "negative ELBO fell only from {first:.1} to {last:.1}");
    let previews = task.previews();
    assert_eq!(previews[0].images.dims(), [8, 1, 28, 28]);
    assert_eq!(previews[1].images.dims(), [16, 1, 28, 28]);
}

#[test]
fn checkpoint_round_trip_is_bit_exact() {
    TestBackend::seed(&device(), 4);
    let config = VaeConfig::new().with_widths(vec![4, 8]).with_hidden(16).with_latent(3);
    let model = config.init::<TestBackend>(&device());
    let dir = tmp("roundtrip");
    model.save(&config, &dir).unwrap();
    let (loaded_config, loaded) = Vae::<TestBackend>::load(&dir, &device()).unwrap();
    assert_eq!(loaded_config.widths, config.widths);
    let x = Tensor::<TestBackend, 4>::random([2, 1, 28, 28], burn::tensor::Distribution::Default, &device());
    assert_eq!(model.reconstruct(x.clone()).into_data(), loaded.reconstruct(x).into_data());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    TestBackend::seed(&device(), 5);
    let small = VaeConfig::new().with_widths(vec![4, 8]).with_hidden(16).with_latent(3);
    let dir = tmp("bad");
    small.init::<TestBackend>(&device()).save(&small, &dir).unwrap();
    let weights = dir.join(WEIGHTS_FILE);

    // Weights of another model: same files, but a config that implies other shapes.
    let other = VaeConfig::new().with_widths(vec![4, 8]).with_hidden(32).with_latent(3);
    std::fs::write(dir.join(CONFIG_FILE), serde_json::to_string(&other).unwrap()).unwrap();
    let err = Vae::<TestBackend>::load(&dir, &device()).unwrap_err().to_string();
    assert!(err.contains("vae.safetensors") && err.contains("not a checkpoint of this VAE"), "{err}");

    // Truncated weights.
    std::fs::write(dir.join(CONFIG_FILE), serde_json::to_string(&small).unwrap()).unwrap();
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = Vae::<TestBackend>::load(&dir, &device()).unwrap_err().to_string();
    assert!(err.contains("vae.safetensors"), "{err}");

    // Missing files and a broken config.
    std::fs::remove_file(&weights).unwrap();
    let err = Vae::<TestBackend>::load(&dir, &device()).unwrap_err().to_string();
    assert!(err.contains("vae.safetensors") && err.contains("No such file"), "{err}");
    std::fs::write(dir.join(CONFIG_FILE), "{\"latent\": \"many\"}").unwrap();
    let err = Vae::<TestBackend>::load(&dir, &device()).unwrap_err().to_string();
    assert!(err.contains("vae.json: not a VAE config"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Points from two well-separated Gaussians, `n` of them, 30 % in the first.
fn two_clusters(n: usize, seed: u64) -> Vec<f32> {
    let noise = kiln_core::standard_normal(n * 2, seed, None);
    (0..n)
        .flat_map(|i| {
            let (cx, cy, s) = if i % 10 < 3 { (-4.0, 1.0, 0.5) } else { (3.0, -2.0, 0.25) };
            [cx + s * noise[2 * i], cy + s * noise[2 * i + 1]]
        })
        .collect()
}

/// EM finds the two clusters (weights, means, spreads), its samples land where the data is,
/// and two components explain the data better than one.
#[test]
fn the_latent_mixture_recovers_two_clusters() {
    let points = two_clusters(2000, 1);
    let two = LatentMixture::fit(&points, 2, 2, 7).unwrap();
    let one = LatentMixture::fit(&points, 2, 1, 7).unwrap();
    assert!(
        two.mean_log_likelihood > one.mean_log_likelihood + 1.0,
        "{} vs {}",
        two.mean_log_likelihood,
        one.mean_log_likelihood
    );
    let first = if two.means[0][0] < 0.0 { 0 } else { 1 };
    let (a, b) = (first, 1 - first);
    assert!((two.weights[a] - 0.3).abs() < 0.02, "weights {:?}", two.weights);
    assert!((two.means[a][0] + 4.0).abs() < 0.1 && (two.means[a][1] - 1.0).abs() < 0.1, "{:?}", two.means);
    assert!((two.means[b][0] - 3.0).abs() < 0.1 && (two.means[b][1] + 2.0).abs() < 0.1, "{:?}", two.means);
    assert!((two.cholesky[a][0] - 0.5).abs() < 0.05 && (two.cholesky[b][3] - 0.25).abs() < 0.03, "{:?}", two.cholesky);
    // Samples fall into the clusters in the fitted proportions, none in the empty middle.
    let z = two.sample(4000, 3, None);
    let left = z.chunks_exact(2).filter(|p| p[0] < -0.5).count() as f64 / 4000.0;
    let middle = z.chunks_exact(2).filter(|p| p[0] > -1.5 && p[0] < 1.0).count();
    assert!((left - 0.3).abs() < 0.03 && middle == 0, "left share {left}, {middle} in the gap");
    assert_eq!(two.sample(5, 3, None), two.sample(5, 3, None));
    // Bad input is named.
    let err = LatentMixture::fit(&points[..6], 2, 4, 0).unwrap_err().to_string();
    assert!(err.contains("prior_components = 4"), "{err}");
    let err = LatentMixture::fit(&[0.0, f32::NAN], 2, 1, 0).unwrap_err().to_string();
    assert!(err.contains("finite"), "{err}");
}

/// A model saved with its mixture loads with it and samples from it; a broken `prior.json` is
/// an error naming the file; a config written before `prior_components` existed still loads.
#[test]
fn a_vae_keeps_its_latent_mixture_through_save_and_load() {
    TestBackend::seed(&device(), 6);
    let config = VaeConfig::new().with_widths(vec![4, 8]).with_hidden(16).with_latent(2);
    let model = config.init::<TestBackend>(&device());
    let prior = LatentMixture::fit(&two_clusters(500, 2), 2, 2, 0).unwrap();
    let with = model.clone().with_prior(Some(prior.clone()));
    let dir = tmp("prior");
    with.save(&config, &dir).unwrap();
    let (_, loaded) = Vae::<TestBackend>::load(&dir, &device()).unwrap();
    assert_eq!(loaded.prior(), Some(&prior));
    // Sampling decodes the mixture's draws, not N(0, I)'s.
    let request = SampleRequest::new(6, 9);
    let z = Tensor::<TestBackend, 2>::from_data(TensorData::new(prior.sample(6, 9, None), [6, 2]), &device());
    let sampled = Generative::sample(&loaded, &request, &device()).unwrap().images;
    sampled.clone().into_data().assert_approx_eq::<f32>(&with.decode(z).into_data(), Tolerance::default());
    let plain = Generative::sample(&with.clone().with_prior(None), &request, &device()).unwrap().images;
    assert_ne!(sampled.into_data(), plain.into_data());

    let text = std::fs::read_to_string(dir.join(PRIOR_FILE)).unwrap();
    std::fs::write(dir.join(PRIOR_FILE), text.replace("\"dim\": 2", "\"dim\": 3")).unwrap();
    let err = Vae::<TestBackend>::load(&dir, &device()).unwrap_err().to_string();
    assert!(err.contains("prior.json") && err.contains("dim = 3"), "{err}");
    std::fs::write(dir.join(PRIOR_FILE), "{").unwrap();
    let err = Vae::<TestBackend>::load(&dir, &device()).unwrap_err().to_string();
    assert!(err.contains("prior.json") && err.contains("not a latent mixture"), "{err}");
    std::fs::remove_file(dir.join(PRIOR_FILE)).unwrap();
    let mut old: serde_json::Value = serde_json::to_value(&config).unwrap();
    old.as_object_mut().unwrap().remove("prior_components");
    std::fs::write(dir.join(CONFIG_FILE), old.to_string()).unwrap();
    let (old_config, old_model) = Vae::<TestBackend>::load(&dir, &device()).unwrap();
    assert_eq!((old_config.prior_components, old_model.prior()), (10, None));
    std::fs::remove_dir_all(&dir).unwrap();
}
