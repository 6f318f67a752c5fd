#!/bin/bash
# Real-guest benchmark: pksm beside the kernel's KSM on the same test guest
# (guest/workload.c, mode "both": duplicate + zero + unique pages, and a
# memset/memcpy bandwidth loop that reports the guest's memory throughput).
#
# Runs in phases of --window seconds. In each phase the guest under test is
# booted together with an identical reference guest that nothing merges
# ("base", plain QEMU, mem-merge=off), so both see the same background load
# of this shared machine:
#   control  base beside base: the noise floor of the comparison
#   pksm     QEMU with libpksm-qemu.so (mem-merge=off) beside base
#   ksm      QEMU with -machine mem-merge=on and the kernel's KSM (run=1, the
#            same pages_to_scan / sleep_millisecs as pksm) beside base; every
#            KSM knob is restored afterwards, even on failure or Ctrl-C, and
#            the host-wide lock /run/pksm-kernel-ksm.lock (shared with
#            pksm-host) keeps other KSM comparisons out meanwhile
# Reported per phase: memory saved (QEMU PSS and RSS of the reference minus
# the guest's, pool included), time from QEMU start until 90% of the final
# saving (counted once the workload has filled its memory), CPU of the merging
# thread (query-pksm scanner-cpu-ns; ksmd's utime+stime from /proc), and the
# guest's memory throughput relative to its reference guest over the same
# wall-clock interval: the first 30 s after both workloads are ready (while
# merging) and the whole rest of the window, both as MB/s (wall clock, noisy
# on a shared host) and as MB per second of the vCPU thread's CPU time.
#
#   scripts/bench-guest.sh [--window S] [--mem MIB] [--workload-mib MIB]
#                          [--pages-to-scan N] [--sleep-ms N]
#                          [--ksm-zero-pages 0|1] [--phases control,pksm,ksm]
#                          [--out DIR]
# Results also go to DIR/results.json (default out/bench-guest).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WINDOW=90; MEM=512; WMIB=192; PTS=1000; SLEEP=20; KZERO=1; OUT=$ROOT/out/bench-guest
PHASES=control,pksm,ksm
while (($#)); do
  case $1 in
    --window) WINDOW=$2; shift 2;;
    --mem) MEM=$2; shift 2;;
    --workload-mib) WMIB=$2; shift 2;;
    --pages-to-scan) PTS=$2; shift 2;;
    --sleep-ms) SLEEP=$2; shift 2;;
    --ksm-zero-pages) KZERO=$2; shift 2;;
    --phases) PHASES=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    -h|--help) sed -n '2,26p' "$0"; exit 0;;
    *) echo "bench-guest: unknown option $1 (see --help)" >&2; exit 2;;
  esac
done
for v in "$WINDOW" "$MEM" "$WMIB" "$PTS" "$SLEEP"; do
  [[ $v =~ ^[0-9]+$ ]] || { echo "bench-guest: '$v' is not a number" >&2; exit 2; }
done
[[ $KZERO == 0 || $KZERO == 1 ]] || { echo "bench-guest: --ksm-zero-pages wants 0 or 1, not '$KZERO'" >&2; exit 2; }
(( WMIB * 2 <= MEM )) || { echo "bench-guest: --workload-mib $WMIB is too big for --mem $MEM (at most half)" >&2; exit 2; }
BUILD=${PKSM_BUILD:-$ROOT/build}
PLUGIN=$BUILD/qemu-plugin/libpksm-qemu.so
if [[ ,$PHASES, == *,pksm,* ]]; then
  [[ -f $BUILD/build.ninja ]] || meson setup "$BUILD" >/dev/null
  if ! log=$(meson compile -C "$BUILD" 2>&1); then
    echo "$log" | tail -30 >&2; echo "bench-guest: meson compile -C $BUILD failed" >&2; exit 1
  fi
  [[ -f $PLUGIN ]] || { echo "bench-guest: $PLUGIN was not built" >&2; exit 1; }
fi
bash scripts/build-guest.sh >/dev/null
mkdir -p "$OUT"

exec /usr/bin/python3 - "$PLUGIN" "$WINDOW" "$MEM" "$WMIB" "$PTS" "$SLEEP" "$KZERO" "$OUT" "$PHASES" <<'PY'
import json, os, signal, sys, time
sys.path.insert(0, os.path.join(os.getcwd(), "scripts"))
from pksmlib.guest import Guest, KsmKnobs

def _terminate(*_):
    raise KeyboardInterrupt
signal.signal(signal.SIGTERM, _terminate)

plugin, window, mem, wmib, pts, sleep_ms, kzero, out = (
    sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
    int(sys.argv[6]), int(sys.argv[7]), sys.argv[8])
phases = [p for p in sys.argv[9].split(",") if p]
for p in phases:
    if p not in ("control", "pksm", "ksm"):
        raise SystemExit(f"bench-guest: unknown phase '{p}' in --phases (control, pksm, ksm)")
WORKLOAD = {"mode": "both", "mib": wmib, "bw-mib": 16, "verify": 5, "cow-after": 0}
MERGING_WINDOW = 30.0      # "while merging": the first 30 s after the workload is ready
TICK = os.sysconf("SC_CLK_TCK")


def ksmd_cpu_s():
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "ksmd":
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / TICK
        except OSError:
            continue
    raise RuntimeError("no ksmd thread visible in /proc")


def make_guest(kind, name):
    # One session (and so one scheduling autogroup) for all: the merger's
    # thread competes with both guests' vCPUs on equal terms.
    args = dict(mem_mib=mem, workload=WORKLOAD, name=name)
    if kind == "pksm":
        args.update(plugin=plugin, plugin_args={"run": 1, "pages-to-scan": pts,
                                                "sleep-ms": sleep_ms, "use-zero-pages": 1})
    elif kind == "ksm":
        args.update(mem_merge=True)
    return Guest(out, **args)


def run_phase(phase):
    """Boots the guest under test and its reference together; samples both
    every 0.5 s for `window` seconds."""
    kind = "base" if phase == "control" else phase
    guests = {"test": make_guest(kind, phase), "ref": make_guest("base", phase + "-ref")}
    res = {role: {"kind": g.name, "samples": [], "ready_at": None} for role, g in guests.items()}
    ksmd0 = ksmd_cpu_s() if kind == "ksm" else 0.0
    try:
        t0 = time.monotonic()
        for g in guests.values():
            g.start()
        while True:
            t = time.monotonic() - t0
            if t > window:
                break
            for role, g in guests.items():
                s = {"t": t}
                sr = g.smaps_rollup()
                s["pss"], s["rss"] = sr["Pss"], sr["Rss"]
                s["vcpu"], s["mb"] = g.vcpu_seconds(), g.bw_total_mb()
                if role == "test" and kind == "pksm":
                    i = g.query_pksm()
                    s["cpu"] = i["scanner-cpu-ns"] / 1e9
                    s["pages"] = i["pages-sharing"] + i["zero-pages"]
                elif role == "test" and kind == "ksm":
                    s["cpu"] = ksmd_cpu_s() - ksmd0
                if res[role]["ready_at"] is None and "PKSM-WORKLOAD READY" in g.serial():
                    res[role]["ready_at"] = t
                res[role]["samples"].append(s)
            time.sleep(max(0.0, 0.5 - (time.monotonic() - t0 - t)))
        for role, g in guests.items():
            verify = g.verify_rounds()
            res[role].update(bw=g.bandwidth(), verify_rounds=len(verify),
                             verify_errors=sum(e for _, e in verify) + len(g.failures()),
                             qemu_cpu_s=g.cpu_seconds())
            if role == "test" and kind == "pksm":
                res[role]["pksm"] = {k: v for k, v in g.query_pksm().items() if not isinstance(v, list)}
    finally:
        for g in guests.values():
            g.stop()
    for role, g in guests.items():
        if res[role]["ready_at"] is None:
            raise RuntimeError(f"{g.name}: the workload never became ready:\n{g.serial()[-2000:]}")
    return res


def mean(v):
    return sum(v) / len(v) if v else float("nan")


def analyse(res):
    """Saving = the reference guest's settled footprint minus the tested
    guest's, counted once the tested workload is ready (before that a guest
    is still touching its memory, at a pace the host's load decides)."""
    r, ref = res["test"], res["ref"]
    rs = ref["samples"]
    ref_pss = mean([x["pss"] for x in rs if x["t"] >= rs[-1]["t"] - 5])
    ref_rss = mean([x["rss"] for x in rs if x["t"] >= rs[-1]["t"] - 5])
    s = r["samples"]
    for x in s:
        x["saved_pss"] = ref_pss - x["pss"]
        x["saved_rss"] = ref_rss - x["rss"]
    tail = [x for x in s if x["t"] >= s[-1]["t"] - 5]
    final_pss = mean([x["saved_pss"] for x in tail])
    final_rss = mean([x["saved_rss"] for x in tail])
    t90 = next((x["t"] for x in s if x["t"] >= r["ready_at"] and final_pss > 0
                and x["saved_pss"] >= 0.9 * final_pss), None)
    cpu_end = s[-1].get("cpu", 0.0)
    cpu_t90 = next((x.get("cpu", 0.0) for x in s if t90 is not None and x["t"] >= t90), cpu_end)

    # Throughput over the same wall-clock interval for both guests, starting
    # when the later of the two workloads is ready (t in a bw report counts
    # from its own guest's READY).
    start = max(r["ready_at"], ref["ready_at"])

    def bw(run, lo, hi):
        return mean([v for t, v in run["bw"] if lo <= run["ready_at"] + t - start <= hi])

    # MB moved per second of vCPU thread CPU time over the same intervals:
    # what merging costs the guest's own work (COW faults, dirty-log TLB
    # flushes), without the host's scheduling noise. (Time a vCPU spends
    # blocked on a write-protected page shows in MB/s, not here.)
    def per_cpu(run, lo, hi):
        inside = [x for x in run["samples"] if start + lo <= x["t"] <= start + hi]
        if len(inside) < 2 or inside[-1]["vcpu"] <= inside[0]["vcpu"]:
            return float("nan")
        return (inside[-1]["mb"] - inside[0]["mb"]) / (inside[-1]["vcpu"] - inside[0]["vcpu"])
    return {"final_saved_pss_mib": final_pss / 1024, "final_saved_rss_mib": final_rss / 1024,
            "ref_pss_mib": ref_pss / 1024, "t90_s": t90, "cpu_end_s": cpu_end,
            "cpu_at_t90_s": cpu_t90, "ready_at_s": r["ready_at"],
            "bw_merging": bw(r, 0, MERGING_WINDOW), "bw_merging_ref": bw(ref, 0, MERGING_WINDOW),
            "bw_all": bw(r, 0, 1e9), "bw_all_ref": bw(ref, 0, 1e9),
            "mbcpu_merging": per_cpu(r, 0, MERGING_WINDOW),
            "mbcpu_merging_ref": per_cpu(ref, 0, MERGING_WINDOW),
            "mbcpu_all": per_cpu(r, 0, 1e9), "mbcpu_all_ref": per_cpu(ref, 0, 1e9),
            "vcpu_s": r["samples"][-1]["vcpu"], "vcpu_ref_s": ref["samples"][-1]["vcpu"],
            "verify_rounds": r["verify_rounds"], "verify_errors": r["verify_errors"],
            "ref_verify_errors": ref["verify_errors"], "qemu_cpu_s": r["qemu_cpu_s"]}


results = {}
try:
    print(f"bench-guest: {mem} MiB guests, workload {WORKLOAD}, window {window} s, "
          f"pages_to_scan={pts} sleep={sleep_ms} ms, phases {','.join(phases)}", flush=True)
    for phase in phases:
        if phase == "ksm":
            with KsmKnobs(pages_to_scan=pts, sleep_millisecs=sleep_ms, use_zero_pages=kzero, run=1):
                results[phase] = run_phase(phase)
            print("bench-guest: ksm phase done (KSM knobs restored)", flush=True)
        else:
            results[phase] = run_phase(phase)
            print(f"bench-guest: {phase} phase done", flush=True)
except KeyboardInterrupt:
    raise SystemExit("bench-guest: interrupted (guests stopped, KSM knobs restored)")

a = {k: analyse(v) for k, v in results.items()}
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"settings": {"mem": mem, "workload": WORKLOAD, "window": window,
                            "pages_to_scan": pts, "sleep_ms": sleep_ms, "ksm_use_zero_pages": kzero},
               "analysis": a, "runs": results}, f, indent=1)


def fmt(v, spec):
    return "-" if v is None or v != v else format(v, spec)


def pct(x, ref):
    return fmt(100 * x / ref if ref else None, ".1f")


titles = {"control": "control (base)", "pksm": "pksm", "ksm": "kernel KSM"}
cols = [k for k in ("pksm", "ksm", "control") if k in a]
rows = [
    ("memory saved, PSS (MiB)", lambda r: fmt(r["final_saved_pss_mib"], ".1f")),
    ("memory saved, RSS (MiB)", lambda r: fmt(r["final_saved_rss_mib"], ".1f")),
    ("reference guest PSS (MiB)", lambda r: fmt(r["ref_pss_mib"], ".1f")),
    ("workload ready after (s)", lambda r: fmt(r["ready_at_s"], ".1f")),
    ("time to 90% of final saving (s)", lambda r: fmt(r["t90_s"], ".1f")),
    ("  of it after the workload was ready (s)",
     lambda r: fmt(r["t90_s"] - r["ready_at_s"] if r["t90_s"] is not None else None, ".1f")),
    ("merger CPU until then (s)", lambda r: fmt(r["cpu_at_t90_s"], ".2f")),
    (f"merger CPU over {window} s (s)", lambda r: fmt(r["cpu_end_s"], ".2f")),
    ("guest MB/s first 30 s, % of reference",
     lambda r: f"{fmt(r['bw_merging'], '.0f')} ({pct(r['bw_merging'], r['bw_merging_ref'])}%)"),
    ("guest MB/s whole run, % of reference",
     lambda r: f"{fmt(r['bw_all'], '.0f')} ({pct(r['bw_all'], r['bw_all_ref'])}%)"),
    ("guest MB per vCPU-s first 30 s, % of ref",
     lambda r: f"{fmt(r['mbcpu_merging'], '.0f')} ({pct(r['mbcpu_merging'], r['mbcpu_merging_ref'])}%)"),
    ("guest MB per vCPU-s whole run, % of ref",
     lambda r: f"{fmt(r['mbcpu_all'], '.0f')} ({pct(r['mbcpu_all'], r['mbcpu_all_ref'])}%)"),
    ("vCPU thread CPU s, % of reference",
     lambda r: f"{fmt(r['vcpu_s'], '.1f')} ({pct(r['vcpu_s'], r['vcpu_ref_s'])}%)"),
    ("guest verification rounds / errors", lambda r: f"{r['verify_rounds']} / {r['verify_errors']}"),
]
print("\n| " + f"{'metric':40}" + "".join(f" | {titles[k]:>18}" for k in cols) + " |")
print("|" + "-" * 42 + "".join("|" + "-" * 20 for _ in cols) + "|")
for name, f in rows:
    print(f"| {name:40}" + "".join(f" | {f(a[k]):>18}" for k in cols) + " |")
if "pksm" in a and "ksm" in a:
    P, K = a["pksm"], a["ksm"]
    ratio_mem = P["final_saved_pss_mib"] / K["final_saved_pss_mib"] if K["final_saved_pss_mib"] > 0 else None
    ratio_t = P["t90_s"] / K["t90_s"] if P["t90_s"] and K["t90_s"] else None
    print(f"\ntargets: saving pksm/KSM = {fmt(ratio_mem, '.2f')} (want >= 1.00); "
          f"time to 90% pksm/KSM = {fmt(ratio_t, '.2f')} (want <= 0.50); guest throughput "
          f"while merging = {pct(P['bw_merging'], P['bw_merging_ref'])}% of its reference by MB/s, "
          f"{pct(P['mbcpu_merging'], P['mbcpu_merging_ref'])}% by MB per vCPU-second (want >= 95%)")
if any(r["verify_errors"] or r["ref_verify_errors"] for r in a.values()):
    raise SystemExit("bench-guest: GUEST VERIFICATION FAILED (see the serial logs in " + out + ")")
print(f"bench-guest: results in {out}/results.json")
PY
