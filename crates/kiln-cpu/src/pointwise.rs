//! Leaky ReLU and SiLU as one autodiff node each.
//!
//! burn 0.21's autodiff has no op for either: leaky ReLU is composed as a comparison, a scaled
//! copy and a masked select (three passes and two tracked nodes forward, and backward a masked
//! select of the gradient into each branch plus their sum), SiLU as `x · σ(x)` (the sigmoid, a
//! product, and backward the product rule through both). They follow every convolution of the
//! VAE and the GAN discriminators and every norm of the U-Net. Here each is one pass forward and
//! one backward from the saved input. The forward values are the composed ops' bits on this
//! backend (the same select, and the same sigmoid and product).

use crate::activation::{map1, map2, sigmoid};
use crate::inner::contiguous;
use crate::{CpuInner, KilnCpu};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_backend::TensorMetadata;
use burn_backend::tensor::FloatTensor;

/// Which function.
#[derive(Debug, Clone, Copy)]
enum Kind {
    LeakyRelu(f32),
    Silu,
}

#[inline(always)]
fn leaky(x: f32, slope: f32) -> f32 {
    if x < 0.0 { x * slope } else { x }
}

#[inline(always)]
fn leaky_grad(x: f32, dy: f32, slope: f32) -> f32 {
    if x < 0.0 { dy * slope } else { dy }
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// `dy · (σ + x·σ·(1 − σ))`.
#[inline(always)]
fn silu_grad(x: f32, dy: f32) -> f32 {
    let s = sigmoid(x);
    dy * (s + x * s * (1.0 - s))
}

#[derive(Debug, Clone)]
struct State<B: CpuInner> {
    x: FloatTensor<B>,
    kind: Kind,
}

#[derive(Debug)]
struct Pointwise;

impl<B: CpuInner> Backward<KilnCpu<B>, 1> for Pointwise {
    type State = State<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<KilnCpu<B>>(&ops.node);
        let State { x, kind } = ops.state;
        let [node] = ops.parents;
        let Some(node) = node else { return };
        let xs = B::f32_view(&x).expect("the forward pass checked that x is f32");
        let dys = B::f32_view(&dy).expect("the gradient of an f32 output is f32");
        // One loop per function, so that each closure is inlined into its own vectorised loop.
        let dx = match kind {
            Kind::LeakyRelu(slope) => map2(&xs, &dys, |x, dy| leaky_grad(x, dy, slope)),
            Kind::Silu => map2(&xs, &dys, silu_grad),
        };
        grads.register::<KilnCpu<B>>(node.id, B::f32_tensor(dx, x.shape()));
    }
}

fn pointwise<B: CpuInner, C: CheckpointStrategy>(
    x: &FloatTensor<Autodiff<KilnCpu<B>, C>>,
    kind: Kind,
) -> Option<FloatTensor<Autodiff<KilnCpu<B>, C>>> {
    let xp = contiguous::<B>(&x.primitive);
    let xs = B::f32_view(&xp)?;
    let y = match kind {
        Kind::LeakyRelu(slope) => map1(&xs, |v| leaky(v, slope)),
        Kind::Silu => map1(&xs, silu),
    };
    drop(xs);
    let y = B::f32_tensor(y, xp.shape());
    Some(match Pointwise.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(State { x: xp, kind }, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    })
}

/// Leaky ReLU (`x` for `x ≥ 0`, `slope·x` below) with its gradient on `Autodiff<KilnCpu<B>>`;
/// `None` for a dtype other than f32.
pub fn leaky_relu_autodiff<B: CpuInner, C: CheckpointStrategy>(
    x: &FloatTensor<Autodiff<KilnCpu<B>, C>>,
    slope: f64,
) -> Option<FloatTensor<Autodiff<KilnCpu<B>, C>>> {
    pointwise::<B, C>(x, Kind::LeakyRelu(slope as f32))
}

/// SiLU (`x·σ(x)`) with its gradient on `Autodiff<KilnCpu<B>>`; `None` for a dtype other than f32.
pub fn silu_autodiff<B: CpuInner, C: CheckpointStrategy>(
    x: &FloatTensor<Autodiff<KilnCpu<B>, C>>,
) -> Option<FloatTensor<Autodiff<KilnCpu<B>, C>>> {
    pointwise::<B, C>(x, Kind::Silu)
}
