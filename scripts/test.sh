#!/usr/bin/env bash
# Set up if needed, then run the library tests (pytest) and the notebooks' own checks (nbdev_test, tiny profile).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${ARAS_VENV:-.venv}"
# notebook checks write their figures to a temporary folder, never over the committed figures/
export ARAS_FIGURES="${ARAS_FIGURES:-$(mktemp -d)}"
"$VENV/bin/python" -m pytest -q tests "$@"
# serially and in order: each chapter reads what the earlier ones wrote (data, GAN samples, labels)
"$VENV/bin/nbdev_test" --n_workers 0 --do_print
