"""pksm-set-parameters run=2 unmerges every page of a running guest: the
statistics fall to zero, the merged pages get private copies again, the
guest's data is intact, and run=1 afterwards merges again."""
from conftest import FAST_PLUGIN_ARGS, TEST_WORKLOAD
from system_checks import PAGE, assert_verification_ok, mergeable, wait_merged, wait_pksm


def test_run_2_restores_everything(guests, plugin):
    g = guests(plugin=plugin, plugin_args=FAST_PLUGIN_ARGS,
               workload={**TEST_WORKLOAD, "cow-after": 0})   # no writes: a stable picture
    g.start()
    g.wait_serial(r"PKSM-WORKLOAD READY", timeout=120)
    layout = g.layout()
    dup, _ = mergeable(layout)
    wait_merged(g, layout)
    pss_merged = g.pss_kib()

    assert g.qmp().execute("pksm-set-parameters", {"run": 2}) == {}
    info = wait_pksm(
        g, lambda i: i["run"] == 0 and i["pages-sharing"] == 0 and i["pages-shared"] == 0
        and i["zero-pages"] == 0, 120, "run 0 with no shared, sharing or zero pages after run=2")
    assert all(b["pages-sharing"] == 0 and b["zero-pages"] == 0 for b in info["ram-blocks"]), info
    assert g.qmp().execute("query-pksm-parameters")["run"] == 0

    # Every shared duplicate has its own page again.
    grown_kib = g.pss_kib() - pss_merged
    assert grown_kib * 1024 >= 0.8 * dup * PAGE, \
        f"PSS grew by {grown_kib} KiB after unmerging; {dup * 4} KiB of duplicates were shared"

    # It stays unmerged (run is 0) while the guest keeps verifying its pages.
    start = len(g.serial())
    g.wait_verify(2, timeout=60, after=start)
    info = g.query_pksm()
    assert info["pages-sharing"] == 0 and info["zero-pages"] == 0 and info["run"] == 0, info
    assert_verification_ok(g, min_rounds=2, after=start)
    assert_verification_ok(g, min_rounds=3)

    # And merging can start again.
    assert g.qmp().execute("pksm-set-parameters", {"run": 1}) == {}
    wait_merged(g, layout)
    g.wait_verify(1, timeout=60, after=len(g.serial()))
    assert_verification_ok(g, min_rounds=4)
