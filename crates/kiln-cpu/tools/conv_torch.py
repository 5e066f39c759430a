#!/usr/bin/env python3
"""Times the DCGAN-64 convolutions of benches/conv.rs in PyTorch, whose CPU convolutions run on
oneDNN: the ceiling issue 8 asks kiln-cpu's kernels to be compared with.

    target/pytorch-venv/bin/python crates/kiln-cpu/tools/conv_torch.py [reps] [threads]

For each layer (batch 64, 4x4 kernels) it prints the forward op, the input gradient and the weight
gradient as separate aten calls (`aten.convolution` and `aten.convolution_backward` with one
output mask bit at a time), best of `reps` after a warm-up, in the Markdown layout of
`cargo bench -p kiln-cpu --bench conv -- ops`, so the two tables line up row by row.
"""

import sys
import time

import torch

REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
THREADS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
BATCH = 64
torch.set_num_threads(THREADS)
torch.manual_seed(0)

# name, transposed, cin, cout, input size, stride, padding (benches/conv.rs's LAYERS)
LAYERS = [
    ("D1 conv 3→64 64²→32²", False, 3, 64, 64, 2, 1),
    ("D2 conv 64→128 32²→16²", False, 64, 128, 32, 2, 1),
    ("D3 conv 128→256 16²→8²", False, 128, 256, 16, 2, 1),
    ("D4 conv 256→512 8²→4²", False, 256, 512, 8, 2, 1),
    ("D5 conv 512→1 4²→1²", False, 512, 1, 4, 1, 0),
    ("G1 convT 100→512 1²→4²", True, 100, 512, 1, 1, 0),
    ("G2 convT 512→256 4²→8²", True, 512, 256, 4, 2, 1),
    ("G3 convT 256→128 8²→16²", True, 256, 128, 8, 2, 1),
    ("G4 convT 128→64 16²→32²", True, 128, 64, 16, 2, 1),
    ("G5 convT 64→3 32²→64²", True, 64, 3, 32, 2, 1),
]


def best_ms(fn):
    fn()
    times = []
    for _ in range(REPS):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times)


def main():
    print(f"## PyTorch {torch.__version__} (oneDNN {torch.backends.mkldnn.is_available()}), "
          f"{THREADS} threads, batch {BATCH}, best of {REPS}\n")
    print("| layer | GFLOP | op | torch ms | torch GFLOP/s |")
    print("|---|---|---|---|---|")
    total = [0.0, 0.0]
    for name, transposed, cin, cout, size, stride, pad in LAYERS:
        out = (size - 1) * stride + 4 - 2 * pad if transposed else (size + 2 * pad - 4) // stride + 1
        positions = size if transposed else out
        gflop = 2.0 * BATCH * cin * cout * 16 * positions * positions / 1e9
        x = torch.randn(BATCH, cin, size, size)
        w = torch.randn(cin, cout, 4, 4) if transposed else torch.randn(cout, cin, 4, 4)
        dy = torch.randn(BATCH, cout, out, out)
        args = ([stride] * 2, [pad] * 2, [1, 1], transposed, [0, 0], 1)
        ops = [
            ("forward", lambda: torch.ops.aten.convolution(x, w, None, *args)),
            ("input grad", lambda: torch.ops.aten.convolution_backward(
                dy, x, w, None, *args, [True, False, False])),
            ("weight grad", lambda: torch.ops.aten.convolution_backward(
                dy, x, w, None, *args, [False, True, False])),
        ]
        for op, fn in ops:
            ms = best_ms(fn)
            total[0 if name.startswith("D") else 1] += ms
            print(f"| {name} | {gflop:.3f} | {op} | {ms:.2f} | {gflop / ms * 1e3:.1f} |")
    print(f"\nSum of all ops: discriminator {total[0]:.1f} ms, generator {total[1]:.1f} ms")


if __name__ == "__main__":
    main()
