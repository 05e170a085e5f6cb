#!/usr/bin/env bash
# Build the standalone one-folder app with PyInstaller: $TL_DIST/TransferLab/TransferLab (default dist/),
# in one of two flavours (build.spec, README "Standalone executable"):
#
#   bash scripts/build.sh --cpu     # CPU-only torch: < 1 GB, runs anywhere; built from the CPU venv below
#   bash scripts/build.sh --cuda    # CUDA torch (the default): ~4 GB; built from .venv (scripts/setup.sh)
#   TL_DIST=/tmp/tl-dist TL_BUILD=/tmp/tl-build bash scripts/build.sh --cpu   # build outside the source tree
#   TL_PYTHON=/path/to/venv/bin/python bash scripts/build.sh --cpu   # an environment of your own instead
#   TL_ONEFILE=1 / TL_DEBUG=1                # see build.spec
#
# The CPU venv is $TL_CPU_VENV (default ~/.venvs/transferlab-cpu), made on first use: Python 3.11, torch
# 2.13.0+cpu (the CPU wheel on this machine's disk), torchvision 0.28.0 --no-deps (PyPI's, a CUDA build whose
# compiled operators cannot load beside a CPU torch: packaging/torchvision_cpu_ops.py), then the project with
# its [build] extra. With TL_CPU_INDEX=URL (e.g. https://download.pytorch.org/whl/cpu) it takes a matching
# CPU torch and torchvision from that index instead.
#
# Once PyInstaller is installed the build needs no network. Measured times and sizes: README.
set -euo pipefail
cd "$(dirname "$0")/.."

FLAVOUR=cuda
case "${1:-}" in
  --cpu) FLAVOUR=cpu ;;
  --cuda | "") FLAVOUR=cuda ;;
  *) echo "usage: bash scripts/build.sh [--cpu | --cuda]" >&2; exit 2 ;;
esac

# The CPU build environment, made once and checked every time: a CUDA torch in it would make a 4 GB bundle.
cpu_venv() {
  local venv=${TL_CPU_VENV:-$HOME/.venvs/transferlab-cpu}
  local py=$venv/bin/python
  if ! "$py" -c "import torch, torchvision.version" 2>/dev/null; then
    echo "build: setting up the CPU venv $venv" >&2
    [ -x "$py" ] || "${TL_CPU_BASE_PYTHON:-python3.11}" -m venv "$venv"
    if [ -n "${TL_CPU_INDEX:-}" ]; then
      "$py" -m pip install -q torch torchvision --index-url "$TL_CPU_INDEX"
    else
      "$py" -m pip install -q torch==2.13.0            # pip takes 2.13.0+cpu, the wheel on this disk
      "$py" -m pip install -q --no-deps torchvision==0.28.0
    fi
  fi
  # The shim that lets a CUDA torchvision import beside a CPU torch (a no-op with a matching one), refreshed
  # every time; the CPU-only check of the spec and the import check below still apply.
  local site
  site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  cp packaging/torchvision_cpu_ops.py "$site/_tl_torchvision_cpu_ops.py"
  echo "import _tl_torchvision_cpu_ops" > "$site/_tl_torchvision_cpu_ops.pth"
  # Every time, as scripts/setup.sh does for .venv: the project's dependencies change (a few seconds when
  # nothing is missing; the torch above already satisfies the project's range, so pip keeps it).
  "$py" -m pip install -q -e ".[build]" >&2
  "$py" - <<'EOF' >&2 || exit 1
import torch, torchvision
from torchvision.transforms import v2
assert torch.version.cuda is None, f"the CPU venv has a CUDA torch ({torch.__version__})"
print(f"build: CPU venv with torch {torch.__version__}, torchvision {torchvision.__version__}")
EOF
  echo "$py"
}

DIST=${TL_DIST:-dist}
WORK=${TL_BUILD:-build}
if [ -n "${TL_PYTHON:-}" ]; then
  PY=$TL_PYTHON
elif [ "$FLAVOUR" = cpu ]; then
  PY=$(cpu_venv)
else
  bash scripts/setup.sh
  PY=.venv/bin/python
fi
"$PY" -c "import PyInstaller" 2>/dev/null || "$PY" -m pip install -q -e ".[build]"

rm -rf "${DIST:?}/TransferLab"   # a stale bundle must never pass for a fresh one
start=$(date +%s)
TL_FLAVOUR=$FLAVOUR "$PY" -m PyInstaller --noconfirm --log-level WARN --distpath "$DIST" --workpath "$WORK/$FLAVOUR" build.spec
echo "build: $FLAVOUR flavour, $DIST/TransferLab in $(( $(date +%s) - start )) s, $(du -sh "$DIST/TransferLab" | cut -f1)"
