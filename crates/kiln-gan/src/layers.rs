//! The layers both networks are built from, written on burn's functional ops (`conv2d`,
//! `conv_transpose2d`, `matmul`) rather than `nn::Linear`/`nn::Embedding`, so that a
//! discriminator built from them is twice differentiable under nested `Autodiff` (the gradient
//! penalties need `∇θ ‖∇x D(x)‖²`; see the crate docs for which burn ops block that).

use burn::config::Config;
use burn::module::{Initializer, Module, ModuleVisitor, Param, RunningState};
use burn::tensor::backend::Backend;
use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{Int, Tensor};
use kiln_kernels::{SpectralNorm, SpectralNormConfig};
use serde::{Deserialize, Serialize};

/// DCGAN's initialisation (Radford et al. 2015, §4; pytorch/examples `weights_init`):
/// every convolution weight drawn from N(0, 0.02).
pub(crate) const DCGAN_INIT: Initializer = Initializer::Normal { mean: 0.0, std: 0.02 };

/// Whether a convolution is strided (`Conv2d`) or transposed (`ConvTranspose2d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConvKind {
    /// `[N, in, H, W]` → `[N, out, (H + 2p − k)/s + 1, …]`.
    Forward,
    /// `[N, in, H, W]` → `[N, out, (H − 1)·s − 2p + k, …]`.
    Transposed,
}

/// A square convolution or transposed convolution with an optional bias and optional spectral
/// normalisation of its weight (Miyato et al. 2018, arXiv:1802.05957).
#[derive(Module, Debug)]
pub struct Conv<B: Backend> {
    /// `[out, in, k, k]` for a forward convolution, `[in, out, k, k]` for a transposed one
    /// (burn's layouts, which are PyTorch's).
    pub weight: Param<Tensor<B, 4>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Power-iteration state when the weight is spectrally normalised.
    pub sn: Option<SpectralNorm<B>>,
    transposed: bool,
    stride: usize,
    padding: usize,
}

/// Configuration of [`Conv`]: a layer `channels[0] → channels[1]` with a `kernel × kernel`
/// window. The defaults are PyTorch's (`stride = 1`, `padding = 0`, with a bias) and no spectral
/// normalisation.
#[derive(Config, Debug)]
pub struct ConvConfig {
    /// Strided or transposed.
    pub kind: ConvKind,
    /// `[in, out]` channels.
    pub channels: [usize; 2],
    /// Side of the square window.
    pub kernel: usize,
    /// Step of the window, the same along both axes.
    #[config(default = 1)]
    pub stride: usize,
    /// Zero padding on every side.
    #[config(default = 0)]
    pub padding: usize,
    /// Whether the layer adds a learned bias (zeros at first).
    #[config(default = true)]
    pub bias: bool,
    /// Whether the weight is spectrally normalised.
    #[config(default = false)]
    pub spectral: bool,
}

impl ConvConfig {
    /// The layer on `device`: the weight drawn from [`DCGAN_INIT`], then the bias, then the
    /// spectral-norm state (that order fixes which random draws each gets).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Conv<B> {
        let [cin, cout] = self.channels;
        let k = self.kernel;
        let shape = match self.kind {
            ConvKind::Forward => [cout, cin, k, k],
            ConvKind::Transposed => [cin, cout, k, k],
        };
        let weight = DCGAN_INIT.init_with(shape, Some(cin * k * k), Some(cout * k * k), device);
        let bias = self.bias.then(|| Initializer::Zeros.init([cout], device));
        // PyTorch's spectral_norm normalises over the output channels (dim 1 of a transposed
        // convolution's weight), so `u` has one entry per output channel either way.
        let sn = self.spectral.then(|| SpectralNormConfig::new().init(cout, device));
        Conv {
            weight,
            bias,
            sn,
            transposed: self.kind == ConvKind::Transposed,
            stride: self.stride,
            padding: self.padding,
        }
    }
}

impl<B: Backend> Conv<B> {
    /// The weight the layer applies: the raw one, or `W / σ(W)`.
    pub fn effective_weight(&self) -> Tensor<B, 4> {
        let w = self.weight.val();
        let Some(sn) = &self.sn else { return w };
        let [a, b, k, _] = w.dims();
        if self.transposed {
            // [in, out, k, k] → [out, in·k·k] rows per output channel, and back.
            let m = w.swap_dims(0, 1).reshape([b, a * k * k]);
            sn.normalize(m).reshape([b, a, k, k]).swap_dims(0, 1)
        } else {
            sn.normalize(w.reshape([a, b * k * k])).reshape([a, b, k, k])
        }
    }

    /// Applies the layer to `[N, in, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let w = self.effective_weight();
        let bias = self.bias.as_ref().map(Param::val);
        let (s, p) = (self.stride, self.padding);
        if self.transposed {
            conv_transpose2d(x, w, bias, ConvTransposeOptions::new([s, s], [p, p], [0, 0], [1, 1], 1))
        } else {
            conv2d(x, w, bias, ConvOptions::new([s, s], [p, p], [1, 1], 1))
        }
    }
}

/// Batch normalisation with an optional class-conditional scale and shift (conditional batch
/// norm, de Vries et al. 2017; the generator side of Miyato & Koyama 2018): with `K` classes,
/// `γ` and `β` are `[K, C]` tables and each image uses its class's row. Unconditional layers keep
/// one row (`K = 1`).
///
/// It normalises with the batch's statistics while training (on an autodiff backend, as burn's
/// `BatchNorm` decides) and with running averages otherwise, so a trained generator can draw one
/// image at a time.
#[derive(Module, Debug)]
pub struct BatchNorm<B: Backend> {
    /// `[K, C]`, initialised from N(1, 0.02) as in DCGAN.
    pub gamma: Param<Tensor<B, 2>>,
    /// `[K, C]`, zeros.
    pub beta: Param<Tensor<B, 2>>,
    /// `[C]`.
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// `[C]`.
    pub running_var: RunningState<Tensor<B, 1>>,
    momentum: f64,
    eps: f64,
}

impl<B: Backend> BatchNorm<B> {
    /// A layer over `channels` channels with `rows` rows of affine parameters (1, or the number
    /// of classes).
    pub fn new(channels: usize, rows: usize, device: &B::Device) -> Self {
        Self {
            gamma: Initializer::Normal { mean: 1.0, std: 0.02 }.init([rows, channels], device),
            beta: Initializer::Zeros.init([rows, channels], device),
            running_mean: RunningState::new(Tensor::zeros([channels], device)),
            running_var: RunningState::new(Tensor::ones([channels], device)),
            momentum: 0.1,
            eps: 1e-5,
        }
    }

    /// Normalises `x` `[N, C, H, W]`; `code` `[N, K]` (one-hot, or any mixture of classes) picks
    /// each image's `γ`, `β` row in a conditional layer and must be `None` otherwise.
    pub fn forward(&self, x: Tensor<B, 4>, code: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let [n, _, h, w] = x.dims();
        let device = x.device();
        let (gamma, beta) = match code {
            Some(code) => (code.clone().matmul(self.gamma.val()), code.clone().matmul(self.beta.val())), // [N, C]
            None => (self.gamma.val(), self.beta.val()),                                                 // [1, C]
        };
        if B::ad_enabled(&device) {
            let (y, mean, var) = kiln_kernels::norm::batch_norm(x, gamma, beta, self.eps);
            self.update_running(mean, var, (n * h * w) as f64);
            y
        } else {
            let mean = self.running_mean.value_sync().to_device(&device);
            let var = self.running_var.value_sync().to_device(&device);
            kiln_kernels::norm::normalize_with(x, mean, var, gamma, beta, self.eps)
        }
    }

    fn update_running(&self, mean: Tensor<B, 1>, var: Tensor<B, 1>, count: f64) {
        let m = self.momentum;
        // PyTorch keeps the unbiased variance in its running estimate.
        let unbiased = var.mul_scalar(count / (count - 1.0).max(1.0));
        let device = mean.device();
        let rm = self.running_mean.value_sync().to_device(&device);
        let rv = self.running_var.value_sync().to_device(&device);
        self.running_mean.update(rm.mul_scalar(1.0 - m) + mean.mul_scalar(m));
        self.running_var.update(rv.mul_scalar(1.0 - m) + unbiased.mul_scalar(m));
    }
}

/// Labels `[N]` as a float one-hot code `[N, K]`: the form both networks take their class in (a
/// matrix product with it is an embedding lookup that nested autodiff can differentiate).
pub fn one_hot<B: Backend>(labels: Tensor<B, 1, Int>, classes: usize) -> Tensor<B, 2> {
    labels.one_hot::<2>(classes).float()
}

/// Initialises every parameter of `module` now, in visiting order.
///
/// burn 0.21 initialises parameters lazily, and cloning a parameter that has not been read yet
/// clones its *initialiser*: the clone later draws its own random values. A freshly built network
/// cloned before its first forward pass (the optimiser step takes the model by value, the penalty
/// lifts a clone) would silently fork its weights, so both networks are materialised when built.
pub(crate) fn materialize<B: Backend, M: Module<B>>(module: M) -> M {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
    module
}
