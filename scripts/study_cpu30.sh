#!/usr/bin/env bash
# The issue-13 long CPU study at the tiny preset's distillation weight (4.0 since 2026-12-07; studies/cpu30 ran at
# the then-default 0.25: pass --train-args="--pipeline.model.distill-weight 0.25" for that). Resumable: re-run this
# script to continue a run whose checkpoints are still on disk; finished runs are kept as files under the output
# folder and are never retrained.
# OUT=<dir> writes the study elsewhere (e.g. into another checkout while this one is being edited).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${VENV:-.venv}/bin/featurenerf-study" run --out "${OUT:-studies/cpu30}" --categories chair airplane \
  --methods featurenerf-tiny featurenerf-nodistill-tiny featurenerf-nocoord-tiny --seeds 0 \
  --steps 4500 --curve-every 500 --curve-pairs 6 --eval-pairs 200 "$@"
