"""Fixtures of the system tests: real TCG guests running the pksm plugin.

    plugin       path of libpksm-qemu.so, built with `meson compile` in
                 $PKSM_BUILD (default <repo>/build) if needed; a build failure
                 fails the test loudly
    guest_image  (kernel, initrd) from scripts/build-guest.sh
    guests       factory: guests(**Guest kwargs) -> a started-later Guest in
                 the test's tmp_path; every QEMU it made is stopped by PID when
                 the test ends, passed or failed

Defaults for test guests are small so the whole directory stays within a few
minutes on two cores: 256 MiB of RAM, a 64 MiB workload.
"""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts"))

from pksmlib.guest import Guest, ensure_guest_image, ensure_plugin  # noqa: E402

# Plugin arguments that merge a small guest quickly.
FAST_PLUGIN_ARGS = {"run": 1, "pages-to-scan": 4096, "sleep-ms": 10, "use-zero-pages": 1}
# Workload of a test guest (see guest/workload.c).
TEST_WORKLOAD = {"mib": 64, "dup": 50, "zero": 25, "seeds": 4, "verify": 2,
                 "cow-after": 40, "cow-every": 8, "cow-frac": 16}


@pytest.fixture(scope="session")
def guest_image():
    return ensure_guest_image()


@pytest.fixture(scope="session")
def plugin():
    return ensure_plugin()


@pytest.fixture
def guests(tmp_path, guest_image):
    made = []

    def make(**kwargs):
        kwargs.setdefault("mem_mib", 256)
        kwargs.setdefault("workload", dict(TEST_WORKLOAD))
        kwargs.setdefault("name", f"guest{len(made)}")
        g = Guest(str(tmp_path), **kwargs)
        made.append(g)
        return g

    try:
        yield make
    finally:
        for g in made:
            try:
                g.stop()
            except Exception as e:  # keep stopping the others
                print(f"stopping {g.name} (pid {g.pid}): {e}")
        for g in made:
            if g.proc is not None:
                assert g.proc.poll() is not None, f"QEMU pid {g.pid} still running"
