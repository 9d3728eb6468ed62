#!/usr/bin/env bash
# The GPU smoke run (issue 31): every stage of aras (both GANs with a stop and a resume, segmentation with DDP
# over the visible GPUs, sampling, features, captions, distances) for a few steps at the paper's widths, with
# each stage's peak GPU memory (and a fit of it at the paper's batch) and images per second. Meant to take
# about 5 minutes on one GPU. Exits non-zero at the first failing stage. The driver: scripts/gpu_smoke.py.
#
#   bash scripts/gpu-smoke.sh                        # the paper profile on the visible GPUs
#   bash scripts/gpu-smoke.sh --tiny                 # the same steps at tiny sizes on the CPU
#   ARAS_SMOKE_TINY=1 bash scripts/gpu-smoke.sh      # the same
#   bash scripts/gpu-smoke.sh --archs all --set gan.uncond.amp=bf16 --work /tmp/smoke   # more, and kept
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ARAS_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || bash scripts/setup.sh
exec "$VENV/bin/python" scripts/gpu_smoke.py "$@"
