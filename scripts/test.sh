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
if [ -z "${ARAS_FIGURES:-}" ]; then export ARAS_FIGURES="$(mktemp -d)"; own_figures=1; trap 'rm -rf "$ARAS_FIGURES"' EXIT; fi
if [ $# -gt 0 ]; then                 # your own selection, e.g. -m "not slow": pytest with it, then the notebooks
  "$VENV/bin/python" -m pytest -q --durations=5 tests "$@"   # the 5 slowest tests and their times
  "$VENV/bin/nbdev_test" --n_workers 0 --do_print
  exit 0
fi
# Everything: the slow paper-profile rehearsal on one core (its cells run no faster on two: 9.5 against 10.5 s for a
# Unet cell) beside the other tests and the notebooks' checks, which take the other core.
slow_log="$(mktemp)"; slow_tmp="$(mktemp -d)"      # its own temporary folder: two pytest runs never clean each other's
OMP_NUM_THREADS=1 "$VENV/bin/python" -m pytest -q --durations=3 -m slow --basetemp "$slow_tmp" tests >"$slow_log" 2>&1 &
slow_pid=$!
trap 'kill "$slow_pid" 2>/dev/null || true; rm -rf "$slow_log" "$slow_tmp"; [ -z "${own_figures:-}" ] || rm -rf "$ARAS_FIGURES"' EXIT
echo "test: the paper-profile rehearsal (pytest -m slow) runs in the background; its report follows the others"
status=0
"$VENV/bin/python" -m pytest -q --durations=5 -m "not slow" tests || status=1   # the 5 slowest tests and their times
# serially and in order: each chapter reads what the earlier ones wrote (data, GAN samples, labels)
"$VENV/bin/nbdev_test" --n_workers 0 --do_print || status=1
echo "test: waiting for the paper-profile rehearsal"
wait "$slow_pid" || status=1
echo "--- the paper-profile rehearsal (pytest -m slow) ---"
cat "$slow_log"
exit "$status"
