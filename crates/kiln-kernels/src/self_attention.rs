//! SAGAN's self-attention block (Zhang et al. 2018, "Self-Attention Generative Adversarial
//! Networks", arXiv:1805.08318, section 3), as in the widely used PyTorch port
//! (heykeetae/Self-Attention-GAN): 1×1 convolutions to queries and keys of `C/8` channels and
//! values of `C` channels, `β = softmax(QᵀK)` over all positions (no `1/√d` scaling, as in the
//! paper), and `y = γ·o + x` with `γ` initialised to 0, so the block starts as the identity and
//! the network learns how much non-local evidence to use.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Tensor, backend::Backend};

use crate::attention::{AttentionMask, SdpaOptions, scaled_dot_product_attention};

/// Configuration of [`SelfAttention2d`].
#[derive(Config, Debug)]
pub struct SelfAttention2dConfig {
    /// Channels `C` of the feature map.
    pub channels: usize,
    /// Query/key channels are `C / reduction` (at least 1); SAGAN uses 8.
    #[config(default = 8)]
    pub reduction: usize,
}

impl SelfAttention2dConfig {
    /// Builds the block on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SelfAttention2d<B> {
        let c = self.channels;
        let ck = (c / self.reduction.max(1)).max(1);
        SelfAttention2d {
            query: Conv2dConfig::new([c, ck], [1, 1]).init(device),
            key: Conv2dConfig::new([c, ck], [1, 1]).init(device),
            value: Conv2dConfig::new([c, c], [1, 1]).init(device),
            gamma: Param::from_tensor(Tensor::zeros([1], device)),
        }
    }
}

/// Self-attention over the positions of a feature map.
#[derive(Module, Debug)]
pub struct SelfAttention2d<B: Backend> {
    /// `C → C/8` queries.
    pub query: Conv2d<B>,
    /// `C → C/8` keys.
    pub key: Conv2d<B>,
    /// `C → C` values.
    pub value: Conv2d<B>,
    /// Residual gate `γ`, starts at 0.
    pub gamma: Param<Tensor<B, 1>>,
}

impl<B: Backend> SelfAttention2d<B> {
    /// `[B, C, H, W]` → `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let n = h * w;
        let tokens = |t: Tensor<B, 4>| -> Tensor<B, 4> {
            let ch = t.dims()[1];
            t.reshape([b, ch, n]).swap_dims(1, 2).unsqueeze_dim::<4>(1) // [B, 1, N, ch]
        };
        let q = tokens(self.query.forward(x.clone())); // [B, 1, N, C/8]
        let k = tokens(self.key.forward(x.clone())); // [B, 1, N, C/8]
        let v = tokens(self.value.forward(x.clone())); // [B, 1, N, C]
        let o = scaled_dot_product_attention(q, k, v, AttentionMask::None, SdpaOptions::default().with_scale(1.0)); // [B, 1, N, C]
        let o = o.reshape([b, n, c]).swap_dims(1, 2).reshape([b, c, h, w]);
        o * self.gamma.val().reshape([1, 1, 1, 1]) + x
    }
}
