#!/usr/bin/env bash
# Creates ./.venv (or $VENV) and installs featurenerf_ns with the pinned torch/torchvision that run on CPU.
# Usage: bash scripts/install.sh [extras]   e.g. bash scripts/install.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
extras="${1:-}"
target="."
[ -n "$extras" ] && target=".[$extras]"
start=$(date +%s)
rm -rf featurenerf_ns.egg-info  # a stale one in the source tree would shadow the installed entry points (python -m from here)
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e "$target" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
"$VENV/bin/python" -c "import featurenerf_ns, torch, torchvision, nerfstudio" \
  || { echo "install.sh: install into $VENV failed (see pip output above)"; exit 1; }
echo "install.sh: $VENV ready in $(( $(date +%s) - start )) s (torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
