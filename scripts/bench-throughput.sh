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
echo "## usan (release build; one thread, but batch \`score_values\` rows use every core)"
./target/release/usan bench detectors --rows "$ROWS" --dims 8,52
if [ -x "$PY" ] && [ -f "$PEERS" ]; then
  for dims in 8 52; do
    echo
    echo "## Python peers, D=$dims (OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1)"
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$PY" "$PEERS" --rows "$ROWS" --dims "$dims" --only pca,iforest,hst
    # throughput.py pins the peers to one thread; usan's batch rows use every
    # core, so the peers' batch methods are also shown on every core.
    echo "## Python peers, D=$dims, every core"
    OMP_NUM_THREADS="$(nproc)" OPENBLAS_NUM_THREADS="$(nproc)" "$PY" "$PEERS" --rows "$ROWS" --dims "$dims" --only pca
    "$PY" - "$PEERS" "$ROWS" "$dims" <<'PY'
import os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))
from throughput import make_data
from sklearn.ensemble import IsolationForest
rows, dims = int(sys.argv[2]), int(sys.argv[3])
x = make_data(rows, dims)
model = IsolationForest(n_estimators=100, max_samples=256, n_jobs=-1, random_state=0).fit(x[:min(rows, 2000)])
t0 = time.perf_counter()
model.score_samples(x)
seconds = time.perf_counter() - t0
print(f"iforest  score_samples, n_jobs=-1 ({os.cpu_count()} cores)  score {seconds:.3f} s  {rows / seconds:,.0f} rows/s")
PY
  done
else
  echo "(peers skipped: no $PY or $PEERS)"
fi
