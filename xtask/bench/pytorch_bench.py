#!/usr/bin/env python3
"""The workloads of `kiln-bench` (crates/kiln-bench) in PyTorch, for issue 8's comparison.

    python xtask/bench/pytorch_bench.py [--workload w1,w2,w3,w4,w5,w6,w7] [--reps N] [--warmup N]
                                        [--threads N] [--json] [--tiny] [--device cpu|cuda:N]

`cargo xtask bench --compare` runs it interleaved with kiln-bench (it makes its own venv with
`pip install torch numpy`). Each workload is written here from its reference, not imported, so
the script needs nothing but torch:

- w1-dcgan64: pytorch/examples `dcgan/main.py` at 64x64 (nz 100, ngf = ndf = 64), its
  `weights_init`, BCELoss, Adam lr 2e-4 betas (0.5, 0.999); one step = the D update (reals, then
  detached fakes) and the G update, exactly as that script's loop, batch 64 of random images.
- w2-vae64: the network of kiln-vae's `VaeConfig::vanilla64()` (AntixK/PyTorch-VAE VanillaVAE's
  widths 32..512 and latent 128 on 4x4 stride-2 convolutions with LeakyReLU 0.2, no batch norm, a
  mirrored transposed-convolution decoder, Gaussian likelihood with sigma 1), Adam lr 5e-3
  (PyTorch-VAE's configs/vae.yaml), batch 64. Same shapes as kiln's, so images/s compare.
  `w2-antixk64` is PyTorch-VAE's own VanillaVAE (3x3 convolutions, batch norm, an extra output
  stage) for reference; kiln has no counterpart of it.
- w3-vqvae32: the VQ-VAE paper's CIFAR-10 net as kiln-vqvae's `VqVaeConfig::cifar()` builds it
  (two stride-2 4x4 convolutions at 128 then 256 channels, a 3x3 convolution, two residual blocks
  of ReLU, 3x3 conv, ReLU, 1x1 conv, a 1x1 projection to D = 64, K = 512 codes, the mirrored
  decoder), one step = forward, MSE + 0.25 commitment through the straight-through estimator,
  backward, Adam lr 2e-4, then the EMA codebook update (decay 0.99, Laplace epsilon 1e-5) and
  restarts of codes whose EMA count is below 0.1; batch 64 of 3x32x32.
- w4-gpt-mini-*: minGPT's gpt-mini (6 layers, 6 heads, width 192) as kiln-dalle's transformer:
  pre-norm GPT-2 blocks (one fused qkv Linear, causal F.scaled_dot_product_attention, GELU MLP
  of 4x, GPT-2's init), a final LayerNorm, one token embedding for 512 text ids + 512 image codes
  + BOS, learned positions for BOS and the 16 text slots and row + column embeddings of the 8x8
  code grid, separate text and image heads; 80-token sequences [BOS; text; image[:63]], batch
  32 of fixed random tokens. -train: forward, 0.125 CE(text) + 0.875 CE(image), backward, Adam
  lr 1e-3, in tokens/s (32 x 80 a step). -sample-kv: draw 32 x 64 image codes (softmax, then
  torch.multinomial) with a key/value cache of its own (prefill [BOS; text], then one token a
  step, keys and values concatenated per layer); -sample-recompute: the same, running the whole
  prefix again for every token. Both in tokens/s (32 x 64 a run).
- w5-draw-mnist: DRAW (Gregor et al. 2015) as kiln-draw's `DrawConfig::mnist()` builds it: the
  paper's MNIST setup with attention (T = 64, nn.LSTMCell encoder and decoder of 256, z = 100,
  Gaussian read 2x2 of x and x - sigmoid(c), write 5x5, additive canvas, attention heads started
  tiling the image), loss = Bernoulli NLL of sigmoid(c_T) on binarized pixels + the KL summed
  over steps, Adam lr 1e-3, batch 64 of 1x28x28.
- w7-unet-emoji: the U-Net of kiln-diffusion's `DiffusionConfig::emoji()`, layer for layer
  (Ho et al.'s layout: 3x3 input conv to 32 channels; levels 32/16/8 at 32/64/64 channels, one
  residual block down and two up per level, GroupNorm(8) -> SiLU -> conv, the time embedding's
  projection added between the convolutions, 1x1 skips where the channels change; attention at
  8x8 with 4 heads through F.scaled_dot_product_attention; stride-2 3x3 downsampling, nearest 2x
  upsampling then a 3x3 conv; sinusoidal time features of width 32 through Linear-SiLU-Linear to
  128), one step = DDPM with the cosine schedule over 1000 steps and v-prediction (uniform t,
  MSE to v), backward, Adam lr 1e-4, then the EMA of the weights (decay 0.999, torch._foreach_lerp_),
  batch 64 of 3x32x32.
- w6-*: F.interpolate (antialias=True when downscaling), F.scaled_dot_product_attention forward
  and backward, and the VQ nearest-code search, at the shapes of kiln-kernels' benches.

FLOPs are counted as crates/kiln-bench/src/flops.rs counts them: conv / transposed conv / linear
multiply-adds x2 from the layer shapes (W4: plus QK^T and PV over the full square), a training
pass = 3 x forward. Peak memory is VmHWM,
reset (echo 5 > /proc/self/clear_refs) before each workload. Output: a table, or with --json one
JSON object per workload and line, with the same fields as kiln-bench's.

--device cuda:N runs every workload on that GPU (torch.set_default_device, so each tensor and
module the workloads create lands there), synchronises after every repetition before the clock
is read, as kiln-bench does, and reports the GPU's peak allocated memory instead of VmHWM.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

WORKLOADS = [
    "w1-dcgan64",
    "w2-vae64",
    "w3-vqvae32",
    "w4-gpt-mini-train",
    "w4-gpt-mini-sample-kv",
    "w4-gpt-mini-sample-recompute",
    "w5-draw-mnist",
    "w6-bilinear-aa-256to64",
    "w6-bicubic-aa-256to64",
    "w6-bilinear-64to256",
    "w6-bicubic-64to256",
    "w6-attention-fwd-bwd",
    "w6-vq-search",
    "w7-unet-emoji",
]
EXTRA = ["w2-antixk64"]
CONV_NOTE = "conv/convT/linear MACs×2 from layer shapes; fwd+bwd = 3×fwd"


# ---------------------------------------------------------------------------------------------
# FLOP counting from layer shapes, as crates/kiln-bench/src/flops.rs.


def module_forward_flops(model, example):
    """Forward FLOPs per example of every Conv2d / ConvTranspose2d / Linear in `model`, read
    from the shapes a forward pass on `example` (batch 1) sees."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        x = inputs[0]
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            ho, wo = output.shape[-2:]
            total += 2 * module.in_channels // module.groups * module.out_channels * kh * kw * ho * wo
        elif isinstance(module, nn.ConvTranspose2d):
            kh, kw = module.kernel_size
            hi, wi = x.shape[-2:]
            total += 2 * module.in_channels * module.out_channels // module.groups * kh * kw * hi * wi
        elif isinstance(module, nn.Linear):
            total += 2 * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(example)
    model.train(was_training)
    for h in handles:
        h.remove()
    return total


# ---------------------------------------------------------------------------------------------
# W1: pytorch/examples dcgan.


class DcganG(nn.Module):
    def __init__(self, nz, ngf, nc):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh(),
        )

    def forward(self, z):
        return self.main(z)


class DcganD(nn.Module):
    def __init__(self, ndf, nc):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
        )

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


def dcgan_weights_init(m):
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def w1(tiny):
    # tiny: ngf = ndf = 4; the network is fixed at 64x64 in pytorch/examples, so batch shrinks.
    n, nz, width = (4, 100, 4) if tiny else (64, 100, 64)
    g, d = DcganG(nz, width, 3), DcganD(width, 3)
    g.apply(dcgan_weights_init)
    d.apply(dcgan_weights_init)
    flops_g = module_forward_flops(g, torch.randn(1, nz, 1, 1))
    flops_d = module_forward_flops(d, torch.randn(1, 3, 64, 64))
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = torch.rand(n, 3, 64, 64) * 2 - 1
    real_label, fake_label = 1.0, 0.0

    def step():
        # pytorch/examples dcgan/main.py, one iteration of its loop.
        d.zero_grad()
        label = torch.full((n,), real_label)
        err_real = criterion(d(real), label)
        err_real.backward()
        noise = torch.randn(n, nz, 1, 1)
        fake = g(noise)
        label.fill_(fake_label)
        err_fake = criterion(d(fake.detach()), label)
        err_fake.backward()
        opt_d.step()
        g.zero_grad()
        label.fill_(real_label)
        err_g = criterion(d(fake), label)
        err_g.backward()
        opt_g.step()
        return (err_real + err_fake).item(), err_g.item()

    flops = 3 * (flops_g + 3 * flops_d) * n
    return step, n, "img", flops, CONV_NOTE + "; step = 3·(G + 3·D)"


# ---------------------------------------------------------------------------------------------
# W2: kiln-vae's vanilla64 network, and PyTorch-VAE's VanillaVAE for reference.


class KilnVae(nn.Module):
    """kiln-vae's `Vae` for `VaeConfig::vanilla64()` (hidden = 0, Gaussian sigma = 1, beta = 1)."""

    def __init__(self, channels, size, widths, latent):
        super().__init__()
        self.latent = latent
        enc, c = [], channels
        for w in widths:
            enc.append(nn.Conv2d(c, w, 4, 2, 1))
            c = w
        self.enc = nn.ModuleList(enc)
        self.side = size >> len(widths)
        self.top = c
        flat = c * self.side * self.side
        self.head = nn.Linear(flat, 2 * latent)
        self.dec_in = nn.Linear(latent, flat)
        dec = []
        for i in reversed(range(len(widths))):
            out = channels if i == 0 else widths[i - 1]
            dec.append(nn.ConvTranspose2d(widths[i], out, 4, 2, 1))
        self.dec = nn.ModuleList(dec)

    def encode(self, x):
        for conv in self.enc:
            x = F.leaky_relu(conv(x), 0.2)
        stats = self.head(x.flatten(1))
        return stats[:, : self.latent], stats[:, self.latent:]

    def decode(self, z):
        h = F.leaky_relu(self.dec_in(z), 0.2).view(-1, self.top, self.side, self.side)
        for i, deconv in enumerate(self.dec):
            h = deconv(h)
            if i < len(self.dec) - 1:
                h = F.leaky_relu(h, 0.2)
        return h

    def forward(self, x):
        mean, log_var = self.encode(x)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        return self.decode(z), mean, log_var

    def loss(self, x):
        params, mean, log_var = self(x)
        recon = (0.5 * (params - x) ** 2 + 0.5 * 1.8378770664093453).flatten(1).sum(1).mean()
        kl = (0.5 * (log_var.exp() + mean ** 2 - log_var - 1).sum(1)).mean()
        return recon + kl


class AntixkVanillaVae(nn.Module):
    """AntixK/PyTorch-VAE `models/vanilla_vae.py` VanillaVAE, in_channels 3, latent 128, 64x64."""

    def __init__(self, latent, hidden=(32, 64, 128, 256, 512)):
        super().__init__()
        mods, c = [], 3
        for h in hidden:
            mods.append(nn.Sequential(nn.Conv2d(c, h, 3, 2, 1), nn.BatchNorm2d(h), nn.LeakyReLU()))
            c = h
        self.encoder = nn.Sequential(*mods)
        self.fc_mu = nn.Linear(hidden[-1] * 4, latent)
        self.fc_var = nn.Linear(hidden[-1] * 4, latent)
        self.decoder_input = nn.Linear(latent, hidden[-1] * 4)
        rev = list(reversed(hidden))
        self.decoder = nn.Sequential(*[
            nn.Sequential(nn.ConvTranspose2d(rev[i], rev[i + 1], 3, 2, 1, output_padding=1),
                          nn.BatchNorm2d(rev[i + 1]), nn.LeakyReLU())
            for i in range(len(rev) - 1)
        ])
        self.final_layer = nn.Sequential(
            nn.ConvTranspose2d(rev[-1], rev[-1], 3, 2, 1, output_padding=1), nn.BatchNorm2d(rev[-1]),
            nn.LeakyReLU(), nn.Conv2d(rev[-1], 3, 3, padding=1), nn.Tanh())
        self.top = hidden[-1]

    def forward(self, x):
        h = self.encoder(x).flatten(1)
        mu, log_var = self.fc_mu(h), self.fc_var(h)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        out = self.decoder(self.decoder_input(z).view(-1, self.top, 2, 2))
        return self.final_layer(out), mu, log_var

    def loss(self, x, kld_weight=0.00025):
        recons, mu, log_var = self(x)
        kld = torch.mean(-0.5 * torch.sum(1 + log_var - mu ** 2 - log_var.exp(), dim=1), dim=0)
        return F.mse_loss(recons, x) + kld_weight * kld


def vae_workload(model, n, size):
    flops = 3 * module_forward_flops(model, torch.rand(1, 3, size, size)) * n
    opt = torch.optim.Adam(model.parameters(), lr=5e-3, weight_decay=0.0)
    x = torch.rand(n, 3, size, size)

    def step():
        opt.zero_grad()
        loss = model.loss(x)
        loss.backward()
        opt.step()
        return loss.item()

    return step, n, "img", flops, CONV_NOTE


def w2(tiny):
    if tiny:
        return vae_workload(KilnVae(3, 16, [4, 8], 8), 4, 16)
    return vae_workload(KilnVae(3, 64, [32, 64, 128, 256, 512], 128), 64, 64)


def w2_antixk(tiny):
    if tiny:
        return vae_workload(AntixkVanillaVae(8, (4, 4, 4, 4, 8)), 4, 64)
    return vae_workload(AntixkVanillaVae(128), 64, 64)


# ---------------------------------------------------------------------------------------------
# W3: VQ-VAE with an EMA codebook (kiln-vqvae's network and step).


class Residual(nn.Module):
    def __init__(self, h, rh):
        super().__init__()
        self.conv3 = nn.Conv2d(h, rh, 3, padding=1)
        self.conv1 = nn.Conv2d(rh, h, 1)

    def forward(self, x):
        return x + self.conv1(F.relu(self.conv3(F.relu(x))))


class VqVae(nn.Module):
    def __init__(self, c, h, rh, blocks, k, d):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(c, h // 2, 4, 2, 1), nn.ReLU(), nn.Conv2d(h // 2, h, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=1), *[Residual(h, rh) for _ in range(blocks)], nn.ReLU(),
            nn.Conv2d(h, d, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(d, h, 3, padding=1), *[Residual(h, rh) for _ in range(blocks)], nn.ReLU(),
            nn.ConvTranspose2d(h, h // 2, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(h // 2, c, 4, 2, 1))
        bound = (3.0 / d) ** 0.5
        codebook = torch.empty(k, d).uniform_(-bound, bound)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.ones(k))
        self.register_buffer("embed_sum", codebook.clone())

    def quantize(self, z):
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        # kiln_kernels::vq::nearest_code: argmin of ‖c‖² − 2 x·cᵀ.
        with torch.no_grad():
            idx = ((self.codebook ** 2).sum(1)[None, :] - 2.0 * flat @ self.codebook.t()).argmin(1)
        q = self.codebook[idx].view(n, h, w, d).permute(0, 3, 1, 2)
        return q, idx, flat

    def forward(self, x):
        z = self.encoder(x - 0.5)
        q, _, _ = self.quantize(z)
        return self.decoder(z + (q - z).detach()) + 0.5

    def loss(self, x, beta=0.25):
        z = self.encoder(x - 0.5)
        q, idx, flat = self.quantize(z)
        recon = self.decoder(z + (q - z).detach()) + 0.5
        return F.mse_loss(recon, x) + beta * F.mse_loss(z, q.detach()), idx, flat.detach()

    @torch.no_grad()
    def ema_update(self, idx, flat, decay=0.99, eps=1e-5, threshold=0.1):
        k = self.codebook.shape[0]
        counts = torch.bincount(idx, minlength=k).to(flat.dtype)
        sums = torch.zeros_like(self.embed_sum).index_add_(0, idx, flat)
        self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        self.embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + eps) / (n + k * eps) * n
        self.codebook.copy_(self.embed_sum / smoothed[:, None])
        # Jukebox's restart: a dead code becomes a random encoder output of the batch.
        dead = self.cluster_size < threshold
        picks = flat[torch.randint(0, flat.shape[0], (k,))]
        self.codebook.copy_(torch.where(dead[:, None], picks, self.codebook))
        self.cluster_size.masked_fill_(dead, 1.0)
        self.embed_sum.copy_(torch.where(dead[:, None], self.codebook, self.embed_sum))


def w3(tiny):
    # kiln-bench's tiny W3: VqVaeConfig::cifar() at 16x16, hidden 8, residual 8, K = 16.
    (c, h, rh, blocks, k, d), n, size = ((3, 8, 8, 2, 16, 64), 4, 16) if tiny else ((3, 256, 256, 2, 512, 64), 64, 32)
    model = VqVae(c, h, rh, blocks, k, d)
    grid = size // 4
    flops = (3 * module_forward_flops(model, torch.rand(1, c, size, size)) + 2 * grid * grid * k * d) * n
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    x = torch.rand(n, c, size, size)

    def step():
        opt.zero_grad()
        loss, idx, flat = model.loss(x)
        loss.backward()
        opt.step()
        model.ema_update(idx, flat)
        return loss.item()

    return step, n, "img", flops, "conv/convT MACs×2 from layer shapes, fwd+bwd = 3×fwd; + the code search 2·hw·K·D once"


# ---------------------------------------------------------------------------------------------
# W4: minGPT's gpt-mini as kiln-dalle's DALL-E transformer.


class GptBlock(nn.Module):
    """kiln-dalle's `Block`: pre-norm, fused qkv, causal SDPA, GELU MLP of 4x."""

    def __init__(self, width, heads, layers):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.out = nn.Linear(4 * width, width)
        # GPT-2's initialisation, as kiln-dalle: N(0, 0.02), residual projections / sqrt(2 layers).
        for lin, std in ((self.qkv, 0.02), (self.proj, 0.02 / math.sqrt(2 * layers)), (self.fc, 0.02),
                         (self.out, 0.02 / math.sqrt(2 * layers))):
            nn.init.normal_(lin.weight, 0.0, std)
            nn.init.zeros_(lin.bias)

    def forward(self, x, past=None):
        """x [B, T, W] -> ([B, T, W], (keys, values) [B, H, t, d]); with `past`, x is one token."""
        b, t, w = x.shape
        q, k, v = (z.view(b, t, self.heads, w // self.heads).transpose(1, 2)
                   for z in self.qkv(self.norm1(x)).split(w, dim=2))
        if past is not None:
            k = torch.cat([past[0], k], 2)
            v = torch.cat([past[1], v], 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=past is None)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, w))
        return x + self.out(F.gelu(self.fc(self.norm2(x)))), (k, v)


class Dalle(nn.Module):
    """kiln-dalle's `Dalle`: [BOS; text; image] through one causal transformer, two heads."""

    def __init__(self, text_vocab, text_len, image_vocab, grid, layers, heads, width, text_weight=0.125):
        super().__init__()
        self.text_vocab, self.text_len, self.image_vocab, self.grid = text_vocab, text_len, image_vocab, grid
        self.text_weight = text_weight
        self.tokens = nn.Embedding(text_vocab + image_vocab + 1, width)
        self.text_pos = nn.Embedding(text_len + 1, width)
        self.row = nn.Embedding(grid, width)
        self.col = nn.Embedding(grid, width)
        for e in (self.tokens, self.text_pos, self.row, self.col):
            nn.init.normal_(e.weight, 0.0, 0.02)
        self.blocks = nn.ModuleList(GptBlock(width, heads, layers) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.text_head = nn.Linear(width, text_vocab)
        self.image_head = nn.Linear(width, image_vocab)
        for lin in (self.text_head, self.image_head):
            nn.init.normal_(lin.weight, 0.0, 0.02)
            nn.init.zeros_(lin.bias)

    def input_ids(self, text, image, count):
        bos = torch.full((text.shape[0], 1), self.text_vocab + self.image_vocab, dtype=torch.long)
        return torch.cat([bos, text, image[:, :count] + self.text_vocab], 1)

    def positions(self, start, length):
        """Positional embeddings of sequence positions start..start+length, [length, W]."""
        slots, end, parts = self.text_len + 1, start + length, []
        if start < min(end, slots):
            parts.append(self.text_pos(torch.arange(start, min(end, slots))))
        if max(start, slots) < end:
            cells = torch.arange(max(start, slots) - slots, end - slots)
            parts.append(self.row(cells // self.grid) + self.col(cells % self.grid))
        return torch.cat(parts, 0)

    def trunk(self, ids, start=0, cache=None):
        x = self.tokens(ids) + self.positions(start, ids.shape[1])
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if cache is None else cache[i])
            if cache is not None:
                cache[i] = kv
        return self.norm(x)

    def loss(self, text, image):
        n, l = self.grid * self.grid, self.text_len
        h = self.trunk(self.input_ids(text, image, n - 1))  # [B, L + N, W]
        text_ce = F.cross_entropy(self.text_head(h[:, :l]).reshape(-1, self.text_vocab), text.reshape(-1))
        image_ce = F.cross_entropy(self.image_head(h[:, l:]).reshape(-1, self.image_vocab), image.reshape(-1))
        return self.text_weight * text_ce + (1 - self.text_weight) * image_ce

    @torch.no_grad()
    def sample(self, text, cached, generator):
        """Draws [B, N] image codes for text [B, L], with the cache or by recomputing each prefix."""
        b, n = text.shape[0], self.grid * self.grid
        codes = torch.zeros(b, n, dtype=torch.long)
        cache = [None] * len(self.blocks)
        prompt = self.input_ids(text, codes, 0)
        h = self.trunk(prompt, 0, cache if cached else None)
        for j in range(n):
            probs = F.softmax(self.image_head(h[:, -1]), -1)
            codes[:, j] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            if j + 1 == n:
                break
            if cached:
                h = self.trunk(codes[:, j : j + 1] + self.text_vocab, self.text_len + 1 + j, cache)
            else:
                h = self.trunk(self.input_ids(text, codes, j + 1))
        return codes


def dalle_trunk_flops(layers, width, queries, keys):
    # As crates/kiln-bench/src/flops.rs `dalle_trunk_flops`.
    return layers * queries * (24 * width * width + 4 * width * keys)


def w4(case, tiny):
    # kiln-bench's tiny W4: one block of width 16, 2 heads, L = 2, 8 + 8 vocab, 2x2 grid, batch 2.
    if tiny:
        (tv, l, k, g, layers, heads, w), n = (8, 2, 8, 2, 1, 2, 16), 2
    else:
        (tv, l, k, g, layers, heads, w), n = (512, 16, 512, 8, 6, 6, 192), 32
    model = Dalle(tv, l, k, g, layers, heads, w)
    tokens, prompt = g * g, l + 1
    text = torch.randint(0, tv, (n, l))
    head = tokens * 2 * w * k
    if case == "train":
        image = torch.randint(0, k, (n, tokens))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad()
            loss = model.loss(text, image)
            loss.backward()
            opt.step()
            return loss.item()

        t = l + tokens
        fwd = dalle_trunk_flops(layers, w, t, t) + 2 * w * (l * tv + tokens * k)
        return (step, n * t, "tok", 3 * fwd * n,
                "linear MACs×2 + QKᵀ/PV over the full T² (nanoGPT's estimate_mfu); fwd+bwd = 3×fwd")
    cached = case == "sample-kv"
    model.eval()

    def step():
        return model.sample(text, cached, torch.Generator().manual_seed(3))

    if cached:
        flops = dalle_trunk_flops(layers, w, prompt, prompt) + sum(
            dalle_trunk_flops(layers, w, 1, prompt + j) for j in range(1, tokens)) + head
        note = "linear MACs×2 per token + QKᵀ/PV against the cached prefix"
    else:
        flops = sum(dalle_trunk_flops(layers, w, prompt + j, prompt + j) for j in range(tokens)) + head
        note = "linear MACs×2 + QKᵀ/PV over the whole prefix, recomputed for every token"
    return step, n * tokens, "tok", flops * n, note


# ---------------------------------------------------------------------------------------------
# W5: DRAW.


class DrawAttention(nn.Module):
    """The paper's eq. 21-26: (g~x, g~y, log s2, log d~, log gamma) from h_dec, N x N filterbanks."""

    def __init__(self, hidden, size, n):
        super().__init__()
        self.size, self.n = size, n
        self.params = nn.Linear(hidden, 5)
        # As kiln-draw: start with the grid tiling the image (delta = A/N, sigma = delta/2).
        unit = (size - 1) / (max(n, 2) - 1)
        delta = size / n
        with torch.no_grad():
            self.params.bias.copy_(torch.tensor([0.0, 0.0, 2 * math.log(delta / 2), math.log(delta / unit), 0.0]))

    def forward(self, h):
        raw = self.params(h)
        a, n = self.size, self.n
        gx = (a + 1) / 2 * (raw[:, 0] + 1)
        gy = (a + 1) / 2 * (raw[:, 1] + 1)
        s2 = raw[:, 2].exp()
        delta = (a - 1) / (max(n, 2) - 1) * raw[:, 3].exp()
        gamma = raw[:, 4].exp()
        i = torch.arange(1, n + 1, dtype=h.dtype) - n / 2 - 0.5
        pos = torch.arange(1, a + 1, dtype=h.dtype)

        def bank(g):
            mu = g[:, None] + i[None, :] * delta[:, None]  # [B, N]
            f = torch.exp(-((pos[None, None, :] - mu[:, :, None]) ** 2) / (2 * s2[:, None, None]))
            return f / f.sum(2, keepdim=True).clamp_min(1e-8)  # [B, N, A]

        return bank(gx), bank(gy), gamma


class Draw(nn.Module):
    def __init__(self, steps, hidden, latent, read_n, write_n, size=28, forget_bias=1.0):
        super().__init__()
        self.steps, self.hidden, self.latent, self.size, self.write_n = steps, hidden, latent, size, write_n
        self.encoder = nn.LSTMCell(2 * read_n * read_n + hidden, hidden)
        self.decoder = nn.LSTMCell(latent, hidden)
        with torch.no_grad():
            for cell in (self.encoder, self.decoder):
                cell.bias_ih[hidden : 2 * hidden] += forget_bias
        self.posterior = nn.Linear(hidden, 2 * latent)
        self.write_head = nn.Linear(hidden, write_n * write_n)
        self.read_attn = DrawAttention(hidden, size, read_n)
        self.write_attn = DrawAttention(hidden, size, write_n)

    def loss(self, x):
        x = (x > 0.5).float()
        b = x.shape[0]
        canvas = torch.zeros_like(x)
        h_enc = c_enc = h_dec = c_dec = x.new_zeros(b, self.hidden)
        kl = x.new_zeros(b)
        for _ in range(self.steps):
            x_hat = x - torch.sigmoid(canvas)
            fx, fy, gamma = self.read_attn(h_dec)
            glimpse = lambda img: (fy @ img[:, 0] @ fx.transpose(1, 2)) * gamma[:, None, None]  # [B, N, N]
            r = torch.cat([glimpse(x).flatten(1), glimpse(x_hat).flatten(1)], 1)
            h_enc, c_enc = self.encoder(torch.cat([r, h_dec], 1), (h_enc, c_enc))
            mean, log_var = self.posterior(h_enc).chunk(2, 1)
            z = mean + (0.5 * log_var).exp() * torch.randn_like(mean)
            kl = kl + 0.5 * (mean**2 + log_var.exp() - log_var - 1).sum(1)
            h_dec, c_dec = self.decoder(z, (h_dec, c_dec))
            fx, fy, gamma = self.write_attn(h_dec)
            w = self.write_head(h_dec).view(b, self.write_n, self.write_n)
            canvas = canvas + ((fy.transpose(1, 2) @ w @ fx) / gamma[:, None, None]).unsqueeze(1)
        recon = F.binary_cross_entropy_with_logits(canvas, x, reduction="none").flatten(1).sum(1)
        return (recon + kl).mean()


def draw_step_flops(steps, hidden, latent, read_n, write_n, size=28, c=1):
    # As crates/kiln-bench/src/flops.rs `draw_step_flops`, per image.
    read, write = 2 * c * read_n * read_n, c * write_n * write_n
    attention = 2 * c * (read_n * size * size + read_n * size * read_n) + c * (size * write_n * write_n + size * write_n * size) + 2 * hidden * 5
    dense = (read + hidden) * 4 * hidden + hidden * 4 * hidden + hidden * 2 * latent + latent * 4 * hidden + hidden * 4 * hidden + hidden * write
    return 3 * 2 * steps * (dense + attention)


def w5(tiny):
    # kiln-bench's tiny W5: DrawConfig::mnist() with T = 3, LSTMs of 16, z = 4, batch 4.
    (steps, hidden, latent), n = ((3, 16, 4), 4) if tiny else ((64, 256, 100), 64)
    model = Draw(steps, hidden, latent, read_n=2, write_n=5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(n, 1, 28, 28)

    def step():
        opt.zero_grad()
        loss = model.loss(x)
        loss.backward()
        opt.step()
        return loss.item()

    flops = draw_step_flops(steps, hidden, latent, 2, 5) * n
    return step, n, "img", flops, "LSTM/head linear MACs×2 + filterbank read/write products, ×T; fwd+bwd = 3×fwd"


# ---------------------------------------------------------------------------------------------
# W7: the diffusion U-Net.


def groups_for(channels, groups):
    # As kiln-diffusion: the largest group count up to `groups` that divides `channels`.
    return next(g for g in range(min(groups, channels), 0, -1) if channels % g == 0)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, embed, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups_for(cin, groups), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(embed, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h + self.time(emb)[:, :, None, None])
        return self.skip(x) + self.conv2(F.silu(h))


class AttnBlock(nn.Module):
    def __init__(self, ch, heads, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups_for(ch, groups), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.heads = groups_for(ch, heads)

    def forward(self, x):
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(3, 4)
        o = F.scaled_dot_product_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])  # [B, heads, N, C/heads]
        return x + self.out(o.transpose(2, 3).reshape(b, c, h, w))


class UNet(nn.Module):
    def __init__(self, channels=3, size=32, base=32, mults=(1, 2, 2), res_blocks=1, attention=(8,), heads=4, groups=8):
        super().__init__()
        self.base, e = base, 4 * base
        res = lambda cin, cout: ResBlock(cin, cout, e, groups)
        attn = lambda s, ch: AttnBlock(ch, heads, groups) if s in attention else nn.Identity()
        sizes = [size >> i for i in range(len(mults))]
        self.time_in, self.time_out = nn.Linear(base, e), nn.Linear(e, e)
        self.conv_in = nn.Conv2d(channels, base, 3, padding=1)
        skips, ch = [base], base
        self.down = nn.ModuleList()
        for level, m in enumerate(mults):
            out, stages = base * m, nn.ModuleList()
            for _ in range(res_blocks):
                stages.append(nn.ModuleList([res(ch, out), attn(sizes[level], out)]))
                ch = out
                skips.append(ch)
            resample = None
            if level + 1 < len(mults):
                skips.append(ch)
                resample = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
            self.down.append(nn.ModuleDict({"stages": stages, "resample": resample or nn.Identity()}))
        self.mid = nn.ModuleList([res(ch, ch), AttnBlock(ch, heads, groups), res(ch, ch)])
        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(mults))):
            out, stages = base * m, nn.ModuleList()
            for _ in range(res_blocks + 1):
                stages.append(nn.ModuleList([res(ch + skips.pop(), out), attn(sizes[level], out)]))
                ch = out
            resample = nn.Conv2d(ch, ch, 3, padding=1) if level > 0 else None
            self.up.append(nn.ModuleDict({"stages": stages, "resample": resample or nn.Identity()}))
        self.norm_out = nn.GroupNorm(groups, ch)
        self.conv_out = nn.Conv2d(ch, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.downs = len(mults) - 1

    def forward(self, x, t):
        half = self.base // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=x.dtype) / half)
        args = t[:, None] * freqs[None, :]
        emb = F.silu(self.time_out(F.silu(self.time_in(torch.cat([args.sin(), args.cos()], 1)))))
        h = self.conv_in(x)
        skips = [h]
        for i, level in enumerate(self.down):
            for res, attn in level["stages"]:
                h = attn(res(h, emb))
                skips.append(h)
            if i < self.downs:
                h = level["resample"](h)
                skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for i, level in enumerate(self.up):
            for res, attn in level["stages"]:
                h = attn(res(torch.cat([h, skips.pop()], 1), emb))
            if i < self.downs:
                h = level["resample"](F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def cosine_alpha_bar(timesteps):
    # Nichol & Dhariwal eq. 17 with s = 0.008, betas capped at 0.999 (as kiln-diffusion's schedule).
    f = lambda t: math.cos((t / timesteps + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = [min(1 - f(i + 1) / f(i), 0.999) for i in range(timesteps)]
    return torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), 0).float()


def unet_forward_flops(channels, size, base, mults, res_blocks, attention):
    # As crates/kiln-bench/src/flops.rs `unet_forward_flops`, per image.
    e = 4 * base
    conv = lambda cin, cout, k, s: 2 * cin * cout * k * k * s * s
    res = lambda cin, cout, s: conv(cin, cout, 3, s) + conv(cout, cout, 3, s) + 2 * e * cout + (conv(cin, cout, 1, s) if cin != cout else 0)
    attn = lambda ch, s: conv(ch, 3 * ch, 1, s) + conv(ch, ch, 1, s) + 4 * s**4 * ch
    sizes = [size >> i for i in range(len(mults))]
    total = 2 * base * e + 2 * e * e + conv(channels, base, 3, size)
    ch, skips = base, [base]
    for level, m in enumerate(mults):
        out, s = base * m, sizes[level]
        for _ in range(res_blocks):
            total += res(ch, out, s) + (attn(out, s) if s in attention else 0)
            ch = out
            skips.append(ch)
        if level + 1 < len(mults):
            total += conv(ch, ch, 3, s // 2)
            skips.append(ch)
    total += 2 * res(ch, ch, sizes[-1]) + attn(ch, sizes[-1])
    for level, m in reversed(list(enumerate(mults))):
        out, s = base * m, sizes[level]
        for _ in range(res_blocks + 1):
            total += res(ch + skips.pop(), out, s) + (attn(out, s) if s in attention else 0)
            ch = out
        if level > 0:
            total += conv(ch, ch, 3, 2 * s)
    return total + conv(ch, channels, 3, size)


def w7(tiny):
    # kiln-bench's tiny W7: an 8x8 U-Net of base 8, levels 1/2, attention at 4x4, batch 4.
    shape = dict(channels=3, size=8, base=8, mults=(1, 2), res_blocks=1, attention=(4,)) if tiny else \
        dict(channels=3, size=32, base=32, mults=(1, 2, 2), res_blocks=1, attention=(8,))
    n = 4 if tiny else 64
    model = UNet(heads=4, groups=8, **shape)
    ema = [p.detach().clone() for p in model.parameters()]
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-4)
    alpha_bar = cosine_alpha_bar(1000)
    x0 = torch.rand(n, 3, shape["size"], shape["size"]) * 2 - 1

    def step():
        opt.zero_grad()
        t = torch.randint(0, 1000, (n,))
        a = alpha_bar[t].sqrt()[:, None, None, None]
        s = (1 - alpha_bar[t]).sqrt()[:, None, None, None]
        noise = torch.randn_like(x0)
        x_t = a * x0 + s * noise
        v = a * noise - s * x0
        loss = (model(x_t, t.float()) - v).square().mean()
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1 - 0.999)
        return loss.item()

    flops = 3 * unet_forward_flops(**shape) * n
    return step, n, "img", flops, "conv/linear MACs×2 + attention QKᵀ/PV from layer shapes; fwd+bwd = 3×fwd"


# ---------------------------------------------------------------------------------------------
# W6: kernels.


def resize_case(name, tiny):
    n, big, small = (2, 32, 8) if tiny else (64, 256, 64)
    down = "256to64" in name
    mode = "bicubic" if "bicubic" in name else "bilinear"
    x = torch.rand(n, 3, big if down else small, big if down else small)
    size = (small, small) if down else (big, big)

    def step():
        with torch.no_grad():
            return F.interpolate(x, size=size, mode=mode, antialias=down, align_corners=False)

    return step, n, "img", None, "resampling: no GEMM FLOPs counted"


def attention(tiny):
    b, h, l, d = (1, 2, 16, 8) if tiny else (8, 8, 1024, 64)
    q, k, v = (torch.randn(b, h, l, d, requires_grad=True) for _ in range(3))

    def step():
        for t in (q, k, v):
            t.grad = None
        y = F.scaled_dot_product_attention(q, k, v)
        y.sum().backward()
        return q.grad

    return step, b, "seq", 3 * 4 * b * h * l * l * d, "QKᵀ and PV: fwd 4·B·H·L²·D, fwd+bwd 3×fwd"


def vq(tiny):
    n, d, k = (64, 8, 16) if tiny else (65536, 64, 512)
    x, cb = torch.randn(n, d), torch.randn(k, d)

    def step():
        # kiln_kernels::vq::nearest_code: ‖c‖² − 2 x·cᵀ, argmin over codes.
        with torch.no_grad():
            scores = (cb * cb).sum(1)[None, :] - 2.0 * (x @ cb.t())
            return scores.argmin(1)

    return step, n, "vec", 2 * n * k * d, "the [N, K] product 2·N·K·D"


def build(name, tiny):
    if name == "w1-dcgan64":
        return w1(tiny)
    if name == "w2-vae64":
        return w2(tiny)
    if name == "w2-antixk64":
        return w2_antixk(tiny)
    if name == "w3-vqvae32":
        return w3(tiny)
    if name.startswith("w4-gpt-mini-"):
        return w4(name[len("w4-gpt-mini-"):], tiny)
    if name == "w5-draw-mnist":
        return w5(tiny)
    if name.startswith("w6-") and "to" in name and name != "w6-attention-fwd-bwd":
        return resize_case(name, tiny)
    if name == "w6-attention-fwd-bwd":
        return attention(tiny)
    if name == "w6-vq-search":
        return vq(tiny)
    if name == "w7-unet-emoji":
        return w7(tiny)
    raise ValueError(name)


# ---------------------------------------------------------------------------------------------
# Measuring and reporting.


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # the peak is then the process's so far


def peak_rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def load1():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def parse_workloads(text):
    out = []
    for item in (s.strip().lower() for s in text.split(",")):
        if not item:
            continue
        if item == "all":
            chosen = WORKLOADS
        elif item == "w1":
            chosen = WORKLOADS[:1]
        elif item == "w2":
            chosen = WORKLOADS[1:2]
        elif item == "w3":
            chosen = WORKLOADS[2:3]
        elif item == "w4":
            chosen = [w for w in WORKLOADS if w.startswith("w4-")]
        elif item == "w5":
            chosen = ["w5-draw-mnist"]
        elif item == "w7":
            chosen = ["w7-unet-emoji"]
        elif item == "w6":
            chosen = [w for w in WORKLOADS if w.startswith("w6-")]
        elif item in WORKLOADS or item in EXTRA:
            chosen = [item]
        else:
            sys.exit(f"unknown workload {item!r}: expected w1, w2, w3, w4, w5, w6, w7, all or one of {', '.join(WORKLOADS + EXTRA)}")
        out += [w for w in chosen if w not in out]
    return out


def physical_cores():
    pairs, phys = set(), None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "physical id":
                    phys = value
                elif key == "core id":
                    pairs.add((phys, value))
    except OSError:
        pass
    logical = os.cpu_count() or 1
    return min(len(pairs), logical) if pairs else logical


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="w1,w2,w3,w4,w5,w6,w7")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu or cuda:N")
    args = p.parse_args()
    if args.reps < 1:
        sys.exit("--reps must be at least 1")
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device")
    if args.device != "cpu":
        torch.set_default_device(args.device)
    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    # A GPU runs asynchronously: a repetition ends when its kernels have, not when Python returns.
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    context = {"impl": "pytorch", "backend": f"torch-{torch.__version__}", "threads": threads, "tiny": args.tiny,
               "device": args.device}
    if not args.json:
        la = os.getloadavg()
        print(f"pytorch_bench: torch {torch.__version__}, {threads} threads, warm-up {args.warmup}, "
              f"{args.reps} timed reps; load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
        print(f"{'workload':<28} {'items/s':>14} {'median ms':>10} {'min ms':>10} {'max ms':>10} "
              f"{'GFLOP/s':>9} {'peak MiB':>9} {'load1':>6}")
    for name in parse_workloads(args.workload):
        reset_peak_rss()
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        step, items, unit, flops, note = build(name, args.tiny)
        for _ in range(args.warmup):
            step()
        sync()
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            step()
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
        med = statistics.median(times)
        rec = dict(context)
        rec.update({
            "workload": name, "unit": unit, "batch": items, "reps": len(times), "times_ms": times,
            "median_ms": med, "min_ms": min(times), "max_ms": max(times),
            "items_per_s": items / (med / 1e3),
            "gflop_per_rep": None if flops is None else flops / 1e9,
            "gflops": None if flops is None else flops / 1e9 / (med / 1e3),
            "flops_note": note, "peak_rss_mib": peak_rss_mib(), "load1": load1(),
            "peak_device_mib": torch.cuda.max_memory_allocated() / 2**20 if gpu else None,
        })
        if args.json:
            print(json.dumps(rec), flush=True)
        else:
            gf = "—" if rec["gflops"] is None else f"{rec['gflops']:.1f}"
            pk = "—" if rec["peak_rss_mib"] is None else f"{rec['peak_rss_mib']:.0f}"
            print(f"{name:<28} {rec['items_per_s']:>10.1f} {unit:<3} {med:>10.1f} {min(times):>10.1f} "
                  f"{max(times):>10.1f} {gf:>9} {pk:>9} {rec['load1']:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
