#!/usr/bin/env bash
# The README's text table: head only (defaults, again with cached vectors, lr 1e-2 x30), the last 2 layers,
# everything, on 8 categories of Debian's fortunes. Prints "recipe seconds {train's summary line}".
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-/tmp/fortunes8.csv}
out=${2:-/tmp/bench-text}
.venv/bin/python bench/fortunes_csv.py "$data" computers,food,law,love,science,sports,startrek,politics 140
export TRANSFERLAB_CACHE_DIR="$out/cache"
rm -rf "$out"; mkdir -p "$out"
run() {
  local name=$1; shift
  local start; start=$(date +%s.%N)
  local line; line=$(.venv/bin/python main.py train "$data" --out "$out/$name" "$@" 2>/dev/null | tail -1)
  echo "$name $(echo "$(date +%s.%N) - $start" | bc) $line"
}
run head --epochs 10
run head_again --epochs 10
run head_lr1e2 --epochs 30 --lr 1e-2
run last2 --freeze all-but-last-2 --lr 1e-3 --epochs 4
run full --freeze none --lr 1e-3 --epochs 3
