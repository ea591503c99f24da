#!/usr/bin/env bash
# Everything `usan eval`, `usan fit` and `usan score` write on the shipped
# samples and the public datasets, in one folder, so that two builds can be
# compared byte for byte after a change that must not alter behaviour:
#
#   scripts/compare-outputs.sh OLD_USAN /tmp/before [DATA]
#   scripts/compare-outputs.sh target/release/usan /tmp/after [DATA]
#   diff -r /tmp/before /tmp/after        # empty when nothing changed
#
# DATA is ../shared/data by default (SKAB, NAB, TEP, C-MAPSS, SECOM, steel
# plates); a dataset missing there is skipped. Wall-time lines are dropped
# from the captured standard output and times blanked.
set -euo pipefail
USAN="$(realpath "$1")"
OUT="$2"
cd "$(dirname "$0")/.."
DATA="${3:-../shared/data}"
rm -rf "$OUT"
mkdir -p "$OUT"
OUT="$(realpath "$OUT")"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Standard output with times blanked out (`0.066 s` → `<time>`, rates
# dropped) and the output folder named `<out>`.
keep() {
  grep -Ev 'wall time|rows/s|windows/s' | sed -E -e 's/[0-9]+(\.[0-9]+)? ?(ms|s|µs)\b/<time>/g' -e "s#$OUT#<out>#g" || true
}

# The shipped TEP sample cut into the benchmark's files (as tests/it/eval.rs does).
mkdir -p "$WORK/tep"
python3 - "$WORK/tep" <<'PY'
import sys
rows = [l.split(",")[2:] for l in open("tests/data/tep/tep_normal_then_idv1.csv").read().splitlines()[1:]]
def write(name, rs):
    open(f"{sys.argv[1]}/{name}", "w").write("".join("  " + "  ".join(r) + "\n" for r in rs))
write("d00.dat", [[r[j] for r in rows[:500]] for j in range(52)])
write("d00_te.dat", rows[500:800])
write("d01.dat", rows[800:1000])
PY
"$USAN" eval tep "$WORK/tep" --out "$OUT/eval-tep-sample" | keep > "$OUT/eval-tep-sample.txt"

# fit and score on the demo's engines and on the TEP sample.
"$USAN" fit --config examples/demo.toml --data examples/data/cmapss_fd001_demo.csv --out "$OUT/fit-demo" --rows 40 \
  2>/dev/null | keep > "$OUT/fit-demo.txt"
"$USAN" score --config examples/demo.toml --data examples/data/cmapss_fd001_demo.csv --models "$OUT/fit-demo" \
  --out "$OUT/score-demo.csv" 2>/dev/null | keep > "$OUT/score-demo.txt"
if [ -f examples/tep.toml ]; then
  "$USAN" fit --config examples/tep.toml --data tests/data/tep/tep_normal_then_idv1.csv --out "$OUT/fit-tep" \
    --rows 500 2>/dev/null | keep > "$OUT/fit-tep.txt" || echo "fit tep: exit $?" > "$OUT/fit-tep.txt"
  if [ -d "$OUT/fit-tep" ]; then
    "$USAN" score --config examples/tep.toml --data tests/data/tep/tep_normal_then_idv1.csv --models "$OUT/fit-tep" \
      --out "$OUT/score-tep.csv" 2>/dev/null | keep > "$OUT/score-tep.txt"
  fi
fi

# SPC on a shipped column.
"$USAN" spc examples/data/cmapss_fd001_demo.csv --column s11 --baseline 40 --json > "$OUT/spc-demo.json"
"$USAN" spc examples/data/cmapss_fd001_demo.csv --column s11 --chart ewma --spec 47,48 > "$OUT/spc-demo.txt"
"$USAN" spc tests/data/tep/tep_normal_then_idv1.csv --column xmeas_1,xmeas_2,xmeas_3 --chart t2 --baseline 500 \
  > "$OUT/spc-tep-t2.txt"

# The public benchmarks, where present.
if [ -d "$DATA/tep" ]; then
  "$USAN" eval tep "$DATA/tep" --out "$OUT/eval-tep" | keep > "$OUT/eval-tep.txt"
fi
if [ -d "$DATA/skab" ]; then
  "$USAN" eval skab "$DATA/skab" --out "$OUT/eval-skab" | keep > "$OUT/eval-skab.txt"
fi
if [ -d "$DATA/nab" ]; then
  "$USAN" eval nab "$DATA/nab" --out "$OUT/eval-nab" | keep > "$OUT/eval-nab.txt"
fi
if [ -f "$DATA/cmapss/train_FD001.txt" ]; then
  "$USAN" eval cmapss "$DATA/cmapss" --subset FD001 --out "$OUT/eval-cmapss/FD001.csv" | keep > "$OUT/eval-cmapss.txt"
fi
if [ -d "$DATA/secom" ]; then
  "$USAN" eval secom "$DATA/secom" --out "$OUT/eval-secom" | keep > "$OUT/eval-secom.txt"
fi
if [ -d "$DATA/steel_plates" ]; then
  "$USAN" eval steel "$DATA/steel_plates" | keep > "$OUT/eval-steel.txt"
fi
echo "outputs in $OUT"
