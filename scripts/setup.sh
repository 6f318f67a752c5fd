#!/bin/bash
# Installs everything pksm needs from Debian 12's archive. Idempotent: a
# package already present is not downloaded again, and apt-get update runs
# only when something is missing.
#
#   scripts/setup.sh            build + test dependencies (engine, QEMU, guest)
#   scripts/setup.sh --libvirt  also libvirt and the exporter's Python modules
set -euo pipefail

pkgs=(
  # build
  meson ninja-build pkg-config g++ libxxhash-dev libboost-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # sanitizer runtimes come with g++; clang is not needed
  # QEMU and the small test guest
  qemu-system-x86 qemu-utils linux-image-cloud-amd64 busybox-static cpio gzip
  # the QMP client and scripts use Debian's python
  python3 python3-pytest
)
if [[ ${1:-} == --libvirt ]]; then
  pkgs+=(libvirt-daemon-system libvirt-clients python3-libvirt python3-prometheus-client)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # linux-image-* would run update-initramfs / bootloader hooks; they are harmless
  # in a container and the kernel file is all the test guest needs.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "setup: all dependencies present"
