#!/bin/bash
# Boots one pksm test guest with the plugin and a QMP socket, for manual use.
# Prints the QMP socket path and the serial log path, then waits; Ctrl-C (or
# a QMP "quit") ends QEMU.
#
#   scripts/run-guest.sh [options] [-- extra QEMU arguments]
#     --mem MIB             guest RAM (default 512)
#     --workload K=V,...    workload options (mode, mib, dup, zero, seeds, verify,
#                           cow-after, cow-every, cow-frac, bw-mib, seconds;
#                           default mib=128)
#     --plugin-args K=V,... plugin arguments (run, pages-to-scan, sleep-ms, delay,
#                           use-zero-pages, max-page-sharing, dirty-log)
#     --no-plugin           plain QEMU (mem-merge=off), for comparison
#     --dir DIR             where the serial log and QMP socket go (default out/run)
#     --name NAME           file prefix (default guest)
#
# Example: scripts/run-guest.sh --plugin-args sleep-ms=20,pages-to-scan=4000
#          tools/pksm-ctl/pksm-ctl status --socket out/run/guest.qmp
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${PKSM_BUILD:-$ROOT/build}
MEM=512; WORKLOAD=mib=128; PARGS=""; PLUGIN=1; DIR=$ROOT/out/run; NAME=guest
while (($#)); do
  case $1 in
    --mem) MEM=$2; shift 2;;
    --workload) WORKLOAD=$2; shift 2;;
    --plugin-args) PARGS=$2; shift 2;;
    --no-plugin) PLUGIN=0; shift;;
    --dir) DIR=$2; shift 2;;
    --name) NAME=$2; shift 2;;
    --) shift; break;;
    -h|--help) sed -n '2,19p' "$0"; exit 0;;
    *) echo "run-guest: unknown option $1 (see --help)" >&2; exit 2;;
  esac
done
bash scripts/build-guest.sh >/dev/null
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
append="console=ttyS0 panic=-1 quiet"
IFS=, read -ra kv <<<"$WORKLOAD"
for w in "${kv[@]}"; do [[ -n $w ]] && append+=" pksm.$w"; done
args=(-accel tcg -machine pc,mem-merge=off -m "$MEM" -nodefaults -no-user-config -display none
      -no-reboot -serial "file:$DIR/$NAME.serial.log"
      -qmp "unix:$DIR/$NAME.qmp,server=on,wait=off"
      -kernel out/guest/vmlinuz -initrd out/guest/initrd.img -append "$append")
if [[ $PLUGIN == 1 ]]; then
  so=$BUILD/qemu-plugin/libpksm-qemu.so
  if [[ ! -f $so ]]; then
    [[ -f $BUILD/build.ninja ]] || meson setup "$BUILD" >/dev/null
    meson compile -C "$BUILD" | tail -3
  fi
  [[ -f $so ]] || { echo "run-guest: $so not built" >&2; exit 1; }
  args+=(-plugin "$so${PARGS:+,$PARGS}")
fi
echo "run-guest: QMP socket  $DIR/$NAME.qmp"
echo "run-guest: serial log  $DIR/$NAME.serial.log"
qemu-system-x86_64 "${args[@]}" "$@" </dev/null &
pid=$!
echo "run-guest: QEMU pid    $pid (Ctrl-C ends it)"
trap 'kill -TERM $pid 2>/dev/null; wait $pid' INT TERM
wait $pid
