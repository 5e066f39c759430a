#!/usr/bin/env python3
"""Times in PyTorch (CPU, 2 threads) the operations of benches/kernels.rs, for comparison.

    /tmp/tvenv/bin/python crates/kiln-kernels/golden/bench_torch.py

Prints the median time of each operation and its throughput in the units the Rust benchmark
uses: elements of the larger side of a resize per second, and FLOP/s for attention (forward
4·B·H·L²·D plus backward 8·B·H·L²·D) and the VQ search (2·N·K·D).
"""

import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
torch.manual_seed(0)


def bench(name, fn, work, unit, reps=10):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    t = times[len(times) // 2]
    print(f"{name:40s} {t * 1e3:9.2f} ms  {work / t / 1e9:8.2f} G{unit}/s")


big = torch.rand(64, 3, 256, 256)
small = torch.rand(64, 3, 64, 64)
n_big = big.numel()
bench("resize/bilinear_aa_256_to_64",
      lambda: F.interpolate(big, size=(64, 64), mode="bilinear", antialias=True), n_big, "elem")
bench("resize/bicubic_aa_256_to_64",
      lambda: F.interpolate(big, size=(64, 64), mode="bicubic", antialias=True), n_big, "elem")
bench("resize/bilinear_64_to_256",
      lambda: F.interpolate(small, size=(256, 256), mode="bilinear"), n_big, "elem")
bench("resize/bicubic_64_to_256",
      lambda: F.interpolate(small, size=(256, 256), mode="bicubic"), n_big, "elem")

b, h, l, d = 8, 8, 1024, 64
q, k, v = (torch.randn(b, h, l, d, requires_grad=True) for _ in range(3))


def attention():
    y = F.scaled_dot_product_attention(q, k, v)
    y.sum().backward()


bench("attention/sdpa_b8_h8_l1024_d64_fwd_bwd", attention, 12 * b * h * l * l * d, "FLOP", reps=5)

n, dd, kk = 65536, 64, 512
x = torch.randn(n, dd)
cb = torch.randn(kk, dd)


def vq():
    with torch.no_grad():
        scores = (cb * cb).sum(1)[None, :] - 2.0 * x @ cb.t()
        return scores.argmin(1)


bench("vq/nearest_code_n65536_d64_k512", vq, 2 * n * kk * dd, "FLOP")
