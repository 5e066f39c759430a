#!/usr/bin/env python3
"""Reference values for kiln-inception's tests, from pytorch-fid 0.3.0 itself.

The real FID weights (pt_inception-2015-12-05-6726825d.pth, ~95 MB) are not needed: every tensor
of the network is filled from a formula of (tensor name, element index) that the Rust crate
(`src/standin.rs`, used by `tests/golden.rs`) evaluates bit for bit the same way. So the golden
files only hold outputs, and a wrong port (a swapped branch, a transposed kernel, the wrong
pooling) shows up as a feature mismatch.

What it writes into this directory:
* `golden.json` — the stand-in network's pool3 features (2048-d) and 1008-way logits for four
  formula images (two 32x32, two 64x64), run through pytorch-fid's own `InceptionV3` wrapper
  (resize to 299 with bilinear `align_corners=False`, scale to [-1, 1]); the FID between two sets
  of two; a few bilinear resizes from `F.interpolate` for the preprocessing unit test.
* `stem.pth` (torch's zip format) and `stem_legacy.pth` (the pre-1.6 format the published weights
  were saved in): the stand-in tensors of `Conv2d_1a_3x3` and `Conv2d_2a_3x3`, written by
  `torch.save`, so the PyTorch reader is tested on files torch wrote.
* `bad_shape.pth`: `Conv2d_1a_3x3.conv.weight` with its first two axes swapped, for the error test.

Usage: `python3 crates/kiln-inception/golden/make_golden.py`. Without torch, pytorch-fid, numpy
and scipy importable it makes a venv under `~/.cache/kiln/inception-golden-venv` (override with
`KILN_GOLDEN_VENV`), installs `torch torchvision pytorch-fid==0.3.0 numpy scipy` from PyPI and
re-runs itself there.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def ensure_environment():
    try:
        import numpy  # noqa: F401
        import pytorch_fid  # noqa: F401
        import scipy  # noqa: F401
        import torch  # noqa: F401
        return
    except ImportError:
        pass
    if os.environ.get("KILN_GOLDEN_REEXEC"):
        sys.exit("the venv was made but torch/pytorch-fid/numpy/scipy still do not import")
    venv = Path(os.environ.get("KILN_GOLDEN_VENV",
                               Path.home() / ".cache" / "kiln" / "inception-golden-venv"))
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
        subprocess.check_call([str(python), "-m", "pip", "install", "--quiet",
                               "torch", "torchvision", "pytorch-fid==0.3.0", "numpy", "scipy"])
    env = dict(os.environ, KILN_GOLDEN_REEXEC="1")
    os.execve(str(python), [str(python), __file__, *sys.argv[1:]], env)


ensure_environment()

import numpy as np  # noqa: E402
import pytorch_fid  # noqa: E402
import pytorch_fid.inception as pfi  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pytorch_fid.fid_score import calculate_frechet_distance  # noqa: E402

MASK32 = 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# The stand-in formula. Mirrored in crates/kiln-inception/src/standin.rs; change both
# together. All arithmetic before the final cast is exact integer work or a single
# correctly rounded float64 operation, so numpy and Rust produce the same float32 bits.
# ---------------------------------------------------------------------------------------------

def fnv1a32(text):
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & MASK32
    return h


def uniform(name, n):
    """n float64 values in [0, 1) from a 32-bit hash of (name, index): multiples of 2^-24."""
    x = (np.arange(n, dtype=np.uint64) + np.uint64((fnv1a32(name) * 0x9E3779B9) & MASK32))
    x &= np.uint64(MASK32)
    # lowbias32 (C. Wellons' integer hash).
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & np.uint64(MASK32)
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & np.uint64(MASK32)
    x ^= x >> np.uint64(16)
    return (x >> np.uint64(8)).astype(np.float64) / 16777216.0


def standin(name, shape):
    """The stand-in value of state-dict tensor `name`: a float32 array of `shape`.

    Conv and fc weights: uniform in +-sqrt(6 / fan_in) (He-uniform: variance 2 / fan_in, which
    undoes the halving of ReLU). BN: gamma and running_var in [0.75, 1.25), beta and running_mean
    in [-0.1, 0.1), so each BasicConv2d roughly keeps the scale of its input and the activations
    stay O(1) through all 94 convolutions (the script prints their spread to check).
    """
    n = int(np.prod(shape))
    u = uniform(name, n)
    leaf = name.rsplit(".", 1)[1]
    if leaf == "weight" and len(shape) > 1:
        fan_in = int(np.prod(shape[1:]))
        values = (2.0 * u - 1.0) * np.sqrt(6.0 / fan_in)
    elif leaf in ("running_var",) or (leaf == "weight" and ".bn." in name):
        values = 0.75 + 0.5 * u
    elif leaf in ("running_mean", "bias"):
        values = (2.0 * u - 1.0) * 0.1
    else:
        raise ValueError(f"no stand-in rule for {name}")
    return values.astype(np.float32).reshape(shape)


def image(index, size):
    """Stand-in image `index`: [3, size, size] float32 in [0, 1)."""
    return uniform(f"image{index}", 3 * size * size).astype(np.float32).reshape(3, size, size)


# ---------------------------------------------------------------------------------------------


def stand_in_inception():
    """pytorch-fid's `fid_inception_v3()` without the download: the same torchvision Inception3
    with the same FID blocks patched in, loaded (strictly) with the stand-in tensors."""
    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    state = {}
    for name, tensor in net.state_dict().items():
        if name.endswith("num_batches_tracked"):
            state[name] = tensor
        else:
            state[name] = torch.from_numpy(standin(name, tuple(tensor.shape)))
    net.load_state_dict(state, strict=True)
    return net.eval(), state


def main():
    torch.set_grad_enabled(False)
    net, state = stand_in_inception()
    # pytorch-fid's own wrapper (resize + normalisation + block split), fed our network.
    pfi.fid_inception_v3 = lambda: net
    model = pfi.InceptionV3([3], resize_input=True, normalize_input=True,
                            use_fid_inception=True).eval()

    # Activation spread through the network: stand-in weights that collapse or explode would
    # make a feature comparison meaningless.
    spreads = []
    hooks = [module.register_forward_hook(
        lambda mod, inp, out, name=name: spreads.append((name, float(out.std()))))
        for name, module in net.named_children() if name.startswith(("Conv2d", "Mixed"))]

    sizes = [32, 32, 64, 64]
    features, logits = [], []
    for index, size in enumerate(sizes):
        x = torch.from_numpy(image(index, size))[None]
        pool3 = model(x)[0].flatten(1)  # [1, 2048]
        features.append(pool3[0].double().numpy())
        logits.append(net.fc(pool3)[0].double().numpy())
    for hook in hooks:
        hook.remove()
    features = np.stack(features)
    logits = np.stack(logits)
    for name, std in spreads[: len(spreads) // len(sizes)]:
        print(f"  {name:16s} std {std:.4f}")
    print(f"pool3 mean {features.mean():.4f} std {features.std():.4f}, "
          f"per-dim std across images (mean) {features.std(0).mean():.4f}; "
          f"logits std {logits.std():.4f}")
    assert np.isfinite(features).all() and features.std(0).mean() > 1e-2

    # Batched call agrees with one-at-a-time (pytorch-fid needs equal sizes inside a batch).
    batch = torch.from_numpy(np.stack([image(2, 64), image(3, 64)]))
    assert np.allclose(model(batch)[0].flatten(1).numpy(), features[2:], rtol=1e-5, atol=1e-6)

    # FID between {image 0, image 2} and {image 1, image 3}, in float64. pytorch-fid's own
    # function (scipy sqrtm on rank-1 covariances) and an exact route: the non-zero eigenvalues of
    # S1 S2 with S = A A^T / (n - 1) are the squared singular values of A^T B / (n - 1).
    set_a, set_b = features[[0, 2]], features[[1, 3]]
    mu_a, mu_b = set_a.mean(0), set_b.mean(0)
    ca, cb = set_a - mu_a, set_b - mu_b
    exact = (np.sum((mu_a - mu_b) ** 2) + np.sum(ca * ca) + np.sum(cb * cb)
             - 2.0 * np.linalg.svd(ca @ cb.T, compute_uv=False).sum())
    scipy_fid = calculate_frechet_distance(mu_a, np.cov(set_a, rowvar=False),
                                           mu_b, np.cov(set_b, rowvar=False))
    print(f"FID exact {exact:.6f}, pytorch-fid (scipy sqrtm) {scipy_fid:.6f}")

    # Bilinear resizes, one up and one down, for the preprocessing test.
    resize_in = uniform("resize", 2 * 5 * 7).astype(np.float32).reshape(1, 2, 5, 7)
    resizes = []
    for out in ([12, 9], [3, 4], [5, 7]):
        y = F.interpolate(torch.from_numpy(resize_in), size=tuple(out), mode="bilinear",
                          align_corners=False)
        resizes.append({"size": out, "values": y.flatten().tolist()})

    golden = {
        "producer": f"golden/make_golden.py (torch {torch.__version__}, "
                    f"pytorch-fid {pytorch_fid.__version__}, numpy {np.__version__})",
        "image_sizes": sizes,
        "features": [[float(np.float32(v)) for v in row] for row in features],
        "logits": [[float(np.float32(v)) for v in row] for row in logits],
        "fid_sets": [[0, 2], [1, 3]],
        "fid_exact": float(exact),
        "fid_pytorch_fid": float(scipy_fid),
        "resize_input": {"shape": [1, 2, 5, 7]},
        # Every float tensor of the state dict, so the Rust test can rebuild the weights without
        # its own copy of the architecture.
        "state_dict": [[k, list(v.shape)] for k, v in state.items()
                       if not k.endswith("num_batches_tracked")],
        "resizes": resizes,
    }
    (HERE / "golden.json").write_text(json.dumps(golden, separators=(",", ":")) + "\n")

    stem = {k: v for k, v in state.items() if k.startswith(("Conv2d_1a_3x3.", "Conv2d_2a_3x3."))}
    torch.save(stem, HERE / "stem.pth")
    torch.save(stem, HERE / "stem_legacy.pth", _use_new_zipfile_serialization=False)
    bad = {k: v for k, v in stem.items() if k.startswith("Conv2d_1a_3x3.")}
    bad["Conv2d_1a_3x3.conv.weight"] = bad["Conv2d_1a_3x3.conv.weight"].transpose(0, 1).clone()
    torch.save(bad, HERE / "bad_shape.pth")
    for name in ("golden.json", "stem.pth", "stem_legacy.pth", "bad_shape.pth"):
        print(f"wrote {name} ({(HERE / name).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
