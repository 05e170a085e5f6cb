#!/usr/bin/env bash
# One command for a machine with a CUDA GPU (repo root, no internet needed): set up .venv if needed, show
# the GPU, run the test suite with CUDA visible, then bench/gpu_check.py (training and inference images/s on
# CUDA with and without AMP and on the CPU; a GPU-trained model's predictions checked on the CPU).
# Results: $OUT/gpu-check.json (and the suite's log) when OUT is set, else bench/out/.
#   bash bench/gpu_check.sh            # the whole check: about 8 minutes on an H200
#   bash bench/gpu_check.sh --quick    # tiny settings, no test suite: a smoke test (also on a CPU-only machine)
set -uo pipefail
cd "$(dirname "$0")/.."
QUICK=""; [ "${1:-}" = "--quick" ] && QUICK="--quick"
DEST=${OUT:-bench/out}
mkdir -p "$DEST"
status=0

[ -x .venv/bin/python ] || bash scripts/setup.sh || { echo "gpu_check: setup failed"; exit 1; }
PY=.venv/bin/python

echo "== GPU"
if command -v nvidia-smi >/dev/null && nvidia-smi; then :; else echo "nvidia-smi: no CUDA device: skipped"; fi
$PY -c "import torch; print('torch', torch.__version__, 'sees', torch.cuda.device_count(), 'CUDA GPU(s)')"

echo "== test suite"
if [ -n "$QUICK" ]; then
  echo "test suite: skipped (--quick)"
else
  # at most 4 minutes, so the benchmark below still runs within the machine's time
  QT_QPA_PLATFORM=offscreen timeout 240 $PY -m pytest -q -x -p no:cacheprovider 2>&1 | tee "$DEST/gpu-check-tests.log" | tail -25
  rc=${PIPESTATUS[0]}
  echo "test suite exit status: $rc (124: stopped at the time limit)"
  [ "$rc" -eq 0 ] || status=1
fi

echo "== training and inference"
OUT="$DEST" $PY bench/gpu_check.py $QUICK --out "$DEST/gpu-check.json" || status=1
exit $status
