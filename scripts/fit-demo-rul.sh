#!/usr/bin/env bash
# Refit the demo's remaining-useful-life model (examples/models/fd001_demo.rul.json)
# from NASA C-MAPSS FD001 (public domain), leaving out the ten engines the demo
# replays so that the demo predicts engines the model has never seen.
#
#   scripts/fit-demo-rul.sh [CMAPSS_DIR]   (default ../shared/data/cmapss)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/cmapss}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
DEMO_UNITS=" 8 24 39 57 58 65 70 77 90 91 "
awk -v demo="$DEMO_UNITS" 'index(demo, " " $1 " ") == 0' "$DATA/train_FD001.txt" > "$WORK/train.txt"
cat > "$WORK/spec.toml" <<TOML
out = "$PWD/examples/models/fd001_demo.rul.json"
[history]
path = "train.txt"
format = "cmapss"
[model]
learner = "trees"
interval_folds = 3
[model.trees]
trees = 120
learning_rate = 0.12
leaves = 15
TOML
cargo run --release --quiet -- fit rul --config "$WORK/spec.toml"
