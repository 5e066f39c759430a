//! Unit tests on tiny shapes. The backend is named here and nowhere else in the crate: burn-flex by
//! default, burn-ndarray with `--features test-ndarray`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Param};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData, Tolerance};
use kiln_core::{Generative, SampleRequest, Task};
use kiln_data::{Batcher, Mnist, PixelRange, Split};

use crate::*;

#[cfg(not(feature = "test-ndarray"))]
type TestBackend = burn::backend::Flex;
#[cfg(feature = "test-ndarray")]
type TestBackend = burn::backend::NdArray;
type TestAutodiff = Autodiff<TestBackend>;

fn device() -> burn::tensor::Device<TestBackend> {
    Default::default()
}

/// flex and ndarray keep one global random generator, and tests run in parallel: every test that
/// draws random numbers holds this lock, so a seeded test sees only its own draws.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes the generator and seeds it.
fn rng(seed: u64) -> std::sync::MutexGuard<'static, ()> {
    let guard = RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    TestBackend::seed(&device(), seed);
    guard
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-draw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The first `n` digits of the bundled MNIST sample's training split.
fn digits(n: usize) -> Arc<kiln_data::ImageSet> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/mnist-sample");
    let set = Mnist::load(&dir, Split::Train).expect("bundled MNIST sample");
    Arc::new(kiln_data::ImageSet {
        pixels: set.pixels[..n * 784].to_vec(),
        labels: set.labels[..n].to_vec(),
        len: n,
        ..set
    })
}

/// A few drawing steps of small LSTMs: fast, still every code path.
fn tiny(attention: Attention) -> DrawConfig {
    DrawConfig::new().with_steps(4).with_hidden(16).with_latent(4).with_attention(attention)
}

fn gaussian() -> Attention {
    Attention::Gaussian { read: 2, write: 3 }
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

#[test]
fn samples_come_with_every_canvas_and_the_last_is_the_image() {
    let _rng = rng(0);
    for attention in [gaussian(), Attention::None] {
        let model = tiny(attention).init::<TestBackend>(&device());
        let samples = model.sample(&SampleRequest::new(3, 7), &device()).unwrap();
        assert_eq!(samples.images.dims(), [3, 1, 28, 28]);
        let frames = samples.frames.expect("DRAW returns its canvases");
        assert_eq!(frames.dims(), [4, 3, 1, 28, 28]);
        let last = frames.narrow(0, 3, 1).reshape([3, 1, 28, 28]);
        assert_eq!(last.into_data(), samples.images.clone().into_data());
        // Same seed, same images; another seed, others.
        let again = model.sample(&SampleRequest::new(3, 7), &device()).unwrap().images;
        assert_eq!(again.into_data(), samples.images.clone().into_data());
        let other = model.sample(&SampleRequest::new(3, 8), &device()).unwrap().images;
        assert_ne!(other.into_data(), samples.images.into_data());
        // Truncation is accepted; a class is not.
        let r = SampleRequest { truncation: Some(0.5), ..SampleRequest::new(2, 0) };
        assert_eq!(model.sample(&r, &device()).unwrap().images.dims(), [2, 1, 28, 28]);
        let r = SampleRequest { classes: vec![1, 2], ..SampleRequest::new(2, 0) };
        let err = model.sample(&r, &device()).unwrap_err().to_string();
        assert_eq!(err, "--class: this DRAW model is unconditional; it takes no class");
        assert!(model.latent_space().is_none());
        let x = Tensor::<TestBackend, 4>::random([2, 1, 28, 28], Distribution::Default, &device());
        assert_eq!(Generative::reconstruct(&model, x).unwrap().dims(), [2, 1, 28, 28]);
        let wrong = Tensor::<TestBackend, 4>::zeros([2, 1, 8, 8], &device());
        assert!(Generative::reconstruct(&model, wrong).is_err());
    }
}

#[test]
fn the_canvas_is_the_sum_of_the_writes() {
    let _rng = rng(1);
    let model = tiny(gaussian()).init::<TestBackend>(&device());
    let z = model.prior_latents(2, 3, None, &device());
    let trace = model.trace(z.clone());
    assert_eq!((trace.writes.len(), trace.canvases.len()), (4, 4));
    // c_1 = c_0 + w_1 with c_0 = 0.
    assert_eq!(trace.canvases[0].clone().into_data(), trace.writes[0].clone().into_data());
    for t in 1..4 {
        let added = trace.canvases[t].clone() - trace.canvases[t - 1].clone();
        added.into_data().assert_approx_eq::<f32>(&trace.writes[t].clone().into_data(), Tolerance::absolute(1e-5));
        // Every step writes something.
        assert!(values(trace.writes[t].clone().abs().sum())[0] > 1e-3, "step {t} wrote nothing");
    }
    let frames = model.generate(z); // [T, N, C, H, W]
    let sigmoid_last = burn::tensor::activation::sigmoid(trace.canvases[3].clone());
    assert_eq!(frames.narrow(0, 3, 1).reshape([2, 1, 28, 28]).into_data(), sigmoid_last.into_data());
}

#[test]
fn a_glimpse_of_a_constant_image_is_constant() {
    // Rows of F_X and F_Y sum to 1, so γ·F_Y·(k·1)·F_Xᵀ = γ·k everywhere, wherever the grid sits,
    // as long as every filter's centre is on the image (one centred far off it underflows to a
    // row of zeros by design). Placements: centre, corners, wide and narrow strides and widths.
    use kiln_kernels::draw::{FilterbankParams, filterbanks, read};
    let placements = [
        // (g_X, g_Y, σ², δ, γ)
        (14.5, 14.5, 1.0, 3.0, 1.0),
        (5.0, 24.0, 0.3, 1.0, 0.5),
        (20.0, 8.0, 4.0, 5.0, 2.0),
        (14.0, 14.0, 9.0, 0.5, 1.3),
    ];
    let col = |f: fn(&(f32, f32, f32, f32, f32)) -> f32| {
        Tensor::<TestBackend, 1>::from_floats(placements.iter().map(f).collect::<Vec<_>>().as_slice(), &device())
    };
    let params = FilterbankParams {
        gx: col(|p| p.0),
        gy: col(|p| p.1),
        sigma2: col(|p| p.2),
        delta: col(|p| p.3),
        gamma: col(|p| p.4),
    };
    let banks = filterbanks(&params, 28, 28, 3, 1e-8);
    let x = Tensor::<TestBackend, 4>::ones([4, 1, 28, 28], &device()) * 0.7;
    let glimpse = read(x, &banks, params.gamma.clone()); // [4, 1, 3, 3]
    for (i, v) in values(glimpse).iter().enumerate() {
        let expected = 0.7 * placements[i / 9].4;
        assert!((v - expected).abs() < 1e-5, "glimpse {i}: {v} vs {expected}");
    }
}

/// `golden/lstm_cell.json`, written by `golden/lstm_cell.py` (torch 2.15.0, `nn.LSTMCell`, float64).
#[derive(serde::Deserialize)]
struct Golden {
    torch: String,
    input: usize,
    hidden: usize,
    weight_ih: Vec<Vec<f64>>,
    weight_hh: Vec<Vec<f64>>,
    bias_ih: Vec<f64>,
    bias_hh: Vec<f64>,
    h0: Vec<Vec<f64>>,
    c0: Vec<Vec<f64>>,
    inputs: Vec<Vec<Vec<f64>>>,
    h: Vec<Vec<Vec<f64>>>,
    c: Vec<Vec<Vec<f64>>>,
}

fn matrix(rows: &[Vec<f64>]) -> Tensor<TestBackend, 2> {
    let (r, c) = (rows.len(), rows[0].len());
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    Tensor::from_data(TensorData::new(flat, [r, c]), &device())
}

fn vector(v: &[f64]) -> Tensor<TestBackend, 1> {
    Tensor::from_data(TensorData::new(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), [v.len()]), &device())
}

/// PyTorch's `weight` `[out, in]` is the transpose of burn's `[in, out]`.
fn linear(weight: &[Vec<f64>], bias: &[f64]) -> Linear<TestBackend> {
    Linear { weight: Param::from_tensor(matrix(weight).transpose()), bias: Some(Param::from_tensor(vector(bias))) }
}

// values: crates/kiln-draw/golden/lstm_cell.py (torch 2.15.0, nn.LSTMCell in float64); compared
// in float32 with an absolute tolerance of 1e-5 (the states are O(1)).
#[test]
fn the_lstm_cell_matches_pytorch() {
    let text = include_str!("../golden/lstm_cell.json");
    let g: Golden = serde_json::from_str(text).unwrap();
    assert!(g.torch.starts_with("2."), "golden written by torch {}", g.torch);
    let mut cell = LstmCellConfig::new(g.input, g.hidden).with_forget_bias(0.0).init::<TestBackend>(&device());
    cell.input = linear(&g.weight_ih, &g.bias_ih);
    cell.hidden = linear(&g.weight_hh, &g.bias_hh);
    let mut state = LstmCellState { h: matrix(&g.h0), c: matrix(&g.c0) };
    for (t, x) in g.inputs.iter().enumerate() {
        state = cell.step(matrix(x), &state);
        let tol = Tolerance::absolute(1e-5);
        state.h.clone().into_data().assert_approx_eq::<f32>(&matrix(&g.h[t]).into_data(), tol);
        state.c.clone().into_data().assert_approx_eq::<f32>(&matrix(&g.c[t]).into_data(), tol);
    }
}

#[test]
fn the_forget_gate_bias_starts_at_one_and_is_trained() {
    let _rng = rng(3);
    let plain = LstmCellConfig::new(3, 4).with_forget_bias(0.0).init::<TestAutodiff>(&device());
    let biased = LstmCellConfig::new(3, 4).with_forget_bias(1.0).init::<TestAutodiff>(&device());
    let forget = |cell: &LstmCell<TestAutodiff>| values(cell.input.bias.as_ref().unwrap().val().narrow(0, 4, 4));
    // U(−1/√3, 1/√3) + 1 lies above 0.42; the plain cell's bias lies below 0.58.
    assert!(forget(&biased).iter().all(|&b| b > 0.4), "{:?}", forget(&biased));
    assert!(forget(&plain).iter().all(|&b| b.abs() < 0.6), "{:?}", forget(&plain));

    // Through a whole model: every parameter, the shifted bias included, gets a gradient.
    let model = tiny(gaussian()).init::<TestAutodiff>(&device());
    let x = Tensor::<TestAutodiff, 4>::random([2, 1, 28, 28], Distribution::Default, &device());
    let grads = model.loss(x).loss.backward();
    let bias = model.encoder().input.bias.as_ref().unwrap().val();
    let grad = bias.grad(&grads).expect("the forget-gate bias is a trainable leaf");
    let g = values(grad.narrow(0, 16, 16)); // the forget gate's slice
    assert!(g.iter().any(|v| v.abs() > 0.0), "zero gradient on the forget-gate bias: {g:?}");
}

#[test]
fn invalid_configs_name_the_field() {
    let err = DrawConfig::new().with_steps(0).validate().unwrap_err();
    assert_eq!(err.to_string(), "DRAW config: steps = 0: must be at least 1");
    let err = DrawConfig::new().with_attention(Attention::Gaussian { read: 2, write: 40 }).validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "DRAW config: attention.write = 40: a glimpse grid must be 1 to image_size = 28 filters wide"
    );
    assert!(DrawConfig::preset("small").unwrap().validate().is_ok());
    assert!(DrawConfig::preset("mnist").unwrap().validate().is_ok());
    assert!(DrawConfig::preset("huge").is_none());
}

/// Trains `config` on 32 real digits for `steps` steps, each batch in `shards` slices, and
/// returns the first and the last loss.
fn train(config: DrawConfig, steps: usize, lr: f64, shards: usize) -> (f64, f64) {
    let _rng = rng(4);
    let task_config = DrawTaskConfig {
        optim: kiln_optim::OptimConfig { lr, clip_norm: Some(10.0), ..Default::default() },
        ema_decay: None,
        preview_samples: 8,
        shards,
    };
    let mut task = DrawTask::<TestAutodiff>::new(config, &task_config, steps, &device()).unwrap();
    let mut batches = Batcher::new(digits(32), 32, PixelRange::ZeroOne, 0).unwrap();
    let first = task.step(batches.next_batch(&device()), 0).metrics[0].1;
    let mut last = first;
    for step in 1..steps {
        last = task.step(batches.next_batch(&device()), step).metrics[0].1;
    }
    eprintln!("negative ELBO {first:.1} -> {last:.1} nats over {steps} steps");
    let previews = task.previews();
    let t = task.model().steps();
    assert_eq!(previews[0].images.dims(), [8, 1, 28, 28]);
    assert_eq!((previews[1].name, previews[1].images.dims(), previews[1].columns), ("steps", [8 * t, 1, 28, 28], t));
    (first, last)
}

/// The promise of the crate: a short run on a small batch of real digits lowers the negative ELBO
/// by a clear margin, with attention and without (with attention, each batch in two shards).
#[test]
fn it_learns_real_digits_with_attention() {
    let config = DrawConfig::new().with_steps(8).with_hidden(64).with_latent(8);
    let (first, last) = train(config, 60, 3e-3, 2);
    assert!(first > 400.0, "untrained negative ELBO should be near 784·ln 2 ≈ 543, got {first}");
    assert!(last < 0.6 * first, "negative ELBO fell only from {first:.1} to {last:.1}");
}

#[test]
fn it_learns_real_digits_without_attention() {
    let config = DrawConfig::new().with_steps(4).with_hidden(32).with_latent(8).with_attention(Attention::None);
    let (first, last) = train(config, 30, 3e-3, 1);
    assert!(first > 400.0, "untrained negative ELBO should be near 784·ln 2 ≈ 543, got {first}");
    assert!(last < 0.6 * first, "negative ELBO fell only from {first:.1} to {last:.1}");
}

#[test]
fn checkpoint_round_trip_is_bit_exact() {
    let _rng = rng(5);
    let config = tiny(gaussian());
    let model = config.init::<TestBackend>(&device());
    let dir = tmp("roundtrip");
    model.save(&config, &dir).unwrap();
    let manifest = kiln_core::ModelManifest::read(&dir).unwrap().unwrap();
    assert_eq!((manifest.family.as_str(), manifest.format), (FAMILY, FORMAT));
    let (loaded_config, loaded) = Draw::<TestBackend>::load(&dir, &device()).unwrap();
    assert_eq!(loaded_config.attention, config.attention);
    let z = model.prior_latents(2, 9, None, &device());
    assert_eq!(model.generate(z.clone()).into_data(), loaded.generate(z).into_data());
    let x = Tensor::<TestBackend, 4>::random([2, 1, 28, 28], Distribution::Default, &device());
    assert_eq!(model.reconstruct(x.clone()).into_data(), loaded.reconstruct(x).into_data());

    // Weights of another shape under this config, and a broken config: errors naming the file.
    let other = tiny(gaussian()).with_hidden(8);
    std::fs::write(dir.join(CONFIG_FILE), serde_json::to_string(&other).unwrap()).unwrap();
    let err = Draw::<TestBackend>::load(&dir, &device()).unwrap_err().to_string();
    assert!(err.contains(WEIGHTS_FILE) && err.contains("not a checkpoint of this DRAW model"), "{err}");
    std::fs::write(dir.join(CONFIG_FILE), "{\"steps\": \"many\"}").unwrap();
    let err = Draw::<TestBackend>::load(&dir, &device()).unwrap_err().to_string();
    assert!(err.contains("draw.json: not a DRAW config"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every tensor of a safetensors file, by name, as bit patterns (the files' JSON headers hold a
/// hash map, so equal files need not be equal bytes).
fn tensors(path: &Path) -> Vec<(String, Vec<u32>)> {
    let file = kiln_optim::TensorFile::read(path).unwrap();
    let mut out: Vec<(String, Vec<u32>)> =
        file.names().map(|n| (n.to_string(), file.values(n).unwrap().iter().map(|v| v.to_bits()).collect())).collect();
    out.sort();
    assert!(!out.is_empty(), "{} holds no tensors", path.display());
    out
}

/// Stopping after 3 steps, saving, and continuing in a fresh task gives the same weights as 6
/// uninterrupted steps, bit for bit (EMA on, so its files are exercised too).
#[test]
fn save_state_and_load_state_resume_bit_for_bit() {
    let _rng = rng(6);
    let config = tiny(gaussian());
    let settings = DrawTaskConfig { ema_decay: Some(0.9), preview_samples: 2, ..Default::default() };
    let set = digits(16);
    let batch = |i: u64| {
        let mut b = Batcher::new(set.clone(), 8, PixelRange::ZeroOne, i).unwrap();
        b.next_batch(&device())
    };
    let run = |task: &mut DrawTask<TestAutodiff>, steps: std::ops::Range<usize>| {
        for s in steps {
            // The trainer seeds the backend per step; the posterior noise depends on it.
            TestAutodiff::seed(&device(), 100 + s as u64);
            task.step(batch(s as u64), s);
        }
    };
    let fresh = || {
        TestAutodiff::seed(&device(), 6);
        DrawTask::<TestAutodiff>::new(config.clone(), &settings, 6, &device()).unwrap()
    };
    let mut straight = fresh();
    run(&mut straight, 0..6);

    let mut first = fresh();
    run(&mut first, 0..3);
    let dir = tmp("resume");
    first.save_state(&dir).unwrap();
    let mut resumed = fresh();
    resumed.load_state(&dir).unwrap();
    run(&mut resumed, 3..6);

    let (a, b) = (tmp("resume-a"), tmp("resume-b"));
    straight.save_state(&a).unwrap();
    resumed.save_state(&b).unwrap();
    let differ: Vec<&str> = [WEIGHTS_FILE, "live.safetensors", "optim.safetensors", "ema.safetensors"]
        .into_iter()
        .filter(|file| tensors(&a.join(file)) != tensors(&b.join(file)))
        .collect();
    assert!(differ.is_empty(), "resumed and uninterrupted runs differ in {differ:?}");
    for d in [dir, a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// kiln-cpu's fused LSTM step, registered for `Autodiff<KilnCpu<Flex>>` and counted so that the
/// test below knows `LstmCell::step` used it.
static FUSED_STEPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
type Fused = Autodiff<kiln_cpu::KilnCpu<burn_flex::Flex>>;

fn counted_step(
    gates: &burn::tensor::ops::FloatTensor<Fused>,
    c: &burn::tensor::ops::FloatTensor<Fused>,
) -> Option<burn::tensor::ops::FloatTensor<Fused>> {
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    FUSED_STEPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    kiln_cpu::lstm_cell_autodiff::<burn_flex::Flex, NoCheckpointing>(gates, c)
}

/// The golden cell stepped through its sequence on backend `B`: the states after each step and
/// the gradient of `Σ_t Σ h_t` with respect to the hidden-to-hidden weight.
fn golden_run<B: burn::tensor::backend::AutodiffBackend>(g: &Golden) -> (Vec<Vec<f32>>, Vec<f32>) {
    let device = Default::default();
    let m = |rows: &[Vec<f64>]| {
        let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
        Tensor::<B, 2>::from_data(TensorData::new(flat, [rows.len(), rows[0].len()]), &device)
    };
    let v = |x: &[f64]| {
        Tensor::<B, 1>::from_data(TensorData::new(x.iter().map(|&x| x as f32).collect::<Vec<_>>(), [x.len()]), &device)
    };
    let mut cell = LstmCellConfig::new(g.input, g.hidden).with_forget_bias(0.0).init::<B>(&device);
    cell.input = Linear {
        weight: Param::from_tensor(m(&g.weight_ih).transpose()),
        bias: Some(Param::from_tensor(v(&g.bias_ih))),
    };
    cell.hidden = Linear {
        weight: Param::from_tensor(m(&g.weight_hh).transpose()),
        bias: Some(Param::from_tensor(v(&g.bias_hh))),
    };
    let mut state = LstmCellState { h: m(&g.h0), c: m(&g.c0) };
    let (mut states, mut total) = (Vec::new(), Tensor::<B, 1>::zeros([1], &device));
    for x in &g.inputs {
        state = cell.step(m(x), &state);
        states.push(state.h.clone().into_data().to_vec::<f32>().unwrap());
        states.push(state.c.clone().into_data().to_vec::<f32>().unwrap());
        total = total + state.h.clone().sum();
    }
    let grads = total.backward();
    let weight = cell.hidden.weight.val();
    (states, weight.grad(&grads).expect("W_hh gradient").into_data().to_vec::<f32>().unwrap())
}

#[test]
fn a_registered_fused_lstm_step_is_used_and_agrees_with_the_composed_one() {
    use kiln_kernels::fused::{LstmCellKernel, find, register};
    let g: Golden = serde_json::from_str(include_str!("../golden/lstm_cell.json")).unwrap();
    assert!(find::<LstmCellKernel<Fused>>().is_none(), "nothing registered yet");
    register(LstmCellKernel::<Fused>(counted_step));
    let (fused_states, fused_grad) = golden_run::<Fused>(&g);
    assert_eq!(FUSED_STEPS.load(std::sync::atomic::Ordering::SeqCst), g.inputs.len(), "one fused call per step");
    let (states, grad) = golden_run::<TestAutodiff>(&g);
    let close = |a: &[f32], b: &[f32], what: &str| {
        let err = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(err <= 1e-5, "{what}: the fused step is {err:e} away from the composed one");
    };
    for (t, (a, b)) in fused_states.iter().zip(&states).enumerate() {
        close(a, b, &format!("state {t}"));
    }
    close(&fused_grad, &grad, "W_hh gradient");
}

/// A step with the batch in two shards, run at the same time by kiln-cpu's runner, against the
/// same shards one after the other (the same bits) and against the batch in one pass (the same
/// update up to float rounding); and zero shards are refused by name.
#[test]
fn a_sharded_step_gives_the_whole_batch_update_on_any_thread() {
    use kiln_kernels::fused::{ShardRunner, register};
    let _rng = rng(6);
    let config = tiny(gaussian());
    // Every parameter read once, so that the lazily drawn ones are drawn here, not in the steps.
    let model = Draw::<Fused>::from_inner(config.init::<Fused>(&Default::default()).valid());
    let before = values(model.encoder().input.weight.val().inner());
    // With ε ≫ |g| Adam's first update is g·lr/(|g| + ε) ≈ g: comparing weights compares gradients.
    let optim = kiln_optim::OptimConfig { lr: 1e4, eps: 1e4, ..Default::default() };
    let step = |shards: usize| -> Vec<f32> {
        let settings = DrawTaskConfig { optim: optim.clone(), ema_decay: None, preview_samples: 2, shards };
        let mut task = DrawTask::<Fused>::from_model(config.clone(), model.clone(), &settings, 10).unwrap();
        let mut batches = Batcher::new(digits(5), 5, PixelRange::ZeroOne, 0).unwrap();
        TestBackend::seed(&device(), 6); // the same posterior noise for every variant
        task.step(batches.next_batch(&Default::default()), 0);
        values(task.model().encoder().input.weight.val().inner())
    };
    register(ShardRunner::<Fused>::new(kiln_cpu::run_shards));
    let (whole, parallel) = (step(1), step(2));
    register(ShardRunner::<Fused>::new(|k, f| (0..k).for_each(f)));
    let serial = step(2);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&parallel), bits(&serial), "shards give the same bits on any thread");
    let moved = whole.iter().zip(&before).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    let err = parallel.iter().zip(&whole).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(moved > 1e-2, "the update moved the weights ({moved:e})");
    assert!(err <= 1e-4 * moved, "two shards' update is {err:e} from the batch's (which moved {moved:e})");

    let settings = DrawTaskConfig { shards: 0, ..DrawTaskConfig::default() };
    let err = DrawTask::<Fused>::from_model(config.clone(), model, &settings, 10).unwrap_err().to_string();
    assert!(err.starts_with("train.draw.shards = 0: must be at least 1"), "{err}");
}
