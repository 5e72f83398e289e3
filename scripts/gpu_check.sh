#!/usr/bin/env bash
# The GPU check (issue 14 item 6; issue 13's short paper-preset run), run ON the device machine by one `run` call
# after `bash scripts/gpu_prepare.sh` here:  command "bash scripts/gpu_check.sh", carry [".whl", ".gpudata"],
# timeout_s 560. Each stage runs under `timeout`, inside a deadline of BUDGET_S seconds for the whole script:
#   setup          the carried wheels and this package into $WORK/site (pip --target, for the image's python and
#                  torch), the data unpacked, nvidia-smi, versions
#   bench          featurenerf-bench --parts matmul field step, eager: ray samples/s of the field (forward +
#                  backward) and time per training step (ms per step = s per 1000 steps), tiny and paper presets,
#                  float32 and bfloat16
#   compile_field  the same with the field's forward under torch.compile (paper preset; figures end in _compiled,
#   compile_step   compilation time in *_first_call_s / *_first_step_s)
#   study          featurenerf-study run: featurenerf and featurenerf-nodistill (paper preset, chair, 128 px), each
#                  for the steps that fit its share of the time left at the bench's paper step, then the
#                  cross-view evaluation (no teacher-2D baseline: the teacher's weights stay here)
#   report         featurenerf-study report: tables and figures
# Results in $OUT (outputs/gpu_check when unset), 7 files: gpu_check.log, summary.json (each stage's exit status
# and seconds, the steps), bench.json (eager and _compiled figures side by side), results.md, pck_chair.png,
# curves_chair.png, study.tar.gz (settings, evaluations, learning curves; no checkpoints).
# Dry run on a CPU machine (device cpu, small budgets, imports refused as the device image lacks them):
#   bash scripts/gpu/dry_run.sh
set -u -o pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
T0=$(date +%s)
OUT=${OUT:-$REPO/outputs/gpu_check}
WORK=${WORK:-/tmp/fg_gpu}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-500}       # the whole script (the run call's timeout_s leaves a margin above it)
BASE_PY=${BASE_PY:-python3}     # the image's python, with torch
WHEELS=${WHEELS:-.whl}          # wheels installed into $WORK/site (none there: skipped)
DATA_TAR=${DATA_TAR:-.gpudata/shapenet_chair.tar.xz}
CATEGORY=${CATEGORY:-chair}
METHODS=${METHODS:-featurenerf featurenerf-nodistill}
IMAGE_SIZE=${IMAGE_SIZE:-128}
BENCH_PARTS=${BENCH_PARTS:-matmul field step}
BENCH_PRESETS=${BENCH_PRESETS:-tiny paper}
COMPILE_PRESETS=${COMPILE_PRESETS:-paper}
COMPILE_BACKEND=${COMPILE_BACKEND:-inductor}
SETUP_S=${SETUP_S:-120}         # stage caps; the deadline may cut a stage shorter or skip it
BENCH_S=${BENCH_S:-150}
COMPILE_S=${COMPILE_S:-80}      # each of compile_field and compile_step
STUDY_MAX_S=${STUDY_MAX_S:-360} # the study gets what the deadline leaves (less REPORT_S), at most this
REPORT_S=${REPORT_S:-40}
RESERVE_S=${RESERVE_S:-15}      # kept back for the last summary lines
RUN_OVERHEAD_S=${RUN_OVERHEAD_S:-75}  # per method: ns-train's start, callbacks, the evaluation
TRAIN_S=${TRAIN_S:-auto}        # training seconds per method (auto: the study's time less the overheads, shared)
STEPS=${STEPS:-auto}            # training steps per method (auto: TRAIN_S at the bench's paper step)
STEPS_MIN=${STEPS_MIN:-100}
STEPS_MAX=${STEPS_MAX:-20000}
STEPS_FALLBACK=${STEPS_FALLBACK:-400}  # when the bench measured no paper step
EVAL_PAIRS=${EVAL_PAIRS:-50}    # pairs of each kind (same-view, novel-view, cross-view) of the final evaluation
export PYTHONUNBUFFERED=1 WANDB_MODE=offline MPLBACKEND=Agg

mkdir -p "$OUT" "$WORK"
rm -rf "$WORK/site" "$WORK/data" "$WORK/study" "$WORK"/bench_*.json
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
TEE_PID=$!
SUMMARY=$OUT/summary.json
UTIL="$BASE_PY $REPO/scripts/gpu/util.py"
PY=$BASE_PY
export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}" PATH="$WORK/site/bin:$PATH"
echo "gpu_check.sh $(date -u +%FT%TZ): device $DEVICE, budget ${BUDGET_S}s, out $OUT, work $WORK"

left() { echo $((T0 + BUDGET_S - $(date +%s))); }
stage() { # stage NAME CAP_S CMD...: CMD under timeout min(CAP_S, what the deadline leaves); recorded in summary.json
  local name=$1 cap=$2 lim rc t
  shift 2
  lim=$(($(left) - RESERVE_S))
  [ "$cap" -lt "$lim" ] && lim=$cap
  if [ "$lim" -lt 20 ]; then
    echo "== $name: skipped ($(left) s of the budget left)"
    $UTIL record "$SUMMARY" "$name" -1 0 "skipped: no time left"
    return 1
  fi
  echo "== $name (limit ${lim} s; $(left) s of the budget left)"
  t=$(date +%s.%N)
  timeout -k 10 "$lim" "$@"
  rc=$?
  t=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  echo "== $name: exit $rc in $t s$([ "$rc" = 124 ] && echo ' (stopped at its time limit)')"
  $UTIL record "$SUMMARY" "$name" "$rc" "$t"
  return $rc
}

setup() {
  set -e
  # pip runs without PYTHONPATH: it installs into $WORK/site whatever that holds (in a dry run: an import guard)
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    PYTHONPATH= $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
      --target "$WORK/site" "$WHEELS"/*.whl
  fi
  # this package, for its entry points (ns-train finds the methods through them); setuptools + wheel: the image's
  if ! PYTHONPATH= $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
    --disable-pip-version-check --target "$WORK/site" "$REPO"; then
    echo "pip could not build featurenerf_ns here; registering the sources with a dist-info from pyproject.toml"
    $PY "$REPO/scripts/gpu/util.py" dist-info "$REPO" "$WORK/site"
  fi
  mkdir -p "$WORK/data"
  $PY -m tarfile -e "$DATA_TAR" "$WORK/data"
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "(no nvidia-smi)"; fi
  $PY - <<'EOF'
import importlib.metadata as md, sys, torch
import featurenerf_ns.method_configs  # noqa: F401 (the import closure of training)

def version(d):
    try:
        return md.version(d)
    except md.PackageNotFoundError:
        return "-"

cuda = torch.cuda.is_available()
gpu = f" ({torch.cuda.get_device_name(0)}, bf16 {torch.cuda.is_bf16_supported()})" if cuda else ""
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {cuda}{gpu}")
pkgs = ("numpy", "nerfstudio", "nerfacc", "tyro", "viser", "torchvision", "triton", "featurenerf_ns")
print("versions:", ", ".join(f"{d} {version(d)}" for d in pkgs))
names = sorted(e.name for e in md.entry_points(group="nerfstudio.method_configs"))
print("methods:", ", ".join(names))
if "featurenerf" not in names:
    raise SystemExit("gpu_check.sh: ns-train does not see the featurenerf methods (entry points of featurenerf_ns)")
EOF
}
export -f setup
export PY WORK WHEELS REPO DATA_TAR

finish() {
  $UTIL set "$SUMMARY" wall_s "$(($(date +%s) - T0))"
  echo "gpu_check.sh: done in $(($(date +%s) - T0)) s; $OUT holds:"
  ls -la "$OUT"
  exec >&- 2>&-
  wait "$TEE_PID" 2>/dev/null # the log is complete before the command returns
}

# ---------------------------------------------------------------- setup
if ! stage setup "$SETUP_S" bash -c setup; then
  echo "gpu_check.sh: setup failed (see above); nothing else can run"
  finish
  exit 1
fi
$UTIL set "$SUMMARY" device "$($PY -c 'import json, torch; c = torch.cuda.is_available()
print(json.dumps(torch.cuda.get_device_name(0) if c else "cpu"))')"
DATA=$WORK/data/shapenet

# ---------------------------------------------------------------- bench, eager
# shellcheck disable=SC2086  # word lists
stage bench "$BENCH_S" $PY -m featurenerf_ns.scripts.bench --device "$DEVICE" --parts $BENCH_PARTS \
  --presets $BENCH_PRESETS --data "$DATA/$CATEGORY" --out "$WORK/bench_eager.json"
$UTIL merge-bench "$OUT/bench.json" "$WORK"/bench_*.json

# ---------------------------------------------------------------- bench, torch.compile (field, then step)
for part in field step; do
  # shellcheck disable=SC2086
  stage "compile_$part" "$COMPILE_S" $PY -m featurenerf_ns.scripts.bench --device "$DEVICE" --parts "$part" \
    --presets $COMPILE_PRESETS --compile --compile-backend "$COMPILE_BACKEND" --data "$DATA/$CATEGORY" \
    --out "$WORK/bench_compiled_$part.json"
  $UTIL merge-bench "$OUT/bench.json" "$WORK"/bench_*.json
done

# ---------------------------------------------------------------- study: paper preset, cross-view evaluation
read -r -a methods <<<"$METHODS"
nm=${#methods[@]}
study_s=$(($(left) - RESERVE_S - REPORT_S))
[ "$study_s" -gt "$STUDY_MAX_S" ] && study_s=$STUDY_MAX_S
if [ "$TRAIN_S" = auto ]; then TRAIN_S=$(((study_s - nm * RUN_OVERHEAD_S) / nm)); fi
[ "$TRAIN_S" -lt 10 ] && TRAIN_S=10
if [ "$STEPS" = auto ]; then
  STEPS=$($UTIL steps "$WORK/bench_eager.json" "$TRAIN_S" "$STEPS_FALLBACK" "$STEPS_MIN" "$STEPS_MAX")
fi
CURVE=$((STEPS / 4 > 1 ? STEPS / 4 : 1))
echo "study: $STEPS steps per method (${TRAIN_S} s of training each at the bench's paper step), curve every $CURVE"
$UTIL set "$SUMMARY" study_steps "$STEPS"
$UTIL set "$SUMMARY" study_train_s_target "$TRAIN_S"
stage study "$study_s" $PY -m featurenerf_ns.scripts.study_cli run --out "$WORK/study" --data "$DATA" \
  --categories "$CATEGORY" --methods "${methods[@]}" --seeds 0 --steps "$STEPS" --image-size "$IMAGE_SIZE" \
  --curve-every "$CURVE" --curve-pairs 6 --eval-pairs "$EVAL_PAIRS" --no-baselines \
  --train-args="--pipeline.datamanager.teacher-cache-only True"
stage report "$REPORT_S" $PY -m featurenerf_ns.scripts.study_cli report --out "$WORK/study"
for f in results.md "results/pck_$CATEGORY.png" "results/curves_$CATEGORY.png"; do
  if [ -f "$WORK/study/$f" ]; then cp "$WORK/study/$f" "$OUT/"; fi
done
if [ -d "$WORK/study" ]; then $UTIL pack-study "$WORK/study" "$OUT/study.tar.gz"; fi
finish
