//! Vector quantization (VQ-VAE, van den Oord et al. 2017, arXiv:1711.00937): nearest-code
//! search, the straight-through estimator, the two auxiliary losses, and the EMA codebook update
//! with dead-code restarts (Sonnet's `VectorQuantizerEMA`, and the restart of Dhariwal et al.'s
//! Jukebox, arXiv:2005.00341).
//!
//! Distances use `‖x‖² − 2 x·cᵀ + ‖c‖²`, one `[N, K]` GEMM, never an `[N, K, D]` difference
//! tensor. Everything here is a function of tensors; the model that owns the codebook keeps it
//! (as a `Param` when trained by gradient, as state when trained by EMA).

use burn::tensor::{Bool, Distribution, IndexingUpdateOp, Int, Tensor, backend::Backend};

/// Squared Euclidean distances `[N, K]` between rows of `x` `[N, D]` and of `codebook` `[K, D]`.
///
/// Computed as `‖x‖² − 2 x·cᵀ + ‖c‖²`; rounding can make a distance slightly negative.
pub fn squared_distances<B: Backend>(x: Tensor<B, 2>, codebook: Tensor<B, 2>) -> Tensor<B, 2> {
    let x_sq = x.clone().square().sum_dim(1); // [N, 1]
    let c_sq = codebook.clone().square().sum_dim(1).transpose(); // [1, K]
    let cross = x.matmul(codebook.transpose()); // [N, K]
    cross.mul_scalar(-2.0).add(x_sq).add(c_sq)
}

/// Index `[N]` of the nearest code for each row of `x` `[N, D]`; ties go to the lower index.
pub fn nearest_code<B: Backend>(x: Tensor<B, 2>, codebook: Tensor<B, 2>) -> Tensor<B, 1, Int> {
    // ‖x‖² is the same for every code, so it does not change the argmin.
    let c_sq = codebook.clone().square().sum_dim(1).transpose(); // [1, K]
    let scores = x.matmul(codebook.transpose()).mul_scalar(-2.0).add(c_sq); // [N, K]
    scores.argmin(1).squeeze_dim(1)
}

/// The codes `[N, D]` for indices `[N]`.
pub fn lookup<B: Backend>(codebook: Tensor<B, 2>, indices: Tensor<B, 1, Int>) -> Tensor<B, 2> {
    codebook.select(0, indices)
}

/// The straight-through estimator: the value of `quantized`, the gradient of `x`
/// (`x + sg(q − x)`).
pub fn straight_through<B: Backend, const D: usize>(x: Tensor<B, D>, quantized: Tensor<B, D>) -> Tensor<B, D> {
    x.clone() + (quantized - x).detach()
}

/// The output of [`quantize`].
#[derive(Debug, Clone)]
pub struct Quantized<B: Backend> {
    /// The codes, passed through with the straight-through estimator, `[N, D]`.
    pub quantized: Tensor<B, 2>,
    /// The chosen code indices, `[N]`.
    pub indices: Tensor<B, 1, Int>,
    /// `‖x − sg(q)‖²` averaged over elements: pulls the encoder toward its codes (weighted by
    /// β = 0.25 in the paper).
    pub commitment_loss: Tensor<B, 1>,
    /// `‖sg(x) − q‖²` averaged over elements: pulls the codes toward the encoder (not needed
    /// when the codebook is updated by EMA).
    pub codebook_loss: Tensor<B, 1>,
}

/// Quantizes `x` `[N, D]` to its nearest rows of `codebook` `[K, D]`.
pub fn quantize<B: Backend>(x: Tensor<B, 2>, codebook: Tensor<B, 2>) -> Quantized<B> {
    let indices = nearest_code(x.clone().detach(), codebook.clone().detach());
    let codes = lookup(codebook, indices.clone()); // [N, D], differentiable in the codebook
    let commitment_loss = (x.clone() - codes.clone().detach()).square().mean();
    let codebook_loss = (x.clone().detach() - codes.clone()).square().mean();
    Quantized { quantized: straight_through(x, codes), indices, commitment_loss, codebook_loss }
}

/// How often each of the `k` codes was chosen, `[K]` (as floats).
pub fn code_counts<B: Backend>(indices: Tensor<B, 1, Int>, k: usize) -> Tensor<B, 1> {
    let device = indices.device();
    let ones = Tensor::<B, 1>::ones([indices.dims()[0]], &device);
    Tensor::<B, 1>::zeros([k], &device).select_assign(0, indices, ones, IndexingUpdateOp::Add)
}

/// The perplexity `exp(−Σ p log p)` of code usage `counts` `[K]`: the effective number of codes
/// in use, from 1 (collapse) to K (uniform). Returns a one-element tensor.
pub fn perplexity<B: Backend>(counts: Tensor<B, 1>) -> Tensor<B, 1> {
    let p = counts.clone() / counts.sum().clamp_min(1e-12);
    // p log p → 0 as p → 0; the epsilon keeps log finite for unused codes.
    (p.clone() * (p + 1e-10).log()).sum().neg().exp()
}

/// The fraction of codes whose count is positive, as a one-element tensor.
pub fn usage<B: Backend>(counts: Tensor<B, 1>) -> Tensor<B, 1> {
    let k = counts.dims()[0] as f64;
    counts.greater_elem(0.0).float().sum().div_scalar(k)
}

/// Exponential-moving-average statistics of a codebook (Sonnet's `VectorQuantizerEMA`, appendix
/// A.1 of the VQ-VAE paper): the running count `N_k` of vectors assigned to each code and the
/// running sum `m_k` of those vectors.
#[derive(Debug, Clone)]
pub struct EmaCodebook<B: Backend> {
    /// `N_k`, `[K]`.
    pub cluster_size: Tensor<B, 1>,
    /// `m_k`, `[K, D]`.
    pub embed_sum: Tensor<B, 2>,
}

impl<B: Backend> EmaCodebook<B> {
    /// Statistics that reproduce `codebook` exactly: every count 1, every sum the code itself.
    pub fn new(codebook: Tensor<B, 2>) -> Self {
        let [k, _] = codebook.dims();
        Self { cluster_size: Tensor::ones([k], &codebook.device()), embed_sum: codebook.detach() }
    }

    /// One EMA step with the batch `x` `[N, D]` and its code `indices` `[N]`:
    /// `N ← γN + (1−γ)n`, `m ← γm + (1−γ)Σx`. Returns the new statistics and the codebook they
    /// give, `e_k = m_k / Ñ_k` with Laplace smoothing `Ñ_k = (N_k + ε)/(ΣN + Kε) · ΣN` so that an
    /// unused code does not divide by zero. No gradient flows.
    pub fn update(self, x: Tensor<B, 2>, indices: Tensor<B, 1, Int>, decay: f64, epsilon: f64) -> (Self, Tensor<B, 2>) {
        let [k, d] = self.embed_sum.dims();
        let x = x.detach();
        let counts = code_counts(indices.clone(), k);
        let sums = Tensor::<B, 2>::zeros([k, d], &x.device()).select_assign(0, indices, x, IndexingUpdateOp::Add);
        let cluster_size = self.cluster_size.mul_scalar(decay) + counts.mul_scalar(1.0 - decay);
        let embed_sum = self.embed_sum.mul_scalar(decay) + sums.mul_scalar(1.0 - decay);
        let n = cluster_size.clone().sum(); // [1]
        let smoothed = (cluster_size.clone() + epsilon) / (n.clone() + k as f64 * epsilon) * n;
        let codebook = embed_sum.clone() / smoothed.unsqueeze_dim::<2>(1);
        (Self { cluster_size, embed_sum }, codebook)
    }
}

/// Codes whose usage is below `threshold`, `[K]` (true = dead).
pub fn dead_codes<B: Backend>(usage: Tensor<B, 1>, threshold: f64) -> Tensor<B, 1, Bool> {
    usage.lower_elem(threshold)
}

/// Replaces each dead code with a vector drawn uniformly from the batch `x` `[N, D]` (Jukebox's
/// random restart), leaving live codes unchanged. `dead` is `[K]`, e.g. from [`dead_codes`] on
/// an EMA cluster size. Draws from the backend's RNG (seed it with `B::seed`).
pub fn restart_dead_codes<B: Backend>(
    codebook: Tensor<B, 2>,
    dead: Tensor<B, 1, Bool>,
    x: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let [k, d] = codebook.dims();
    let n = x.dims()[0];
    let picks = Tensor::<B, 1, Int>::random([k], Distribution::Uniform(0.0, n as f64), &codebook.device())
        .clamp(0, n as i64 - 1);
    let replacements = x.detach().select(0, picks); // [K, D]
    let dead = dead.unsqueeze_dim::<2>(1).expand([k, d]);
    codebook.mask_where(dead, replacements)
}
