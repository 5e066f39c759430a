//! One axis of DRAW's Gaussian attention filterbank as one autodiff op.
//!
//! kiln-kernels composes an axis from about fourteen tensor ops (the centres, the squared
//! distances, the exponential, the row sums, the clamp, the division), each a node in burn's
//! autodiff graph; DRAW builds four axes per time step (read and write, x and y), 64 steps per
//! image. With the LSTM steps fused, burn-autodiff's bookkeeping — a hash-map insert and a
//! graph lookup per node — was still about a fifth of the W5 step in perf, and these were the
//! most numerous nodes. The tensors are tiny (`[B, N, A]` with `N` ≤ 12, `A` = 28), so the op
//! is two plain loops.
//!
//! Forward per row `(b, i)`: `μ = g + o_i·δ` (`o_i = i − N/2 − 0.5`), `f_a = exp(−(a − μ)²/2σ²)`
//! for `a = 1..=A`, `Z = max(Σ f, ε)`, `F = f / Z`. Backward: `df_a = (dF_a − [Z > ε]·Σ dF·F) / Z`,
//! `de_a = df_a·f_a`, `dμ = Σ de_a·(a − μ)/σ²`, `dσ² += Σ de_a·(a − μ)²/2σ⁴`, `dg += dμ`,
//! `dδ += o_i·dμ`.

use crate::activation::exp_f32;
use crate::rows::lane_sum;
use crate::{CpuInner, KilnCpu};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_backend::tensor::FloatTensor;
use burn_backend::{Shape, TensorMetadata};

/// The sizes and the three parameter vectors of one call.
#[derive(Debug, Clone)]
struct Params {
    n: usize,
    size: usize,
    eps: f32,
    centre: Vec<f32>,
    delta: Vec<f32>,
    sigma2: Vec<f32>,
}

impl Params {
    fn offset(&self, i: usize) -> f32 {
        (i as f64 + 1.0 - self.n as f64 / 2.0 - 0.5) as f32
    }

    /// Row `(b, i)`: writes `f` (unnormalised) and returns `(μ, Σ f)`.
    fn row(&self, b: usize, i: usize, f: &mut [f32]) -> (f32, f32) {
        let mu = self.centre[b] + self.offset(i) * self.delta[b];
        (mu, gaussian_row(f, mu, self.sigma2[b] * 2.0))
    }

    fn forward(&self) -> Vec<f32> {
        let rows = self.centre.len() * self.n;
        let mut out = vec![0.0f32; rows * self.size];
        for (r, f) in out.chunks_exact_mut(self.size).enumerate() {
            let (_, sum) = self.row(r / self.n, r % self.n, f);
            let z = sum.max(self.eps);
            f.iter_mut().for_each(|v| *v /= z);
        }
        out
    }

    /// `(dg, dδ, dσ²)` from `dF`.
    fn backward(&self, grad: &[f32]) -> [Vec<f32>; 3] {
        let batch = self.centre.len();
        let (mut dg, mut dd, mut ds) = (vec![0.0f32; batch], vec![0.0f32; batch], vec![0.0f32; batch]);
        let mut f = vec![0.0f32; self.size];
        for (r, df_out) in grad.chunks_exact(self.size).enumerate() {
            let (b, i) = (r / self.n, r % self.n);
            let (mu, sum) = self.row(b, i, &mut f);
            let z = sum.max(self.eps);
            // Σ_a dF_a·F_a; the clamp passes no gradient to the sum when it bites.
            let through = if sum > self.eps { df_out.iter().zip(&f).map(|(d, v)| d * v / z).sum::<f32>() } else { 0.0 };
            let s2 = self.sigma2[b];
            let (mut dmu, mut dvar) = (0.0f32, 0.0f32);
            for (a, (&d, &v)) in df_out.iter().zip(&f).enumerate() {
                let de = (d - through) / z * v;
                let x = (a + 1) as f32 - mu;
                dmu += de * x / s2;
                dvar += de * x * x / (2.0 * s2 * s2);
            }
            dg[b] += dmu;
            dd[b] += self.offset(i) * dmu;
            ds[b] += dvar;
        }
        [dg, dd, ds]
    }
}

/// `f[a] = exp(−(a + 1 − μ)² / two_var)`; returns `Σ f`. The exponentials in one loop and the
/// sum in another, so that the first vectorises.
#[inline(always)]
fn gaussian_body(f: &mut [f32], mu: f32, two_var: f32) -> f32 {
    for (a, v) in f.iter_mut().enumerate() {
        let d = (a + 1) as f32 - mu;
        *v = exp_f32(-(d * d) / two_var);
    }
    lane_sum(f)
}

crate::rows::dispatched! {
    /// [`gaussian_body`].
    fn gaussian_row / gaussian_row_avx512(f: &mut [f32], mu: f32, two_var: f32) -> f32 = gaussian_body
}

#[derive(Debug)]
struct Filterbank;

impl<B: CpuInner> Backward<KilnCpu<B>, 3> for Filterbank {
    type State = Params;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<KilnCpu<B>>(&ops.node);
        let grad = B::f32_view(&grad).expect("the gradient of an f32 output is f32");
        let p = ops.state;
        let shape = Shape::from(vec![p.centre.len()]);
        for (node, g) in ops.parents.into_iter().zip(p.backward(&grad)) {
            if let Some(node) = node {
                grads.register::<KilnCpu<B>>(node.id, B::f32_tensor(g, shape.clone()));
            }
        }
    }
}

/// One filterbank axis on `Autodiff<KilnCpu<B>>` (module docs): `centre`, `delta`, `sigma2`
/// `[B]` → `F` `[B, n, size]`. `None` (compose it from tensor ops) for a dtype other than f32,
/// inputs that are not `[B]` alike, or an empty size.
pub fn filterbank_autodiff<B: CpuInner, C: CheckpointStrategy>(
    centre: &FloatTensor<Autodiff<KilnCpu<B>, C>>,
    delta: &FloatTensor<Autodiff<KilnCpu<B>, C>>,
    sigma2: &FloatTensor<Autodiff<KilnCpu<B>, C>>,
    n: usize,
    size: usize,
    eps: f64,
) -> Option<FloatTensor<Autodiff<KilnCpu<B>, C>>> {
    let shape = centre.primitive.shape();
    if shape.num_dims() != 1
        || delta.primitive.shape() != shape
        || sigma2.primitive.shape() != shape
        || n == 0
        || size == 0
    {
        return None;
    }
    let host = |t: &FloatTensor<Autodiff<KilnCpu<B>, C>>| B::f32_view(&t.primitive).map(|v| v.into_owned());
    let params = Params { n, size, eps: eps as f32, centre: host(centre)?, delta: host(delta)?, sigma2: host(sigma2)? };
    let out = B::f32_tensor(params.forward(), Shape::from(vec![shape[0], n, size]));
    let parents = [centre.node.clone(), delta.node.clone(), sigma2.node.clone()];
    Some(match Filterbank.prepare::<C>(parents).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(params, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    })
}
