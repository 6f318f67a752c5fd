"""A real guest under pksm: its duplicate and zero pages are merged, the
QEMU process's memory really shrinks, and the guest's writes into merged
pages land (COW breaks) while its own verification never fails."""
import pytest

from conftest import FAST_PLUGIN_ARGS
from system_checks import PAGE, assert_verification_ok, mergeable, wait_merged, wait_pksm


# auto: QEMU's dirty log under TCG. uffd-async: the asynchronous userfaultfd
# log, where every first touch of guest RAM and every write that races a
# merge goes through pksm's fault thread (core/linux/README.md).
@pytest.mark.parametrize("dirty_log", ["auto", "uffd-async"])
def test_merges_workload_and_cow_writes_land(guests, plugin, dirty_log):
    # Start stopped (run=0) to measure the process before any merge.
    g = guests(plugin=plugin, plugin_args={**FAST_PLUGIN_ARGS, "run": 0, "dirty-log": dirty_log})
    g.start()
    g.wait_serial(r"PKSM-WORKLOAD READY", timeout=120)
    layout = g.layout()
    dup, zero = mergeable(layout)
    assert dup > 1000 and zero > 1000, layout

    idle = g.query_pksm()
    assert idle["run"] == 0
    assert idle["dirty-log"] == ("uffd-async" if dirty_log == "uffd-async" else "qemu"), idle
    assert idle["pages-sharing"] == 0 and idle["zero-pages"] == 0, idle
    pss_before = g.pss_kib()

    assert g.qmp().execute("pksm-set-parameters", {"run": 1}) == {}
    assert g.qmp().execute("query-pksm-parameters")["run"] == 1
    info = wait_merged(g, layout)

    # Per-block statistics add up to the totals; the guest's RAM is scanned.
    # (A block's pages-sharing counts every page mapping a stable page, the
    # first one too, so the sum lies between pages-sharing and
    # pages-sharing + pages-shared.)
    blocks = info["ram-blocks"]
    assert any(b["name"] == "pc.ram" for b in blocks), blocks
    in_blocks = sum(b["pages-sharing"] for b in blocks)
    assert info["pages-sharing"] <= in_blocks <= info["pages-sharing"] + info["pages-shared"], info
    assert sum(b["zero-pages"] for b in blocks) == info["zero-pages"], info

    # The saving is real: the QEMU process's PSS (pool pages included)
    # dropped by at least 80% of the workload's mergeable pages.
    saved_kib = pss_before - g.pss_kib()
    assert saved_kib * 1024 >= 0.8 * (dup + zero) * PAGE, \
        f"PSS dropped by {saved_kib} KiB only; the workload alone offers {(dup + zero) * 4} KiB"

    # Now the workload writes into merged dup and zero pages: every write
    # must land (the guest reads each back at once and verifies all pages).
    cow_breaks_before = info["cow-breaks"]
    pos = len(g.serial())
    m = g.wait_serial(r"PKSM-WORKLOAD cow round=\d+ written=(\d+) restored=\d+ errors=(\d+)",
                      timeout=90, after=pos)
    assert int(m.group(1)) > 100 and int(m.group(2)) == 0, m.group(0)
    end = g.wait_verify(2, timeout=60, after=m.end())
    wait_pksm(g, lambda i: i["cow-breaks"] > cow_breaks_before, 60,
              "cow-breaks counting the guest's writes into merged pages")

    assert g.qmp().execute("query-status")["status"] == "running"
    assert_verification_ok(g, min_rounds=2, after=m.end())
    assert_verification_ok(g, min_rounds=5)
    assert end <= len(g.serial())
