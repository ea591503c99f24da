#!/usr/bin/env bash
# Five-fold cross-validation of `usan eval cmapss` settings on the training
# file alone (scripts/cmapss-dev-split.py --fold 0..4: every unit held out
# once, cut as NASA cut the test set). Prints each fold's line and the RMSE
# pooled over all held-out units, truth capped at 125. For choosing settings
# without touching a test set.
#
#   scripts/cmapss-cv.sh SETTINGS.toml [SUBSET] [CMAPSS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
SETTINGS="$1"
SUBSET="${2:-FD001}"
DATA="${3:-../shared/data/cmapss}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
cargo build --release --quiet
for fold in 0 1 2 3 4; do
  python3 scripts/cmapss-dev-split.py "$DATA" "$OUT/f$fold" --subsets "$SUBSET" --fold "$fold" > /dev/null
  ${USAN:-./target/release/usan} eval cmapss "$OUT/f$fold" --subset "$SUBSET" --settings "$SETTINGS" \
    --out "$OUT/f$fold/pred.csv" | grep -E "capped|^fit" | sed "s/^/fold $fold: /"
done
python3 - "$OUT" "$SUBSET" <<'PY'
import csv, math, sys
out, subset = sys.argv[1], sys.argv[2]
errors = []
for fold in range(5):
    truth = [min(125.0, float(l)) for l in open(f"{out}/f{fold}/RUL_{subset}.txt") if l.strip()]
    with open(f"{out}/f{fold}/pred.csv") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: int(r["unit"]))
    errors += [float(r["rul"]) - t for r, t in zip(rows, truth)]
rmse = math.sqrt(sum(e * e for e in errors) / len(errors))
print(f"{subset} 5-fold CV: {len(errors)} units, pooled RMSE {rmse:.3f} (truth capped at 125)")
PY
