//! Shapes, save/load, errors, and that the classifier learns the bundled digits.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::Autodiff;
use burn_flex::Flex;
use kiln_data::{Batcher, Mnist, PixelRange, Split};
use kiln_optim::OptimConfig;
use kiln_train::{LoopConfig, fit};

use super::*;

type B = Flex;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-features-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// burn-flex draws from one global generator: tests that initialise networks take this lock, so
/// the learning test's seeded draws are not interleaved with another test's.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn digits(split: Split) -> Arc<kiln_data::ImageSet> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/mnist-sample");
    Arc::new(Mnist::load(&dir, split).unwrap())
}

#[test]
fn shapes_and_config_errors() {
    let _serial = serial();
    let device = Default::default();
    for config in [FeatureNetConfig::mnist(), FeatureNetConfig::emoji32().with_widths(vec![8, 16])] {
        let net = config.init::<B>(&device);
        let x = Tensor::<B, 4>::ones([3, config.channels, config.image_size, config.image_size], &device);
        assert_eq!(net.features(x.clone()).dims(), [3, config.feature_dim]);
        assert_eq!(net.logits(x).dims(), [3, config.classes]);
    }
    let err = FeatureNetConfig::new(1, 28, 1).validate().unwrap_err().to_string();
    assert!(err.contains("classes = 1"), "{err}");
    let err = FeatureNetConfig::mnist().with_widths(vec![8, 0]).validate().unwrap_err().to_string();
    assert!(err.contains("widths = [8, 0]"), "{err}");
}

#[test]
fn saved_network_loads_back_identically_and_wrong_files_are_named() {
    let _serial = serial();
    let device = Default::default();
    let config = FeatureNetConfig::mnist().with_widths(vec![4, 8]).with_feature_dim(16);
    let net = config.init::<B>(&device);
    let dir = tmp("save");
    net.save(&config, &dir).unwrap();
    let (loaded_config, loaded) = FeatureNet::<B>::load(&dir, &device).unwrap();
    assert_eq!(loaded_config, config);
    let x = Tensor::<B, 4>::random([2, 1, 28, 28], burn::tensor::Distribution::Default, &device);
    let (a, b) = (net.features(x.clone()), loaded.features(x));
    assert_eq!(a.into_data().to_vec::<f32>().unwrap(), b.into_data().to_vec::<f32>().unwrap());

    // A config that does not match the weights names the weights file.
    let other = FeatureNetConfig::mnist().with_widths(vec![4, 9]).with_feature_dim(16);
    std::fs::write(dir.join(CONFIG_FILE), serde_json::to_string(&other).unwrap()).unwrap();
    let err = FeatureNet::<B>::load(&dir, &device).unwrap_err().to_string();
    assert!(err.contains(WEIGHTS_FILE), "{err}");
    std::fs::write(dir.join(CONFIG_FILE), "{").unwrap();
    let err = FeatureNet::<B>::load(&dir, &device).unwrap_err().to_string();
    assert!(err.contains(CONFIG_FILE) && err.contains("not a feature-net config"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// 400 steps of batch 64 on 4,500 real digits take a small net from chance (10 %) to well over
/// 80 % on the held-out 500.
#[test]
fn the_classifier_learns_the_bundled_digits() {
    let _serial = serial();
    let device = Default::default();
    // Seeded, so the initial weights (drawn lazily, on first use) are the same every run.
    <Autodiff<B> as burn::tensor::backend::Backend>::seed(&device, 3);
    let (train, test) = (digits(Split::Train), digits(Split::Test));
    let config = FeatureNetConfig::mnist().with_widths(vec![16, 32, 32]).with_feature_dim(32);
    let optim = OptimConfig { lr: 3e-3, ..OptimConfig::default() };
    let steps = 400;
    let mut task = ClassifierTask::<Autodiff<B>>::new(config, optim, steps, &device).unwrap();
    let before = accuracy(&task.net(), &test, 250, &device);
    let mut loader = Batcher::new(train, 64, PixelRange::ZeroOne, 1).unwrap().on::<Autodiff<B>>(&device);
    let dir = tmp("learn");
    fit(&mut task, &mut loader, &LoopConfig::new(steps, &dir)).unwrap();
    let after = accuracy(&task.net(), &test, 250, &device);
    eprintln!("test accuracy {before} → {after}");
    assert!(before < 0.3 && after > 0.8, "test accuracy {before} → {after}");
    // The run directory holds a loadable extractor.
    let (_, net) = FeatureNet::<B>::load(&dir, &device).unwrap();
    assert!((accuracy(&net, &test, 250, &device) - after).abs() < 1e-9);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bundled_names_resolve_inside_the_crate() {
    assert!(bundled("mnist").unwrap().ends_with("weights/mnist"));
    assert!(bundled("imagenet").is_none());
}

/// The shipped extractors load, and classify as their provenance says.
#[test]
fn bundled_extractors_load_and_classify_as_recorded() {
    let device = Default::default();
    let (config, net) = FeatureNet::<B>::load(&bundled("mnist").unwrap(), &device).unwrap();
    assert_eq!((config.channels, config.image_size, config.classes), (1, 28, 10));
    let test = digits(Split::Test);
    let acc = accuracy(&net, &test, 250, &device);
    let provenance: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundled("mnist").unwrap().join("provenance.json")).unwrap())
            .unwrap();
    assert!((acc - provenance["accuracy"].as_f64().unwrap()).abs() < 0.005, "{acc} vs {provenance}");
    let (config, _) = FeatureNet::<B>::load(&bundled("emoji32").unwrap(), &device).unwrap();
    assert_eq!((config.channels, config.image_size, config.classes), (3, 32, 10));
}

/// The copies built into the binary are the files in the source tree, weight for weight.
#[test]
fn built_in_extractors_equal_the_source_tree_copies() {
    let device = Default::default();
    for name in crate::BUNDLED {
        let (from_dir_config, from_dir) = FeatureNet::<B>::load(&bundled(name).unwrap(), &device).unwrap();
        let (built_in_config, built_in) = FeatureNet::<B>::load_bundled(name, &device).unwrap().unwrap();
        assert_eq!(format!("{from_dir_config:?}"), format!("{built_in_config:?}"), "{name}");
        let x = burn::tensor::Tensor::<B, 4>::random(
            [2, from_dir_config.channels, from_dir_config.image_size, from_dir_config.image_size],
            burn::tensor::Distribution::Uniform(0.0, 1.0),
            &device,
        );
        let (a, b) = (from_dir.logits(x.clone()), built_in.logits(x));
        assert_eq!(a.into_data(), b.into_data(), "{name}");
    }
    assert!(FeatureNet::<B>::load_bundled("imagenet", &device).unwrap().is_none());
}
