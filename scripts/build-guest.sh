#!/bin/bash
# Builds the small test guest pksm's system tests, demo and benchmark boot:
#   out/guest/vmlinuz     Debian's cloud kernel (copied from /boot)
#   out/guest/initrd.img  busybox-static + guest/init + guest/workload (static C)
# Idempotent: rebuilds only what is older than its sources. Needs the packages
# of scripts/setup.sh (linux-image-cloud-amd64, busybox-static, cpio, gzip, gcc).
#
#   scripts/build-guest.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/out/guest
FORCE=0; [[ ${1:-} == --force ]] && FORCE=1
mkdir -p "$OUT"

# Kernel: the newest installed cloud kernel.
kernel=$(ls -1 /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -1 || true)
if [[ -z $kernel ]]; then
  echo "build-guest: no /boot/vmlinuz-*-cloud-amd64; run scripts/setup.sh (linux-image-cloud-amd64)" >&2
  exit 1
fi
if [[ $FORCE == 1 || ! -f $OUT/vmlinuz || $kernel -nt $OUT/vmlinuz ]] || ! cmp -s "$kernel" "$OUT/vmlinuz"; then
  cp "$kernel" "$OUT/vmlinuz"
  echo "build-guest: kernel $(basename "$kernel")"
fi

# Workload: static, so the initramfs needs no libc.
if [[ $FORCE == 1 || ! -x $OUT/workload || guest/workload.c -nt $OUT/workload ]]; then
  gcc -static -O2 -Wall -Wextra -Werror -std=gnu11 -o "$OUT/workload.tmp" guest/workload.c
  mv "$OUT/workload.tmp" "$OUT/workload"
  echo "build-guest: workload built"
fi

busybox=/bin/busybox
[[ -x $busybox ]] || busybox=/usr/bin/busybox
if ! { LC_ALL=C ldd "$busybox" 2>&1 || true; } | grep -q 'not a dynamic'; then
  echo "build-guest: $busybox is not static; install busybox-static (scripts/setup.sh)" >&2
  exit 1
fi

if [[ $FORCE == 0 && -f $OUT/initrd.img && $OUT/initrd.img -nt $OUT/workload \
      && $OUT/initrd.img -nt guest/init && $OUT/initrd.img -nt $busybox \
      && $OUT/initrd.img -nt scripts/build-guest.sh ]]; then
  echo "build-guest: out/guest is up to date"
  exit 0
fi

stage=$(mktemp -d "$OUT/stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,proc,sys,dev,tmp,etc,usr/bin,usr/sbin}
cp "$busybox" "$stage/bin/busybox"
for applet in $("$busybox" --list-full); do
  [[ -e $stage/$applet ]] || ln -s /bin/busybox "$stage/$applet"
done
cp guest/init "$stage/init"; chmod 755 "$stage/init"
cp "$OUT/workload" "$stage/workload"
# /dev/console lets the kernel give /init a console before devtmpfs is mounted.
mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || true
(cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) | gzip -6 > "$OUT/initrd.img.tmp"
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
echo "build-guest: $OUT/initrd.img ($(du -k "$OUT/initrd.img" | cut -f1) KiB)"
