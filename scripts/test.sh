#!/usr/bin/env bash
# README command 2: install (with test extras), then run the test suite (slow end-to-end tests excluded;
# their small versions run here too). Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev
export WANDB_MODE=offline HF_HUB_OFFLINE=1 MPLBACKEND=Agg
if [ "$#" -eq 0 ]; then set -- -m "not slow"; fi
exec "${VENV:-.venv}/bin/python" -m pytest -q -p no:cacheprovider "$@"
