"""kiln's VQ-VAE against a PyTorch peer: same net, same data, same wall-clock, in one run.

The peer is the network of `pytorch_bench.py`'s W3 (kiln-vqvae's architecture and step: EMA
codebook with decay 0.99 and Laplace smoothing, commitment 0.25, Jukebox-style restarts of codes
whose EMA count falls under 0.1) at kiln's `mnist28` preset (hidden 64, residual 32, one residual
block, K = 64, D = 16), trained on the bundled MNIST sample (4,500 train / 500 test) with batch 64
and Adam 1e-3, exactly as `experiments/vqvae-mnist.toml` trains kiln's. Each side gets the same
training wall-clock (`--seconds`) on the same threads; both are then scored on the test split the
way kiln's vqvae adapter scores (`crates/kiln-cli/src/family/vqvae.rs`): MSE of the decoder's raw
output, NMSE = MSE over the training pixels' variance, PSNR of the split's MSE, perplexity and
usage of the codes over the split.

    target/pytorch-venv/bin/python xtask/quality/vqvae_mnist.py --kiln target/release/kiln --seconds 90

Prints one JSON object per side and a side-by-side table.
"""

import argparse
import gzip
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
from pytorch_bench import VqVae  # noqa: E402  (the same module W3 times)


def idx_images(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    n, rows, cols = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
    x = torch.frombuffer(bytearray(data[16:16 + n * rows * cols]), dtype=torch.uint8)
    return x.view(n, 1, rows, cols).float() / 255.0


def score(model, test, variance, batch=64):
    sse, k = 0.0, model.codebook.shape[0]
    counts = torch.zeros(k)
    with torch.no_grad():
        for i in range(0, len(test), batch):
            x = test[i:i + batch]
            z = model.encoder(x - 0.5)
            q, idx, _ = model.quantize(z)
            recon = model.decoder(q) + 0.5
            sse += F.mse_loss(recon, x, reduction="sum").item() / x[0].numel()
            counts += torch.bincount(idx, minlength=k).float()
    mse = sse / len(test)
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return {"recon_mse": mse, "nmse": mse / variance, "psnr": -10 * math.log10(mse),
            "perplexity": math.exp(entropy), "usage": (counts > 0).float().mean().item()}


def run_torch(seconds, threads, seed):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    data = os.path.join(ROOT, "datasets", "mnist-sample")
    train = idx_images(os.path.join(data, "train-images-idx3-ubyte.gz"))
    test = idx_images(os.path.join(data, "t10k-images-idx3-ubyte.gz"))
    variance = train.double().var(unbiased=False).item()
    model = VqVae(1, 64, 32, 1, 64, 16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        order = torch.randperm(len(train))
        for b in range(len(train) // 64):
            x = train[order[b * 64:(b + 1) * 64]]
            opt.zero_grad()
            loss, idx, flat = model.loss(x)
            loss.backward()
            opt.step()
            model.ema_update(idx, flat)
            steps += 1
            if time.perf_counter() - start >= seconds:
                break
    wall = time.perf_counter() - start
    out = {"impl": "pytorch", "torch": torch.__version__, "steps": steps, "train_s": wall,
           "img_per_s": steps * 64 / wall}
    out.update(score(model, test, variance))
    return out


def run_kiln(kiln, seconds, threads):
    out_dir = tempfile.mkdtemp(prefix="kiln-vq-quality-")
    cmd = [kiln, "--threads", str(threads), "train", os.path.join(ROOT, "experiments", "vqvae-mnist.toml"),
           "--out", os.path.join(out_dir, "run"), "--time-budget", f"{seconds}s", "--steps", "1000000", "--quiet"]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    run = os.path.join(out_dir, "run")
    with open(os.path.join(run, "eval.json")) as f:
        ev = json.load(f)
    with open(os.path.join(run, "summary.json")) as f:
        summary = json.load(f)
    out = {"impl": "kiln", "steps": summary["steps"], "train_s": summary["wall_s"],
           "img_per_s": summary["examples_per_s"], "run": run}
    out.update({k: ev[k] for k in ("recon_mse", "nmse", "psnr", "perplexity", "usage")})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target", "release", "kiln"))
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    results = [run_kiln(args.kiln, args.seconds, args.threads), run_torch(args.seconds, args.threads, args.seed)]
    for r in results:
        print(json.dumps(r), flush=True)
    print(f"\n{'':<10}{'steps':>8}{'img/s':>9}{'MSE':>10}{'NMSE':>9}{'PSNR dB':>9}{'perplexity':>12}{'usage':>8}")
    for r in results:
        print(f"{r['impl']:<10}{r['steps']:>8}{r['img_per_s']:>9.0f}{r['recon_mse']:>10.5f}{r['nmse']:>9.4f}"
              f"{r['psnr']:>9.2f}{r['perplexity']:>12.1f}{r['usage']:>8.2f}")


if __name__ == "__main__":
    main()
