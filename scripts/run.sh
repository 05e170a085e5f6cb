#!/usr/bin/env bash
# Set up, then launch TransferLab. `scripts/run.sh --demo` trains on the bundled demo dataset headless;
# any other arguments go to main.py (e.g. `scripts/run.sh train DATA --out RUN`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${1:-}" = "--demo" ]; then
  shift
  exec .venv/bin/python main.py demo "$@"
fi
exec .venv/bin/python main.py "$@"
