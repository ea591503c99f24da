#!/usr/bin/env bash
# Run the fuzz targets (every parser of outside input, see src/fuzzing.rs)
# for SECONDS each, from the seeds in fuzz/seeds and the regressions in
# fuzz/regressions; the corpus grows in fuzz/corpus (not committed).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # 15 s each by default (CI: 12)
#   FUZZ_RUNS=10000000 scripts/fuzz.sh 7200 T # stop T after 10 M inputs
#
# A crash stops the run with the input in fuzz/artifacts/TARGET/: copy it to
# fuzz/regressions/TARGET/, fix the parser, and `cargo test --lib fuzzing`
# replays it from then on. Needs nightly Rust and cargo-fuzz (installed
# here when missing). Built without a sanitizer: usan's own code forbids
# `unsafe` outside usan-core's kernels, so a panic is what there is to find.
set -euo pipefail
cd "$(dirname "$0")/.."
# The spool and CSV targets write files: keep them in memory when we can.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
runs_limit=()
[ -n "${FUZZ_RUNS:-}" ] && runs_limit=(-runs="$FUZZ_RUNS")
seconds="${1:-15}"
shift || true
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(ls fuzz/fuzz_targets | sed 's/\.rs$//')
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo +nightly fuzz build -s none --release
for target in "${targets[@]}"; do
  corpora=("fuzz/corpus/$target" "fuzz/seeds/$target")
  [ -d "fuzz/regressions/$target" ] && corpora+=("fuzz/regressions/$target")
  mkdir -p "fuzz/corpus/$target"
  log="$(mktemp)"
  if ! cargo +nightly fuzz run -s none --release "$target" "${corpora[@]}" -- \
      -max_total_time="$seconds" "${runs_limit[@]}" -print_final_stats=1 -rss_limit_mb=2048 >"$log" 2>&1; then
    grep -E "panicked at|^thread|index out|memory allocation|fatal runtime|ERROR: libFuzzer|Failing input|crash-|oom-|timeout-" "$log" | head -20
    echo "fuzz: $target FAILED; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
  secs=$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | grep -Eo '[0-9]+ second' | grep -Eo '[0-9]+' || echo "$seconds")
  echo "fuzz: $target: $runs inputs in ${secs} s, no failure"
  rm -f "$log"
done
