#!/usr/bin/env python3
"""One table from the GPU check's interleaved rounds: kiln-bench and pytorch_bench.py on one device.

    python3 xtask/gpu/table.py OUT_DIR

Reads OUT_DIR/kiln-R.jsonl and OUT_DIR/torch-R.jsonl for every round R the runner wrote (one JSON
object per workload and line, the fields kiln-bench and pytorch_bench.py share) and prints, per
workload, each side's items/s as the median over rounds (min–max) and kiln/PyTorch as the median
of the per-round ratios (min–max): rounds are paired because a machine's speed drifts. Standard
library only, so it runs in whatever Python the GPU machine has.
"""

import glob
import json
import os
import statistics
import sys


def load(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rec = json.loads(line)
                out[rec["workload"]] = rec
    return out


def spread(values, fmt):
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    out = sys.argv[1]
    rounds = sorted(int(os.path.basename(p)[5:-6]) for p in glob.glob(os.path.join(out, "kiln-*.jsonl")))
    pairs = [(load(os.path.join(out, f"kiln-{r}.jsonl")), load(os.path.join(out, f"torch-{r}.jsonl")))
             for r in rounds if os.path.exists(os.path.join(out, f"torch-{r}.jsonl"))]
    if not pairs:
        sys.exit(f"{out}: no paired kiln-R.jsonl / torch-R.jsonl rounds")
    names = [n for n in pairs[0][0] if all(n in k and n in t for k, t in pairs)]
    device = pairs[0][1][names[0]].get("device", "?") if names else "?"
    print(f"{len(pairs)} round(s) on {device}: kiln-bench vs pytorch_bench.py ({pairs[0][1][names[0]]['backend'] if names else '?'})")
    print()
    print("| workload | kiln /s | PyTorch /s | kiln/PyTorch | PyTorch peak GPU MiB |")
    print("|---|---|---|---|---|")
    one = lambda v: f"{v:.1f}"
    two = lambda v: f"{v:.2f}"
    for n in names:
        ks = [k[n]["items_per_s"] for k, _ in pairs]
        ts = [t[n]["items_per_s"] for _, t in pairs]
        ratios = [k / t for k, t in zip(ks, ts)]
        peak = [t[n].get("peak_device_mib") for _, t in pairs]
        peak = "—" if None in peak else f"{max(peak):.0f}"
        unit = pairs[0][0][n]["unit"]
        print(f"| {n} ({unit}) | {spread(ks, one)} | {spread(ts, one)} | {spread(ratios, two)} | {peak} |")
    missing = [n for n in pairs[0][1] if n not in names]
    if missing:
        print(f"\nnot in every round of both sides (a side failed?): {', '.join(missing)}")


if __name__ == "__main__":
    main()
