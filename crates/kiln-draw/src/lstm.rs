//! An LSTM cell that can be stepped one time step at a time (Hochreiter & Schmidhuber 1997, with
//! the forget gate of Gers et al. 2000), in PyTorch's `nn.LSTMCell` layout.
//!
//! burn 0.21's `nn::Lstm` only runs whole sequences; DRAW interleaves two LSTMs with attention
//! between their steps, so it needs a cell. Two `Linear`s (input → 4H and hidden → 4H, both with
//! a bias, as PyTorch has `bias_ih` and `bias_hh`) give the gate pre-activations, split in
//! PyTorch's order i, f, g, o: `c' = σ(f)·c + σ(i)·tanh(g)`, `h' = σ(o)·tanh(c')`. The golden test
//! (`golden/lstm_cell.py`) checks it against `nn.LSTMCell` on the same weights.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{sigmoid, tanh};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use kiln_kernels::fused::{self, LstmCellKernel};

/// Configuration of an [`LstmCell`].
#[derive(Config, Debug)]
pub struct LstmCellConfig {
    /// Size of the input `x_t`.
    pub input: usize,
    /// Size of the hidden and cell states.
    pub hidden: usize,
    /// Added to the input-side bias of the forget gate at initialisation (Jozefowicz et al. 2015
    /// recommend 1: the cell starts out remembering, which eases early training). 0 gives
    /// PyTorch's initialisation.
    #[config(default = 1.0)]
    pub forget_bias: f64,
}

impl LstmCellConfig {
    /// Builds the cell on `device`: weights and biases `U(−1/√fan_in, 1/√fan_in)` (burn's and
    /// PyTorch's `Linear` default), then `forget_bias` added to the forget gate's input bias.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LstmCell<B> {
        let h = self.hidden;
        let mut input = LinearConfig::new(self.input, 4 * h).init(device);
        let hidden = LinearConfig::new(h, 4 * h).init(device);
        if self.forget_bias != 0.0
            && let Some(bias) = input.bias.take()
        {
            let offset: Vec<f32> =
                (0..4 * h).map(|j| if (h..2 * h).contains(&j) { self.forget_bias as f32 } else { 0.0 }).collect();
            let offset = Tensor::<B, 1>::from_data(TensorData::new(offset, [4 * h]), device);
            // A fresh leaf: mapping the parameter in place (`bias.map(|b| b + offset)`) would
            // leave a non-leaf tensor under autodiff that never receives a gradient (BURN.md,
            // "LSTM"). `Param::from_tensor` marks the new value as requiring gradients.
            let value = (bias.val() + offset).detach();
            input.bias = Some(Param::from_tensor(value));
        }
        LstmCell { input, hidden, size: h }
    }
}

/// The state `(h, c)` between steps, each `[B, hidden]`.
#[derive(Debug, Clone)]
pub struct LstmCellState<B: Backend> {
    /// Hidden state (the output), `[B, hidden]`.
    pub h: Tensor<B, 2>,
    /// Cell state, `[B, hidden]`.
    pub c: Tensor<B, 2>,
}

impl<B: Backend> LstmCellState<B> {
    /// The zero state for a batch of `batch`.
    pub fn zeros(batch: usize, hidden: usize, device: &B::Device) -> Self {
        Self { h: Tensor::zeros([batch, hidden], device), c: Tensor::zeros([batch, hidden], device) }
    }
}

/// One LSTM step; build it with [`LstmCellConfig::init`].
#[derive(Module, Debug)]
pub struct LstmCell<B: Backend> {
    /// `W_ih x + b_ih`, `[input] → [4·hidden]` (burn stores the weight `[input, 4·hidden]`, the
    /// transpose of PyTorch's `weight_ih`).
    pub input: Linear<B>,
    /// `W_hh h + b_hh`, `[hidden] → [4·hidden]`.
    pub hidden: Linear<B>,
    size: usize,
}

impl<B: Backend> LstmCell<B> {
    /// The hidden size.
    pub fn hidden_size(&self) -> usize {
        self.size
    }

    /// One step: `x` `[B, input]` and the previous state → the next state (`[B, hidden]` each).
    ///
    /// When the backend has a fused cell registered (kiln-cpu's, through kiln-device; see
    /// `kiln_kernels::fused`), the element-wise half is one autodiff node instead of thirteen.
    pub fn step(&self, x: Tensor<B, 2>, state: &LstmCellState<B>) -> LstmCellState<B> {
        let gates = self.input.forward(x) + self.hidden.forward(state.h.clone()); // [B, 4H]
        let (n, h) = (state.c.dims()[0], self.size);
        if B::ad_enabled(&gates.device())
            && let Some(LstmCellKernel(kernel)) = fused::find::<LstmCellKernel<B>>()
            && let Some(out) =
                kernel(&gates.clone().into_primitive().tensor(), &state.c.clone().into_primitive().tensor())
        {
            let out = Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(out)); // [2, B, H]
            let [h, c] = [0, 1].map(|k| out.clone().narrow(0, k, 1).reshape([n, h])); // [B, H] each
            return LstmCellState { h, c };
        }
        let [i, f, g, o] = [0, 1, 2, 3].map(|k| gates.clone().narrow(1, k * h, h)); // [B, H] each
        let c = sigmoid(f) * state.c.clone() + sigmoid(i) * tanh(g); // [B, H]
        let h = sigmoid(o) * tanh(c.clone()); // [B, H]
        LstmCellState { h, c }
    }
}
