//! FLOPs of a network, counted from its layer shapes.
//!
//! Only the layers that carry the arithmetic are counted — convolutions, transposed convolutions
//! and dense layers — at two FLOPs per multiply-add. Normalisation, activations, losses and the
//! optimiser update are left out: together they are a few percent of a convolutional network's
//! work, and what they cost is memory traffic, not FLOPs. A training pass (forward and backward)
//! counts as three forwards: the backward pass computes one product for the input gradient and
//! one for the weight gradient, each as large as the forward one. `xtask/bench/pytorch_bench.py`
//! counts the same way, so kiln's and PyTorch's GFLOP/s compare like their images/s.

use kiln_dalle::DalleConfig;
use kiln_diffusion::UNetConfig;
use kiln_draw::{Attention, DrawConfig};
use kiln_gan::GanConfig;
use kiln_vae::VaeConfig;
use kiln_vqvae::VqVaeConfig;

/// One layer, with the spatial size of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// `Conv2d(cin → cout, k×k, stride, padding)` on an `h×w` input.
    Conv2d { cin: usize, cout: usize, k: usize, stride: usize, pad: usize, h: usize, w: usize },
    /// `ConvTranspose2d(cin → cout, k×k, stride, padding)` on an `h×w` input (no output padding).
    ConvT2d { cin: usize, cout: usize, k: usize, stride: usize, pad: usize, h: usize, w: usize },
    /// `Linear(fan_in → fan_out)`.
    Linear { fan_in: usize, fan_out: usize },
}

impl Layer {
    /// Output height and width (`[1, 1]` for a dense layer).
    pub fn out_hw(&self) -> [usize; 2] {
        match *self {
            Layer::Conv2d { k, stride, pad, h, w, .. } => {
                [(h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1]
            }
            Layer::ConvT2d { k, stride, pad, h, w, .. } => {
                [(h - 1) * stride + k - 2 * pad, (w - 1) * stride + k - 2 * pad]
            }
            Layer::Linear { .. } => [1, 1],
        }
    }

    /// Forward FLOPs for one example.
    pub fn forward_flops(&self) -> u64 {
        let f = match *self {
            // Every output pixel is a dot product over cin·k·k inputs.
            Layer::Conv2d { cin, cout, k, .. } => {
                let [ho, wo] = self.out_hw();
                2 * cin * cout * k * k * ho * wo
            }
            // Every input pixel scatters a cout·k·k patch (padding only crops the output).
            Layer::ConvT2d { cin, cout, k, h, w, .. } => 2 * cin * cout * k * k * h * w,
            Layer::Linear { fan_in, fan_out } => 2 * fan_in * fan_out,
        };
        f as u64
    }
}

/// Forward FLOPs of a stack of layers, per example.
pub fn forward_flops(layers: &[Layer]) -> u64 {
    layers.iter().map(Layer::forward_flops).sum()
}

/// FLOPs of a training pass (forward and backward) counted as three forwards; see the module docs.
pub fn train_flops(forward: u64) -> u64 {
    3 * forward
}

/// The layers of kiln-gan's generator for `config` (unconditional, no attention): a transposed
/// convolution from `z` (as a 1×1 image) to `s₀×s₀`, then 4×4 stride-2 ones doubling the side.
pub fn dcgan_generator(config: &GanConfig) -> Vec<Layer> {
    let (k, s0) = config.stages();
    let width = |i: usize| config.ngf << (k - 1 - i);
    let mut layers = vec![Layer::ConvT2d { cin: config.nz, cout: width(0), k: s0, stride: 1, pad: 0, h: 1, w: 1 }];
    let mut side = s0;
    for i in 1..=k {
        let cout = if i == k { config.channels } else { width(i) };
        layers.push(Layer::ConvT2d { cin: width(i - 1), cout, k: 4, stride: 2, pad: 1, h: side, w: side });
        side *= 2;
    }
    layers
}

/// The layers of kiln-gan's discriminator for `config`: 4×4 stride-2 convolutions halving the
/// side, then an `s₀×s₀` convolution to one logit.
pub fn dcgan_discriminator(config: &GanConfig) -> Vec<Layer> {
    let (k, s0) = config.stages();
    let width = |i: usize| config.ndf << i;
    let mut layers = Vec::new();
    let (mut cin, mut side) = (config.channels, config.image_size);
    for i in 0..k {
        layers.push(Layer::Conv2d { cin, cout: width(i), k: 4, stride: 2, pad: 1, h: side, w: side });
        cin = width(i);
        side /= 2;
    }
    layers.push(Layer::Conv2d { cin, cout: 1, k: s0, stride: 1, pad: 0, h: s0, w: s0 });
    layers
}

/// Training FLOPs per image of one DCGAN step as pytorch/examples' `dcgan` runs it: G forward and
/// backward once; D forward and backward on the reals, on the detached fakes, and on the fakes
/// again for G's loss. That is `3·(G + 3·D)`. kiln's G update skips D's weight gradients (a third
/// of that last pass, about 8 % of the step), which pytorch/examples computes and discards; both
/// are credited this nominal count, so GFLOP/s compare as images/s do, and kiln's W1 GFLOP/s is
/// about 8 % above the arithmetic it really does.
pub fn dcgan_step_flops(config: &GanConfig) -> u64 {
    let g = forward_flops(&dcgan_generator(config));
    let d = forward_flops(&dcgan_discriminator(config));
    train_flops(g + 3 * d)
}

/// The layers of kiln-vae's convolutional VAE for `config`: 4×4 stride-2 convolutions, an
/// optional dense layer, the `[mean, log_var]` head, and the mirror image back.
pub fn vae_layers(config: &VaeConfig) -> Vec<Layer> {
    let mut layers = Vec::new();
    let (mut cin, mut side) = (config.channels, config.image_size);
    for &w in &config.widths {
        layers.push(Layer::Conv2d { cin, cout: w, k: 4, stride: 2, pad: 1, h: side, w: side });
        cin = w;
        side /= 2;
    }
    let flat = cin * side * side;
    let dense = if config.hidden > 0 { config.hidden } else { flat };
    if config.hidden > 0 {
        layers.push(Layer::Linear { fan_in: flat, fan_out: dense });
    }
    layers.push(Layer::Linear { fan_in: dense, fan_out: 2 * config.latent });
    layers.push(Layer::Linear { fan_in: config.latent, fan_out: dense });
    if config.hidden > 0 {
        layers.push(Layer::Linear { fan_in: dense, fan_out: flat });
    }
    for (i, &w) in config.widths.iter().enumerate().rev() {
        let cout = if i == 0 { config.channels } else { config.widths[i - 1] };
        layers.push(Layer::ConvT2d { cin: w, cout, k: 4, stride: 2, pad: 1, h: side, w: side });
        side *= 2;
    }
    layers
}

/// Training FLOPs per image of one VAE step: one forward and backward of encoder and decoder.
pub fn vae_step_flops(config: &VaeConfig) -> u64 {
    train_flops(forward_flops(&vae_layers(config)))
}

/// The layers of kiln-vqvae's network for `config`: the encoder (stride-2 4×4 convolutions at
/// half width then full width, a 3×3 convolution, residual blocks of a 3×3 and a 1×1 convolution,
/// the 1×1 projection to D) and the decoder (a 3×3 convolution from D, residual blocks, stride-2
/// 4×4 transposed convolutions back). The code search is not a layer: see [`vqvae_step_flops`].
pub fn vqvae_layers(config: &VqVaeConfig) -> Vec<Layer> {
    let (h, n) = (config.hidden, config.downsamples);
    let width = |i: usize| if i + 1 == n { h } else { h / 2 };
    let mut layers = Vec::new();
    let (mut cin, mut side) = (config.channels, config.image_size);
    for i in 0..n {
        layers.push(Layer::Conv2d { cin, cout: width(i), k: 4, stride: 2, pad: 1, h: side, w: side });
        cin = width(i);
        side /= 2;
    }
    let residuals = |layers: &mut Vec<Layer>| {
        for _ in 0..config.res_blocks {
            layers.push(Layer::Conv2d { cin: h, cout: config.res_hidden, k: 3, stride: 1, pad: 1, h: side, w: side });
            layers.push(Layer::Conv2d { cin: config.res_hidden, cout: h, k: 1, stride: 1, pad: 0, h: side, w: side });
        }
    };
    layers.push(Layer::Conv2d { cin: h, cout: h, k: 3, stride: 1, pad: 1, h: side, w: side });
    residuals(&mut layers);
    layers.push(Layer::Conv2d { cin: h, cout: config.code_dim, k: 1, stride: 1, pad: 0, h: side, w: side });
    layers.push(Layer::Conv2d { cin: config.code_dim, cout: h, k: 3, stride: 1, pad: 1, h: side, w: side });
    residuals(&mut layers);
    let mut cin = h;
    for i in (0..n).rev() {
        let cout = if i == 0 { config.channels } else { width(i - 1) };
        layers.push(Layer::ConvT2d { cin, cout, k: 4, stride: 2, pad: 1, h: side, w: side });
        cin = cout;
        side *= 2;
    }
    layers
}

/// Training FLOPs per image of one VQ-VAE step: encoder and decoder forward and backward, plus the
/// nearest-code search over the `h×w` grid once (`2·hw·K·D`; no gradient flows through it). The
/// EMA update's scatter-adds are memory traffic and not counted.
pub fn vqvae_step_flops(config: &VqVaeConfig) -> u64 {
    let grid = config.grid();
    train_flops(forward_flops(&vqvae_layers(config))) + vq_flops(grid * grid, config.code_dim, config.codebook_size)
}

/// Training FLOPs per image of one DRAW step (kiln-draw's `Draw::loss` and its backward): at each
/// of the `T` drawing steps, the dense layers (the two LSTM cells' input and hidden products, the
/// posterior head, the write head, the two attention heads) and the filterbank products — two
/// `N×N` glimpses read (`F_Y·x` then `·F_Xᵀ`, for `x` and `x̂`) and one patch written
/// (`F_Yᵀ·w` then `·F_X`) — as multiply-adds ×2, the pass as three forwards.
pub fn draw_step_flops(config: &DrawConfig) -> u64 {
    let (c, s, h, z) = (config.channels, config.image_size, config.hidden, config.latent);
    let (read, write, attention) = match config.attention {
        Attention::None => (2 * c * s * s, c * s * s, 0),
        Attention::Gaussian { read: r, write: w } => {
            let glimpses = 2 * c * (r * s * s + r * s * r);
            let patch = c * (s * w * w + s * w * s);
            (2 * c * r * r, c * w * w, glimpses + patch + 2 * h * 5)
        }
    };
    let dense = (read + h) * 4 * h + h * 4 * h + h * 2 * z + z * 4 * h + h * 4 * h + h * write;
    train_flops((2 * config.steps * (dense + attention)) as u64)
}

/// Forward FLOPs of kiln-dalle's transformer trunk for `queries` tokens that each attend to
/// `keys` tokens: per block, the dense layers (qkv 3·W², the projection W², the MLP 4·W² + 4·W²:
/// 24·W² FLOPs a token) and the two attention products (`QKᵀ` and `PV`, 4·W·keys a query).
/// Causal masking is not credited as saved work — a training query counts against all `T` keys,
/// as nanoGPT's `estimate_mfu` (after the PaLM paper's appendix B) and W6's attention count.
/// Embeddings, LayerNorms and softmax are memory traffic and not counted.
pub fn dalle_trunk_flops(config: &DalleConfig, queries: usize, keys: usize) -> u64 {
    let w = config.width;
    (config.layers * queries * (24 * w * w + 4 * w * keys)) as u64
}

/// Training FLOPs per sequence of one DALL·E step: the trunk over all `T = L + N` input tokens,
/// the text head on the `L` text positions and the image head on the `N` image positions; the
/// pass as three forwards.
pub fn dalle_step_flops(config: &DalleConfig) -> u64 {
    let (t, w) = (config.seq_len(), config.width);
    let heads = 2 * w * (config.text_len * config.text_vocab + config.image_tokens() * config.image_vocab);
    train_flops(dalle_trunk_flops(config, t, t) + heads as u64)
}

/// FLOPs per image of drawing its `N` codes with the key/value cache: the prefill of
/// `[BOS; text]` (`P = L + 1` tokens, causal among themselves), then `N − 1` single-token steps
/// against `P + 1 … P + N − 1` cached keys, and the image head once per code.
pub fn dalle_sample_cached_flops(config: &DalleConfig) -> u64 {
    let prompt = config.text_len + 1;
    let n = config.image_tokens();
    let steps: u64 = (1..n).map(|j| dalle_trunk_flops(config, 1, prompt + j)).sum();
    dalle_trunk_flops(config, prompt, prompt) + steps + (n * 2 * config.width * config.image_vocab) as u64
}

/// FLOPs per image of drawing its `N` codes by recomputing the whole prefix for each: the trunk
/// over `P, P + 1, …, P + N − 1` tokens (`P = L + 1`), and the image head on the last position
/// of each.
pub fn dalle_sample_recompute_flops(config: &DalleConfig) -> u64 {
    let prompt = config.text_len + 1;
    let n = config.image_tokens();
    let prefixes: u64 = (0..n).map(|j| dalle_trunk_flops(config, prompt + j, prompt + j)).sum();
    prefixes + (n * 2 * config.width * config.image_vocab) as u64
}

/// Forward FLOPs per image of kiln-diffusion's U-Net, walked as `UNetConfig::init` builds it:
/// every residual block's two 3×3 convolutions, its 1×1 skip when the channels change and its
/// time projection; every attention block's 1×1 qkv and output convolutions and its `QKᵀ`/`PV`
/// products over the `s²` positions; the stride-2 downsampling and post-upsampling 3×3
/// convolutions; the input and output convolutions and the time MLP.
pub fn unet_forward_flops(config: &UNetConfig) -> u64 {
    let (base, e) = (config.base, config.embed_dim());
    let conv = |cin: usize, cout: usize, k: usize, s: usize| 2 * cin * cout * k * k * s * s;
    let res = |cin: usize, cout: usize, s: usize| {
        conv(cin, cout, 3, s)
            + conv(cout, cout, 3, s)
            + 2 * e * cout
            + if cin != cout { conv(cin, cout, 1, s) } else { 0 }
    };
    let attn = |ch: usize, s: usize| conv(ch, 3 * ch, 1, s) + conv(ch, ch, 1, s) + 4 * s * s * s * s * ch;
    let resolutions = config.resolutions();
    let at = |s: usize, ch: usize| if config.attention.contains(&s) { attn(ch, s) } else { 0 };
    let mut total = 2 * base * e + 2 * e * e + conv(config.channels, base, 3, config.image_size);
    let (mut ch, mut skips) = (base, vec![base]);
    for (level, &m) in config.mults.iter().enumerate() {
        let (out, s) = (base * m, resolutions[level]);
        for _ in 0..config.res_blocks {
            total += res(ch, out, s) + at(s, out);
            ch = out;
            skips.push(ch);
        }
        if level + 1 < config.mults.len() {
            total += conv(ch, ch, 3, s / 2);
            skips.push(ch);
        }
    }
    let low = *resolutions.last().unwrap_or(&config.image_size);
    total += 2 * res(ch, ch, low) + attn(ch, low);
    for (level, &m) in config.mults.iter().enumerate().rev() {
        let (out, s) = (base * m, resolutions[level]);
        for _ in 0..=config.res_blocks {
            let skip = skips.pop().unwrap_or(0);
            total += res(ch + skip, out, s) + at(s, out);
            ch = out;
        }
        if level > 0 {
            total += conv(ch, ch, 3, 2 * s);
        }
    }
    (total + conv(ch, config.channels, 3, config.image_size)) as u64
}

/// FLOPs of scaled dot-product attention forward and backward: the forward is two `[L, L]`
/// products per head (`QKᵀ` and `PV`, `4·B·H·L²·D`), the backward four (`dQ`, `dK`, `dP`, `dV`).
pub fn attention_fwd_bwd_flops(b: usize, h: usize, l: usize, d: usize) -> u64 {
    train_flops((4 * b * h * l * l * d) as u64)
}

/// FLOPs of a nearest-code search: the `[N, K]` product with the codebook, `2·N·K·D`.
pub fn vq_flops(n: usize, d: usize, k: usize) -> u64 {
    (2 * n * k * d) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draw_flops_by_hand() {
        // No attention, 1×2×2 images, one step, hidden 1, z 1: read 8, write 4; dense MACs
        // (8 + 1)·4 + 1·4 + 1·2 + 1·4 + 1·4 + 1·4 = 54; ×2 FLOPs, ×3 for the pass.
        let c = DrawConfig::new().with_image_size(2).with_steps(1).with_hidden(1).with_latent(1);
        assert_eq!(draw_step_flops(&c.clone().with_attention(Attention::None)), 3 * 2 * 54);
        // Gaussian 1×1 read and write on 2×2: read 2, write 1, dense (2 + 1)·4 + 4 + 2 + 4 + 4 + 1
        // = 27; filterbanks 2·(1·2·2 + 1·2·1) + (2·1·1 + 2·1·2) + 2·1·5 = 12 + 6 + 10 = 28.
        let g = c.with_attention(Attention::Gaussian { read: 1, write: 1 });
        assert_eq!(draw_step_flops(&g), 3 * 2 * (27 + 28));
    }

    #[test]
    fn dalle_flops_by_hand() {
        // One block of width 2, L = 1 (text vocab 2), K = 3, a 1×1 grid: T = 2. trunk(q, k) =
        // q·(24·4 + 4·2·k); the step is 3·(trunk(2, 2) + 2·2·(1·2 + 1·3)) = 3·(224 + 20).
        let c = DalleConfig::new(2, 1, 3, 1).with_layers(1).with_heads(1).with_width(2);
        assert_eq!(dalle_trunk_flops(&c, 2, 2), 224);
        assert_eq!(dalle_step_flops(&c), 3 * 244);
        // One code: the cached and recomputed draws are the same pass, trunk(2, 2) + head 12.
        assert_eq!(dalle_sample_cached_flops(&c), 236);
        assert_eq!(dalle_sample_recompute_flops(&c), 236);
        // A 2×2 grid, P = 2: cached = trunk(2, 2) + trunk(1, 3..=5) + 4·12 = 224 + 384 + 48;
        // recompute = trunk(2, 2) + trunk(3, 3) + trunk(4, 4) + trunk(5, 5) + 48.
        let g = DalleConfig { grid: 2, ..c };
        assert_eq!(dalle_sample_cached_flops(&g), 224 + 120 + 128 + 136 + 48);
        assert_eq!(dalle_sample_recompute_flops(&g), 224 + 360 + 512 + 680 + 48);
        // W4's gpt-mini (6 × 192, T = 80, 512 + 512 vocab): 6·80·(24·192² + 4·192·80) + 2·192·(16
        // + 64)·512 = 469,893,120 forward, ≈ 1.41 GFLOP a sequence for the step.
        let mini = DalleConfig::new(512, 16, 512, 8).with_layers(6).with_heads(6).with_width(192);
        assert_eq!(dalle_step_flops(&mini), 3 * 469_893_120);
    }

    #[test]
    fn single_layers_match_hand_counts() {
        // DCGAN D's second layer: 64→128, 4×4 stride 2 pad 1, 32×32 → 16×16:
        // 2 · 64 · 128 · 16 · 256 = 67,108,864.
        let conv = Layer::Conv2d { cin: 64, cout: 128, k: 4, stride: 2, pad: 1, h: 32, w: 32 };
        assert_eq!(conv.out_hw(), [16, 16]);
        assert_eq!(conv.forward_flops(), 67_108_864);
        // DCGAN G's first layer: z 100 → 512 at 4×4 from a 1×1 input: 2 · 100 · 512 · 16 = 1,638,400.
        let first = Layer::ConvT2d { cin: 100, cout: 512, k: 4, stride: 1, pad: 0, h: 1, w: 1 };
        assert_eq!(first.out_hw(), [4, 4]);
        assert_eq!(first.forward_flops(), 1_638_400);
        // G's last layer: 64 → 3, 32×32 → 64×64: 2 · 64 · 3 · 16 · 1024 = 6,291,456.
        let last = Layer::ConvT2d { cin: 64, cout: 3, k: 4, stride: 2, pad: 1, h: 32, w: 32 };
        assert_eq!(last.out_hw(), [64, 64]);
        assert_eq!(last.forward_flops(), 6_291_456);
        // A 3×3 "same" convolution: 2 · 3 · 8 · 9 · 10 · 10 = 43,200.
        let same = Layer::Conv2d { cin: 3, cout: 8, k: 3, stride: 1, pad: 1, h: 10, w: 10 };
        assert_eq!(same.forward_flops(), 43_200);
        assert_eq!(Layer::Linear { fan_in: 2048, fan_out: 256 }.forward_flops(), 1_048_576);
    }

    #[test]
    fn dcgan64_totals() {
        let config = GanConfig::dcgan64();
        // G: 1,638,400 + 3 × 67,108,864 + 6,291,456.
        assert_eq!(forward_flops(&dcgan_generator(&config)), 209_256_448);
        // D: 6,291,456 + 3 × 67,108,864 + 2 · 512 · 16 = 16,384.
        assert_eq!(forward_flops(&dcgan_discriminator(&config)), 207_634_432);
        // 3 · (G + 3 D) ≈ 2.50 GFLOP per image.
        assert_eq!(dcgan_step_flops(&config), 3 * (209_256_448 + 3 * 207_634_432));
    }

    #[test]
    fn vae_vanilla64_layers_mirror() {
        let layers = vae_layers(&VaeConfig::vanilla64());
        // 5 convolutions, head, decoder input, 5 transposed convolutions.
        assert_eq!(layers.len(), 12);
        assert_eq!(layers[5], Layer::Linear { fan_in: 512 * 2 * 2, fan_out: 256 });
        assert_eq!(layers[11].out_hw(), [64, 64]);
        // The same network in xtask/bench/pytorch_bench.py, counted by forward hooks: 142,082,048.
        assert_eq!(forward_flops(&layers), 142_082_048);
        assert_eq!(attention_fwd_bwd_flops(1, 1, 2, 3), 3 * 4 * 4 * 3);
    }

    #[test]
    fn vqvae_cifar_layers() {
        let config = VqVaeConfig::cifar();
        let layers = vqvae_layers(&config);
        // 2 downsamples + 3×3 + 2·2 residual + pre-VQ, then 3×3 + 2·2 residual + 2 transposed.
        assert_eq!(layers.len(), 2 + 1 + 4 + 1 + 1 + 4 + 2);
        assert_eq!(layers[0], Layer::Conv2d { cin: 3, cout: 128, k: 4, stride: 2, pad: 1, h: 32, w: 32 });
        assert_eq!(layers[7].out_hw(), [8, 8]);
        assert_eq!(layers[14], Layer::ConvT2d { cin: 128, cout: 3, k: 4, stride: 2, pad: 1, h: 16, w: 16 });
        assert_eq!(layers[14].out_hw(), [32, 32]);
        // By hand: enc 3·128·16·256 + 128·256·16·64 + 256·256·9·64 + 2·(256·256·9·64 + 256·256·64)
        // + 256·64·64, dec 64·256·9·64 + 2·(…) + 256·128·16·64 + 128·3·16·256, all ×2.
        let macs: u64 = 3 * 128 * 16 * 256
            + 128 * 256 * 16 * 64
            + 256 * 256 * 9 * 64
            + 2 * 2 * (256 * 256 * 9 * 64 + 256 * 256 * 64)
            + 256 * 64 * 64
            + 64 * 256 * 9 * 64
            + 256 * 128 * 16 * 64
            + 128 * 3 * 16 * 256;
        assert_eq!(forward_flops(&layers), 2 * macs);
        assert_eq!(vqvae_step_flops(&config), 3 * 2 * macs + 2 * 64 * 512 * 64);
    }
}
