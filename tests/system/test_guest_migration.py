"""Live migration of a deduplicating guest to a second QEMU on this machine
(over a unix socket): the guest's own verification keeps passing on the
destination, including writes into pages that were merged on the source."""
import os
import time

from conftest import FAST_PLUGIN_ARGS, TEST_WORKLOAD
from system_checks import assert_verification_ok, mergeable, wait_merged, wait_pksm


def test_migrate_deduplicating_guest(guests, plugin):
    workload = {**TEST_WORKLOAD, "cow-after": 15, "cow-every": 5}
    src = guests(plugin=plugin, plugin_args=FAST_PLUGIN_ARGS, workload=workload, name="src")
    src.start()
    src.wait_serial(r"PKSM-WORKLOAD READY", timeout=120)
    layout = src.layout()
    merged = wait_merged(src, layout)
    assert merged["pages-sharing"] >= 0.9 * mergeable(layout)[0]

    uri = "unix:" + os.path.join(src.sock_dir, "migrate.sock")
    dst = guests(plugin=plugin, plugin_args=FAST_PLUGIN_ARGS, workload=workload, name="dst",
                 incoming=uri)
    dst.start()
    assert dst.qmp().execute("query-status")["status"] == "inmigrate"

    assert src.qmp().execute("migrate", {"uri": uri}) == {}
    deadline = time.monotonic() + 180
    while True:
        st = src.qmp().execute("query-migrate")
        if st.get("status") == "completed":
            break
        assert st.get("status") not in ("failed", "cancelled"), st
        assert time.monotonic() < deadline, f"migration not completed in 180 s: {st}"
        time.sleep(0.5)
    assert src.qmp().execute("query-status")["status"] == "postmigrate"

    deadline = time.monotonic() + 30
    while dst.qmp().execute("query-status")["status"] != "running":
        assert time.monotonic() < deadline, "destination did not start running"
        time.sleep(0.2)

    # On the destination the workload goes on: verification rounds and at
    # least one COW round (writes into pages merged on the source) pass.
    cow = dst.wait_serial(r"PKSM-WORKLOAD cow round=\d+ written=\d+ restored=\d+ errors=0",
                          timeout=60)
    dst.wait_verify(2, timeout=60, after=cow.end())
    assert_verification_ok(dst, min_rounds=3)
    assert_verification_ok(src, min_rounds=1)
    assert dst.qmp().execute("query-status")["status"] == "running"

    # Deduplication resumes on the destination once the migration is over.
    wait_pksm(dst, lambda i: not i["paused"] and i["pages-sharing"] > 0, 120,
              "merging on the destination after the migration")
    pos = len(dst.serial())
    dst.wait_verify(1, timeout=60, after=pos)
    assert_verification_ok(dst, min_rounds=1, after=pos)
