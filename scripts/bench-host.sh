#!/bin/bash
# The issue 3 benchmark table: pksm-host --compare-kernel-ksm over real
# process memory, pksm beside the kernel's KSM.
#
#   scripts/bench-host.sh [--sizes "256 1024"] [--pages-to-scan 4096]
#                         [--sleep-ms 10] [--raised-map-count 1048576]
#                         [--timeout 300] [--delay 1] [--out DIR]
#
# For each size, mix (zero=25,dup=50,unique=25 and dup=100) and layout
# (scattered, runs of 64) it runs one comparison at the default
# vm.max_map_count; scattered layouts, which need one or two mappings per
# merged page, run a second time with vm.max_map_count raised (restored
# afterwards, also on failure or Ctrl-C). pksm and the kernel's KSM use the
# same pages_to_scan and sleep. Prints progress, then a Markdown table;
# the JSON of every run is kept in DIR/results.jsonl (default out/bench-host).
# Needs root (KSM sysfs, sysctl, pagemap frame numbers). Uses a release
# build in build-host-release (BUILD_DIR to override).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SIZES="256 1024"
PTS=4096
SLEEP=10
RAISED=1048576
TIMEOUT=300
DELAY=1
OUT=out/bench-host
while (($#)); do
  case $1 in
    --sizes) SIZES=$2; shift 2 ;;
    --pages-to-scan) PTS=$2; shift 2 ;;
    --sleep-ms) SLEEP=$2; shift 2 ;;
    --raised-map-count) RAISED=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --delay) DELAY=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench-host: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for v in $SIZES $PTS $SLEEP $RAISED $TIMEOUT $DELAY; do
  [[ $v =~ ^[0-9]+$ ]] || { echo "bench-host: '$v' is not a number" >&2; exit 2; }
done
[[ $(id -u) == 0 ]] || { echo "bench-host: needs root (KSM sysfs, sysctl vm.max_map_count, pagemap)" >&2; exit 1; }

BUILD_DIR=${BUILD_DIR:-build-host-release}
if [[ ! -f $BUILD_DIR/build.ninja ]]; then
  meson setup "$BUILD_DIR" --buildtype=release >/dev/null
fi
if ! build_log=$(meson compile -C "$BUILD_DIR" tools/host/pksm-host 2>&1); then
  echo "$build_log" | tail -30 >&2
  echo "bench-host: the release build of pksm-host failed" >&2
  exit 1
fi
BIN=$ROOT/$BUILD_DIR/tools/host/pksm-host

ORIG_MAP_COUNT=$(sysctl -n vm.max_map_count)
restore_map_count() {
  local now; now=$(sysctl -n vm.max_map_count)
  if [[ $now != "$ORIG_MAP_COUNT" ]]; then
    sysctl -q -w vm.max_map_count="$ORIG_MAP_COUNT"
    echo "bench-host: vm.max_map_count restored to $ORIG_MAP_COUNT"
  fi
}
trap restore_map_count EXIT
trap 'restore_map_count; exit 130' INT TERM

mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
started=$(date +%s)

# run_one SIZE MIX RUNLEN MAPCOUNT
run_one() {
  local size=$1 mix=$2 runlen=$3 maps=$4
  local label="size=${size}MiB mix=$mix run-length=$runlen vm.max_map_count=$maps"
  echo "=== $label"
  if [[ $maps != "$ORIG_MAP_COUNT" ]]; then sysctl -q -w vm.max_map_count="$maps"; fi
  local log=$OUT/run-$size-${mix//[=,]/_}-$runlen-$maps.log
  local cmd=("$BIN" --compare-kernel-ksm --size-mib "$size" --mix "$mix" --run-length "$runlen"
             --pages-to-scan "$PTS" --sleep-ms "$SLEEP" --delay "$DELAY" --timeout "$TIMEOUT" --json)
  echo "+ ${cmd[*]}" > "$log"
  local rc=0
  "${cmd[@]}" >> "$log" 2>&1 || rc=$?
  restore_map_count
  grep -E '^\[(pksm|kernel_ksm)\] (steady|timeout|VMA budget reached|WARNING)' "$log" || true
  local json; json=$(tail -n 1 "$log")
  if [[ ${json:0:1} != "{" ]]; then
    echo "bench-host: run failed (exit $rc), see $log" >&2
    json="{\"failed\":true,\"exit\":$rc}"
  fi
  /usr/bin/python3 - "$size" "$mix" "$runlen" "$maps" "$rc" "$json" >> "$RESULTS" <<'PY'
import json, sys
size, mix, runlen, maps, rc, line = sys.argv[1:7]
r = json.loads(line)
r["bench"] = {"size_mib": int(size), "mix": mix, "run_length": int(runlen), "max_map_count": int(maps), "exit": int(rc),
              "loadavg_after": open("/proc/loadavg").read().split()[0]}
print(json.dumps(r))
PY
}

for size in $SIZES; do
  for mix in zero=25,dup=50,unique=25 dup=100; do
    for runlen in 1 64; do
      run_one "$size" "$mix" "$runlen" "$ORIG_MAP_COUNT"
      if [[ $runlen == 1 ]]; then run_one "$size" "$mix" "$runlen" "$RAISED"; fi
    done
  done
done

echo
echo "bench-host: $(( $(date +%s) - started ))s; pages_to_scan=$PTS sleep_ms=$SLEEP (both), pksm delay=$DELAY, $(uname -r), $(nproc) CPUs"
/usr/bin/python3 - "$RESULTS" <<'PY'
import json, math, sys

def f(x, fmt):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return fmt % x

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| size | mix | layout | max_map_count | time to steady s (pksm / KSM) | CPU s (pksm / KSM) "
      "| saved MiB (pksm / KSM; expected) | VMAs per merged page (pksm) | µs CPU per saved page (pksm / KSM) "
      "| pksm/KSM time, CPU, saved | budget | lost writes, integrity errors |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    b = r["bench"]
    mix = "25/50/25" if b["mix"].startswith("zero") else "100% dup"
    layout = "scattered" if b["run_length"] == 1 else "runs of %d" % b["run_length"]
    if r.get("failed") or "kernel_ksm" not in r or "saved_pages" not in r:
        print("| %d MiB | %s | %s | %d | failed (exit %d): %s | | | | | | | |" %
              (b["size_mib"], mix, layout, b["max_map_count"], b["exit"], r.get("error", "")))
        continue
    k = r["kernel_ksm"]; q = r["ratios"]
    mib = lambda pages: pages * 4096 / 2**20
    steady = lambda x: f(x["seconds_to_steady"], "%.2f") + ("" if x["steady"] else " (timeout)")
    budget = ("**capped** (%d of %d mappings, %d refusals)" % (r["vmas_used"], r["vma_budget"], r["budget_refusals"])
              if r["budget_capped"] else "not reached (%d of %d)" % (r["vmas_used"], r["vma_budget"]))
    print("| %d MiB | %s | %s | %d | %s / %s | %s / %s | %s / %s; %s | %s | %s / %s | %s, %s, %s | %s | %d, %d / %d, %d |" % (
        b["size_mib"], mix, layout, b["max_map_count"],
        steady(r), steady(k),
        f(r["cpu_seconds"], "%.2f"), f(k["cpu_seconds"], "%.2f"),
        f(mib(r["saved_pages"]), "%.1f"), f(mib(k["saved_pages"]), "%.1f"), f(mib(r["expected_saved"]), "%.1f"),
        f(r["vmas_per_merged_page"], "%.3f"),
        f(r["us_per_merge"], "%.1f"), f(k["us_per_merge"], "%.1f"),
        f(q["seconds_to_steady"], "%.2f"), f(q["cpu_seconds"], "%.2f"), f(q["memory_saved"], "%.4f"),
        budget,
        r["lost_writes"], r["integrity_errors"], k["lost_writes"], k["integrity_errors"]))
loads = [float(r["bench"]["loadavg_after"]) for r in rows]
if loads:
    print("\nload average (1 min) after each run: %s (2 CPUs shared with other work: absolute times are noisy, "
          "the pksm/KSM ratios of one run are the figures to compare)" % ", ".join("%.1f" % l for l in loads))
other = max((r.get("kernel_ksm", {}).get("other_mergeable_kib", 0) for r in rows), default=0)
if other:
    print("\nWARNING: other processes had up to %d KiB of MADV_MERGEABLE memory during the kernel phases; "
          "ksmd scanned it too (time and CPU of the kernel column are inflated)." % other)
bad = [r for r in rows if r.get("failed") or not r.get("ok", False)]
print("\nbench-host: %d runs, %d with failures or integrity problems" % (len(rows), len(bad)))
PY
