"""Bad QMP input gets a GenericError naming the bad argument, changes
nothing, and the guest keeps running and verifying."""
import pytest

from conftest import FAST_PLUGIN_ARGS
from pksmlib.qmp import QMPError
from system_checks import assert_verification_ok, wait_pksm

BAD_SETTINGS = [
    ({"run": 3}, "run"),
    ({"run": -1}, "run"),
    ({"run": "1"}, "run"),
    ({"pages-to-scan": 0}, "pages-to-scan"),
    ({"pages-to-scan": 10000001}, "pages-to-scan"),
    ({"sleep-ms": 60001}, "sleep-ms"),
    ({"sleep-ms": "fast"}, "sleep-ms"),
    ({"sleep-ms": 1.5}, "sleep-ms"),
    ({"delay": 1001}, "delay"),
    ({"delay": -2}, "delay"),
    ({"use-zero-pages": 2}, "use-zero-pages"),
    ({"max-page-sharing": 1}, "max-page-sharing"),
    ({"new-ratio": 0}, "new-ratio"),
    ({"new-ratio": 100}, "new-ratio"),
    ({"no-such-knob": 1}, "no-such-knob"),
    # all or nothing: the good value must not be applied either
    ({"sleep-ms": 33, "pages-to-scan": 0}, "pages-to-scan"),
    ({"delay": 7, "run": 9}, "run"),
]


def test_bad_qmp_input_is_refused_and_guest_keeps_running(guests, plugin):
    g = guests(plugin=plugin, plugin_args=FAST_PLUGIN_ARGS)
    g.start()
    g.wait_serial(r"PKSM-WORKLOAD READY", timeout=120)
    q = g.qmp()
    before = q.execute("query-pksm-parameters")
    assert before["run"] == 1 and before["pages-to-scan"] == FAST_PLUGIN_ARGS["pages-to-scan"], before

    for args, name in BAD_SETTINGS:
        with pytest.raises(QMPError) as err:
            q.execute("pksm-set-parameters", args)
        assert err.value.error_class == "GenericError", (args, err.value)
        assert name in err.value.desc, f"{args}: error {err.value.desc!r} does not name {name!r}"
        now = q.execute("query-pksm-parameters")
        assert now == before, f"{args} was refused but changed the parameters: {before} -> {now}"

    # Unexpected arguments to the query commands are refused too.
    for cmd in ("query-pksm", "query-pksm-parameters"):
        with pytest.raises(QMPError) as err:
            q.execute(cmd, {"verbose": True})
        assert "verbose" in err.value.desc, f"{cmd}: {err.value.desc!r}"

    # A valid change still works after all that, and only it changes.
    assert q.execute("pksm-set-parameters", {"sleep-ms": 15, "delay": 2}) == {}
    after = q.execute("query-pksm-parameters")
    assert after == {**before, "sleep-ms": 15, "delay": 2}, after

    # The guest runs on: QEMU says running, merging goes on, the workload
    # keeps verifying without errors.
    assert q.execute("query-status")["status"] == "running"
    wait_pksm(g, lambda i: i["run"] == 1 and i["pages-sharing"] > 0, 120, "merging after bad input")
    pos = len(g.serial())
    g.wait_verify(2, timeout=60, after=pos)
    assert_verification_ok(g, min_rounds=2, after=pos)
    assert q.execute("query-status")["status"] == "running"
