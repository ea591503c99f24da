#!/usr/bin/env bash
# Remaining useful life on C-MAPSS: usan next to the LightGBM peer, in one run.
#
#   scripts/bench-rul.sh [CMAPSS_DIR] [PEER_PYTHON]
#
# Runs the official FD001 test set, then development splits of all four
# subsets (scripts/cmapss-dev-split.py: every fifth training unit held out and
# cut), each through `usan eval cmapss` and ../shared/bench/peers/cmapss_peers.py,
# scored by ../shared/bench/score_cmapss.py with the truth capped at 125.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/cmapss}"
PY="${2:-.venv-bench/bin/python}"
BENCH="../shared/bench"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

cargo build --release --quiet
python3 scripts/cmapss-dev-split.py "$DATA" "$OUT/dev" > /dev/null
run() { # run NAME DATA_DIR SUBSET
  local name=$1 dir=$2 subset=$3
  ./target/release/usan eval cmapss "$dir" --subset "$subset" --out "$OUT/$name/${subset}_usan.csv" \
    | grep -E "^fit |learner|inside"
  echo "usan  $name $subset: $("$PY" "$BENCH/score_cmapss.py" "$OUT/$name/${subset}_usan.csv" "$dir/RUL_$subset.txt" --cap-truth 125 | head -1)"
  echo "usan  $name $subset raw truth: $("$PY" "$BENCH/score_cmapss.py" "$OUT/$name/${subset}_usan.csv" "$dir/RUL_$subset.txt" | head -1)"
  if [ -x "$PY" ]; then
    "$PY" "$BENCH/peers/cmapss_peers.py" "$dir" "$OUT/$name" --subset "$subset" --model lgbm > /dev/null
    echo "lgbm  $name $subset: $("$PY" "$BENCH/score_cmapss.py" "$OUT/$name/${subset}_lgbm.csv" "$dir/RUL_$subset.txt" --cap-truth 125 | head -1)"
    echo "lgbm  $name $subset raw truth: $("$PY" "$BENCH/score_cmapss.py" "$OUT/$name/${subset}_lgbm.csv" "$dir/RUL_$subset.txt" | head -1)"
  fi
}
if [ -f "$DATA/test_FD001.txt" ] && [ -f "$DATA/RUL_FD001.txt" ]; then
  run official "$DATA" FD001
fi
for subset in FD001 FD002 FD003 FD004; do
  run dev "$OUT/dev" "$subset"
done
