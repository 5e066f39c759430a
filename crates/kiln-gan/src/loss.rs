//! The adversarial losses and the gradient penalties.
//!
//! Losses take the discriminator's raw outputs (logits, or critic scores) `[N]` and return batch
//! means `[1]`. The penalties need the gradient of `D` with respect to its input *as a function
//! of D's parameters*, i.e. a second derivative; [`gradient_penalty`] gets it from burn's nested
//! autodiff, as the crate docs explain.

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::tensor::activation::relu;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use serde::{Deserialize, Serialize};

use crate::Discriminator;

/// The adversarial objective. Mutually exclusive, hence an enum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GanLoss {
    /// Binary cross-entropy on logits, with the generator's non-saturating objective (Goodfellow
    /// et al. 2014, §3; DCGAN): `L_D = softplus(−D(x)) + softplus(D(G(z)))`,
    /// `L_G = softplus(−D(G(z)))`.
    #[default]
    NonSaturating,
    /// Hinge loss (Lim & Ye 2017; SNGAN, SAGAN): `L_D = relu(1 − D(x)) + relu(1 + D(G(z)))`,
    /// `L_G = −D(G(z))`.
    Hinge,
    /// Least squares with targets 0 and 1 (Mao et al. 2017, arXiv:1611.04076, eq. 9 with
    /// `a = 0, b = c = 1`): `L_D = ½(D(x) − 1)² + ½D(G(z))²`, `L_G = ½(D(G(z)) − 1)²`.
    LeastSquares,
    /// The Wasserstein critic loss (Arjovsky et al. 2017), meant for WGAN-GP:
    /// `L_D = D(G(z)) − D(x)`, `L_G = −D(G(z))`.
    Wasserstein,
}

/// `log(1 + eˣ)`, stable for any `x`: `max(x, 0) + log(1 + e^−|x|)`.
pub fn softplus<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone().clamp_min(0.0) + x.abs().neg().exp().log1p()
}

impl GanLoss {
    /// The discriminator's loss on real outputs `real` `[N]` and fake outputs `fake` `[M]`. `[1]`.
    pub fn d_loss<B: Backend>(&self, real: Tensor<B, 1>, fake: Tensor<B, 1>) -> Tensor<B, 1> {
        match self {
            Self::NonSaturating => softplus(real.neg()).mean() + softplus(fake).mean(),
            Self::Hinge => relu(real.neg().add_scalar(1.0)).mean() + relu(fake.add_scalar(1.0)).mean(),
            Self::LeastSquares => (real.sub_scalar(1.0).square().mean() + fake.square().mean()).mul_scalar(0.5),
            Self::Wasserstein => fake.mean() - real.mean(),
        }
    }

    /// The generator's loss on the discriminator's outputs for its samples `fake` `[M]`. `[1]`.
    pub fn g_loss<B: Backend>(&self, fake: Tensor<B, 1>) -> Tensor<B, 1> {
        match self {
            Self::NonSaturating => softplus(fake.neg()).mean(),
            Self::Hinge | Self::Wasserstein => fake.mean().neg(),
            Self::LeastSquares => fake.sub_scalar(1.0).square().mean().mul_scalar(0.5),
        }
    }

    /// The output above which `D` calls an image real, for the accuracy metrics: 0 for logits
    /// and scores, ½ between the least-squares targets. (A Wasserstein critic's scores have no
    /// fixed zero, so its accuracies only say on which side of 0 the scores drift; read the mean
    /// scores `d_real`, `d_fake` instead.)
    pub fn threshold(&self) -> f64 {
        match self {
            Self::LeastSquares => 0.5,
            _ => 0.0,
        }
    }
}

/// A gradient penalty on the discriminator. Mutually exclusive, hence an enum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Penalty {
    /// No penalty.
    #[default]
    None,
    /// R1 (Mescheder et al. 2018, arXiv:1801.04406, eq. 9): `γ/2 · E_x ‖∇ₓD(x)‖²` on real
    /// images.
    R1 {
        /// The weight `γ` (10 in the paper's CelebA/LSUN runs; much smaller for small images).
        gamma: f64,
    },
    /// WGAN-GP (Gulrajani et al. 2017, arXiv:1704.00028, algorithm 1):
    /// `λ · E_x̂ (‖∇ₓ̂D(x̂)‖ − 1)²` at `x̂ = εx + (1 − ε)G(z)`, `ε ~ U[0, 1]` per image.
    WganGp {
        /// The weight `λ` (10 in the paper).
        lambda: f64,
    },
}

impl Penalty {
    /// Whether there is a penalty at all.
    pub fn is_some(&self) -> bool {
        !matches!(self, Self::None)
    }
}

/// The result of [`gradient_penalty`].
#[derive(Debug, Clone)]
pub struct PenaltyOutput<B: Backend> {
    /// `D` at the points, `[N]`, differentiable in D's parameters: for R1 these are the real
    /// logits, so the main loss can reuse them instead of a second forward pass.
    pub logits: Tensor<B, 1>,
    /// The weighted penalty, `[1]`, differentiable in D's parameters.
    pub penalty: Tensor<B, 1>,
    /// The mean gradient norm `E ‖∇ₓD‖`, `[1]` (detached; for logging).
    pub grad_norm: Tensor<B, 1>,
}

/// `penalty` of `d` at `points` `[N, C, S, S]` (labels as a code `[N, K]` for a conditional
/// model): R1 or WGAN-GP's term, with its gradient with respect to D's parameters.
///
/// # How
/// `d` lives on the training backend `B` (autodiff). It is lifted onto `Autodiff<B>` with
/// `AutodiffModule::from_inner`, so each of its parameters is a constant of the outer graph whose
/// value is still a tracked tensor of `B`. The points become outer leaves that require a
/// gradient. One outer backward pass of `Σ D(x)` computes `∇ₓD` *with `B`'s ops* — recorded in
/// `B`'s graph, hence differentiable in the parameters by the ordinary backward pass of the
/// training step. Lifted parameters are marked `no_grad`, so the outer pass computes only the
/// input gradient: that halves its work, and it never calls a weight-gradient op whose own
/// derivative burn lacks (`embedding_backward`).
///
/// The lifted copy's spectral-norm vectors and batch-norm statistics are not written back: the
/// ordinary forward pass of the same step updates them.
///
/// # Panics
/// For [`Penalty::None`], or if `d` uses an op whose derivative burn 0.21's autodiff cannot
/// differentiate again (see the crate docs) — this crate's discriminator uses none.
pub fn gradient_penalty<B: AutodiffBackend>(
    d: &Discriminator<B>,
    points: Tensor<B, 4>,
    code: Option<&Tensor<B, 2>>,
    penalty: Penalty,
) -> PenaltyOutput<B> {
    let n = points.dims()[0];
    let lifted = <Discriminator<Autodiff<B>> as AutodiffModule<Autodiff<B>>>::from_inner(d.clone()).no_grad();
    let x = Tensor::<Autodiff<B>, 4>::from_inner(points.detach()).require_grad();
    let code = code.map(|c| Tensor::<Autodiff<B>, 2>::from_inner(c.clone().detach()));
    let out = lifted.forward_code(x.clone(), code.as_ref()); // [N]
    let grads = out.clone().sum().backward();
    let grad = x.grad(&grads).expect("the points require a gradient"); // [N, C, S, S] on B
    let sq: Tensor<B, 1> = grad.flatten::<2>(1, 3).square().sum_dim(1).reshape([n]); // [N]
    // The square root's derivative is infinite at 0; the guard keeps it finite.
    let norm = sq.clone().add_scalar(1e-12).sqrt(); // [N]
    let value = match penalty {
        Penalty::R1 { gamma } => sq.mean().mul_scalar(gamma / 2.0),
        Penalty::WganGp { lambda } => norm.clone().sub_scalar(1.0).square().mean().mul_scalar(lambda),
        Penalty::None => panic!("gradient_penalty called with Penalty::None"),
    };
    PenaltyOutput { logits: out.inner(), penalty: value, grad_norm: norm.detach().mean() }
}

/// WGAN-GP's random points between real and fake images, `εx + (1 − ε)x̃` with one
/// `ε ~ U[0, 1]` per image. `[N, C, S, S]`.
pub fn interpolates<B: Backend>(real: Tensor<B, 4>, fake: Tensor<B, 4>) -> Tensor<B, 4> {
    let n = real.dims()[0];
    let eps = Tensor::<B, 4>::random([n, 1, 1, 1], Distribution::Uniform(0.0, 1.0), &real.device());
    real * eps.clone() + fake * eps.neg().add_scalar(1.0)
}
