#!/usr/bin/env bash
# usan and onnxruntime on the same ONNX packages and rows, in one run
# (BENCHMARKS.md, "ONNX models"). Needs a release build and the ONNX venv:
#
#   cargo build --release
#   python3 -m venv .venv-onnx && .venv-onnx/bin/pip install -r scripts/onnx/requirements.txt
#   .venv-onnx/bin/python scripts/onnx/make_models.py target/onnx-models
#   scripts/onnx/bench.sh [ROWS] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/../.."
rows="${1:-200000}"
batch="${2:-1024}"
models=(
  target/onnx-models/skl_random_forest_regressor
  target/onnx-models/skl_random_forest_classifier
  target/onnx-models/skl_hist_gradient_boosting_classifier_nan
  target/onnx-models/lgbm_classifier_multiclass
  target/onnx-models/lgbm_regressor
  target/onnx-models/xgb_regressor
  target/onnx-models/skl_isolation_forest
  target/onnx-models/skl_imputer_scaler_logistic_binary
  target/onnx-models/skl_mlp_classifier
  tests/data/onnx/torch/torch_dynamo_autoencoder
  tests/data/onnx/torch/torch_torchscript_lstm
  tests/data/onnx/torch/torch_torchscript_conv1d
)
echo "== usan $(git rev-parse --short HEAD) and onnxruntime $(.venv-onnx/bin/python -c 'import onnxruntime; print(onnxruntime.__version__)'), $(nproc) cores"
# Each model in its own process, so that peak memory is that model's; usan
# and onnxruntime one after the other on each model, so that a drift of
# this machine's speed touches both.
printf '%-48s %9s %7s %12s %13s %12s %10s %10s\n' model rows batch "usan rows/s" "ort 1 thread" "ort default" "usan MiB" "ort MiB"
for m in "${models[@]}"; do
  read -r name n b usan usan_mib < <(target/release/usan bench onnx "$m" --rows "$rows" --batch "$batch" | tail -n +2)
  read -r _ _ _ ort1 ort ort_mib < <(.venv-onnx/bin/python scripts/onnx/bench.py "$rows" "$batch" "$m" | tail -n +2)
  printf '%-48s %9s %7s %12s %13s %12s %10s %10s\n' "$name" "$n" "$b" "$usan" "$ort1" "$ort" "$usan_mib" "$ort_mib"
done
