#!/usr/bin/env bash
# Detector scoring throughput: usan next to the Python peers, in one run.
#
#   scripts/bench-throughput.sh [ROWS] [PEER_PYTHON]
#
# PEER_PYTHON is a Python with the peers' packages (see ../shared/bench/README.md:
# `bash ../shared/bench/setup.sh .venv-bench`); the peers are skipped without it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-100000}"
PY="${2:-.venv-bench/bin/python}"
PEERS="${PEERS:-../shared/bench/peers/throughput.py}"

cargo build --release --quiet
echo "## usan (release build, one thread)"
./target/release/usan bench detectors --rows "$ROWS" --dims 8,52
if [ -x "$PY" ] && [ -f "$PEERS" ]; then
  for dims in 8 52; do
    echo
    echo "## Python peers, D=$dims (OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1)"
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$PY" "$PEERS" --rows "$ROWS" --dims "$dims" --only pca,iforest,hst
  done
else
  echo "(peers skipped: no $PY or $PEERS)"
fi
