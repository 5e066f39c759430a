"""PyTorch peers of kiln's MNIST generators, for `cargo xtask quality --compare`.

Each peer is the model a PyTorch user would write first for the job, at its usual shape and
with its usual recipe, trained on the same data (kiln's bundled MNIST sample, 4,500 training
digits) for a wall-clock budget given in seconds — the time kiln's run took, so both sides get
the same minutes on the same threads. It then writes `--n` samples as a float32 `.npy` array
`[N, 1, 28, 28]` in [0, 1], which `kiln eval --samples` scores exactly as it scores kiln's.

    vae-mnist    pytorch/examples' VAE: MLP 784-400-20 (encoder), 20-400-784 (decoder),
                 Bernoulli likelihood, Adam 1e-3, batch 128; samples are the decoder's mean
    dcgan-mnist  DCGAN (Radford et al. 2015) at 28x28: G 100 -> 128@7 -> 64@14 -> 1@28 with batch
                 norm, D the mirror with leaky ReLU; N(0, 0.02) init, BCE, Adam 2e-4 (0.5, 0.999),
                 batch 64
    cgan-mnist   the conditional DCGAN (Mirza & Osindero 2014, in conv form): the one-hot class
                 concatenated to z in G and as ten constant planes to D's input; otherwise as
                 dcgan-mnist. Samples cycle through the classes (sample i is of class i % 10, as
                 `kiln sample` draws them) and their labels are written beside them
    draw-mnist   DRAW with attention (Gregor et al. 2015) at kiln's `small` preset, as
                 experiments/draw-mnist.toml trains it: T = 16, LSTMCells of 128, z = 16, read 2x2,
                 write 5x5, forget-gate bias 1, binarized digits, Adam 1e-3 with the gradient norm
                 clipped at 10, batch 64 (the network is `pytorch_bench.py`'s W5 module); samples
                 are the canvas's Bernoulli means after T decoder steps from z ~ N(0, I)

    target/pytorch-venv/bin/python xtask/quality/peers.py dcgan-mnist --seconds 160 --seed 42 \
        --n 2250 --out target/quality/dcgan.npy

Prints one JSON line: steps, training seconds, images/s and the files written.
"""

import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CLASSES = 10
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
from pytorch_bench import Draw  # noqa: E402  (the same module W5 times)


def idx(path):
    """An IDX file (MNIST's format) as a uint8 tensor: images [N, 1, H, W] or labels [N]."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    body = torch.frombuffer(bytearray(data[4 + 4 * dims:]), dtype=torch.uint8)
    if dims == 3:
        return body.view(shape[0], 1, shape[1], shape[2])
    return body.view(shape[0])


class MlpVae(nn.Module):
    def __init__(self, hidden=400, latent=20):
        super().__init__()
        self.latent = latent
        self.enc = nn.Linear(784, hidden)
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.dec1 = nn.Linear(latent, hidden)
        self.dec2 = nn.Linear(hidden, 784)

    def decode(self, z):
        return self.dec2(F.relu(self.dec1(z)))  # logits [B, 784]

    def loss(self, x):
        x = x.view(-1, 784)
        h = F.relu(self.enc(x))
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = F.binary_cross_entropy_with_logits(self.decode(z), x, reduction="sum")
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
        return (recon + kl) / x.shape[0]

    @torch.no_grad()
    def sample(self, n, gen, labels=None):
        z = torch.randn(n, self.latent, generator=gen)
        return torch.sigmoid(self.decode(z)).view(n, 1, 28, 28)


def dcgan_init(module):
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    def __init__(self, nz=100, ngf=64, classes=0):
        super().__init__()
        self.nz, self.classes = nz, classes
        self.net = nn.Sequential(
            nn.ConvTranspose2d(nz + classes, ngf * 2, 7, 1, 0, bias=False),  # 7x7
            nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),  # 14x14
            nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False),  # 28x28
            nn.Tanh())

    def forward(self, z, labels=None):
        if self.classes:
            z = torch.cat([z, F.one_hot(labels, self.classes).float()], 1)
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    def __init__(self, ndf=64, classes=0):
        super().__init__()
        self.classes = classes
        self.net = nn.Sequential(
            nn.Conv2d(1 + classes, ndf, 4, 2, 1, bias=False),  # 14x14
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),  # 7x7
            nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, 7, 1, 0, bias=False))  # 1x1 logit

    def forward(self, x, labels=None):
        if self.classes:
            planes = F.one_hot(labels, self.classes).float()[:, :, None, None].expand(-1, -1, 28, 28)
            x = torch.cat([x, planes], 1)
        return self.net(x).view(-1)


class Gan:
    def __init__(self, classes=0):
        self.classes = classes
        self.g, self.d = Generator(classes=classes), Discriminator(classes=classes)
        self.g.apply(dcgan_init)
        self.d.apply(dcgan_init)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def step(self, x, labels):
        x = x * 2 - 1
        b = x.shape[0]
        labels = labels if self.classes else None
        z = torch.randn(b, self.g.nz)
        fake = self.g(z, labels)
        ones, zeros = torch.ones(b), torch.zeros(b)
        self.opt_d.zero_grad()
        d_loss = (F.binary_cross_entropy_with_logits(self.d(x, labels), ones)
                  + F.binary_cross_entropy_with_logits(self.d(fake.detach(), labels), zeros))
        d_loss.backward()
        self.opt_d.step()
        self.opt_g.zero_grad()
        g_loss = F.binary_cross_entropy_with_logits(self.d(fake, labels), ones)
        g_loss.backward()
        self.opt_g.step()

    @torch.no_grad()
    def sample(self, n, gen, labels=None):
        self.g.eval()
        z = torch.randn(n, self.g.nz, generator=gen)
        return (self.g(z, labels) + 1) / 2


class DrawPeer(Draw):
    """W5's DRAW module with the sampler a PyTorch user would add: T decoder steps from the prior."""

    def sample(self, n, gen, _labels=None):
        with torch.no_grad():
            canvas = torch.zeros(n, 1, self.size, self.size)
            h_dec = c_dec = torch.zeros(n, self.hidden)
            for _ in range(self.steps):
                z = torch.randn(n, self.latent, generator=gen)
                h_dec, c_dec = self.decoder(z, (h_dec, c_dec))
                fx, fy, gamma = self.write_attn(h_dec)
                w = self.write_head(h_dec).view(n, self.write_n, self.write_n)
                canvas = canvas + ((fy.transpose(1, 2) @ w @ fx) / gamma[:, None, None]).unsqueeze(1)
            return torch.sigmoid(canvas)


def train(name, seconds, seed, threads):
    """Trains `name` for `seconds` of wall-clock; returns the model and the step count."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    data = os.path.join(ROOT, "datasets", "mnist-sample")
    images = idx(os.path.join(data, "train-images-idx3-ubyte.gz")).float() / 255.0
    labels = idx(os.path.join(data, "train-labels-idx1-ubyte.gz")).long()
    if name == "vae-mnist":
        model, batch = MlpVae(), 128
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(x, _labels):
            opt.zero_grad()
            model.loss(x).backward()
            opt.step()
    elif name in ("dcgan-mnist", "cgan-mnist"):
        model, batch = Gan(classes=CLASSES if name == "cgan-mnist" else 0), 64
        step = model.step
    elif name == "draw-mnist":
        model, batch = DrawPeer(steps=16, hidden=128, latent=16, read_n=2, write_n=5), 64
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(x, _labels):
            opt.zero_grad()
            model.loss(x).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
    else:
        raise SystemExit(f"peers.py: no PyTorch peer for {name!r} (vae-mnist, dcgan-mnist, cgan-mnist, draw-mnist)")
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        order = torch.randperm(len(images))
        for b in range(len(images) // batch):
            rows = order[b * batch:(b + 1) * batch]
            step(images[rows], labels[rows])
            steps += 1
            if time.perf_counter() - start >= seconds:
                break
    return model, steps, batch, time.perf_counter() - start


def write_npy(path, array):
    tmp = path + ".tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="vae-mnist, dcgan-mnist, cgan-mnist or draw-mnist")
    ap.add_argument("--seconds", type=float, required=True, help="training wall-clock")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=2250, help="samples to write")
    ap.add_argument("--out", required=True, help="the samples' .npy file")
    args = ap.parse_args()
    model, steps, batch, wall = train(args.model, args.seconds, args.seed, args.threads)
    gen = torch.Generator().manual_seed(args.seed + 1)
    conditional = args.model == "cgan-mnist"
    labels = torch.arange(args.n) % CLASSES if conditional else None
    parts = []
    for i in range(0, args.n, 500):
        part_labels = labels[i:i + 500] if conditional else None
        parts.append(model.sample(min(500, args.n - i), gen, part_labels).clamp(0, 1))
    write_npy(args.out, torch.cat(parts).numpy().astype(np.float32))
    out = {"impl": "pytorch", "torch": torch.__version__, "model": args.model, "seed": args.seed,
           "threads": args.threads, "steps": steps, "batch_size": batch, "train_s": wall,
           "img_per_s": steps * batch / wall, "samples": args.out}
    if conditional:
        labels_path = os.path.splitext(args.out)[0] + ".labels.npy"
        write_npy(labels_path, labels.numpy().astype(np.int64))
        out["labels"] = labels_path
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
