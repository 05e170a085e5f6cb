#!/usr/bin/env bash
# Build the standalone one-folder app with PyInstaller: $TL_DIST/TransferLab/TransferLab (default dist/).
#
#   bash scripts/build.sh                    # .venv (set up by scripts/setup.sh), output in dist/TransferLab/
#   TL_DIST=/tmp/tl-dist TL_BUILD=/tmp/tl-build bash scripts/build.sh    # build outside the source tree
#   TL_PYTHON=/path/to/cpu-venv/bin/python bash scripts/build.sh        # another environment (CPU-only torch)
#   TL_ONEFILE=1 / TL_DEBUG=1                # see build.spec
#
# Once PyInstaller is installed the build needs no network; with this machine's CUDA torch it takes
# about 3 minutes and 4.3 GiB.
set -euo pipefail
cd "$(dirname "$0")/.."

DIST=${TL_DIST:-dist}
WORK=${TL_BUILD:-build}
if [ -n "${TL_PYTHON:-}" ]; then
  PY=$TL_PYTHON
else
  bash scripts/setup.sh
  PY=.venv/bin/python
fi
"$PY" -c "import PyInstaller" 2>/dev/null || "$PY" -m pip install -q -e ".[build]"

rm -rf "${DIST:?}/TransferLab"   # a stale bundle must never pass for a fresh one
start=$(date +%s)
"$PY" -m PyInstaller --noconfirm --log-level WARN --distpath "$DIST" --workpath "$WORK" build.spec
echo "build: $DIST/TransferLab in $(( $(date +%s) - start )) s, $(du -sh "$DIST/TransferLab" | cut -f1)"
