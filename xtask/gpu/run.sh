#!/usr/bin/env bash
# kiln's GPU check, on a machine with an NVIDIA GPU: run from the repository root with the
# binaries `cargo xtask gpu-check` built (target/gpu-check/bin.tar.xz: `kiln` and `kiln-bench`
# with the `cuda` feature, stripped and compressed to fit a 64 MiB carry). Needs no Rust toolchain
# there; the PyTorch comparison needs a `python3` with torch.
#
#   bash xtask/gpu/run.sh                        # cuda:0, 3 rounds
#   KILN_GPU_DEVICE=cuda:1 ROUNDS=5 bash xtask/gpu/run.sh
#   KILN_GPU_DEVICE=cpu MAIN_STEPS=50 WORKLOADS=w6-vq-search REPS=1 ROUNDS=1 bash xtask/gpu/run.sh
#                                                # a dry run of the script itself on a CPU
#
# It runs, in order, and keeps going past a failure (the summary says which steps failed):
#   1. what the machine is (nvidia-smi, CPU, torch);
#   2. one training step of every kiln-bench workload (W1–W7: every family's step, the kernels)
#      at tiny shapes on the GPU — the first GPU run of each;
#   3. the README's main job on the GPU: `kiln train experiments/vae-mnist.toml`, then `kiln eval`;
#   4. W1, W2 and W6 in kiln and in the same networks in PyTorch on the GPU, interleaved round by
#      round, and one table of per-round ratios (xtask/gpu/table.py).
# Everything it writes goes under $OUT (default target/gpu-check-out), the table to table.md.
set -u
BIN_ARCHIVE=${KILN_GPU_BIN:-target/gpu-check/bin.tar.xz}
DEVICE=${KILN_GPU_DEVICE:-cuda:0}
ROUNDS=${ROUNDS:-3}
REPS=${REPS:-5}
WORKLOADS=${WORKLOADS:-w1,w2,w6}
PY=${PYTHON:-python3}
OUT=${OUT:-target/gpu-check-out}
mkdir -p "$OUT/bin"
failed=()
step() { echo; echo "== $*"; }
try() { "$@" || { echo "!! failed: $*" >&2; failed+=("$(basename "$1") ${2:-} ${3:-}"); }; }

step "binaries: $BIN_ARCHIVE"
tar -xJf "$BIN_ARCHIVE" -C "$OUT/bin" || { echo "!! cannot unpack $BIN_ARCHIVE (run \`cargo xtask gpu-check\` where there is a Rust toolchain)"; exit 2; }
KILN="$OUT/bin/kiln"
BENCH="$OUT/bin/kiln-bench"

step "machine"
nvidia-smi -L || echo "(no nvidia-smi)"
lscpu | grep -m1 'Model name' || true
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda available:", torch.cuda.is_available())' || echo "(no torch)"

step "one step of every workload at tiny shapes on $DEVICE"
try "$BENCH" --device "$DEVICE" --tiny --reps 1 --warmup 1

step "main job on $DEVICE: kiln train experiments/vae-mnist.toml"
rm -rf "$OUT/vae-mnist"
try "$KILN" --device "$DEVICE" train experiments/vae-mnist.toml --out "$OUT/vae-mnist" ${MAIN_STEPS:+--steps "$MAIN_STEPS"}
try "$KILN" --device "$DEVICE" eval --checkpoint "$OUT/vae-mnist" --out "$OUT/vae-mnist-eval.json" > /dev/null

step "$WORKLOADS on $DEVICE: kiln and PyTorch interleaved, $ROUNDS round(s) of $REPS reps"
rm -f "$OUT"/kiln-*.jsonl "$OUT"/torch-*.jsonl
for r in $(seq 1 "$ROUNDS"); do
  try "$BENCH" --device "$DEVICE" --workload "$WORKLOADS" --reps "$REPS" --json > "$OUT/kiln-$r.jsonl"
  try "$PY" xtask/bench/pytorch_bench.py --device "$DEVICE" --workload "$WORKLOADS" --reps "$REPS" --json > "$OUT/torch-$r.jsonl"
done
try "$PY" xtask/gpu/table.py "$OUT" > "$OUT/table.md"
cat "$OUT/table.md"

echo
if [ ${#failed[@]} -eq 0 ]; then
  echo "gpu-check: every step passed; outputs in $OUT"
else
  echo "gpu-check: ${#failed[@]} step(s) failed: ${failed[*]}"
  exit 1
fi
