//! Unit tests on tiny shapes. The backend is named here and nowhere else in the crate: burn-flex by
//! default, burn-ndarray with `--features test-ndarray`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use kiln_core::{Generative, Interpolation, LatentPath, LatentSpace, SampleRequest, Task, interpolate};
use kiln_data::{Batcher, ImageBatch, ImageSet, Mnist, PixelRange, Split, gather};
use kiln_optim::{OptimConfig, TensorFile, param_paths};
use kiln_train::{LoopConfig, fit};

use crate::*;

#[cfg(not(feature = "test-ndarray"))]
type TestBackend = burn::backend::Flex;
#[cfg(feature = "test-ndarray")]
type TestBackend = burn::backend::NdArray;
type TestAutodiff = Autodiff<TestBackend>;

fn device() -> burn::tensor::Device<TestBackend> {
    Default::default()
}

/// flex and ndarray draw from one global generator: tests that seed it and expect the same draws
/// take this lock, or a test running beside them would consume numbers in between.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-gan-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

fn ints<B: Backend>(values: &[i64]) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), &Default::default())
}

fn floats<B: Backend>(values: &[f32]) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), &Default::default())
}

/// A small config for fast tests: `size`×`size` grey images, narrow networks.
fn tiny(size: usize) -> GanConfig {
    GanConfig::new().with_channels(1).with_image_size(size).with_nz(8).with_ngf(4).with_ndf(4)
}

fn mnist_sample() -> Arc<ImageSet> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/mnist-sample");
    Arc::new(Mnist::load(&dir, Split::Train).expect("bundled MNIST sample"))
}

// ---------------------------------------------------------------------------------------------
// Architectures
// ---------------------------------------------------------------------------------------------

#[test]
fn shapes_of_every_preset() {
    let _serial = serial();
    for name in GanConfig::PRESETS {
        let config = GanConfig::preset(name).unwrap();
        config.validate().unwrap();
        TestBackend::seed(&device(), 0);
        let g = config.init_generator::<TestBackend>(&device());
        let d = config.init_discriminator::<TestBackend>(&device());
        let (n, s, c) = (2, config.image_size, config.channels);
        let labels = config.conditional().then(|| ints::<TestBackend>(&[1, 0]));
        let z = Tensor::random([n, config.nz], Distribution::Normal(0.0, 1.0), &device());
        let images = g.generate(z, labels.clone());
        assert_eq!(images.dims(), [n, c, s, s], "{name}");
        let values = to_vec(images.clone());
        assert!(values.iter().all(|v| (-1.0..=1.0).contains(v)), "{name}: tanh range");
        assert_eq!(d.forward(images, labels).dims(), [n], "{name}");
        assert_eq!(g.sample(&SampleRequest::new(3, 0), &device()).unwrap().images.dims(), [3, c, s, s], "{name}");
    }
}

/// Parameters proper (not running statistics or spectral-norm vectors).
fn trainable(paths: Vec<(String, Vec<usize>)>) -> usize {
    paths
        .into_iter()
        .filter(|(p, _)| !p.ends_with("running_mean") && !p.ends_with("running_var") && !p.ends_with(".u"))
        .map(|(_, dims)| dims.iter().product::<usize>())
        .sum()
}

#[test]
fn dcgan64_has_pytorch_examples_parameter_counts() {
    let _serial = serial();
    // pytorch/examples dcgan/main.py with nc = 3, nz = 100, ngf = ndf = 64:
    // sum(p.numel() for p in netG.parameters()) = 3,576,704; netD: 2,765,568.
    let config = GanConfig::dcgan64();
    let g = config.init_generator::<TestBackend>(&device());
    let d = config.init_discriminator::<TestBackend>(&device());
    assert_eq!(trainable(param_paths(&g)), 3_576_704);
    assert_eq!(trainable(param_paths(&d)), 2_765_568);
}

#[test]
fn invalid_configs_name_the_field() {
    let _serial = serial();
    let err = tiny(6).validate().unwrap_err();
    assert!(err.to_string().starts_with("GAN config: image_size = 6"), "{err}");
    let err = tiny(16).with_attention(Some(16)).validate().unwrap_err();
    assert_eq!(err.to_string(), "GAN config: attention = 16: must be the side of a hidden feature map, one of [4, 8]");
    let err = tiny(16).with_num_classes(1).validate().unwrap_err();
    assert!(err.to_string().contains("num_classes = 1"), "{err}");
    let err = GanTaskConfig { n_critic: 0, ..GanTaskConfig::dcgan() }.validate(&tiny(16)).unwrap_err();
    assert!(err.to_string().contains("n_critic = 0"), "{err}");
    let err = GanTaskConfig::dcgan()
        .validate(&tiny(16))
        .and(GanTaskConfig { ema_decay: Some(1.0), ..GanTaskConfig::dcgan() }.validate(&tiny(16)))
        .unwrap_err();
    assert!(err.to_string().contains("ema_decay = 1"), "{err}");
    let bad_lr =
        GanTaskConfig { d_optim: OptimConfig { lr: -1.0, ..OptimConfig::default() }, ..GanTaskConfig::dcgan() };
    assert!(bad_lr.validate(&tiny(16)).unwrap_err().to_string().contains("optim.lr"));
}

#[test]
fn every_model_preset_has_a_recipe_that_fits_it() {
    for name in GanConfig::PRESETS {
        let model = GanConfig::preset(name).unwrap();
        let recipe = GanTaskConfig::for_model_preset(name).unwrap_or_else(|| panic!("{name}"));
        recipe.validate(&model).unwrap();
    }
    for name in GanTaskConfig::PRESETS {
        GanTaskConfig::preset(name).unwrap().validate(&GanConfig::sagan32()).unwrap();
    }
    assert!(GanConfig::preset("dcgan128").is_none() && GanTaskConfig::for_model_preset("nope").is_none());
}

#[test]
fn wgan_gp_refuses_a_batch_norm_critic_and_says_why() {
    let _serial = serial();
    let err = GanTaskConfig::wgan_gp().validate(&tiny(16)).unwrap_err();
    assert!(err.to_string().contains("batch norm makes D's output for one image depend on the whole batch"), "{err}");
    GanTaskConfig::wgan_gp().validate(&tiny(16).with_d_norm(Norm::None)).unwrap();
    GanTaskConfig::wgan_gp().validate(&tiny(16).with_d_norm(Norm::Spectral)).unwrap();
    // R1 on a batch-norm discriminator is well defined (and differentiable): allowed.
    GanTaskConfig { penalty: Penalty::R1 { gamma: 1.0 }, ..GanTaskConfig::dcgan() }.validate(&tiny(16)).unwrap();
}

#[test]
fn settings_read_from_json_with_defaults_and_refuse_unknown_fields() {
    let _serial = serial();
    let text = r#"{"loss": "hinge", "penalty": {"kind": "r1", "gamma": 0.5}, "n_critic": 2,
                   "g_optim": {"lr": 0.0001, "beta1": 0.0, "beta2": 0.9}}"#;
    let s: GanTaskConfig = serde_json::from_str(text).unwrap();
    assert_eq!((s.loss, s.penalty, s.n_critic), (GanLoss::Hinge, Penalty::R1 { gamma: 0.5 }, 2));
    assert_eq!((s.g_optim.lr, s.g_optim.beta1, s.d_optim.lr), (1e-4, 0.0, 2e-4));
    assert!(serde_json::from_str::<GanTaskConfig>(r#"{"n_critc": 2}"#).is_err());
    let gp: Penalty = serde_json::from_str(r#"{"kind": "wgan-gp", "lambda": 10.0}"#).unwrap();
    assert_eq!(gp, Penalty::WganGp { lambda: 10.0 });
    let model: GanConfig = serde_json::from_str(&serde_json::to_string(&GanConfig::sagan32()).unwrap()).unwrap();
    assert_eq!(model, GanConfig::sagan32());
}

// ---------------------------------------------------------------------------------------------
// Losses, by hand
// ---------------------------------------------------------------------------------------------

#[test]
fn losses_match_hand_computed_values() {
    let _serial = serial();
    // D outputs for three real and three fake images.
    let real = || floats::<TestBackend>(&[2.0, -1.0, 0.5]);
    let fake = || floats::<TestBackend>(&[-0.5, 1.5, 0.0]);
    let close = |got: Tensor<TestBackend, 1>, want: f64, what: &str| {
        let got = got.into_scalar() as f64;
        assert!((got - want).abs() < 1e-5, "{what}: {got} vs {want}");
    };
    // BCE by its definition, −log σ(r) and −log(1 − σ(f)), in f64.
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let bce_real: f64 = [2.0, -1.0, 0.5].iter().map(|&r: &f64| -sig(r).ln()).sum::<f64>() / 3.0;
    let bce_fake: f64 = [-0.5, 1.5, 0.0].iter().map(|&f: &f64| -(1.0 - sig(f)).ln()).sum::<f64>() / 3.0;
    let ns_g: f64 = [-0.5, 1.5, 0.0].iter().map(|&f: &f64| -sig(f).ln()).sum::<f64>() / 3.0;
    // (0.126928 + 1.313262 + 0.474077)/3 + (0.474077 + 1.701413 + 0.693147)/3
    assert!((bce_real + bce_fake - 1.594301).abs() < 1e-5);
    close(GanLoss::NonSaturating.d_loss(real(), fake()), bce_real + bce_fake, "non-saturating D");
    close(GanLoss::NonSaturating.g_loss(fake()), ns_g, "non-saturating G");
    // Hinge: relu(1 − r) = [0, 2, 0.5] → 5/6; relu(1 + f) = [0.5, 2.5, 1] → 4/3; G: −mean f = −1/3.
    close(GanLoss::Hinge.d_loss(real(), fake()), 5.0 / 6.0 + 4.0 / 3.0, "hinge D");
    close(GanLoss::Hinge.g_loss(fake()), -1.0 / 3.0, "hinge G");
    // Least squares: ½·mean((r − 1)²) = ½·(1 + 4 + 0.25)/3 = 0.875; ½·mean(f²) = ½·2.5/3;
    // G: ½·mean((f − 1)²) = ½·(2.25 + 0.25 + 1)/3.
    close(GanLoss::LeastSquares.d_loss(real(), fake()), 0.875 + 1.25 / 3.0, "least-squares D");
    close(GanLoss::LeastSquares.g_loss(fake()), 1.75 / 3.0, "least-squares G");
    // Wasserstein: mean f − mean r = 1/3 − 1/2; G: −1/3.
    close(GanLoss::Wasserstein.d_loss(real(), fake()), 1.0 / 3.0 - 0.5, "wasserstein D");
    close(GanLoss::Wasserstein.g_loss(fake()), -1.0 / 3.0, "wasserstein G");
}

#[test]
fn softplus_is_stable_for_large_inputs() {
    let _serial = serial();
    let got = to_vec(softplus(floats::<TestBackend>(&[-100.0, 0.0, 100.0])));
    assert!(got[0] >= 0.0 && got[0] < 1e-30, "{got:?}");
    assert!((got[1] - std::f32::consts::LN_2).abs() < 1e-6);
    assert!((got[2] - 100.0).abs() < 1e-4);
}

// ---------------------------------------------------------------------------------------------
// Gradient penalties: value and gradient against finite differences
// ---------------------------------------------------------------------------------------------

/// Adds `delta` to entry `index` of the parameter at `path`.
struct Nudge {
    path: Vec<String>,
    target: String,
    index: usize,
    delta: f32,
}

impl<B: Backend> ModuleMapper<B> for Nudge {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.path.join(".") != self.target {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let shape = tensor.dims();
        let mut values = to_vec(tensor.clone());
        values[self.index] += self.delta;
        let t = Tensor::<B, D>::from_data(TensorData::new(values, shape), &tensor.device());
        Param::from_mapped_value(id, if require_grad { t.require_grad() } else { t }, mapper)
    }
}

fn nudged(d: &Discriminator<TestAutodiff>, target: &str, index: usize, delta: f32) -> Discriminator<TestAutodiff> {
    d.clone().map(&mut Nudge { path: vec![], target: target.into(), index, delta })
}

/// `D`'s input gradient by central differences, per image: `[N][C·S·S]`.
fn input_gradient_fd(
    d: &Discriminator<TestAutodiff>,
    x: &Tensor<TestBackend, 4>,
    code: Option<&Tensor<TestBackend, 2>>,
) -> Vec<Vec<f64>> {
    let inner = d.valid_training();
    let dims = x.dims();
    let base = to_vec(x.clone());
    let per = base.len() / dims[0];
    let eps = 1e-2f32;
    let eval = |values: Vec<f32>| -> f64 {
        let x = Tensor::<TestBackend, 4>::from_data(TensorData::new(values, dims), &device());
        to_vec(inner(x, code.cloned())).iter().map(|&v| v as f64).sum()
    };
    (0..dims[0])
        .map(|n| {
            (0..per)
                .map(|j| {
                    let i = n * per + j;
                    let (mut up, mut down) = (base.clone(), base.clone());
                    up[i] += eps;
                    down[i] -= eps;
                    (eval(up) - eval(down)) / (2.0 * eps as f64)
                })
                .collect()
        })
        .collect()
}

trait TrainingForward {
    /// D's forward in training mode (batch statistics, no power-iteration write-back) on the
    /// inner backend, as a closure.
    fn valid_training(
        &self,
    ) -> impl Fn(Tensor<TestBackend, 4>, Option<Tensor<TestBackend, 2>>) -> Tensor<TestBackend, 1>;
}

impl TrainingForward for Discriminator<TestAutodiff> {
    fn valid_training(
        &self,
    ) -> impl Fn(Tensor<TestBackend, 4>, Option<Tensor<TestBackend, 2>>) -> Tensor<TestBackend, 1> {
        // The autodiff forward (training mode) of a clone whose running states are private, so
        // repeated calls see the same spectral-norm vectors.
        let d = self.clone();
        move |x, code| {
            let fresh = Discriminator::<TestAutodiff>::from_inner(d.valid());
            let code = code.map(Tensor::<TestAutodiff, 2>::from_inner);
            fresh.forward_code(Tensor::from_inner(x), code.as_ref()).inner()
        }
    }
}

fn check_penalty(config: GanConfig, penalty: Penalty, targets: &[(&str, usize)]) {
    TestAutodiff::seed(&device(), 7);
    let d = config.init_discriminator::<TestAutodiff>(&device());
    // Larger weights than DCGAN's N(0, 0.02) so every term is well above f32 noise.
    let mut d = d.map(&mut Scale(8.0));
    if config.attention.is_some() {
        // γ starts at 0, which would hide the attention branch from the check.
        d = nudged(&d, "attention.gamma", 0, 0.5);
    }
    let s = config.image_size;
    let x = Tensor::<TestBackend, 4>::random([2, 1, s, s], Distribution::Normal(0.0, 1.0), &device());
    if config.d_norm == Norm::Spectral {
        // Autodiff treats the power-iteration vectors as constants; finite differences see them
        // move with W unless they have converged, where σ = uᵀWv is stationary in u and v.
        let code = config.conditional().then(|| one_hot(ints::<TestAutodiff>(&[1, 2]), config.num_classes));
        for _ in 0..100 {
            let _ = d.forward_code(Tensor::from_inner(x.clone()), code.as_ref());
        }
    }
    let code = config.conditional().then(|| one_hot(ints::<TestBackend>(&[1, 2]), config.num_classes));
    let code_ad = code.clone().map(Tensor::<TestAutodiff, 2>::from_inner);
    let penalty_of =
        |d: &Discriminator<TestAutodiff>| gradient_penalty(d, Tensor::from_inner(x.clone()), code_ad.as_ref(), penalty);

    // The value: from the input gradient by finite differences.
    let fd = input_gradient_fd(&d, &x, code.as_ref());
    let sq: Vec<f64> = fd.iter().map(|g| g.iter().map(|v| v * v).sum()).collect();
    let expected = match penalty {
        Penalty::R1 { gamma } => gamma / 2.0 * sq.iter().sum::<f64>() / 2.0,
        Penalty::WganGp { lambda } => lambda * sq.iter().map(|s| (s.sqrt() - 1.0).powi(2)).sum::<f64>() / 2.0,
        Penalty::None => unreachable!(),
    };
    let out = penalty_of(&d);
    let value = out.penalty.clone().into_scalar() as f64;
    assert!((value - expected).abs() <= 2e-3 * expected.abs().max(1.0), "{penalty:?} value {value} vs fd {expected}");
    // The logits it returns are D's.
    let logits = to_vec(out.logits.clone().inner());
    let direct = to_vec(d.valid_training()(x.clone(), code.clone()));
    for (a, b) in logits.iter().zip(&direct) {
        assert!((a - b).abs() < 1e-5, "logits {logits:?} vs {direct:?}");
    }

    // The gradient with respect to parameters: autodiff of the penalty vs its finite differences.
    let grads = out.penalty.backward();
    let mut all = Vec::new();
    d.visit(&mut GradsByPath { path: vec![], grads: &grads, out: &mut all });
    for &(target, index) in targets {
        let analytic =
            all.iter().find(|(p, _)| p == target).unwrap_or_else(|| panic!("no gradient for {target}")).1[index] as f64;
        let h = 1e-3f32;
        let up = penalty_of(&nudged(&d, target, index, h)).penalty.into_scalar() as f64;
        let down = penalty_of(&nudged(&d, target, index, -h)).penalty.into_scalar() as f64;
        let numeric = (up - down) / (2.0 * h as f64);
        let tol = 2e-2 * numeric.abs().max(analytic.abs()).max(1e-2);
        assert!(
            (analytic - numeric).abs() <= tol,
            "{penalty:?} ∂/∂{target}[{index}]: autodiff {analytic} vs fd {numeric}"
        );
    }
}

/// Multiplies every float parameter by a factor (spectral-norm vectors are renormalised anyway).
struct Scale(f32);

impl<B: Backend> ModuleMapper<B> for Scale {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let shape = tensor.dims();
        let values: Vec<f32> = to_vec(tensor.clone()).iter().map(|v| v * self.0).collect();
        let t = Tensor::<B, D>::from_data(TensorData::new(values, shape), &tensor.device());
        Param::from_mapped_value(id, if require_grad { t.require_grad() } else { t }, mapper)
    }
}

struct GradsByPath<'a> {
    path: Vec<String>,
    grads: &'a <TestAutodiff as burn::tensor::backend::AutodiffBackend>::Gradients,
    out: &'a mut Vec<(String, Vec<f32>)>,
}

impl burn::module::ModuleVisitor<TestAutodiff> for GradsByPath<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<TestAutodiff, D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            self.out.push((self.path.join("."), to_vec(g)));
        }
    }
}

#[test]
fn r1_penalty_matches_finite_differences_on_a_batch_norm_discriminator() {
    let _serial = serial();
    check_penalty(tiny(8), Penalty::R1 { gamma: 3.0 }, &[("blocks.0.conv.weight", 5), ("output.weight", 3)]);
}

#[test]
fn r1_penalty_matches_finite_differences_with_projection_spectral_norm_and_attention() {
    let _serial = serial();
    let config = tiny(16).with_num_classes(3).with_d_norm(Norm::Spectral).with_attention(Some(8));
    let targets = [
        ("blocks.0.conv.weight", 2),
        ("blocks.1.conv.weight", 17),
        ("attention.query.weight", 1),
        ("attention.gamma", 0),
        ("projection", 4),
    ];
    check_penalty(config, Penalty::R1 { gamma: 1.0 }, &targets);
}

#[test]
fn wgan_gp_penalty_matches_finite_differences() {
    let _serial = serial();
    let config = tiny(8).with_d_norm(Norm::None);
    // (Biases before a leaky ReLU do not enter ∇ₓD at all: autodiff gives them no gradient.)
    check_penalty(config, Penalty::WganGp { lambda: 10.0 }, &[("blocks.0.conv.weight", 7), ("output.weight", 2)]);
}

/// The facts the crate docs state about burn 0.21's nested autodiff: ops whose backward cannot be
/// differentiated again panic when they sit on the input's path.
mod double_backward {
    use burn::module::AutodiffModule;
    use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
    use burn::tensor::module::avg_pool2d;

    use super::*;

    type Outer = Autodiff<TestAutodiff>;

    /// `Σ f(x)` differentiated in `x` on the outer level, then `‖∇‖²` differentiated on the inner.
    fn second_order(f: impl Fn(Tensor<Outer, 4>) -> Tensor<Outer, 1>) {
        let x = Tensor::<TestAutodiff, 4>::random([1, 2, 4, 4], Distribution::Normal(0.0, 1.0), &device());
        let x = Tensor::<Outer, 4>::from_inner(x).require_grad();
        let grads = f(x.clone()).sum().backward();
        let g = x.grad(&grads).unwrap();
        let _ = g.square().sum().backward();
    }

    #[test]
    #[should_panic(expected = "linear_x_backward")]
    fn nn_linear_on_the_input_path_panics() {
        let linear: Linear<TestAutodiff> = LinearConfig::new(32, 1).init(&device());
        let linear = Linear::<Outer>::from_inner(linear).no_grad();
        second_order(|x| linear.forward(x.flatten::<2>(1, 3)).flatten(0, 1));
    }

    #[test]
    #[should_panic(expected = "avg pool 2d backward")]
    fn avg_pool_on_the_input_path_panics() {
        second_order(|x| avg_pool2d(x, [2, 2], [2, 2], [0, 0], true, false).flatten(0, 3));
    }

    /// An embedding on a parameter-only branch (the class embedding of a projection) works once
    /// the lifted parameters are `no_grad`: its backward, which burn cannot differentiate, is then
    /// never called. With lifted parameters that require a gradient, it is.
    fn embedding_branch(lifted_params_need_grad: bool) {
        let emb: Embedding<TestAutodiff> = EmbeddingConfig::new(3, 32).init(&device());
        let emb = Embedding::<Outer>::from_inner(emb);
        let emb = if lifted_params_need_grad { emb } else { emb.no_grad() };
        let labels = Tensor::<Outer, 2, Int>::from_inner(Tensor::from_inner(ints::<TestBackend>(&[2]).reshape([1, 1])));
        let e: Tensor<Outer, 2> = emb.forward(labels).reshape([1, 32]);
        second_order(|x| (x.flatten::<2>(1, 3) * e.clone()).sum_dim(1).flatten(0, 1));
    }

    #[test]
    fn nn_embedding_on_a_parameter_branch_works_when_lifted_without_gradients() {
        let _serial = serial();
        embedding_branch(false);
    }

    #[test]
    #[should_panic(expected = "embedding backward")]
    fn nn_embedding_panics_when_its_weight_needs_a_gradient_in_the_outer_pass() {
        embedding_branch(true);
    }

    #[test]
    fn the_same_layer_as_a_matmul_works() {
        let _serial = serial();
        let w = Tensor::<TestAutodiff, 2>::random([32, 1], Distribution::Normal(0.0, 1.0), &device()).require_grad();
        second_order(|x| x.flatten::<2>(1, 3).matmul(Tensor::from_inner(w.clone())).flatten(0, 1));
    }
}

// ---------------------------------------------------------------------------------------------
// Spectral norm
// ---------------------------------------------------------------------------------------------

/// Largest singular value of a row-major `[rows, cols]` matrix (host power iteration in f64).
fn sigma_max(m: &[f32], rows: usize, cols: usize) -> f64 {
    kiln_kernels::largest_singular_value(m, rows, cols, 1000)
}

#[test]
fn spectral_norm_layers_of_the_discriminator_have_unit_sigma_after_power_iterations() {
    let _serial = serial();
    TestAutodiff::seed(&device(), 11);
    let config = tiny(16).with_d_norm(Norm::Spectral).with_ndf(8);
    let d = config.init_discriminator::<TestAutodiff>(&device()).map(&mut Scale(30.0));
    let x = Tensor::<TestAutodiff, 4>::random([2, 1, 16, 16], Distribution::Normal(0.0, 1.0), &device());
    // Each training forward pass is one power iteration per layer; u converges over the passes at
    // the rate (σ₂/σ₁)² per pass. 40 passes left σ 2.7e-3 off 1 on one unlucky draw (CI, stop 22),
    // where σ₂ was close to σ₁; 200 passes leave any plausible random weight well inside 1e-3.
    for _ in 0..200 {
        let _ = d.forward(x.clone(), None);
    }
    let weights = d.normalized_weights();
    assert_eq!(weights.len(), 3, "two stages and the output layer");
    for w in weights {
        let [rows, cols] = w.dims();
        let sigma = sigma_max(&to_vec(w.inner()), rows, cols);
        assert!((sigma - 1.0).abs() < 1e-3, "σ = {sigma} for a {rows}×{cols} weight");
    }
    // The raw weights are not normalised, so this is not trivially true.
    let raw = d.blocks[0].conv.weight.val().inner();
    let [o, i, kh, kw] = raw.dims();
    assert!(sigma_max(&to_vec(raw), o, i * kh * kw) > 2.0);
    assert!(tiny(16).init_discriminator::<TestBackend>(&device()).normalized_weights().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Sampling
// ---------------------------------------------------------------------------------------------

#[test]
fn sample_class_conditions_on_exactly_the_requested_labels() {
    let _serial = serial();
    let config = tiny(8).with_num_classes(3);
    TestBackend::seed(&device(), 2);
    let g = config.init_generator::<TestBackend>(&device()).map(&mut Scale(20.0));
    TestBackend::seed(&device(), 5);
    let images = g.sample_class(&[2, 0, 2], &device()).unwrap();
    assert_eq!(images.dims(), [3, 1, 8, 8]);
    // The same draw by hand: the latents come first, then these labels go to G.
    TestBackend::seed(&device(), 5);
    let z = Tensor::<TestBackend, 2>::random([3, g.nz()], Distribution::Normal(0.0, 1.0), &device());
    let by_hand = to_unit(g.generate(z.clone(), Some(ints(&[2, 0, 2]))));
    assert_eq!(to_vec(images.clone()), to_vec(by_hand));
    // Each image depends on its own label only: relabelling image 1 changes image 1 alone.
    let relabelled = to_vec(to_unit(g.generate(z, Some(ints(&[2, 1, 2])))));
    let images = to_vec(images);
    let per = 64;
    assert_eq!(images[..per], relabelled[..per]);
    assert_eq!(images[2 * per..], relabelled[2 * per..]);
    assert_ne!(images[per..2 * per], relabelled[per..2 * per]);
    // User mistakes are errors that name the label.
    let err = g.sample_class(&[3], &device()).unwrap_err();
    assert_eq!(err.to_string(), "label 3: the model has classes 0..3");
    let plain = tiny(8).init_generator::<TestBackend>(&device());
    assert_eq!(plain.sample_class(&[0], &device()).unwrap_err().to_string(), "label 0: this model is unconditional");
}

#[test]
fn truncation_keeps_every_latent_inside_the_threshold() {
    let g = tiny(8).with_nz(64).init_generator::<TestBackend>(&device());
    let request = SampleRequest { truncation: Some(0.5), ..SampleRequest::new(50, 3) };
    let z = to_vec(request.latents::<TestBackend>(64, &device()));
    assert!(z.iter().all(|v| v.abs() <= 0.5), "max |z| = {}", z.iter().fold(0f32, |m, v| m.max(v.abs())));
    // A normal truncated to ±0.5 has std ≈ 0.28, and is not all clamped to the edges.
    let std = (z.iter().map(|v| v * v).sum::<f32>() / z.len() as f32).sqrt();
    assert!((0.25..0.32).contains(&std), "std {std}");
    assert!(z.iter().filter(|v| v.abs() == 0.5).count() < z.len() / 100);
    let bad = SampleRequest { truncation: Some(0.0), ..SampleRequest::new(2, 0) };
    assert!(g.sample(&bad, &device()).unwrap_err().to_string().starts_with("--truncation 0: must be a positive"));
    let request = SampleRequest { truncation: Some(1.0), ..SampleRequest::new(4, 0) };
    let a = g.sample(&request, &device()).unwrap().images;
    assert_eq!(a.dims(), [4, 1, 8, 8]);
    // Seeded on the host: the same request gives the same images.
    assert_eq!(to_vec(a), to_vec(g.sample(&request, &device()).unwrap().images));
    // An unconditional GAN refuses a class, naming the option.
    let request = SampleRequest { classes: vec![1; 4], ..SampleRequest::new(4, 0) };
    let err = g.sample(&request, &device()).unwrap_err().to_string();
    assert_eq!(err, "--class: this GAN is unconditional; it takes no class");
}

#[test]
fn interpolation_strips_start_and_end_at_their_endpoints() {
    let g = tiny(8).with_nz(16).with_num_classes(2).init_generator::<TestBackend>(&device());
    let walk = Interpolation {
        rows: 2,
        steps: 4,
        path: LatentPath::Spherical,
        seed: 4,
        classes: vec![1, 0],
        truncation: None,
    };
    let strips = interpolate(&g, &walk, &device()).unwrap();
    assert_eq!(strips.dims(), [8, 1, 8, 8]);
    // Each strip's ends are the samples of its endpoint latents: the first image of strip 0 is
    // G(z_a, class 1), decoded on its own.
    let ends = kiln_core::standard_normal(2 * 2 * 16, 4, None);
    let z_a = Tensor::<TestBackend, 2>::from_data(TensorData::new(ends[..16].to_vec(), [1, 16]), &device());
    let first = to_vec(LatentSpace::decode(&g, z_a, &[1]).unwrap());
    let got = to_vec(strips.clone().narrow(0, 0, 1));
    assert!(first.iter().zip(&got).all(|(a, b)| (a - b).abs() < 1e-5));
    assert!(interpolate(&g, &Interpolation { steps: 1, ..walk.clone() }, &device()).is_err());
    let err = interpolate(&g, &Interpolation { classes: vec![1], ..walk }, &device()).unwrap_err().to_string();
    assert!(err.contains("--class"), "{err}");
}

#[test]
fn diversity_is_one_for_the_data_itself_and_zero_for_a_collapsed_batch() {
    let _serial = serial();
    let real = Tensor::<TestBackend, 4>::random([6, 1, 4, 4], Distribution::Normal(0.0, 1.0), &device());
    let same = real.clone().narrow(0, 0, 1).repeat_dim(0, 6);
    let one = diversity(real.clone(), real.clone(), None).into_scalar();
    assert!((one - 1.0).abs() < 1e-5, "{one}");
    assert!(diversity(same.clone(), real.clone(), None).into_scalar().abs() < 1e-3);
    // Within classes: collapsing each class onto one image is caught even when classes differ.
    let code = one_hot(ints::<TestBackend>(&[0, 0, 0, 1, 1, 1]), 2);
    let a = real.clone().narrow(0, 0, 1).repeat_dim(0, 3);
    let b = real.clone().narrow(0, 3, 1).repeat_dim(0, 3);
    let per_class = Tensor::cat(vec![a, b], 0);
    assert!(diversity(per_class.clone(), real.clone(), Some(code)).into_scalar().abs() < 1e-3);
    assert!(diversity(per_class, real, None).into_scalar() > 0.3, "all pairs still see two modes");
}

// ---------------------------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------------------------

fn digits(n: usize) -> Arc<ImageSet> {
    let set = mnist_sample();
    Arc::new(ImageSet {
        pixels: set.pixels[..n * 784].to_vec(),
        labels: set.labels[..n].to_vec(),
        len: n,
        ..(*set).clone()
    })
}

/// The promise of the crate: on a few fixed digits D quickly tells real from fake, and G's
/// samples move towards the data.
#[test]
fn a_tiny_gan_run_moves_the_discriminator_and_the_samples() {
    let _serial = serial();
    let set = digits(16);
    let config = GanConfig::dcgan28().with_nz(16).with_ngf(8).with_ndf(8);
    // Narrow networks need a larger step than DCGAN's 2·10⁻⁴ to move in 60 updates.
    let fast = OptimConfig { lr: 1e-3, beta1: 0.5, ..OptimConfig::default() };
    let settings = GanTaskConfig {
        preview_samples: 16,
        ema_decay: None,
        g_optim: fast.clone(),
        d_optim: fast,
        ..GanTaskConfig::dcgan()
    };
    TestAutodiff::seed(&device(), 1);
    let mut task = GanTask::<TestAutodiff>::new(config, settings, 150, &device()).unwrap();
    let before = to_vec(task.previews()[0].images.clone());
    let batch = gather::<TestAutodiff>(&set, &(0..16).collect::<Vec<_>>(), PixelRange::MinusOneOne, &device());
    let real_mean = to_vec(batch.images.clone()).iter().sum::<f32>() / (16 * 784) as f32;
    let mut history = Vec::new();
    for step in 0..150 {
        TestAutodiff::seed(&device(), kiln_train::step_seed(1, step));
        let out = task.step(batch.clone(), step);
        let names: Vec<&str> = out.metrics.iter().map(|m| m.0).collect();
        assert_eq!(names, ["d_loss", "g_loss", "d_real_acc", "d_fake_acc", "d_real", "d_fake", "diversity"]);
        assert!(out.metrics.iter().all(|m| m.1.is_finite()), "{out:?}");
        history.push(out.metrics);
    }
    let acc = |range: std::ops::Range<usize>| {
        range.clone().map(|s| (history[s][2].1 + history[s][3].1) / 2.0).sum::<f64>() / range.len() as f64
    };
    let (early, late) = (acc(0..3), acc(100..150));
    assert!(late > 0.7 && late > early + 0.15, "D accuracy {early:.2} → {late:.2}");
    let after = to_vec(task.previews()[0].images.clone());
    let change = before.iter().zip(&after).map(|(a, b)| (a - b).abs()).sum::<f32>() / before.len() as f32;
    assert!(change > 0.05, "samples barely changed: mean |Δ| = {change}");
    // Digits are mostly background (−1); G starts near 0 and must darken towards them.
    let fake_mean = |images: &[f32]| images.iter().map(|v| v * 2.0 - 1.0).sum::<f32>() / images.len() as f32;
    let (m0, m1) = (fake_mean(&before), fake_mean(&after));
    assert!((m1 - real_mean).abs() < 0.7 * (m0 - real_mean).abs(), "mean pixel {m0:.2} → {m1:.2}, data {real_mean:.2}");
    // G starts out painting near-identical grey images; its samples spread out as it learns.
    let diversity =
        |range: std::ops::Range<usize>| range.clone().map(|s| history[s][6].1).sum::<f64>() / range.len() as f64;
    assert!(
        diversity(140..150) > 2.0 * diversity(0..10),
        "diversity {:.2} → {:.2}",
        diversity(0..10),
        diversity(140..150)
    );
}

/// `n` 8×8 grey squares, black ones of class 0 and white ones of class 1, alternating.
fn black_and_white_squares(n: usize) -> Arc<ImageSet> {
    let pixels: Vec<u8> = (0..n).flat_map(|i| std::iter::repeat_n(if i % 2 == 0 { 0 } else { 255 }, 64)).collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 2).collect();
    Arc::new(ImageSet { pixels, labels, len: n, channels: 1, height: 8, width: 8 })
}

/// Class 0 is black squares, class 1 white ones: after a short run the generator paints what it
/// is asked for.
#[test]
fn a_conditional_gan_learns_to_paint_the_requested_class() {
    let _serial = serial();
    let set = black_and_white_squares(32);
    let config = tiny(8).with_num_classes(2).with_d_norm(Norm::Spectral);
    let fast = OptimConfig { lr: 5e-3, beta1: 0.5, ..OptimConfig::default() };
    let settings = GanTaskConfig {
        loss: GanLoss::Hinge,
        ema_decay: None,
        preview_columns: 4,
        g_optim: fast.clone(),
        d_optim: fast,
        ..GanTaskConfig::dcgan()
    };
    TestAutodiff::seed(&device(), 2);
    let mut task = GanTask::<TestAutodiff>::new(config, settings, 150, &device()).unwrap();
    let mut batches = Batcher::new(set, 16, PixelRange::MinusOneOne, 0).unwrap();
    for step in 0..150 {
        TestAutodiff::seed(&device(), kiln_train::step_seed(2, step));
        task.step(batches.next_batch(&device()), step);
    }
    let g = task.sampler();
    let mean = |label: usize| {
        let v = to_vec(g.sample_class(&[label; 8], &device()).unwrap());
        v.iter().sum::<f32>() / v.len() as f32
    };
    let (black, white) = (mean(0), mean(1));
    assert!(white - black > 0.5, "class 0 mean {black:.2}, class 1 mean {white:.2}");
    // The preview grid has one row per class.
    let preview = &task.previews()[0];
    assert_eq!((preview.images.dims()[0], preview.columns), (8, 4));
}

/// The projection's class scores are the logit's class term: switching the class asked for from
/// 0 to c changes the logit by exactly `score[c] − score[0]`, and the logit that comes with the
/// scores is `forward`'s.
#[test]
fn class_scores_are_the_projection_term_of_the_logit() {
    let config = tiny(8).with_num_classes(3).with_d_norm(Norm::Spectral);
    let d = config.init_discriminator::<TestBackend>(&device());
    let x = Tensor::<TestBackend, 4>::random([2, 1, 8, 8], Distribution::Normal(0.0, 1.0), &device());
    let code = |c: i64| one_hot(ints::<TestBackend>(&[c, c]), 3);
    let (logits, scores) = d.forward_with_classes(x.clone(), &code(2)).unwrap();
    let plain = to_vec(d.forward_code(x.clone(), Some(&code(2))));
    for (a, b) in to_vec(logits).iter().zip(&plain) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    let scores = to_vec(scores); // [2, 3]
    let base = to_vec(d.forward_code(x.clone(), Some(&code(0))));
    for c in 1..3 {
        let shifted = to_vec(d.forward_code(x.clone(), Some(&code(c as i64))));
        for i in 0..2 {
            let (got, want) = (shifted[i] - base[i], scores[i * 3 + c] - scores[i * 3]);
            assert!((got - want).abs() < 1e-4, "class {c}, image {i}: {got} vs {want}");
        }
    }
    let plain_d = tiny(8).init_discriminator::<TestBackend>(&device());
    assert!(plain_d.forward_with_classes(x, &code(0)).is_none());
}

/// `class_loss` reaches both networks: from the same weights and noise, one step with it moves
/// D's class scores and G's images differently from a step without it; over a short run D's
/// scores classify the real images (black squares class 0, white ones class 1). Its effect at
/// scale — class accuracy — is measured on MNIST (experiments/cgan-mnist.toml), not here: on
/// two such distinct classes the projection alone learns them too.
#[test]
fn the_class_loss_reaches_both_networks_and_trains_a_classifier() {
    let _serial = serial();
    let (n, set) = (32, black_and_white_squares(32));
    let all = gather::<TestBackend>(&set, &(0..n).collect::<Vec<_>>(), PixelRange::MinusOneOne, &device());
    let code = one_hot(all.labels.clone(), 2);
    let z = Tensor::<TestBackend, 2>::random([4, 8], Distribution::Normal(0.0, 1.0), &device());
    let z_labels = ints::<TestBackend>(&[0, 1, 0, 1]);
    // After `steps` steps: D's class scores on the 32 real images, their cross-entropy, G's images.
    let train = |class_loss: f64, steps: usize| {
        let config = tiny(8).with_nz(8).with_num_classes(2).with_d_norm(Norm::Spectral);
        let fast = OptimConfig { lr: 5e-3, beta1: 0.5, ..OptimConfig::default() };
        let settings = GanTaskConfig {
            loss: GanLoss::Hinge,
            ema_decay: None,
            class_loss,
            g_optim: fast.clone(),
            d_optim: fast,
            ..GanTaskConfig::dcgan()
        };
        TestAutodiff::seed(&device(), 3);
        let mut task = GanTask::<TestAutodiff>::new(config, settings, steps, &device()).unwrap();
        let mut batches = Batcher::new(set.clone(), 16, PixelRange::MinusOneOne, 0).unwrap();
        for step in 0..steps {
            TestAutodiff::seed(&device(), kiln_train::step_seed(3, step));
            let metrics = task.step(batches.next_batch(&device()), step).metrics;
            assert_eq!(metrics.iter().any(|(name, _)| *name == "d_class_ce"), class_loss > 0.0);
        }
        let d = task.discriminator().valid();
        let (_, scores) = d.forward_with_classes(all.images.clone(), &code).unwrap();
        let ce = (burn::tensor::activation::log_softmax(scores.clone(), 1) * code.clone()).sum_dim(1).mean().neg();
        let images = task.sampler().generate(z.clone(), Some(z_labels.clone()));
        (to_vec(scores), to_vec(ce)[0], to_vec(images))
    };
    let differs = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let (scores_on, _, images_on) = train(1.0, 1);
    let (scores_off, _, images_off) = train(0.0, 1);
    assert!(differs(&scores_on, &scores_off) > 1e-4, "D's class scores did not feel the class loss");
    assert!(differs(&images_on, &images_off) > 1e-5, "G's images did not feel the class loss");
    let (_, ce, _) = train(1.0, 30);
    // ln 2 ≈ 0.69 is a classifier that cannot tell the two classes apart.
    assert!(ce < 0.1, "D's class cross-entropy on real images after 30 steps: {ce:.3}");
    // Set on an unconditional model, or negative, it is refused by name.
    let err = GanTaskConfig { class_loss: 1.0, ..GanTaskConfig::dcgan() }.validate(&tiny(8)).unwrap_err();
    assert!(err.to_string().contains("class_loss"), "{err}");
    let err = GanTaskConfig { class_loss: -1.0, ..GanTaskConfig::dcgan() }
        .validate(&tiny(8).with_num_classes(2))
        .unwrap_err();
    assert!(err.to_string().contains("class_loss"), "{err}");
}

#[test]
fn saved_model_loads_back_and_samples_the_same_images() {
    let _serial = serial();
    let dir = tmp("save");
    let config = tiny(8).with_num_classes(2).with_attention(Some(4)).with_g_spectral_norm(true);
    TestAutodiff::seed(&device(), 3);
    let mut task = GanTask::<TestAutodiff>::new(config.clone(), GanTaskConfig::sagan(), 4, &device()).unwrap();
    let batch = ImageBatch {
        images: Tensor::<TestAutodiff, 4>::random([4, 1, 8, 8], Distribution::Uniform(-1.0, 1.0), &device()),
        labels: ints::<TestAutodiff>(&[0, 1, 1, 0]),
    };
    for step in 0..3 {
        task.step(batch.clone(), step);
    }
    task.save(&dir).unwrap();
    for f in [CONFIG_FILE, GENERATOR_FILE, DISCRIMINATOR_FILE] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let (loaded_config, g) = Generator::<TestBackend>::load(&dir, &device()).unwrap();
    assert_eq!(loaded_config, config);
    let z = Tensor::<TestBackend, 2>::random([2, 8], Distribution::Normal(0.0, 1.0), &device());
    let labels = || Some(ints::<TestBackend>(&[1, 0]));
    // The file holds the EMA weights (sagan() turns EMA on), which is what samplers want.
    assert_eq!(to_vec(g.generate(z.clone(), labels())), to_vec(task.sampler().generate(z.clone(), labels())));
    assert_ne!(to_vec(g.generate(z.clone(), labels())), to_vec(task.generator().valid().generate(z, labels())));
    // Bad directories are errors naming the file.
    let err = Generator::<TestBackend>::load(&dir.join("nope"), &device()).unwrap_err();
    assert!(err.to_string().contains("gan.json"), "{err}");
    tiny(8).save_dir(&dir).unwrap();
    let err = Generator::<TestBackend>::load(&dir, &device()).unwrap_err();
    assert!(err.to_string().contains("generator.safetensors") && err.to_string().contains("does not fit"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Everything in a checkpoint's state files, as comparable values.
fn state_files(dir: &Path) -> Vec<(String, TensorFile)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    names.sort();
    names.into_iter().map(|n| (n.clone(), TensorFile::read(&dir.join(&n)).unwrap())).collect()
}

fn resume_is_bit_exact(config: GanConfig, settings: GanTaskConfig, name: &str) {
    let set = digits(24);
    let run = |steps: usize, dir: &Path, resume: bool| {
        TestAutodiff::seed(&device(), 9);
        let mut task = GanTask::<TestAutodiff>::new(config.clone(), settings.clone(), 4, &device()).unwrap();
        let mut loader =
            Batcher::new(set.clone(), 8, PixelRange::MinusOneOne, 3).unwrap().on::<TestAutodiff>(&device());
        let loop_config =
            LoopConfig { checkpoint_every: 2, log_every: 1, seed: 5, resume, ..LoopConfig::new(steps, dir) };
        fit(&mut task, &mut loader, &loop_config).unwrap()
    };
    let (whole, halves) = (tmp(&format!("{name}-whole")), tmp(&format!("{name}-halves")));
    run(4, &whole, false);
    run(2, &halves, false);
    let resumed = run(4, &halves, true);
    assert_eq!((resumed.start_step, resumed.steps), (2, 4));
    let final_state = |dir: &Path| state_files(&dir.join("checkpoints/step-00000004"));
    let (a, b) = (final_state(&whole), final_state(&halves));
    let names: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"d-optim.safetensors") && names.contains(&"g-optim.safetensors"), "{names:?}");
    assert_eq!(a, b, "{name}: resumed state differs");
    // Reported metrics agree too.
    let log = |dir: &Path| std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let strip = |text: String| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                for k in ["elapsed_s", "examples_per_s"] {
                    v.as_object_mut().unwrap().remove(k);
                }
                v
            })
            .collect()
    };
    assert_eq!(strip(log(&whole)), strip(log(&halves)));
    for d in [whole, halves] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn resume_is_bit_exact_for_dcgan_with_ema() {
    let _serial = serial();
    let config = GanConfig::dcgan28().with_nz(8).with_ngf(4).with_ndf(4);
    resume_is_bit_exact(config, GanTaskConfig::dcgan(), "dcgan");
}

#[test]
fn resume_is_bit_exact_for_a_conditional_sagan_with_lazy_r1_and_n_critic() {
    let _serial = serial();
    let config = GanConfig::dcgan28()
        .with_nz(8)
        .with_ngf(4)
        .with_ndf(8)
        .with_num_classes(10)
        .with_attention(Some(14))
        .with_d_norm(Norm::Spectral)
        .with_g_spectral_norm(true);
    // The auxiliary class loss too, through both its paths (with and without the R1 pass).
    let settings = GanTaskConfig {
        penalty: Penalty::R1 { gamma: 0.1 },
        penalty_every: 3,
        n_critic: 2,
        class_loss: 0.5,
        ..GanTaskConfig::sagan()
    };
    resume_is_bit_exact(config, settings, "sagan");
}
