#!/bin/bash
# pksm's main job: boots two identical test guests under QEMU with the pksm
# plugin, shows their query-pksm statistics live, then shuts them down and
# prints what was saved.
#
#   scripts/demo.sh [--seconds N] [--mem MIB] [--workload-mib MIB]
#                   [--plugin-args K=V,...] [--skip-setup]
#
# Does its own set-up: scripts/setup.sh (Debian packages), meson setup +
# compile of build/, scripts/build-guest.sh. The table refreshes every second
# for --seconds (default 60) or until Ctrl-C; the guests are then stopped
# cleanly (QMP quit; by PID if that fails) and a summary is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_TO_RUN=60; MEM=512; WMIB=128; PARGS="pages-to-scan=2000,sleep-ms=20"; SETUP=1
while (($#)); do
  case $1 in
    --seconds) SECONDS_TO_RUN=$2; shift 2;;
    --mem) MEM=$2; shift 2;;
    --workload-mib) WMIB=$2; shift 2;;
    --plugin-args) PARGS=$2; shift 2;;
    --skip-setup) SETUP=0; shift;;
    -h|--help) sed -n '2,12p' "$0"; exit 0;;
    *) echo "demo: unknown option $1 (see --help)" >&2; exit 2;;
  esac
done
[[ $SECONDS_TO_RUN =~ ^[0-9]+$ ]] || { echo "demo: --seconds wants a number, not '$SECONDS_TO_RUN'" >&2; exit 2; }
[[ $MEM =~ ^[0-9]+$ && $WMIB =~ ^[0-9]+$ ]] || { echo "demo: --mem and --workload-mib want numbers" >&2; exit 2; }
(( WMIB * 2 <= MEM )) || { echo "demo: --workload-mib $WMIB is too big for --mem $MEM (at most half)" >&2; exit 2; }

BUILD=${PKSM_BUILD:-$ROOT/build}
if [[ $SETUP == 1 ]]; then
  echo "demo: [1/3] set-up (Debian packages)"
  bash scripts/setup.sh
  echo "demo: [2/3] building pksm in $BUILD"
  [[ -f $BUILD/build.ninja ]] || meson setup "$BUILD" >/dev/null
  meson compile -C "$BUILD" | tail -1
  echo "demo: [3/3] building the test guest"
  bash scripts/build-guest.sh
fi
PLUGIN=$BUILD/qemu-plugin/libpksm-qemu.so
[[ -f $PLUGIN ]] || { echo "demo: $PLUGIN was not built" >&2; exit 1; }

export PKSM_BUILD=$BUILD
exec /usr/bin/python3 - "$PLUGIN" "$SECONDS_TO_RUN" "$MEM" "$WMIB" "$PARGS" "$ROOT/out/demo" <<'PY'
import os, signal, sys, time

def _terminate(*_):
    raise KeyboardInterrupt
signal.signal(signal.SIGTERM, _terminate)
sys.path.insert(0, os.path.join(os.getcwd(), "scripts"))
from pksmlib.guest import Guest

plugin, seconds, mem, wmib, pargs, workdir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
plugin_args = {"run": 1}
for kv in filter(None, pargs.split(",")):
    k, _, v = kv.partition("=")
    plugin_args[k] = v
# The same workload in both guests: duplicates, zero pages, unique pages,
# periodic verification and writes into merged pages after 30 s.
workload = {"mib": wmib, "verify": 5, "cow-after": 30, "cow-every": 15}
os.makedirs(workdir, exist_ok=True)
tty = sys.stdout.isatty()
MiB = 1024 * 1024

def row(name, g, t0):
    i = g.query_pksm()
    saved = (i["pages-sharing"] + i["zero-pages"]) * 4096 / MiB
    rounds = g.verify_rounds()
    errs = sum(e for _, e in rounds) + len(g.failures())
    return (f"{name:8} {time.monotonic() - t0:6.0f} {i['run']:3} {i['pages-shared']:8} "
            f"{i['pages-sharing']:8} {i['zero-pages']:8} {saved:8.1f} {i['cow-breaks']:6} "
            f"{i['full-scans']:6} {i['scanner-cpu-ns'] / 1e6:8.0f} {g.pss_kib() / 1024:8.1f} "
            f"{len(rounds):4}/{errs}"), i

HEAD = (f"{'guest':8} {'t[s]':>6} {'run':>3} {'shared':>8} {'sharing':>8} {'zero':>8} "
        f"{'savedMiB':>8} {'cow':>6} {'scans':>6} {'cpu[ms]':>8} {'PSS MiB':>8} verify/err")

guests = [Guest(workdir, plugin=plugin, plugin_args=plugin_args, mem_mib=mem,
                workload=workload, name=f"vm{n}", new_session=True) for n in (1, 2)]
summary = {}
try:
    for g in guests:
        g.start()
        print(f"demo: {g.name}: QEMU pid {g.pid}, QMP {g.qmp_path}, serial {g.serial_path}")
    for g in guests:
        g.wait_serial(r"PKSM-WORKLOAD READY", timeout=120)
        print(f"demo: {g.name}: workload ready: {g.layout()}")
    print(f"demo: live query-pksm for {seconds} s (Ctrl-C stops early)")
    t0 = time.monotonic()
    last_print = 0
    try:
        while time.monotonic() - t0 < seconds:
            rows = [row(g.name, g, t0) for g in guests]
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J" + f"pksm demo: two {mem} MiB guests, plugin {pargs}\n\n"
                                 + HEAD + "\n" + "\n".join(r for r, _ in rows) + "\n")
                sys.stdout.flush()
            elif time.monotonic() - last_print >= 5 or last_print == 0:
                if last_print == 0:
                    print(HEAD)
                print("\n".join(r for r, _ in rows), flush=True)
                last_print = time.monotonic()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\ndemo: interrupted, stopping the guests")
    for g in guests:
        info = g.query_pksm()
        summary[g.name] = (info, g.pss_kib(), g.rss_kib(), g.verify_rounds(), g.failures(), g.layout())
finally:
    for g in guests:
        rc = g.stop()
        print(f"demo: {g.name} stopped (QEMU exit status {rc})")

print("\npksm demo summary")
print(f"{'guest':8} {'pages saved':>11} {'MiB saved':>9} {'of it zero':>10} {'cow breaks':>10} "
      f"{'QEMU PSS MiB':>12} {'guest RAM MiB':>13} {'verify rounds':>13} {'errors':>6}")
total = 0
for name, (i, pss, rss, rounds, fails, lay) in summary.items():
    pages = i["pages-sharing"] + i["zero-pages"]
    total += pages
    errs = sum(e for _, e in rounds) + len(fails)
    print(f"{name:8} {pages:11} {pages * 4096 / MiB:9.1f} {i['zero-pages'] * 4096 / MiB:10.1f} "
          f"{i['cow-breaks']:10} {pss / 1024:12.1f} {mem:13} {len(rounds):13} {errs:6}")
print(f"{'total':8} {total:11} {total * 4096 / MiB:9.1f}")
bad = [n for n, s in summary.items() if s[4] or any(e for _, e in s[3])]
if bad:
    print(f"demo: GUEST VERIFICATION FAILED in {bad}; serial logs in {workdir}")
    sys.exit(1)
print(f"demo: every guest verified its memory with 0 errors (serial logs in {workdir})")
PY
