#!/usr/bin/env bash
# The crash loop of issue 23 at full length: HTTP clients and an MQTT QoS 1
# publisher stream samples while `usan serve` is killed with SIGKILL at random
# moments and restarted; every acknowledged sample must be stored once, with
# its value, in a store that passes `PRAGMA integrity_check`.
#
#   scripts/crash-loop.sh [ROUNDS] [SEED]     # 100 rounds by default
#
# Needs the machine's Mosquitto on 127.0.0.1:1883. Runs the test binary of a
# release build (CI runs the same test with 10 rounds in a debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
export USAN_CRASH_ROUNDS="${1:-100}"
if [ -n "${2:-}" ]; then export USAN_CRASH_SEED="$2"; fi
exec cargo test --release --locked --test it -- --exact crash::acknowledged_samples_survive_kill_9 --nocapture
