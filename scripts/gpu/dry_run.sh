#!/usr/bin/env bash
# A dry run of scripts/gpu_check.sh on this CPU machine, after `bash scripts/gpu_prepare.sh` (its data): device cpu,
# small budgets, the CPU presets in the study (the paper preset's training step is run by the bench), and as the
# device would be: imports of packages that neither the image nor .whl/ has are refused
# (scripts/gpu/sim/sitecustomize.py), numpy 2 (the image has 2.5.2; 2.4.6 is the newest cp311 wheel), and no
# teacher weights (an empty weights cache). The cp312 wheels themselves are not installed here (Python 3.11).
#
#   bash scripts/gpu/dry_run.sh        # results in outputs/gpu_dry_run/out, refused imports in .../refused.log
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SIM=$PWD/outputs/gpu_dry_run
mkdir -p "$SIM/wheels" "$SIM/no_weights"
ls "$SIM"/wheels/numpy-2*.whl >/dev/null 2>&1 ||
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$SIM/wheels" "numpy==${NUMPY:-2.4.6}"
rm -rf "$SIM/out"
: >"$SIM/refused.log"
export OUT=$SIM/out WORK=/tmp/fg_gpu_dry DEVICE=cpu BASE_PY=$PY WHEELS=$SIM/wheels
export FEATURENERF_CACHE=$SIM/no_weights FG_SIM_LOG=$SIM/refused.log PYTHONPATH=$PWD/scripts/gpu/sim
# huggingface_hub 2.x here imports httpx2 (which imports truststore) through torchmetrics -> transformers; the
# image's huggingface_hub 1.33 uses httpx, which it has
export FG_SIM_ALLOW="httpx2 httpcore2 truststore"
export METHODS="featurenerf-tiny featurenerf-nodistill-tiny" IMAGE_SIZE=64 EVAL_PAIRS=2
export STEPS=${STEPS:-5} BUDGET_S=${BUDGET_S:-900} BENCH_S=300 STUDY_MAX_S=300
# the bench: the paper preset only (its pipeline and step; the study trains the CPU presets), compile: tiny, eager
export BENCH_PRESETS=paper COMPILE_PRESETS=tiny COMPILE_BACKEND=eager
t0=$(date +%s)
bash scripts/gpu_check.sh || echo "gpu_check.sh exited $?"
echo "dry run: $(($(date +%s) - t0)) s; imports refused as on the device (guarded ones are harmless):"
cut -d' ' -f3- "$SIM/refused.log" | sort -u | paste -sd' ' 
