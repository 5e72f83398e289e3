#!/usr/bin/env bash
# The issue-13 long CPU study (resumable: re-run this script to continue).
cd /work/main
exec .venv/bin/featurenerf-study run --out studies/cpu30 --categories chair airplane \
  --methods featurenerf-tiny featurenerf-nodistill-tiny featurenerf-nocoord-tiny --seeds 0 \
  --steps 4500 --curve-every 500 --curve-pairs 6 --eval-pairs 200
