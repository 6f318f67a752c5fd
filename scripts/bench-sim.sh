#!/bin/bash
# Benchmark of the engine on simulated traces (pksm-sim): PKSM with probation
# N = 0, 1, 2, 3, 5 beside the classic `ksm` mode, on
#   identical: 4 identical guests (scripts/gen-trace.py identical)
#   churn:     the same guests, a quarter of every guest's pages changing
#              (identically in every guest) between passes
# and the scanning rate of a settled 262,144-page guest with 50% duplicates
# (gen-trace.py settled), with the dirty log and with the checksum fallback.
# Prints the tables -- pages merged (pages_sharing + ksm_zero_pages) after
# each pass, COW breaks, pages compared, bytes hashed, scan CPU per scanned
# page -- and writes them into docs/benchmarks.md, section
# "## Engine on simulated traces (pksm-sim)", with this command.
#
#   scripts/bench-sim.sh [--pages P] [--guests G] [--settled-pages S] [--repeat R] [--no-doc]
#
# Each configuration runs R times (default 2); the statistics must be
# identical in every repetition (the engine is deterministic) and the CPU
# figures are those of the fastest repetition. Runs are sequential; CPU is
# the process's CPU time around the engine's scanning (pksm-sim --cpu).
# Uses a release build in ${BUILD_DIR:-build-release}.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CMDLINE="${BUILD_DIR:+BUILD_DIR=$BUILD_DIR }scripts/bench-sim.sh${*:+ $*}"
PAGES=32768          # per guest: 128 MiB (4 guests: 131,072 pages, 512 MiB)
GUESTS=4
SETTLED_PAGES=262144 # 1 GiB
REPEAT=2
WRITE_DOC=1
while (($#)); do
  case $1 in
    --pages) PAGES=$2; shift 2 ;;
    --guests) GUESTS=$2; shift 2 ;;
    --settled-pages) SETTLED_PAGES=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --no-doc) WRITE_DOC=0; shift ;;
    *) echo "bench-sim: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "bench-sim: --repeat: invalid value '$REPEAT'" >&2; exit 2; }
PY=/usr/bin/python3
BUILD=${BUILD_DIR:-build-release}
PASSES_IDENTICAL=8
PASSES_CHURN=6       # churn passes; the trace adds 2 quiet passes after them
PASSES_SETTLE=3      # settled: passes to settle, then STEADY measured passes
PASSES_STEADY=4
SCAN=1000            # pages_to_scan (engine step size) for every run

bash scripts/setup.sh >/dev/null
if [[ ! -f $BUILD/build.ninja ]]; then
  meson setup "$BUILD" --buildtype=release >/dev/null
fi
if ! log=$(meson compile -C "$BUILD" tools/sim/pksm-sim 2>&1); then
  echo "$log" >&2; echo "bench-sim: build failed" >&2; exit 1
fi
SIM=$ROOT/$BUILD/tools/sim/pksm-sim

work=$(mktemp -d /tmp/bench-sim.XXXXXX)
trap 'rm -rf "$work"' EXIT
$PY scripts/gen-trace.py identical --guests "$GUESTS" --pages "$PAGES" --passes $PASSES_IDENTICAL --stats >"$work/identical.trace"
$PY scripts/gen-trace.py churn --guests "$GUESTS" --pages "$PAGES" --passes $PASSES_CHURN --stats >"$work/churn.trace"
$PY scripts/gen-trace.py settled --pages "$SETTLED_PAGES" --passes $PASSES_SETTLE --steady $PASSES_STEADY >"$work/settled.trace"

# run TRACE NAME OPTIONS...: REPEAT runs, statistics lines in $work/TRACE.NAME.REP.jsonl
runs=0
run() {
  local trace=$1 name=$2; shift 2
  for ((rep = 0; rep < REPEAT; rep++)); do
    echo "bench-sim: $trace $name ($*) run $((rep + 1))/$REPEAT" >&2
    "$SIM" --quiet --cpu --pages-to-scan $SCAN "$@" "$work/$trace.trace" | grep '^{' >"$work/$trace.$name.$rep.jsonl"
    runs=$((runs + 1))
  done
}

start=$(date +%s)
for trace in identical churn; do
  run $trace ksm --mode ksm
  for n in 0 1 2 3 5; do run $trace "N=$n" --delay $n; done
done
run settled pksm-N0 --delay 0
run settled pksm-N1 --delay 1
run settled pksm-N0-checksum --delay 0 --dirty-log checksum
run settled ksm --mode ksm
elapsed=$(( $(date +%s) - start ))

table=$(GUESTS=$GUESTS PAGES=$PAGES SETTLED_PAGES=$SETTLED_PAGES PASSES_CHURN=$PASSES_CHURN \
  PASSES_SETTLE=$PASSES_SETTLE REPEAT=$REPEAT WORK=$work $PY - <<'PYEOF'
import json, os
env = os.environ
work, repeat = env["WORK"], int(env["REPEAT"])

def load(trace, name):
    """Per completed pass, the statistics after it (fastest repetition)."""
    reps = []
    for rep in range(repeat):
        with open(f"{work}/{trace}.{name}.{rep}.jsonl") as f:
            reps.append([json.loads(l) for l in f if l.strip()])
    strip = lambda ls: [{k: v for k, v in l.items() if not k.startswith("scan_cpu")} for l in ls]
    for r in reps[1:]:
        if strip(r) != strip(reps[0]):
            raise SystemExit(f"bench-sim: {trace} {name}: statistics differ between repetitions")
    lines = min(reps, key=lambda ls: ls[-1]["scan_cpu_ns"])
    per_pass = {}
    for l in lines:
        per_pass.setdefault(l["full_scans"], l)  # a trailing `stats` may repeat the last pass
    return [per_pass[k] for k in sorted(per_pass)]

merged = lambda l: l["pages_sharing"] + l["ksm_zero_pages"]
out = []
c = int(env["PASSES_CHURN"])
titles = {
    "identical": f"identical guests ({env['GUESTS']} guests x {env['PAGES']} pages: 37.5% identical OS image, 25% zero, 25% private, 3% one repeated page, the rest untouched)",
    "churn": f"churn ({env['GUESTS']} guests x {env['PAGES']} pages as above; a quarter of every guest's pages, runs of 16 every 64, keep changing: before each of passes 1-{c} each run is rewritten with probability 1/2, the same runs with the same content in every guest; passes {c + 1}-{c + 2} are quiet)",
}
names = ["ksm", "N=0", "N=1", "N=2", "N=3", "N=5"]
for trace in ["identical", "churn"]:
    rows = {n: load(trace, n) for n in names}
    passes = min(len(r) for r in rows.values())
    out += ["### " + titles[trace], ""]
    hdr = (["mode"] + [f"merged p{i + 1}" for i in range(passes)] +
           ["merged page-passes", "COW breaks", "pages scanned", "pages compared", "bytes hashed",
            "scan CPU ms", "CPU ns / scanned page", "CPU µs / merged page"])
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * (len(hdr) - 1)) + "|")
    for n in names:
        ls = rows[n][:passes]
        last = ls[-1]
        m = [merged(l) for l in ls]
        cpu = last["scan_cpu_ns"]
        cells = [n] + [str(x) for x in m] + [
            str(sum(m)), str(last["cow_breaks"]), str(last["pages_scanned"]),
            str(last["pages_compared"]), str(last["bytes_hashed"]), "%.1f" % (cpu / 1e6),
            "%.0f" % (cpu / last["pages_scanned"]), "%.2f" % (cpu / 1e3 / m[-1]) if m[-1] else "-"]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")

settle = int(env["PASSES_SETTLE"])
out += [f"### settled guest ({env['SETTLED_PAGES']} pages, 50% duplicates: half unique, half in pairs of identical pages; {settle} passes to settle, then steady passes in which nothing changes)", ""]
hdr = ["configuration", "merged", "passes to merge", "CPU until merged ms", "steady CPU ns / scanned page",
       "steady pages/s per core", "steady bytes hashed / page", "pages compared", "merges", "stable lookups / hits"]
out.append("| " + " | ".join(hdr) + " |")
out.append("|" + "|".join(["---"] + ["---:"] * (len(hdr) - 1)) + "|")
configs = [("pksm-N0", "pksm N=0, dirty log"), ("pksm-N1", "pksm N=1, dirty log"),
           ("pksm-N0-checksum", "pksm N=0, checksum fallback"), ("ksm", "ksm (checksum)")]
for key, label in configs:
    ls = load("settled", key)
    last = ls[-1]
    first_full = next(l for l in ls if merged(l) == merged(last))
    base = ls[settle - 1]
    d_scan = last["pages_scanned"] - base["pages_scanned"]
    d_cpu = last["scan_cpu_ns"] - base["scan_cpu_ns"]
    d_hash = last["bytes_hashed"] - base["bytes_hashed"]
    ns = d_cpu / d_scan if d_scan else 0
    out.append("| " + " | ".join([
        label, str(merged(last)), str(first_full["full_scans"]), "%.1f" % (first_full["scan_cpu_ns"] / 1e6),
        "%.0f" % ns, "%.2f M" % (1e3 / ns) if ns else "-", "%.0f" % (d_hash / d_scan if d_scan else 0),
        str(last["pages_compared"]), str(last["merges"]),
        f"{last['stable_lookups']} / {last['stable_hits']}"]) + " |")
out.append("")
print("\n".join(out))
PYEOF
)

echo
echo "$table"
echo "bench-sim: $runs runs in ${elapsed}s"

if [[ $WRITE_DOC == 1 ]]; then
  doc=docs/benchmarks.md
  section=$(cat <<EOS
## Engine on simulated traces (pksm-sim)

Made by \`$CMDLINE\` (release build, \`pksm-sim --cpu --pages-to-scan $SCAN\`,
traces from \`scripts/gen-trace.py\`), on $(date -u +%Y-%m-%d), $(nproc) cores
($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')).
"merged pN" is pages_sharing + ksm_zero_pages after full pass N. \`ksm\` is the
classic algorithm of the same engine (one list, no probation, zero page only
after the stable tree, checksum volatility); N is PKSM's probation counter
(\`--delay\`). CPU is process CPU time around the engine's scanning
(CLOCK_PROCESS_CPUTIME_ID, user + system) divided by candidates examined,
the fastest of $REPEAT runs (the statistics of the runs are identical). The
machine is shared: CPU figures carry some noise, the counts none.

How to read it: a larger N moves the first merges right by N passes
(probation) and lowers "merged page-passes" (the area under the merged
curve, the saving integrated over time); on the churn trace it buys that
with fewer COW breaks, because pages that stay quiet for only a pass or two
are no longer merged just to be broken again. \`ksm\` judges volatility by
a checksum of the whole page, which shows in "bytes hashed"; PKSM reads the
dirty log and hashes only the sampled partial hash. "pages compared" counts
full memcmp calls in the trees. In the settled guest, "steady" is the
passes after everything mergeable has merged: what a long-running scanner
costs per page it visits.

$table
EOS
)
  SECTION="$section" DOC="$doc" $PY - <<'PYEOF'
import os, re
doc, section = os.environ["DOC"], os.environ["SECTION"].rstrip("\n") + "\n"
heading = "## Engine on simulated traces (pksm-sim)"
text = open(doc).read() if os.path.exists(doc) else "# pksm benchmarks\n"
start = text.find(heading)
if start < 0:
    text = text.rstrip("\n") + "\n\n" + section
else:
    nxt = re.search(r"^## ", text[start + len(heading):], re.M)
    end = start + len(heading) + nxt.start() if nxt else len(text)
    text = text[:start] + section + ("\n" + text[end:] if nxt else "")
open(doc, "w").write(text)
PYEOF
  echo "bench-sim: wrote the tables into $doc"
fi
