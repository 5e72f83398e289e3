#!/usr/bin/env bash
# README command 1: install, then run the main job on the embedded procedural benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
"${VENV:-.venv}/bin/featurenerf-main" "$@"
