#!/bin/bash
# Stress: writer threads race merging and unmerging on real memory.
#
#   scripts/stress.sh                 300 s over 256 MiB (STRESS_SECONDS, STRESS_SIZE_MIB,
#                                     STRESS_WRITERS, STRESS_BUILD_DIR override; CI runs it
#                                     with ~45 s)
#
# Builds pksm-stress with meson (build dir `build`), runs it, and fails unless
# it reports zero lost writes and zero integrity errors. Every process it
# starts is ended by PID, even on interruption.
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${STRESS_SECONDS:-300}
SIZE_MIB=${STRESS_SIZE_MIB:-256}
WRITERS=${STRESS_WRITERS:-2}
BUILD=${STRESS_BUILD_DIR:-build}

bash scripts/setup.sh >/dev/null || { echo "stress: set-up failed"; exit 1; }
if [[ ! -f $BUILD/build.ninja ]]; then
  meson setup "$BUILD" >/dev/null || { echo "stress: meson setup failed"; exit 1; }
fi
meson compile -C "$BUILD" core/linux/pksm-stress >/dev/null || { echo "stress: build failed"; exit 1; }

log=$(mktemp)
child=
cleanup() {
  if [[ -n $child ]] && kill -0 "$child" 2>/dev/null; then kill -TERM "$child" 2>/dev/null; sleep 1; kill -KILL "$child" 2>/dev/null; fi
  rm -f "$log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "stress: ${SECONDS_TO_RUN}s, ${SIZE_MIB} MiB, ${WRITERS} writers"
timeout --kill-after=10 $((SECONDS_TO_RUN + 300)) \
  "$BUILD"/core/linux/pksm-stress --seconds "$SECONDS_TO_RUN" --size-mib "$SIZE_MIB" --writers "$WRITERS" \
  > >(tee "$log") 2>&1 &
child=$!
wait "$child"
rc=$?
child=
sleep 0.2  # let tee flush
if ! grep -q '^stress: lost_writes 0 integrity_errors 0$' "$log"; then
  echo "stress: FAILED (lost writes or integrity errors, or no result line; exit $rc)"
  exit 1
fi
if [[ $rc -ne 0 ]]; then echo "stress: FAILED (exit $rc)"; exit 1; fi
echo "stress: OK"
