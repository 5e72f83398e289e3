#!/usr/bin/env bash
# README command 2: install (with test extras), then run the test suite (slow end-to-end tests excluded;
# their small versions run here too). Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev
# The viewer's browser test drives Debian's Chromium through Playwright (no browser download); the export tests read
# PLYs back with Open3D, whose wheel needs the system's libusb-1.0 (Chromium pulls it in; named here so it is not
# left to chance).
need=""
[ -x /usr/bin/chromium ] || need="chromium"
ldconfig -p 2>/dev/null | grep -q "libusb-1.0.so.0" || need="$need libusb-1.0-0"
if [ -n "$need" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "test.sh: installing Debian's$need for the viewer browser and Open3D read-back tests"
  # shellcheck disable=SC2086
  apt-get install -y -qq $need >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $need >/dev/null 2>&1; } \
    || echo "test.sh: could not install$need (apt-get install$need); the browser / Open3D tests will fail"
fi
# Lint, import order and types (pyproject [tool.ruff], [tool.mypy]); a finding fails the run before the tests start.
"${VENV:-.venv}/bin/ruff" check featurenerf_ns tests
"${VENV:-.venv}/bin/mypy"
export FEATURENERF_REQUIRE_BROWSER=1
export WANDB_MODE=offline HF_HUB_OFFLINE=1 MPLBACKEND=Agg
if [ "$#" -eq 0 ]; then set -- -m "not slow"; fi
exec "${VENV:-.venv}/bin/python" -m pytest -q -p no:cacheprovider "$@"
