#!/usr/bin/env python3
"""Golden values for kiln-metrics' tests.

Run from anywhere:

    python3 crates/kiln-metrics/golden/make_golden.py

The script builds a virtual environment at /tmp/metrics-venv (numpy, scipy, mpmath from PyPI) on
first use, re-runs itself inside it, and rewrites the JSON files next to it:

* fd.json    -- Frechet distances between Gaussians, three ways: the way pytorch-fid computes them
                (scipy.linalg.sqrtm of the non-symmetric product), a float64 symmetric-eigen
                reference, and a 40-digit mpmath value that serves as the ground truth.
* kid.json   -- unbiased polynomial-kernel MMD^2 on whole sets and KID over subsets whose indices
                are stored in the file, so Rust evaluates exactly the same subsets.
* is.json    -- Inception Score of float32 softmax rows, several split counts.
* pr.json    -- k-NN radii and improved precision/recall (Kynkaenniemi et al. 2019) of small
                point clouds, from a brute-force numpy reference.
* stats.json -- mean and np.cov of feature rows with a large common offset, the case where a naive
                sum-of-squares covariance loses its digits.

Inputs are chosen so both sides read *exactly* the same numbers: covariances are built from small
integer factors (Sigma = diag(2^e) F F^T diag(2^e) / 64 + ridge*I, exact in float64 in any
summation order), feature values are float32 numbers written with enough digits to round-trip.
The script is deterministic (fixed numpy seeds); re-running it rewrites identical files.
"""

import json
import os
import subprocess
import sys
from fractions import Fraction

VENV = "/tmp/metrics-venv"
PINS = ["numpy==2.4.6", "scipy==1.17.1", "mpmath==1.4.1"]
HERE = os.path.dirname(os.path.abspath(__file__))


def ensure_venv():
    """Re-execute inside the venv, creating it and installing the pinned packages if needed."""
    if os.environ.get("KILN_METRICS_GOLDEN_IN_VENV") == "1":
        return
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    # Pinned: scipy's sqrtm in particular is only good to ~1e-8 on the rank-deficient cases, and
    # those digits move between versions. Already-satisfied pins do not touch the network.
    subprocess.check_call([python, "-m", "pip", "install", "--quiet", *PINS])
    env = dict(os.environ, KILN_METRICS_GOLDEN_IN_VENV="1")
    os.execve(python, [python, os.path.abspath(__file__)] + sys.argv[1:], env)


ensure_venv()

import warnings  # noqa: E402

import mpmath  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.linalg  # noqa: E402

mpmath.mp.dps = 40


def write(name, payload):
    payload = dict(payload)
    payload["generator"] = (
        f"crates/kiln-metrics/golden/make_golden.py (python {sys.version.split()[0]}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, mpmath {mpmath.__version__})"
    )
    path = os.path.join(HERE, name)
    with open(path, "w") as f:
        json.dump(payload, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def f32_list(a):
    """float32 array -> nested lists of Python floats; repr() of each round-trips exactly."""
    return np.asarray(a, dtype=np.float32).astype(np.float64).tolist()


# ---------------------------------------------------------------------------------------------
# Frechet distance
# ---------------------------------------------------------------------------------------------


def covariance(spec):
    """Sigma = diag(2^e) F F^T diag(2^e) / 64 + ridge * I, exact in float64."""
    f = np.array(spec["factor"], dtype=np.float64)
    e = np.array(spec["row_exp"], dtype=np.float64)
    s = (f @ f.T) * np.exp2(e[:, None] + e[None, :]) / 64.0
    s[np.diag_indices_from(s)] += spec["ridge"]
    # The exactness argument above is what lets Rust rebuild the same matrix; check it holds.
    exact = covariance_fractions(spec)
    assert all(Fraction(s[i, j]) == exact[i][j] for i in range(len(s)) for j in range(len(s)))
    return s


def covariance_fractions(spec):
    f = spec["factor"]
    e = spec["row_exp"]
    n = len(f)
    ridge = Fraction(spec["ridge"])
    out = []
    for i in range(n):
        row = []
        for j in range(n):
            dot = sum(a * b for a, b in zip(f[i], f[j]))
            v = Fraction(dot) * Fraction(2) ** (e[i] + e[j]) / 64
            if i == j:
                v += ridge
            row.append(v)
        out.append(row)
    return out


def fd_pytorch_fid_style(mu1, s1, mu2, s2, eps=1e-6):
    """FD the way pytorch-fid evaluates it: sqrtm of the (non-symmetric) product, a diagonal offset
    if that square root comes out non-finite, and the real part if it comes out complex."""
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(root).all():
            offset = eps * np.eye(len(s1))
            root = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(root):
        imag = np.abs(np.diagonal(root).imag).max()
        assert imag < 1e-3, f"sqrtm left an imaginary part of {imag}"
        root = root.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(root))


def fd_symmetric_eigh(mu1, s1, mu2, s2):
    """float64 reference in the symmetric form tr sqrt(sqrt(S1) S2 sqrt(S1)), eigenvalues clamped."""
    lam, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(lam, 0.0, None))) @ v.T
    m = root1 @ s2 @ root1
    mu = np.linalg.eigvalsh((m + m.T) / 2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.sqrt(np.clip(mu, 0.0, None)).sum())


def fd_mpmath(spec1, spec2, mu1, mu2):
    """Ground truth. With S1 = G G^T for the explicit factor G = [diag(2^e) F / 8 | sqrt(ridge) I],
    the non-zero eigenvalues of S1 S2 are those of the symmetric PSD matrix G^T S2 G, which is formed
    exactly in rationals and diagonalised with 40 significant digits."""
    n = len(spec1["factor"])
    g_cols = []
    e = spec1["row_exp"]
    f = spec1["factor"]
    for c in range(len(f[0])):
        g_cols.append([Fraction(f[i][c]) * Fraction(2) ** e[i] / 8 for i in range(n)])
    if spec1["ridge"] != 0.0:
        # sqrt(ridge) is exact for the even powers of two used below; check rather than assume.
        root = Fraction(float(mpmath.sqrt(mpmath.mpf(spec1["ridge"]))))
        assert root * root == Fraction(spec1["ridge"]), "ridges must be even powers of two"
        for c in range(n):
            g_cols.append([root if i == c else Fraction(0) for i in range(n)])
    s2 = covariance_fractions(spec2)
    s2g = [[sum(s2[i][k] * col[k] for k in range(n)) for i in range(n)] for col in g_cols]
    k = len(g_cols)
    gram = mpmath.matrix(k, k)
    for a in range(k):
        for b in range(a, k):
            v = sum(g_cols[a][i] * s2g[b][i] for i in range(n))
            gram[a, b] = gram[b, a] = mpmath.mpf(v.numerator) / v.denominator
    eig = mpmath.eigsy(gram, eigvals_only=True)
    tr_root = sum(mpmath.sqrt(max(x, mpmath.mpf(0))) for x in eig)
    s1 = covariance_fractions(spec1)
    tr = sum(s1[i][i] + s2[i][i] for i in range(n))
    diff = sum((Fraction(a) - Fraction(b)) ** 2 for a, b in zip(mu1, mu2))
    total = mpmath.mpf(tr.numerator) / tr.denominator + mpmath.mpf(diff.numerator) / diff.denominator - 2 * tr_root
    return float(total)


def fd_cases():
    rng = np.random.default_rng(20240611)

    def spec(dim, rank, row_exp=None, ridge=0.0):
        factor = rng.integers(-8, 9, size=(dim, rank)).tolist()
        return {
            "factor": factor,
            "row_exp": [0] * dim if row_exp is None else list(row_exp),
            "ridge": ridge,
        }

    def mean(dim):
        return (rng.integers(-16, 17, size=dim) / 16.0).tolist()

    cases = []

    def add(name, s1, s2, mu1, mu2, note):
        a = covariance(s1)
        b = covariance(s2)
        m1 = np.array(mu1)
        m2 = np.array(mu2)
        cases.append(
            {
                "name": name,
                "note": note,
                "dim": len(mu1),
                "mu1": mu1,
                "mu2": mu2,
                "sigma1": s1,
                "sigma2": s2,
                "fd_scipy": fd_pytorch_fid_style(m1, a, m2, b),
                "fd_eigh": fd_symmetric_eigh(m1, a, m2, b),
                "fd_mp": fd_mpmath(s1, s2, mu1, mu2),
                "rank1": int(np.linalg.matrix_rank(a)),
                "rank2": int(np.linalg.matrix_rank(b)),
            }
        )
        print(f"fd {name}: scipy {cases[-1]['fd_scipy']!r} eigh {cases[-1]['fd_eigh']!r} mp {cases[-1]['fd_mp']!r}")

    add("d2_full", spec(2, 3), spec(2, 3), mean(2), mean(2), "full rank, dim 2")
    add("d2_rank1", spec(2, 1), spec(2, 2), mean(2), mean(2), "first covariance has rank 1")
    add("d16_full", spec(16, 24), spec(16, 24), mean(16), mean(16), "full rank, dim 16")
    add("d16_rank5_rank7", spec(16, 5), spec(16, 7), mean(16), mean(16), "both rank deficient")
    add(
        "d16_near_singular",
        spec(16, 5, ridge=2.0**-30),
        spec(16, 7, ridge=2.0**-40),
        mean(16),
        mean(16),
        "rank 5 and 7 plus tiny ridges: full rank on paper, condition numbers ~1e10 and ~1e13",
    )
    same = spec(16, 20)
    mu = mean(16)
    add("d16_identical", same, same, mu, mu, "the same Gaussian twice: FD is exactly 0")
    add("d64_full", spec(64, 64), spec(64, 64), mean(64), mean(64), "full rank, dim 64")
    add("d64_rank20_full", spec(64, 20), spec(64, 64), mean(64), mean(64), "first covariance has rank 20")
    add("d64_rank20_rank30", spec(64, 20), spec(64, 30), mean(64), mean(64), "both rank deficient")
    exps = rng.integers(-10, 5, size=64).tolist()
    add(
        "d64_badly_scaled",
        spec(64, 64, row_exp=exps),
        spec(64, 64, row_exp=rng.permutation(exps).tolist()),
        mean(64),
        mean(64),
        "full rank but rows scaled by 2^-10..2^4: eigenvalues spread over ~9 decades",
    )
    return cases


# ---------------------------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------------------------


def polynomial_kernel(x, y):
    """k(x, y) = (x.y / d + 1)^3, the kernel of Binkowski et al. 2018."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x, y):
    """Unbiased MMD^2: diagonals of the within-set kernel matrices left out."""
    m, n = len(x), len(y)
    kxx = polynomial_kernel(x, x)
    kyy = polynomial_kernel(y, y)
    kxy = polynomial_kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.sum() / (m * n))


def dyadic_f32(a, bits=5):
    """Round to multiples of 2^-bits: exact in float32 and short to print."""
    return np.round(np.asarray(a) * 2.0**bits) / 2.0**bits


def kid_cases():
    rng = np.random.default_rng(7)
    cases = []
    for name, d, m, n, shift, scale, subsets, size in [
        ("d8", 8, 40, 30, 0.3, 1.2, 6, 12),
        ("d16_same_law", 16, 30, 30, 0.0, 1.0, 4, 20),
        ("d32_shifted", 32, 24, 28, 0.5, 0.7, 5, 24),
    ]:
        x = dyadic_f32(rng.normal(size=(m, d)))
        y = dyadic_f32(rng.normal(loc=shift, scale=scale, size=(n, d)))
        subset_pairs = []
        values = []
        for _ in range(subsets):
            ix = rng.choice(m, size, replace=False)
            iy = rng.choice(n, size, replace=False)
            subset_pairs.append({"real": ix.tolist(), "fake": iy.tolist()})
            values.append(mmd2_unbiased(x[ix], y[iy]))
        cases.append(
            {
                "name": name,
                "dim": d,
                "real": x.tolist(),
                "fake": y.tolist(),
                "mmd2_whole": mmd2_unbiased(x, y),
                "subsets": subset_pairs,
                "kid_mean": float(np.mean(values)),
                "kid_std": float(np.std(values)),
            }
        )
        print(f"kid {name}: whole {cases[-1]['mmd2_whole']!r} mean {cases[-1]['kid_mean']!r}")
    return cases


# ---------------------------------------------------------------------------------------------
# Inception Score
# ---------------------------------------------------------------------------------------------


def inception_score(p, splits):
    """exp(E_x KL(p(y|x) || p(y))) per contiguous split, mean and population std over splits;
    0 * log 0 counts as 0."""
    n = len(p)
    scores = []
    for s in range(splits):
        part = p[s * n // splits : (s + 1) * n // splits]
        py = part.mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0)
        scores.append(np.exp(terms.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def is_cases():
    rng = np.random.default_rng(11)
    cases = []
    for name, n, k, temperature in [("n60_k10", 60, 10, 1.0), ("n47_k7_sharp", 47, 7, 0.2)]:
        logits = rng.normal(size=(n, k)) / temperature
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p32 = p.astype(np.float32)
        if name.endswith("sharp"):
            p32[3, :] = 0.0  # a one-hot row: exercises 0 * log 0
            p32[3, 2] = 1.0
        p64 = p32.astype(np.float64)
        results = []
        for splits in (1, 3, 5):
            mean, std = inception_score(p64, splits)
            results.append({"splits": splits, "mean": mean, "std": std})
        cases.append({"name": name, "classes": k, "probs": f32_list(p32), "results": results})
        print(f"is {name}: {results}")
    return cases


# ---------------------------------------------------------------------------------------------
# Precision / recall
# ---------------------------------------------------------------------------------------------


def squared_distances(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1)


def kth_squared(x, k):
    """Squared distance from each point to its k-th nearest *other* point (the point itself sits
    at index 0 of the sorted row, so index k is the k-th neighbour)."""
    d = squared_distances(x, x)
    return np.sort(d, axis=1)[:, k]


def precision_recall(real, fake, k):
    """Squared distances are compared with squared radii, as the NVlabs reference does."""
    r_real = kth_squared(real, k)
    r_fake = kth_squared(fake, k)
    d = squared_distances(real, fake)  # [real, fake]
    precision = (d <= r_real[:, None]).any(axis=0).mean()
    recall = (d <= r_fake[None, :]).any(axis=1).mean()
    return float(precision), float(recall), np.sqrt(r_real), np.sqrt(r_fake)


def pr_cases():
    rng = np.random.default_rng(3)
    cases = []
    for name, d, m, n, shift, scale in [("d6", 6, 150, 120, 0.5, 0.8), ("d12_wide_fake", 12, 80, 90, 0.0, 1.6)]:
        real = dyadic_f32(rng.normal(size=(m, d)))
        fake = dyadic_f32(rng.normal(loc=shift, scale=scale, size=(n, d)))
        if name == "d6":
            # Duplicated rows: zero distances and zero radii must be handled like the reference.
            real[10:14] = real[0]
            fake[5] = real[20]
        results = []
        for k in (1, 3, 5):
            p, r, rr, rf = precision_recall(real, fake, k)
            entry = {"k": k, "precision": p, "recall": r}
            if k == 3:
                entry["real_radii"] = rr.tolist()
                entry["fake_radii"] = rf.tolist()
            results.append(entry)
        cases.append({"name": name, "dim": d, "real": real.tolist(), "fake": fake.tolist(), "results": results})
        print(f"pr {name}: {[(e['k'], e['precision'], e['recall']) for e in results]}")
    return cases


# ---------------------------------------------------------------------------------------------
# Streaming statistics
# ---------------------------------------------------------------------------------------------


def stats_case():
    rng = np.random.default_rng(5)
    x = (1000.0 + rng.normal(size=(100, 5)) * np.array([1.0, 0.1, 3.0, 0.01, 1.0])).astype(np.float32)
    x64 = x.astype(np.float64)
    return {
        "note": "rows near 1000 with spreads down to 0.01: a naive E[x^2] - E[x]^2 loses most digits",
        "dim": 5,
        "rows": f32_list(x),
        "mean": x64.mean(axis=0).tolist(),
        "cov": np.cov(x64, rowvar=False).tolist(),
        "batches": [7, 1, 30, 62],
    }


if __name__ == "__main__":
    write("fd.json", {"cases": fd_cases()})
    write("kid.json", {"cases": kid_cases()})
    write("is.json", {"cases": is_cases()})
    write("pr.json", {"cases": pr_cases()})
    write("stats.json", stats_case())
    total = sum(os.path.getsize(os.path.join(HERE, f)) for f in os.listdir(HERE) if f.endswith(".json"))
    print(f"total golden size: {total} bytes")
