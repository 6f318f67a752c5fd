#!/bin/bash
# The engine alone on a built-in sample workload: four identical simulated
# guests (tools/sim/traces/identical-guests.trace) run through pksm-sim,
# showing a progress line per full pass and the result table.
#
#   scripts/sim-demo.sh [pksm-sim options...]     e.g. --mode ksm, --delay 0
#
# Installs dependencies (scripts/setup.sh), builds with meson into ./build,
# then runs build/tools/sim/pksm-sim.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
BUILD=${BUILD_DIR:-build}
if [[ ! -f $BUILD/build.ninja ]]; then
  meson setup "$BUILD" >/dev/null
fi
meson compile -C "$BUILD" tools/sim/pksm-sim

trace=tools/sim/traces/identical-guests.trace
echo "sim-demo: $BUILD/tools/sim/pksm-sim ${*:+$* }$trace"
echo "sim-demo: 4 identical guests of 16 MiB: 37.5% identical OS pages, 25% zero,"
echo "sim-demo: 25% private, 3% one repeated pattern; then 16 writes and a discard"
"$BUILD/tools/sim/pksm-sim" "$@" "$trace"
