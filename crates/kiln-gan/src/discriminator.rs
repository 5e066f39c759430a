//! The discriminator: DCGAN's stack of stride-2 4×4 convolutions with leaky ReLU (Radford et al.
//! 2015, arXiv:1511.06434; pytorch/examples `dcgan`), normalised by batch norm or spectral norm,
//! with an optional SAGAN self-attention block, and — for a class-conditional model — the
//! projection of Miyato & Koyama 2018 (arXiv:1802.05637, eq. 3):
//!
//! `D(x, y) = ψ(φ(x)) + embed(y)ᵀ · Σ_{h,w} φ(x)`
//!
//! where `φ(x)` is the last feature map, `ψ` the final `s₀×s₀` convolution to one logit, and the
//! class embedding is a `[K, C]` matrix applied to a one-hot code. Every op on the path from the
//! image to the logit is one that burn's nested autodiff differentiates twice (conv2d, matmul,
//! element-wise ops, sums), which is what lets the gradient penalties train it.

use burn::module::{Initializer, Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use kiln_kernels::activation::leaky_relu;
use kiln_kernels::{SelfAttention2d, SelfAttention2dConfig};

use crate::config::{GanConfig, Norm};
use crate::layers::{BatchNorm, Conv, ConvConfig, ConvKind, materialize, one_hot};

/// DCGAN's leaky ReLU slope.
const SLOPE: f64 = 0.2;

/// One discriminator stage: a stride-2 convolution, optional batch norm, leaky ReLU.
#[derive(Module, Debug)]
pub struct DiscBlock<B: Backend> {
    pub(crate) conv: Conv<B>,
    pub(crate) norm: Option<BatchNorm<B>>,
}

/// The discriminator (critic) `D(x, y)`; build it with [`GanConfig::init_discriminator`].
#[derive(Module, Debug)]
pub struct Discriminator<B: Backend> {
    /// Block `i` halves the side to `S/2^(i+1)` with `ndf·2^i` channels.
    pub(crate) blocks: Vec<DiscBlock<B>>,
    pub(crate) attention: Option<SelfAttention2d<B>>,
    /// The block after which `attention` runs.
    pub(crate) attention_after: usize,
    /// `[N, ndf·2^(k−1), s₀, s₀]` → `[N, 1, 1, 1]`.
    pub(crate) output: Conv<B>,
    /// The class embedding of the projection, `[K, ndf·2^(k−1)]`.
    pub(crate) projection: Option<Param<Tensor<B, 2>>>,
    pub(crate) num_classes: usize,
}

impl GanConfig {
    /// Builds the discriminator on `device` with fresh DCGAN-initialised weights.
    ///
    /// # Panics
    /// If the config is invalid; call [`GanConfig::validate`] first on user-supplied configs.
    pub fn init_discriminator<B: Backend>(&self, device: &B::Device) -> Discriminator<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let (k, s0) = self.stages();
        let sn = self.d_norm == Norm::Spectral;
        let bn = self.d_norm == Norm::Batch;
        let width = |i: usize| self.ndf << i;
        let mut blocks = Vec::with_capacity(k);
        for i in 0..k {
            let cin = if i == 0 { self.channels } else { width(i - 1) };
            // DCGAN leaves the first layer without batch norm; a layer followed by batch norm
            // needs no bias (pytorch/examples uses none anywhere in the batch-norm network).
            let norm = (bn && i > 0).then(|| BatchNorm::new(width(i), 1, device));
            let conv = ConvConfig::new(ConvKind::Forward, [cin, width(i)], 4)
                .with_stride(2)
                .with_padding(1)
                .with_bias(!bn)
                .with_spectral(sn)
                .init(device);
            blocks.push(DiscBlock { conv, norm });
        }
        let top = width(k - 1);
        let output = ConvConfig::new(ConvKind::Forward, [top, 1], s0).with_bias(!bn).with_spectral(sn).init(device);
        let attention_after =
            self.attention.map_or(0, |side| (0..k).find(|&i| self.image_size >> (i + 1) == side).unwrap_or(0));
        let attention = self.attention.map(|_| SelfAttention2dConfig::new(width(attention_after)).init(device));
        let projection = self.conditional().then(|| {
            Initializer::XavierUniform { gain: 1.0 }.init_with(
                [self.num_classes, top],
                Some(self.num_classes),
                Some(top),
                device,
            )
        });
        materialize(Discriminator {
            blocks,
            attention,
            attention_after,
            output,
            projection,
            num_classes: self.num_classes,
        })
    }
}

impl<B: Backend> Discriminator<B> {
    /// Logits (critic scores) `[N]` for images `[N, C, S, S]` in `[-1, 1]` and, for a conditional
    /// model, their labels `[N]`.
    ///
    /// # Panics
    /// If a conditional model gets no labels or an unconditional one gets some.
    pub fn forward(&self, images: Tensor<B, 4>, labels: Option<Tensor<B, 1, Int>>) -> Tensor<B, 1> {
        let code = match (labels, self.num_classes) {
            (None, 0) => None,
            (Some(labels), k) if k > 0 => Some(one_hot(labels, k)),
            (None, k) => panic!("discriminator: a conditional model ({k} classes) needs labels"),
            (Some(_), _) => panic!("discriminator: labels given to an unconditional model"),
        };
        self.forward_code(images, code.as_ref())
    }

    /// [`Discriminator::forward`] with the class as a float code `[N, K]`.
    pub fn forward_code(&self, images: Tensor<B, 4>, code: Option<&Tensor<B, 2>>) -> Tensor<B, 1> {
        let n = images.dims()[0];
        let h = self.features(images); // [N, C, s₀, s₀]
        let logit = self.output.forward(h.clone()).reshape([n]); // [N]
        match (&self.projection, code) {
            (Some(embed), Some(code)) => {
                let c = h.dims()[1];
                let pooled: Tensor<B, 2> = h.sum_dim(3).sum_dim(2).reshape([n, c]); // [N, C]
                let class = code.clone().matmul(embed.val()); // [N, C]
                logit + (class * pooled).sum_dim(1).reshape([n]) // [N]
            }
            _ => logit,
        }
    }

    /// A conditional model's logits `[N]` for images of the classes `code` `[N, K]`, and the
    /// projection's scores of every class, `Σ_{h,w} φ(x) · embedᵀ` `[N, K]`: the logit's class
    /// term is the score of the class asked for, so the scores double as a classifier's logits
    /// (the auxiliary classifier of [`crate::GanTaskConfig::class_loss`]) at the cost of one
    /// `[N, C] × [C, K]` product. `None` for an unconditional model.
    pub fn forward_with_classes(
        &self,
        images: Tensor<B, 4>,
        code: &Tensor<B, 2>,
    ) -> Option<(Tensor<B, 1>, Tensor<B, 2>)> {
        let embed = self.projection.as_ref()?;
        let n = images.dims()[0];
        let h = self.features(images); // [N, C, s₀, s₀]
        let c = h.dims()[1];
        let logit = self.output.forward(h.clone()).reshape([n]); // [N]
        let pooled: Tensor<B, 2> = h.sum_dim(3).sum_dim(2).reshape([n, c]); // [N, C]
        let scores = pooled.matmul(embed.val().transpose()); // [N, K]
        let asked = (scores.clone() * code.clone()).sum_dim(1).reshape([n]); // [N]
        Some((logit + asked, scores))
    }

    /// The last feature map `φ(x)`, `[N, ndf·2^(k−1), s₀, s₀]`, for images `[N, C, S, S]`.
    fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = images;
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.conv.forward(h); // [N, ndf·2^i, S/2^(i+1), S/2^(i+1)]
            if let Some(norm) = &block.norm {
                h = norm.forward(h, None);
            }
            h = leaky_relu(h, SLOPE);
            if i == self.attention_after
                && let Some(attention) = &self.attention
            {
                h = attention.forward(h); // same shape
            }
        }
        h
    }

    /// Classes of a conditional model, 0 for an unconditional one.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The spectrally normalised convolutions' effective weights, each as `[out, in·kh·kw]` (for
    /// checking that their largest singular value is 1). Empty without spectral norm.
    pub fn normalized_weights(&self) -> Vec<Tensor<B, 2>> {
        self.blocks
            .iter()
            .map(|b| &b.conv)
            .chain(std::iter::once(&self.output))
            .filter(|c| c.sn.is_some())
            .map(|c| {
                let w = c.effective_weight();
                let [o, i, kh, kw] = w.dims();
                w.reshape([o, i * kh * kw])
            })
            .collect()
    }
}
