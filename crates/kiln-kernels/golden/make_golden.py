#!/usr/bin/env python3
"""Reference values for kiln-kernels' golden tests.

Writes golden/resize.json, golden/pool.json, golden/attention.json and golden/norm.json beside
this script, or only the files named as arguments (norm.json has its own seed; the other three
share one random stream, so regenerate those together). Each
file maps a case name to its arguments, a flat float32 input (row-major, with its shape) and the
expected output; some cases also carry the gradient of `sum(output * grad_out)` with respect to
the inputs. The Rust tests (src/tests/golden_*.rs) read these files; regenerate them with

    python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch pillow numpy
    /tmp/tvenv/bin/python crates/kiln-kernels/golden/make_golden.py

Produced with torch 2.15.0 (CPU) and Pillow 13.0.0; all in float32 except PIL, which resamples
'F'-mode images in double precision and stores float32.
"""

import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(0)
rng = np.random.default_rng(0)


def f32(v):
    # The shortest decimal that reads back as the same float32 keeps the files small.
    return float(str(np.float32(v)))


def flat(t):
    return [f32(v) for v in t.detach().reshape(-1).tolist()]


def tensor_entry(t):
    return {"shape": list(t.shape), "data": flat(t)}


def write(name, cases):
    path = os.path.join(HERE, name)
    with open(path, "w") as f:
        json.dump(
            {
                "generator": "golden/make_golden.py",
                "torch": torch.__version__,
                "pillow": Image.__version__,
                "cases": cases,
            },
            f,
            indent=None,
            separators=(",", ":"),
        )
    print(f"{path}: {len(cases)} cases")


# ---------------------------------------------------------------------------------------------
# Resize
# ---------------------------------------------------------------------------------------------
def resize_cases():
    cases = {}
    inputs = {
        "a": torch.randn(2, 2, 7, 9),
        "b": torch.randn(1, 1, 16, 13),
    }

    def add(name, x_key, mode, size=None, scale=None, align_corners=None, antialias=False,
            grad=False):
        x = inputs[x_key].clone().requires_grad_(grad)
        kwargs = {"mode": mode}
        if size is not None:
            kwargs["size"] = size
        else:
            kwargs["scale_factor"] = scale
        if align_corners is not None:
            kwargs["align_corners"] = align_corners
        if antialias:
            kwargs["antialias"] = True
        y = F.interpolate(x, **kwargs)
        case = {
            "source": "torch",
            "input": tensor_entry(x),
            "filter": mode,
            "size": size,
            "scale": scale,
            "align_corners": bool(align_corners),
            "antialias": antialias,
            "output": tensor_entry(y),
        }
        if grad:
            g = torch.randn_like(y)
            (y * g).sum().backward()
            case["grad_out"] = tensor_entry(g)
            case["grad_input"] = tensor_entry(x.grad)
        cases[name] = case

    for mode in ["nearest", "nearest-exact"]:
        for size in [(4, 5), (11, 14), (3, 17)]:
            add(f"{mode}_{size[0]}x{size[1]}", "a", mode, size=size)
        add(f"{mode}_scale", "a", mode, scale=(1.5, 0.7))
        add(f"{mode}_scale_third", "b", mode, scale=(1 / 3, 2.5))
        add(f"{mode}_down_grad", "b", mode, size=(5, 4), grad=True)
        add(f"{mode}_up_grad", "b", mode, size=(23, 31), grad=True)

    for mode in ["bilinear", "bicubic"]:
        for size in [(4, 5), (11, 14), (3, 17), (1, 1)]:
            for ac in [False, True]:
                for aa in [False, True]:
                    add(f"{mode}_{size[0]}x{size[1]}_ac{int(ac)}_aa{int(aa)}", "a", mode,
                        size=size, align_corners=ac, antialias=aa)
        add(f"{mode}_down_b_aa", "b", mode, size=(5, 4), antialias=True, grad=True)
        add(f"{mode}_up_b_ac", "b", mode, size=(23, 31), align_corners=True, grad=True)
        add(f"{mode}_scale_aa", "b", mode, scale=(0.45, 1.7), antialias=True)
        add(f"{mode}_scale", "b", mode, scale=(0.45, 1.7))
        add(f"{mode}_identity", "a", mode, size=(7, 9))
        add(f"{mode}_down_b_grad", "b", mode, size=(5, 4), grad=True)
        add(f"{mode}_down_b_ac_grad", "b", mode, size=(9, 10), align_corners=True, grad=True)

    for size in [(4, 5), (3, 3), (11, 14), (7, 9)]:
        add(f"area_{size[0]}x{size[1]}", "a", "area", size=size)
    add("area_grad", "b", "area", size=(5, 4), grad=True)

    # PIL, on a float ('F') image; PIL's size is (width, height). PIL's NEAREST is left out: it
    # is nearest-exact except where (i + 0.5)·scale is an integer, where its accumulated double
    # sum falls just below and picks the pixel before.
    x = inputs["b"][0, 0].numpy().astype(np.float32)
    img = Image.fromarray(x, mode="F")
    for name, resample in [("bilinear", Image.BILINEAR), ("bicubic-pil", Image.BICUBIC)]:
        for (h, w) in [(5, 4), (7, 9), (23, 31), (16, 13)]:
            y = np.asarray(img.resize((w, h), resample=resample), dtype=np.float32)
            cases[f"pil_{name}_{h}x{w}"] = {
                "source": "pil",
                "input": tensor_entry(inputs["b"]),
                "filter": name,
                "size": [h, w],
                "scale": None,
                "align_corners": False,
                "antialias": True,
                "output": {"shape": [1, 1, h, w], "data": [f32(v) for v in y.reshape(-1)]},
            }
    return cases


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------
def pool_cases():
    cases = {}
    x = torch.randn(2, 3, 9, 11)
    x5 = torch.randn(1, 2, 5, 5)

    def add_max(name, inp, k, s, p, d=(1, 1), ceil=False):
        xi = inp.clone().requires_grad_(True)
        y, idx = F.max_pool2d(xi, k, s, p, d, ceil_mode=ceil, return_indices=True)
        g = torch.randn_like(y)
        (y * g).sum().backward()
        try:
            un = tensor_entry(F.max_unpool2d(y, idx, k, s, p, output_size=inp.shape[-2:]))
        except ValueError:
            un = None  # PyTorch only unpools to sizes near its default; dilation falls outside
        cases[name] = {
            "op": "max", "input": tensor_entry(inp), "kernel": list(k), "stride": list(s),
            "padding": list(p), "dilation": list(d), "ceil_mode": ceil,
            "output": tensor_entry(y), "indices": [int(v) for v in idx.reshape(-1).tolist()],
            "unpooled": un, "grad_out": tensor_entry(g),
            "grad_input": tensor_entry(xi.grad),
        }

    def add_avg(name, inp, k, s, p, ceil, include):
        xi = inp.clone().requires_grad_(True)
        y = F.avg_pool2d(xi, k, s, p, ceil_mode=ceil, count_include_pad=include)
        g = torch.randn_like(y)
        (y * g).sum().backward()
        cases[name] = {
            "op": "avg", "input": tensor_entry(inp), "kernel": list(k), "stride": list(s),
            "padding": list(p), "ceil_mode": ceil, "count_include_pad": include,
            "output": tensor_entry(y), "grad_out": tensor_entry(g),
            "grad_input": tensor_entry(xi.grad),
        }

    add_max("max_k3s2p1", x, (3, 3), (2, 2), (1, 1))
    add_max("max_k3s2p1_ceil", x, (3, 3), (2, 2), (1, 1), ceil=True)
    add_max("max_k2s2_ceil", x, (2, 2), (2, 2), (0, 0), ceil=True)
    add_max("max_k2s2p1_ceil_5x5", x5, (2, 2), (2, 2), (1, 1), ceil=True)
    add_max("max_k32_s21_p10", x, (3, 2), (2, 1), (1, 0))
    add_max("max_dilated", x, (3, 3), (1, 2), (1, 1), d=(2, 1))
    for ceil in [False, True]:
        for include in [False, True]:
            add_avg(f"avg_k3s2p1_ceil{int(ceil)}_inc{int(include)}", x, (3, 3), (2, 2), (1, 1),
                    ceil, include)
            add_avg(f"avg_5x5_k2s2p1_ceil{int(ceil)}_inc{int(include)}", x5, (2, 2), (2, 2),
                    (1, 1), ceil, include)
    add_avg("avg_k2s2", x, (2, 2), (2, 2), (0, 0), False, True)
    for size in [(4, 5), (3, 7), (9, 11), (5, 3), (1, 1)]:
        xi = x.clone().requires_grad_(True)
        y = F.adaptive_avg_pool2d(xi, size)
        g = torch.randn_like(y)
        (y * g).sum().backward()
        cases[f"adaptive_{size[0]}x{size[1]}"] = {
            "op": "adaptive", "input": tensor_entry(x), "output_size": list(size),
            "output": tensor_entry(y), "grad_out": tensor_entry(g),
            "grad_input": tensor_entry(xi.grad),
        }
    return cases


# ---------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------
def attention_cases():
    cases = {}

    def add(name, lq, lk, d=4, dv=6, mask=None, causal=False, scale=None, alpha=None):
        q = torch.randn(2, 3, lq, d, requires_grad=True)
        k = torch.randn(2, 3, lk, d, requires_grad=True)
        v = torch.randn(2, 3, lk, dv, requires_grad=True)
        m = None
        case = {"causal": causal, "scale": scale}
        if mask == "bool":
            m = torch.rand(2, 1, lq, lk) > 0.4
            m[..., 0] = True  # every query keeps at least one key (PyTorch gives NaN otherwise)
            case["mask_bool"] = {"shape": list(m.shape), "data": [bool(b) for b in m.reshape(-1)]}
        elif mask == "float":
            m = torch.randn(1, 3, lq, lk)
            case["mask_float"] = tensor_entry(m)
        if alpha is not None:
            # softmax((QKᵀ + αM)/√d) V, written out.
            scores = (q @ k.transpose(-1, -2) + alpha * m) / (d ** 0.5)
            y = torch.softmax(scores, dim=-1) @ v
            case["alpha"] = alpha
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=causal, scale=scale)
        g = torch.randn_like(y)
        (y * g).sum().backward()
        case.update({
            "q": tensor_entry(q), "k": tensor_entry(k), "v": tensor_entry(v),
            "output": tensor_entry(y), "grad_out": tensor_entry(g),
            "grad_q": tensor_entry(q.grad), "grad_k": tensor_entry(k.grad),
            "grad_v": tensor_entry(v.grad),
        })
        cases[name] = case

    add("plain", 5, 7)
    add("scale", 5, 7, scale=0.3)
    add("bool_mask", 5, 7, mask="bool")
    add("float_mask", 5, 7, mask="float")
    add("causal_square", 6, 6, causal=True)
    add("causal_rect", 4, 6, causal=True)
    add("scaled_additive", 5, 7, mask="float", alpha=2.5)
    return cases


# ---------------------------------------------------------------------------------------------
# Batch and group normalisation (training mode: the batch's own statistics)
# ---------------------------------------------------------------------------------------------
def norm_cases():
    torch.manual_seed(1)  # its own stream, so the files before it keep their values
    cases = {}

    def add(name, shape, groups=None, per_image=False, eps=1e-5):
        n, c = shape[0], shape[1]
        x = (torch.randn(*shape) * 3.0 + 1.5).requires_grad_()
        rows = n if per_image else 1
        gamma = (torch.rand(rows, c) + 0.5).requires_grad_()
        beta = torch.randn(rows, c).requires_grad_()
        if groups is None:
            normed = F.batch_norm(x, None, None, training=True, eps=eps)
        else:
            normed = F.group_norm(x, groups, eps=eps)
        y = normed * gamma[:, :, None, None] + beta[:, :, None, None]
        g = torch.randn_like(y)
        (y * g).sum().backward()
        case = {"groups": groups, "eps": eps}
        if groups is None:
            case["mean"] = tensor_entry(x.mean(dim=(0, 2, 3)))
            case["var"] = tensor_entry(x.var(dim=(0, 2, 3), unbiased=False))
        case.update({
            "x": tensor_entry(x), "gamma": tensor_entry(gamma), "beta": tensor_entry(beta),
            "output": tensor_entry(y), "grad_out": tensor_entry(g),
            "grad_x": tensor_entry(x.grad), "grad_gamma": tensor_entry(gamma.grad),
            "grad_beta": tensor_entry(beta.grad),
        })
        cases[name] = case

    add("batch", (3, 4, 5, 6))
    add("batch_per_image", (4, 3, 4, 4), per_image=True)
    add("batch_one_pixel", (8, 5, 1, 1))
    add("group", (2, 6, 3, 5), groups=3)
    add("group_one", (2, 4, 4, 4), groups=1)
    add("group_instance", (3, 4, 2, 3), groups=4, eps=1e-6)
    return cases


FILES = {"resize.json": lambda: resize_cases(), "pool.json": lambda: pool_cases(),
         "attention.json": lambda: attention_cases(), "norm.json": lambda: norm_cases()}

if __name__ == "__main__":
    import sys
    torch.set_num_threads(1)
    for name in sys.argv[1:] or FILES:
        write(name, FILES[name]())
