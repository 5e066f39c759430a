//! The element-wise half of an LSTM step as one autodiff op: gate pre-activations and the cell
//! state in, the next hidden and cell states out.
//!
//! Composed from tensor ops, `c' = σ(f)·c + σ(i)·tanh(g)`, `h' = σ(o)·tanh(c')` is four slices,
//! three sigmoids, two tanhs, three products and a sum: thirteen autodiff nodes per step, each
//! a graph insertion, a hash of its parents and a pass over `[B, H]`. DRAW steps two cells 64
//! times per image batch, and in perf burn-autodiff's bookkeeping (hash-map inserts, `Arc`
//! hashing, `GraphLocator::select`) was 18 % of the W5 step. Here the step is one node: the
//! forward pass is one loop over the rows, and the backward pass recomputes the gate activations
//! from the saved pre-activations (cheaper than keeping five `[B, H]` tensors) in one more.
//!
//! Gates are in PyTorch's `nn.LSTMCell` order i, f, g, o along the last axis of `[B, 4H]`. The
//! output is `[2, B, H]`: `h'` then `c'`, so that each is a contiguous slice. The activations are
//! kiln-cpu's own (`crate::activation`), evaluated in the same order as the composed ops on this
//! backend, so the forward values are bit-identical to them.

use crate::activation::{sigmoid, tanh_f32};
use crate::inner::contiguous;
use crate::{CpuInner, KilnCpu};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_backend::tensor::FloatTensor;
use burn_backend::{Shape, TensorMetadata};

/// A row of `[B, 4H]` pre-activations cut into its four gates, each exactly `h` long (so that
/// the loops below index without bounds checks and vectorise).
#[inline(always)]
fn quarters(g: &[f32], h: usize) -> [&[f32]; 4] {
    let (i, rest) = g.split_at(h);
    let (f, rest) = rest.split_at(h);
    let (gg, o) = rest.split_at(h);
    [&i[..h], &f[..h], &gg[..h], &o[..h]]
}

/// `out[0] = h'`, `out[1] = c'` (`[2, B, H]`) from pre-activations `g` `[B, 4H]` and `c` `[B, H]`.
#[inline(always)]
fn forward_body(g: &[f32], c: &[f32], out: &mut [f32], h: usize) {
    let (hs, cs) = out.split_at_mut(c.len());
    let rows = g.chunks_exact(4 * h).zip(c.chunks_exact(h));
    for ((g, c), (hs, cs)) in rows.zip(hs.chunks_exact_mut(h).zip(cs.chunks_exact_mut(h))) {
        let [gi, gf, gg, go] = quarters(g, h);
        let (c, hs, cs) = (&c[..h], &mut hs[..h], &mut cs[..h]);
        for j in 0..h {
            let c_next = sigmoid(gf[j]) * c[j] + sigmoid(gi[j]) * tanh_f32(gg[j]);
            cs[j] = c_next;
            hs[j] = sigmoid(go[j]) * tanh_f32(c_next);
        }
    }
}

/// Gradients of the pre-activations (`dg` `[B, 4H]`) and the previous cell state (`dc`
/// `[B, H]`) from those of the outputs (`grad` `[2, B, H]`).
#[inline(always)]
fn backward_body(g: &[f32], c: &[f32], grad: &[f32], dg: &mut [f32], dc: &mut [f32], h: usize) {
    let (dh_next, dc_next) = grad.split_at(c.len());
    let inputs = g.chunks_exact(4 * h).zip(c.chunks_exact(h)).zip(dh_next.chunks_exact(h).zip(dc_next.chunks_exact(h)));
    let outputs = dg.chunks_exact_mut(4 * h).zip(dc.chunks_exact_mut(h));
    for (((g, c), (dh_next, dc_next)), (dg, dc)) in inputs.zip(outputs) {
        let [gi, gf, gg, go] = quarters(g, h);
        let (c, dh_next, dc_next, dc) = (&c[..h], &dh_next[..h], &dc_next[..h], &mut dc[..h]);
        let (di, rest) = dg.split_at_mut(h);
        let (df, rest) = rest.split_at_mut(h);
        let (dgg, d_o) = rest.split_at_mut(h);
        let (di, df, dgg, d_o) = (&mut di[..h], &mut df[..h], &mut dgg[..h], &mut d_o[..h]);
        for j in 0..h {
            let (i, f, gt, o) = (sigmoid(gi[j]), sigmoid(gf[j]), tanh_f32(gg[j]), sigmoid(go[j]));
            let t = tanh_f32(f * c[j] + i * gt); // tanh(c')
            // c' reaches the loss directly and through h' = o·tanh(c')
            let dcn = dc_next[j] + dh_next[j] * o * (1.0 - t * t);
            di[j] = dcn * gt * i * (1.0 - i);
            df[j] = dcn * c[j] * f * (1.0 - f);
            dgg[j] = dcn * i * (1.0 - gt * gt);
            d_o[j] = dh_next[j] * t * o * (1.0 - o);
            dc[j] = dcn * f;
        }
    }
}

crate::rows::dispatched! {
    /// [`forward_body`], vectorised where the CPU allows.
    fn cell_forward / cell_forward_avx512(g: &[f32], c: &[f32], out: &mut [f32], h: usize) -> () = forward_body
}

crate::rows::dispatched! {
    /// [`backward_body`], vectorised where the CPU allows.
    fn cell_backward / cell_backward_avx512(g: &[f32], c: &[f32], grad: &[f32], dg: &mut [f32], dc: &mut [f32], h: usize) -> () = backward_body
}

/// What the backward pass reads: the pre-activations and the previous cell state.
#[derive(Debug, Clone)]
struct State<B: CpuInner> {
    gates: FloatTensor<B>,
    c: FloatTensor<B>,
    hidden: usize,
}

#[derive(Debug)]
struct LstmCellStep;

impl<B: CpuInner> Backward<KilnCpu<B>, 2> for LstmCellStep {
    type State = State<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<KilnCpu<B>>(&ops.node);
        let s = ops.state;
        let (Some(g), Some(c)) = (B::f32_view(&s.gates), B::f32_view(&s.c)) else {
            unreachable!("the forward pass checked that both inputs are f32");
        };
        let grad = B::f32_view(&grad).expect("the gradient of an f32 output is f32");
        let (mut dg, mut dc) = (vec![0.0f32; g.len()], vec![0.0f32; c.len()]);
        cell_backward(&g, &c, &grad, &mut dg, &mut dc, s.hidden);
        let [node_gates, node_c] = ops.parents;
        if let Some(node) = node_gates {
            grads.register::<KilnCpu<B>>(node.id, B::f32_tensor(dg, s.gates.shape()));
        }
        if let Some(node) = node_c {
            grads.register::<KilnCpu<B>>(node.id, B::f32_tensor(dc, s.c.shape()));
        }
    }
}

/// One LSTM step's element-wise part on `Autodiff<KilnCpu<B>>` (module docs): `gates` `[B, 4H]`
/// (i, f, g, o) and `c` `[B, H]` → `[2, B, H]` holding `h'` and `c'`.
///
/// `None` when it does not apply (a dtype other than f32, shapes that do not agree, an empty
/// axis), and the caller should compose the step from tensor ops.
pub fn lstm_cell_autodiff<B: CpuInner, C: CheckpointStrategy>(
    gates: &FloatTensor<Autodiff<KilnCpu<B>, C>>,
    c: &FloatTensor<Autodiff<KilnCpu<B>, C>>,
) -> Option<FloatTensor<Autodiff<KilnCpu<B>, C>>> {
    let (gs, cs) = (gates.primitive.shape(), c.primitive.shape());
    if gs.num_dims() != 2 || cs.num_dims() != 2 {
        return None;
    }
    let (b, h) = (cs[0], cs[1]);
    if [gs[0], gs[1]] != [b, 4 * h] || b == 0 || h == 0 {
        return None;
    }
    let (gp, cp) = (contiguous::<B>(&gates.primitive), contiguous::<B>(&c.primitive));
    let mut out = vec![0.0f32; 2 * b * h];
    cell_forward(&B::f32_view(&gp)?, &B::f32_view(&cp)?, &mut out, h);
    let out = B::f32_tensor(out, Shape::from(vec![2, b, h]));
    Some(match LstmCellStep.prepare::<C>([gates.node.clone(), c.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(State { gates: gp, c: cp, hidden: h }, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    })
}
