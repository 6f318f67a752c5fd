#!/bin/bash
# The whole pksm test suite, as CI runs it (.ci/run calls this).
#
#   scripts/test.sh            everything: set-up, build, unit + host tests,
#                              sanitizer builds, real-guest system tests,
#                              libvirt tests, a short stress run
#   scripts/test.sh --fast     build + unit + host tests only (developer loop)
#
# Ends with one line "test.sh: N passed, N failed" and exits non-zero if any
# test failed or any step could not run.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FAST=0; [[ ${1:-} == --fast ]] && FAST=1

bash scripts/setup.sh --libvirt || { echo "test.sh: set-up failed"; echo "test.sh: 0 passed, 1 failed"; exit 1; }

PASSED=0; FAILED=0; STEPS_FAILED=()
note_fail() { STEPS_FAILED+=("$1"); }

# meson_suite BUILD_DIR LABEL SUITE...: runs the suites, adds meson's counts.
meson_suite() {
  local dir=$1 label=$2; shift 2
  local args=(); for s in "$@"; do args+=(--suite "$s"); done
  echo "=== $label"
  local log; log=$(mktemp)
  meson test -C "$dir" --print-errorlogs --num-processes 2 "${args[@]}" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local ok fail
  ok=$(awk '/^Ok:/ {print $2}' "$log" | tail -1); fail=$(awk '/^Fail:/ {print $2}' "$log" | tail -1)
  local to; to=$(awk '/^Timeout:/ {print $2}' "$log" | tail -1)
  rm -f "$log"
  PASSED=$((PASSED + ${ok:-0})); FAILED=$((FAILED + ${fail:-0} + ${to:-0}))
  if [[ $rc -ne 0 ]]; then note_fail "$label"; [[ -z $fail || $fail == 0 ]] && FAILED=$((FAILED + 1)); fi
}

# build DIR [meson options...]
build() {
  local dir=$1; shift
  if [[ ! -f $dir/build.ninja ]]; then
    meson setup "$dir" "$@" >/dev/null || return 1
  fi
  meson compile -C "$dir" || return 1
}

# pytest_dir LABEL DIR: runs a directory of pytest tests, adds the counts.
pytest_dir() {
  local label=$1 dir=$2
  echo "=== $label"
  local log; log=$(mktemp)
  PKSM_BUILD="$ROOT/build" /usr/bin/python3 -m pytest -q -rfE -p no:cacheprovider "$dir" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local line; line=$(grep -E '^(=+ )?[0-9]+ (passed|failed)|(passed|failed).* in [0-9.]+s' "$log" | tail -1)
  local p f e
  p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+'); f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+')
  e=$(grep -oE '[0-9]+ error' <<<"$line" | grep -oE '[0-9]+')
  rm -f "$log"
  PASSED=$((PASSED + ${p:-0})); FAILED=$((FAILED + ${f:-0} + ${e:-0}))
  if [[ $rc -ne 0 ]]; then note_fail "$label"; [[ -z ${f:-} && -z ${e:-} ]] && FAILED=$((FAILED + 1)); fi
}

if build build; then
  meson_suite build "unit + host tests" unit host
else
  note_fail "build"; FAILED=$((FAILED + 1))
fi

if [[ $FAST == 0 ]]; then
  # ASan + UBSan over everything that runs in-process; TSan over the threaded parts.
  if build build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug; then
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      meson_suite build-asan "unit + host tests (ASan+UBSan)" unit host
  else
    note_fail "ASan build"; FAILED=$((FAILED + 1))
  fi
  if build build-tsan -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug; then
    TSAN_OPTIONS=halt_on_error=1 meson_suite build-tsan "threaded tests (TSan)" tsan
  else
    note_fail "TSan build"; FAILED=$((FAILED + 1))
  fi
  # Short stress: writers racing merges and unmerges on real memory.
  if [[ -x scripts/stress.sh ]]; then
    echo "=== stress (short)"
    if STRESS_SECONDS=${STRESS_SECONDS:-45} bash scripts/stress.sh; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); note_fail stress; fi
  fi
  # Real guests under QEMU (TCG), then libvirt.
  [[ -d tests/system ]] && ls tests/system/test_*.py >/dev/null 2>&1 && pytest_dir "system tests (QEMU guests)" tests/system
  [[ -d tests/libvirt ]] && ls tests/libvirt/test_*.py >/dev/null 2>&1 && pytest_dir "libvirt tests" tests/libvirt
fi

if ((${#STEPS_FAILED[@]})); then echo "failed steps: ${STEPS_FAILED[*]}"; fi
echo "test.sh: $PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 && ${#STEPS_FAILED[@]} -eq 0 ]]
