#!/usr/bin/env bash
# Set up if needed, then regenerate every table and figure (default: the small profile on toyland).
# Extra arguments go to `aras reproduce`, e.g. --profile paper --data-root /data/ARAS400k --device cuda
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${ARAS_VENV:-.venv}/bin/aras" reproduce "$@"
