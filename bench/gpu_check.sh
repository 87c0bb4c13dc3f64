#!/usr/bin/env bash
# GPU check (issue 14): on a machine with a CUDA GPU, fit -> evaluate -> predict on synthetic 512²
# data in bf16 and fp16 (and a BUSI fit at 512² when the data is there), training and inference
# images/s, peak GPU memory; exits 1 if any verb ran its network on the CPU.
#
#   bash bench/gpu_check.sh                 # OUT=runs/gpu-check, BUSI=../shared/data/busi if present
#   BUSI= bash bench/gpu_check.sh --epochs 2  # no real set; extra arguments go to bench/gpu_check.py
#
# Environment: a venv (.venv-gpu) that sees the machine's own packages, so a CUDA build of torch
# already installed there is used as it is; otherwise torch==2.13.0 comes from the default index
# (a CUDA build). medseg and its dependencies are installed into the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
VENV=${GPU_VENV:-.venv-gpu}
PY=${PYTHON:-python3}
BUSI=${BUSI-../shared/data/busi}

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
[ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV"
if ! "$VENV/bin/python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
fi
# dependencies from the index when it is reachable; else only medseg itself (its dependencies must be there)
"$VENV/bin/python" -m pip install -q -e . 2>/dev/null || "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c 'import torch; assert torch.cuda.is_available(), "torch sees no CUDA device"; print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))'

ARGS=(--out "$OUT")
[ -n "$BUSI" ] && [ -f "$BUSI/split.json" ] && ARGS+=(--busi "$BUSI")
exec "$VENV/bin/python" -u bench/gpu_check.py "${ARGS[@]}" "$@"
