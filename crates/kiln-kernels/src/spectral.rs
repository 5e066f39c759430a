//! Spectral normalization (Miyato et al. 2018, arXiv:1802.05957) for linear and convolution
//! weights, following PyTorch's `torch.nn.utils.spectral_norm`.
//!
//! The weight is reshaped to a matrix `W` `[out, in·kh·kw]` and divided by an estimate of its
//! largest singular value, `σ ≈ uᵀ W v`, where `u` and `v` come from power iteration on the
//! detached weight. `u` is kept between steps as non-trained module state (a `RunningState`,
//! like batch norm's running mean), so one iteration per training step suffices: the estimate
//! improves as training goes. Gradients flow through `W` in both `W` and `σ(W)`, as in PyTorch.

use burn::config::Config;
use burn::module::{Initializer, Module, Param, RunningState};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Distribution, Tensor, backend::Backend, module, ops::ConvOptions};

/// Configuration of [`SpectralNorm`]. Defaults are PyTorch's.
#[derive(Config, Debug)]
pub struct SpectralNormConfig {
    /// Power iterations per training forward pass.
    #[config(default = 1)]
    pub power_iterations: usize,
    /// Guard for the normalisation of `u` and `v`.
    #[config(default = 1e-12)]
    pub eps: f64,
}

impl SpectralNormConfig {
    /// A normaliser for weight matrices with `rows` rows (the output features), with `u` drawn
    /// from a standard normal and normalised.
    pub fn init<B: Backend>(&self, rows: usize, device: &B::Device) -> SpectralNorm<B> {
        let u = Tensor::<B, 1>::random([rows], Distribution::Normal(0.0, 1.0), device);
        SpectralNorm {
            u: RunningState::new(l2_normalize(u, self.eps)),
            power_iterations: self.power_iterations,
            eps: self.eps,
        }
    }
}

/// The power-iteration state of one spectrally normalised weight.
#[derive(Module, Debug)]
pub struct SpectralNorm<B: Backend> {
    /// The left singular vector estimate `u` `[rows]`; not trained.
    pub u: RunningState<Tensor<B, 1>>,
    power_iterations: usize,
    eps: f64,
}

fn l2_normalize<B: Backend>(x: Tensor<B, 1>, eps: f64) -> Tensor<B, 1> {
    let norm = x.clone().square().sum().sqrt().clamp_min(eps);
    x / norm
}

impl<B: Backend> SpectralNorm<B> {
    /// The estimate `σ` (a one-element tensor) of the largest singular value of `w`
    /// `[rows, cols]`, differentiable in `w`.
    ///
    /// On an autodiff backend (training) this runs the power iterations and stores the new `u`;
    /// otherwise (evaluation, after `valid()`) it uses the stored `u` as is, with
    /// `v = Wᵀu / ‖Wᵀu‖`.
    ///
    /// # Panics
    /// If `w` has a different number of rows than `u`.
    pub fn sigma(&self, w: Tensor<B, 2>) -> Tensor<B, 1> {
        let [rows, cols] = w.dims();
        let mut u = self.u.value_sync().to_device(&w.device());
        assert_eq!(u.dims()[0], rows, "spectral norm: weight rows differ from u");
        let wd = w.clone().detach();
        let matvec = |m: Tensor<B, 2>, x: Tensor<B, 1>| -> Tensor<B, 1> {
            let n = m.dims()[0];
            m.matmul(x.unsqueeze_dim::<2>(1)).reshape([n])
        };
        let training = B::ad_enabled(&w.device());
        let mut v = l2_normalize(matvec(wd.clone().transpose(), u.clone()), self.eps);
        if training {
            for _ in 0..self.power_iterations {
                u = l2_normalize(matvec(wd.clone(), v.clone()), self.eps);
                v = l2_normalize(matvec(wd.clone().transpose(), u.clone()), self.eps);
            }
            self.u.update(u.clone().detach());
        }
        let wv = w.matmul(v.detach().reshape([cols, 1])).reshape([rows]); // [rows]
        (u.detach() * wv).sum()
    }

    /// `W / σ(W)` for `w` `[rows, cols]`.
    pub fn normalize(&self, w: Tensor<B, 2>) -> Tensor<B, 2> {
        let sigma = self.sigma(w.clone());
        w / sigma.unsqueeze::<2>()
    }
}

/// Configuration of [`SnLinear`].
#[derive(Config, Debug)]
pub struct SnLinearConfig {
    /// The linear layer (burn's default initialisation).
    pub linear: LinearConfig,
    /// The normaliser.
    #[config(default = "SpectralNormConfig::new()")]
    pub norm: SpectralNormConfig,
}

impl SnLinearConfig {
    /// Builds the layer on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SnLinear<B> {
        SnLinear { linear: self.linear.init(device), norm: self.norm.init(self.linear.d_output, device) }
    }
}

/// A linear layer whose weight is spectrally normalised on every forward pass.
#[derive(Module, Debug)]
pub struct SnLinear<B: Backend> {
    /// The raw layer; its weight is `[d_input, d_output]` (burn's layout).
    pub linear: Linear<B>,
    /// The power-iteration state.
    pub norm: SpectralNorm<B>,
}

impl<B: Backend> SnLinear<B> {
    /// The normalised weight, `[d_input, d_output]`.
    pub fn weight(&self) -> Tensor<B, 2> {
        // σ is taken over PyTorch's [out, in] matrix so that u has one entry per output.
        self.norm.normalize(self.linear.weight.val().transpose()).transpose()
    }

    /// `[…, d_input]` → `[…, d_output]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        module::linear(x, self.weight(), self.linear.bias.as_ref().map(|b| b.val()))
    }
}

/// Configuration of [`SnConv2d`]: a convolution with symmetric padding.
#[derive(Config, Debug)]
pub struct SnConv2dConfig {
    /// `[in, out]` channels.
    pub channels: [usize; 2],
    /// Kernel size.
    pub kernel_size: [usize; 2],
    /// Stride.
    #[config(default = "[1, 1]")]
    pub stride: [usize; 2],
    /// Zero padding on each side.
    #[config(default = "[0, 0]")]
    pub padding: [usize; 2],
    /// Whether to add a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Weight initialisation (burn's `Conv2d` default, Kaiming uniform with gain `1/√3`).
    #[config(default = "Initializer::KaimingUniform{gain:0.5773502691896258,fan_out_only:false}")]
    pub initializer: Initializer,
    /// The normaliser.
    #[config(default = "SpectralNormConfig::new()")]
    pub norm: SpectralNormConfig,
}

impl SnConv2dConfig {
    /// Builds the layer on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SnConv2d<B> {
        let [cin, cout] = self.channels;
        let [kh, kw] = self.kernel_size;
        let fan_in = cin * kh * kw;
        let fan_out = cout * kh * kw;
        let weight = self.initializer.init_with([cout, cin, kh, kw], Some(fan_in), Some(fan_out), device);
        let bias = self.bias.then(|| self.initializer.init_with([cout], Some(fan_in), Some(fan_out), device));
        SnConv2d { weight, bias, stride: self.stride, padding: self.padding, norm: self.norm.init(cout, device) }
    }
}

/// A 2-D convolution whose weight is spectrally normalised on every forward pass.
#[derive(Module, Debug)]
pub struct SnConv2d<B: Backend> {
    /// `[out, in, kh, kw]`.
    pub weight: Param<Tensor<B, 4>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    stride: [usize; 2],
    padding: [usize; 2],
    /// The power-iteration state.
    pub norm: SpectralNorm<B>,
}

impl<B: Backend> SnConv2d<B> {
    /// The normalised weight, `[out, in, kh, kw]`.
    pub fn weight(&self) -> Tensor<B, 4> {
        let w = self.weight.val();
        let [o, i, kh, kw] = w.dims();
        self.norm.normalize(w.reshape([o, i * kh * kw])).reshape([o, i, kh, kw])
    }

    /// `[N, in, H, W]` → `[N, out, H', W']`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        module::conv2d(
            x,
            self.weight(),
            self.bias.as_ref().map(|b| b.val()),
            ConvOptions::new(self.stride, self.padding, [1, 1], 1),
        )
    }
}

/// The largest singular value of a row-major `[rows, cols]` matrix, computed on the host in f64
/// by `iterations` rounds of power iteration from a constant start vector: the exact σ that a
/// spectrally normalised weight divides by in the limit, for checking a layer (a conv kernel
/// `[out, in, kh, kw]` reads as `[out, in·kh·kw]`).
pub fn largest_singular_value(m: &[f32], rows: usize, cols: usize, iterations: usize) -> f64 {
    assert_eq!(m.len(), rows * cols, "largest_singular_value: {} values for a {rows}×{cols} matrix", m.len());
    let mut v = vec![1.0f64; cols];
    let mut sigma = 0.0;
    for _ in 0..iterations {
        let u: Vec<f64> = (0..rows).map(|r| (0..cols).map(|c| f64::from(m[r * cols + c]) * v[c]).sum()).collect();
        let w: Vec<f64> = (0..cols).map(|c| (0..rows).map(|r| f64::from(m[r * cols + c]) * u[r]).sum()).collect();
        let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        sigma = norm.sqrt();
        v = w.iter().map(|x| x / norm).collect();
    }
    sigma
}
