#!/usr/bin/env bash
# A fixed-seed behaviour fingerprint of a checkout, for refactors that must not change behaviour (issue 15):
# 10 procedural chairs at 32 px, featurenerf-tiny for 40 steps in float32 with a random-weight 56 px teacher,
# then ns-eval (every correspondence metric, teacher-2D and the priors) -> one JSON of metrics.
#
#   scripts/behaviour_fingerprint.sh [CHECKOUT] [OUT.json]          # CHECKOUT: default this repository
#   scripts/behaviour_fingerprint.sh --compare A.json B.json        # lists the values that differ (timings ignored)
#
# The checkout's package is put first on PYTHONPATH, so an older commit (git worktree) runs with this venv.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${VENV:-$HERE/.venv}/bin"
if [ "${1:-}" = "--compare" ]; then
  exec "$PY/python" - "$2" "$3" <<'PYEOF'
import json, math, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
a, b = a.get("results", a), b.get("results", b)
timing = ("fps", "num_rays_per_sec")  # ns-eval's speed figures (and their _std)
keys = sorted(k for k in set(a) | set(b) if not k.startswith(timing))
diff = [k for k in keys if not (k in a and k in b and (a[k] == b[k] or (isinstance(a[k], float) and isinstance(b[k], float) and math.isnan(a[k]) and math.isnan(b[k]))))]
for k in diff:
    print(f"{k}: {a.get(k, '<missing>')!r} -> {b.get(k, '<missing>')!r}")
print(f"{len(keys)} values compared (timings ignored), {len(diff)} differ")
sys.exit(1 if diff else 0)
PYEOF
fi
REPO="$(cd "${1:-$HERE}" && pwd)"
OUT="$(realpath -m "${2:-fingerprint.json}")"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# a copy of the checkout's package; one older than the venv's entry points (no n3f methods) gets aliases for them
mkdir -p "$TMP/pkg" && cp -r "$REPO/featurenerf_ns" "$TMP/pkg/"
grep -q "^n3f_tiny = " "$TMP/pkg/featurenerf_ns/method_configs.py" \
  || echo "n3f = n3f_tiny = featurenerf_tiny  # fingerprint only: entry points of a newer install" \
  >> "$TMP/pkg/featurenerf_ns/method_configs.py"
export PYTHONPATH="$TMP/pkg${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=offline HF_HUB_OFFLINE=1
cd "$TMP"
"$PY/featurenerf-data" procedural --category chair --num-instances 10 --out "$TMP/data" > "$TMP/data.log" 2>&1
"$PY/ns-train" featurenerf-tiny --data "$TMP/data/chair" --output-dir "$TMP/runs" --experiment-name fp --timestamp s0 \
  --vis tensorboard --max-num-iterations 40 --machine.seed 0 --pipeline.datamanager.seed 0 \
  --pipeline.max-train-minutes None --pipeline.datamanager.image-size 32 --pipeline.model.precision float32 \
  --pipeline.datamanager.teacher.weights random --pipeline.datamanager.teacher.input-size 56 \
  --pipeline.correspondence.callback-every 1000000 > "$TMP/train.log" 2>&1 || { tail -20 "$TMP/train.log"; exit 1; }
"$PY/ns-eval" --load-config "$TMP/runs/fp/featurenerf-tiny/s0/config.yml" --output-path "$OUT" > "$TMP/eval.log" 2>&1 \
  || { tail -20 "$TMP/eval.log"; exit 1; }
echo "fingerprint of $REPO ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')): $OUT"
