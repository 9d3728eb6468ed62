#!/usr/bin/env bash
# Set up if needed, then run the library tests (pytest) and the notebooks' own checks (nbdev_test, smoke profile).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the rating page's browser test (tests/test_alignment.py) drives Debian's chromium through chromedriver
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing chromium and chromium-driver (apt) for the rating-page browser test"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq chromium chromium-driver || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }; } >/dev/null 2>&1 \
      || echo "test: apt-get could not install chromium; the browser test will be skipped"
  else
    echo "test: no /usr/bin/chromium or /usr/bin/chromedriver (apt-get install chromium chromium-driver); the browser test will be skipped"
  fi
fi
VENV="${ARAS_VENV:-.venv}"
# notebook checks write their figures to a temporary folder, never over the committed figures/
if [ -z "${ARAS_FIGURES:-}" ]; then export ARAS_FIGURES="$(mktemp -d)"; trap 'rm -rf "$ARAS_FIGURES"' EXIT; fi
"$VENV/bin/python" -m pytest -q --durations=5 tests "$@"   # the 5 slowest tests and their times
# serially and in order: each chapter reads what the earlier ones wrote (data, GAN samples, labels)
"$VENV/bin/nbdev_test" --n_workers 0 --do_print
