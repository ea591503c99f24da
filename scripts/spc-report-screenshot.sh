#!/usr/bin/env bash
# Render `usan spc --report` in headless Chromium and save a screenshot, to
# check that the report opens in a browser with no network and no errors.
#
#   scripts/spc-report-screenshot.sh [OUT_DIR]      (default target/spc-report)
#
# Needs Debian's chromium (`apt-get install chromium`). Writes OUT_DIR/report.html,
# OUT_DIR/report.png and OUT_DIR/chromium.log; fails when Chromium logs a
# console error or writes no screenshot.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-target/spc-report}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BROWSER="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$BROWSER" ] || { echo "no chromium on PATH (apt-get install chromium)" >&2; exit 1; }
cargo build --release --quiet
python3 - "$OUT/parts.csv" <<'PY'
import random, sys
random.seed(7)
with open(sys.argv[1], "w") as f:
    f.write("time,batch,diameter\n")
    for i in range(200):
        shift = 0.25 if i >= 160 else 0.0
        f.write(f"{i},{i // 5},{10 + random.gauss(0, 0.1) + shift:.4f}\n")
PY
./target/release/usan spc "$OUT/parts.csv" --column diameter --chart xbar-r --subgroup 5 \
  --spec 9.6,10.4 --baseline 30 --report "$OUT/report.html" > "$OUT/summary.txt"
rm -f "$OUT/report.png"
"$BROWSER" --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
  --enable-logging=stderr --v=0 --window-size=1100,2400 \
  --screenshot="$OUT/report.png" "file://$OUT/report.html" > "$OUT/chromium.log" 2>&1 || true
[ -s "$OUT/report.png" ] || { echo "no screenshot; see $OUT/chromium.log" >&2; exit 1; }
if grep -E "CONSOLE.*(Error|error)|Uncaught" "$OUT/chromium.log"; then
  echo "the report logged errors in Chromium" >&2
  exit 1
fi
echo "rendered: $OUT/report.png ($(stat -c %s "$OUT/report.png") bytes)"
