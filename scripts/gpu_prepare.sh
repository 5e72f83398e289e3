#!/usr/bin/env bash
# Prepares, HERE (a CPU machine with PyPI), what scripts/gpu_check.sh needs on the device machine, which reaches no
# registry and gets the working tree plus the carried folders (64 MiB in all):
#   .whl/      the cp312 manylinux wheels of scripts/gpu/wheels.txt: what ns-train, featurenerf-bench and
#              featurenerf-study import and the device image lacks (scripts/gpu/image_packages.txt)
#   .gpudata/  shapenet_chair.tar.xz: procedural chairs at 128 px (the paper preset's size) with their DINOv2 teacher
#              cache, so no teacher weights travel (the runs read the cache with
#              --pipeline.datamanager.teacher-cache-only True)
# then prints what would travel and refuses above LIMIT_MIB.
#
#   bash scripts/gpu_prepare.sh          # INSTANCES=20 TRAIN_VIEWS=12 LIMIT_MIB=60 PY=.venv/bin/python
#
# Then one `run` call: command "bash scripts/gpu_check.sh", carry [".whl", ".gpudata"], timeout_s 560.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
INSTANCES=${INSTANCES:-20}
TRAIN_VIEWS=${TRAIN_VIEWS:-12}
LIMIT_MIB=${LIMIT_MIB:-60}
CATEGORY=chair
BUILD=outputs/gpu_prepare  # ignored by git, travels not
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's package, whatever the venv's install points at

[ -x "$PY" ] || { echo "gpu_prepare.sh: $PY not found; run 'bash scripts/install.sh' first or set PY=<python>"; exit 1; }
for d in .whl .gpudata; do
  git check-ignore -q "$d/x" || { echo "gpu_prepare.sh: $d is not ignored by git; add /$d/ to .gitignore"; exit 1; }
done

# ---------------------------------------------------------------- wheels
echo "== wheels -> .whl/ (Python 3.12, manylinux x86-64)"
mkdir -p .whl
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64)
mapfile -t REQS < <(sed 's/#.*//' scripts/gpu/wheels.txt | awk 'NF {print $1}')
norm() { echo "$1" | tr 'A-Z_.' 'a-z--'; }
keep=()
for req in "${REQS[@]}"; do
  name=${req%%==*} ver=${req##*==}
  have=$("$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$name" 2>/dev/null || echo none)
  [ "$have" = "$ver" ] || echo "   note: $name: the project's venv has $have, the device gets $ver (scripts/gpu/wheels.txt)"
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLAT[@]}" -d .whl "$req" 2>&1 | grep -v "is ignored: it is neither" || true
  keep+=("$(norm "$name")-$ver")
done
for f in .whl/*.whl; do  # one version of each, and nothing else: two stop the whole install there
  b=$(basename "$f"); id="$(norm "${b%%-*}")-$(echo "$b" | cut -d- -f2)"
  [[ " ${keep[*]} " == *" $id "* ]] || { echo "   removing $b (not in scripts/gpu/wheels.txt)"; rm -f "$f"; }
done
n=$(ls .whl/*.whl | wc -l)
[ "$n" -eq "${#REQS[@]}" ] || { echo "gpu_prepare.sh: .whl has $n wheels for ${#REQS[@]} pins; see the pip errors above"; exit 1; }

# ---------------------------------------------------------------- data + teacher cache
echo "== data: $CATEGORY, $INSTANCES instances, $TRAIN_VIEWS views per train instance, 128 px, + DINOv2 cache"
settings="$CATEGORY $INSTANCES $TRAIN_VIEWS"
if [ "$(cat "$BUILD/settings.txt" 2>/dev/null)" != "$settings" ]; then rm -rf "$BUILD"; fi
mkdir -p "$BUILD"
"$PY" -m featurenerf_ns.scripts.weights dinov2-vits14 >/dev/null  # a no-op when cached and verified
"$PY" -m featurenerf_ns.scripts.data procedural --category "$CATEGORY" --num-instances "$INSTANCES" \
  --train-views "$TRAIN_VIEWS" --out "$BUILD/shapenet"
"$PY" -m featurenerf_ns.scripts.teacher cache --data "$BUILD/shapenet/$CATEGORY"
echo "$settings" >"$BUILD/settings.txt"
mkdir -p .gpudata
rm -f .gpudata/*.tmp
"$PY" - "$BUILD/shapenet" ".gpudata/.shapenet_$CATEGORY.tar.xz.tmp" <<'EOF'
import sys, tarfile  # xz: the teacher maps' zeroed background compresses them to about a third
with tarfile.open(sys.argv[2], "w:xz", preset=9) as tar:
    tar.add(sys.argv[1], arcname="shapenet")
EOF
mv -f ".gpudata/.shapenet_$CATEGORY.tar.xz.tmp" ".gpudata/shapenet_$CATEGORY.tar.xz"

# ---------------------------------------------------------------- what travels
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
tree=$(git ls-files -z -co --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
[ -d shared ] && tree=$((tree + $(du -sb shared | cut -f1)))
whl=$(du -sb .whl | cut -f1)
data=$(du -sb .gpudata | cut -f1)
total=$((tree + whl + data))
echo "== what travels: working tree $(mib "$tree") MiB + .whl $(mib "$whl") MiB ($n wheels) + .gpudata $(mib "$data") MiB" \
  "= $(mib "$total") MiB (limit 64, refused here above $LIMIT_MIB)"
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "gpu_prepare.sh: $(mib "$total") MiB would travel, over $LIMIT_MIB; lower INSTANCES / TRAIN_VIEWS and re-run"
  exit 1
fi
echo "ready: run(command=\"bash scripts/gpu_check.sh\", carry=[\".whl\", \".gpudata\"], timeout_s=560)"
