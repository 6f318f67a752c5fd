"""pksm in a real libvirt domain: a TCG guest whose definition gets the
plugin from `pksm-ctl enable`, started by libvirtd as user libvirt-qemu
under libvirt's default seccomp sandbox, running the dedup workload of the
test guest (guest/workload.c), which verifies its own pages all along.

Checked through `virsh qemu-monitor-command --return-value` (the parsed
return), through pksm-ctl by domain name, and through pksm-exporter.
The tests of this file share one running domain and run in file order.
"""
import json
import re
import signal
import subprocess
import urllib.request

import pytest

from libvirt_env import (PKSM_EXPORTER, TAG, ctl, domain_log_tail, domain_xml, free_port, qemu_pid, qmp_reply,
                         qmp_return, serial_path, start_domain, virsh, wait_for)

MEMORY_MIB = 192
WORKLOAD_MIB = 32
# Merge quickly: the test is about the integration, not about pacing.
PLUGIN_SETTINGS = ["pages-to-scan=4000", "sleep-ms=10", "delay=1"]
MERGE_TIMEOUT_S = 180


def serial(name):
    try:
        with open(serial_path(name), errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def layout(name):
    m = re.search(r"PKSM-WORKLOAD layout pages=(\d+) dup=(\d+) seeds=(\d+) zero=(\d+) unique=(\d+)", serial(name))
    assert m, f"no layout line on the serial console:\n{serial(name)[-2000:]}"
    pages, dup, seeds, zero, unique = map(int, m.groups())
    return {"pages": pages, "dup": dup, "seeds": seeds, "zero": zero, "unique": unique}


def verify_rounds(name):
    """[(round, errors)] of the guest's verification lines so far; fails the
    test on any VERIFY FAILED line."""
    text = serial(name)
    assert "VERIFY FAILED" not in text, "the guest found corrupted pages:\n" + "\n".join(
        l for l in text.splitlines() if "VERIFY FAILED" in l)
    return [(int(r), int(e)) for r, e in re.findall(r"PKSM-WORKLOAD verify round=(\d+) errors=(\d+)", text)]


def wait_verify_after(name, round_no, timeout=60):
    """Waits for a verification round later than round_no; asserts it and
    every earlier one found no error."""
    rounds = wait_for(lambda: [r for r in verify_rounds(name) if r[0] > round_no], timeout, 0.5,
                      f"a guest verification round after {round_no}")
    assert all(e == 0 for _, e in verify_rounds(name)), verify_rounds(name)
    return rounds[-1][0]


def last_round(name):
    rounds = verify_rounds(name)
    return rounds[-1][0] if rounds else 0


@pytest.fixture(scope="module")
def vm(domains, guest_files, plugin):
    name = f"{TAG}-vm"
    cmdline = f"console=ttyS0 panic=-1 pksm.mib={WORKLOAD_MIB} pksm.verify=2 pksm.cow-after=10 pksm.cow-every=8"
    domains.define(name, domain_xml(name, guest_files["kernel"], guest_files["initrd"], serial_path(name), cmdline,
                                    memory_mib=MEMORY_MIB))
    p = ctl("enable", name, "--plugin", plugin, *PLUGIN_SETTINGS)
    assert p.returncode == 0, p.stderr
    start_domain(name)
    def ready():
        if virsh("domstate", name).stdout.strip() != "running":
            pytest.fail(f"domain {name} stopped while booting:\n{domain_log_tail(name)}\n"
                        f"--- serial:\n{serial(name)[-2000:]}")
        return "PKSM-WORKLOAD READY" in serial(name)
    wait_for(ready, 90, 0.5, "the guest's PKSM-WORKLOAD READY")
    return name


@pytest.fixture(scope="module")
def plain_vm(domains, guest_files):
    """A domain without pksm, started paused (it only has to answer QMP)."""
    name = f"{TAG}-plain"
    domains.define(name, domain_xml(name, guest_files["kernel"], guest_files["initrd"], serial_path(name),
                                    "console=ttyS0", memory_mib=64))
    start_domain(name, "--paused")
    return name


def test_runs_as_libvirt_qemu_under_seccomp_with_plugin(vm, plugin):
    pid = qemu_pid(vm)
    assert pid, "no QEMU pidfile for the domain"
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
    assert set(uids) == {"64055"}, f"QEMU does not run as libvirt-qemu (uid 64055): Uid {uids}"
    assert re.search(r"^Seccomp:\s+2$", status, re.M), "QEMU is not under a seccomp filter"
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().decode().split("\0")
    sandbox = argv[argv.index("-sandbox") + 1]
    assert sandbox.startswith("on,") and "spawn=deny" in sandbox, sandbox
    plugin_arg = argv[argv.index("-plugin") + 1]
    assert plugin_arg.split(",")[0] == plugin and "pages-to-scan=4000" in plugin_arg, plugin_arg
    machine = argv[argv.index("-machine") + 1]
    assert "mem-merge=off" in machine, f"<nosharepages/> did not turn kernel KSM off: {machine}"
    assert "-accel" in argv and argv[argv.index("-accel") + 1] == "tcg"
    cmds = qmp_return(vm, "query-commands")
    names = {c["name"] for c in cmds}
    assert {"query-pksm", "query-pksm-parameters", "pksm-set-parameters"} <= names


def test_guest_pages_merge_and_verify(vm):
    lay = layout(vm)
    want_sharing = (lay["dup"] - lay["seeds"]) // 2
    want_zero = lay["zero"] // 2

    def merged():
        s = qmp_return(vm, "query-pksm")
        return s if s["pages-sharing"] >= want_sharing and s["zero-pages"] >= want_zero else None

    start_round = last_round(vm)
    stats = wait_for(merged, MERGE_TIMEOUT_S, 1.0,
                     f"pages-sharing >= {want_sharing} and zero-pages >= {want_zero} (half the workload's "
                     f"duplicate and zero pages)")
    assert stats["run"] == 1
    assert stats["pages-shared"] >= 1 and stats["pages-shared"] < stats["pages-sharing"]
    assert stats["full-scans"] >= 1
    assert stats["general-profit"] > 0
    blocks = {b["name"]: b for b in stats["ram-blocks"]}
    assert "pc.ram" in blocks, blocks
    assert blocks["pc.ram"]["size"] == MEMORY_MIB << 20
    assert blocks["pc.ram"]["pages-sharing"] + blocks["pc.ram"]["zero-pages"] > 0
    # the guest's own checksums still hold after its pages merged
    wait_verify_after(vm, max(start_round, last_round(vm)))


def test_guest_writes_to_merged_pages_land(vm):
    """The workload writes into merged duplicate and zero pages (COW
    breaks), reads them back and verifies everything."""
    text_cow = wait_for(lambda: re.findall(r"PKSM-WORKLOAD cow round=(\d+) written=(\d+) restored=(\d+) errors=(\d+)",
                                           serial(vm)), 60, 0.5, "a COW round of the guest workload")
    for _rnd, written, _restored, errors in text_cow:
        assert int(errors) == 0
    assert int(text_cow[0][1]) > 0
    wait_for(lambda: qmp_return(vm, "query-pksm")["cow-breaks"] > 0, 30, 1.0, "cow-breaks > 0")
    wait_verify_after(vm, last_round(vm))


def test_set_parameters_through_libvirt(vm):
    assert qmp_return(vm, "pksm-set-parameters", {"delay": 3, "pages-to-scan": 3000}) == {}
    params = qmp_return(vm, "query-pksm-parameters")
    assert params["delay"] == 3 and params["pages-to-scan"] == 3000
    bad = [({"delay": "abc"}, "delay"), ({"delay": -1}, "delay"), ({"delay": 1000000}, "delay"),
           ({"bogus": 1}, "bogus"), ({"use-zero-pages": 5}, "use-zero-pages"), ({"new-ratio": 0}, "new-ratio"),
           ({"run": 7}, "run"), ({"delay": 4, "max-page-sharing": 1}, "max-page-sharing")]
    for args, key in bad:
        reply = qmp_reply(vm, "pksm-set-parameters", args)
        assert "error" in reply, (args, reply)
        assert reply["error"]["class"] == "GenericError", reply
        assert f"'{key}'" in reply["error"]["desc"], (args, reply["error"]["desc"])
    # all or nothing: nothing of the refused sets changed
    assert qmp_return(vm, "query-pksm-parameters") == params
    # and the guest keeps running and verifying
    assert virsh("domstate", vm).stdout.strip() == "running"
    assert qmp_return(vm, "query-pksm")["run"] == 1
    wait_verify_after(vm, last_round(vm))


def test_pksm_ctl_by_domain_name(vm, plugin):
    p = ctl("--domain", vm, "status")
    assert p.returncode == 0, p.stderr
    assert f"pksm on domain {vm}" in p.stdout and "pages sharing" in p.stdout and "pc.ram" in p.stdout
    p = ctl("status", "--domain", vm, "--json")
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["stats"]["pages-sharing"] > 0 and j["parameters"]["delay"] == 3

    p = ctl("--domain", vm, "set", "pages-to-scan=2500", "sleep_ms=15")
    assert p.returncode == 0, p.stderr
    params = qmp_return(vm, "query-pksm-parameters")
    assert params["pages-to-scan"] == 2500 and params["sleep-ms"] == 15
    p = ctl("--domain", vm, "set", "delay=1000000")
    assert p.returncode == 1 and "'delay'" in p.stderr, p.stderr
    p = ctl("--domain", vm, "set", "bogus=1")
    assert p.returncode == 2 and "unknown key 'bogus'" in p.stderr
    assert qmp_return(vm, "query-pksm-parameters") == params

    p = ctl("--domain", vm, "watch", "--count", "2", "--interval", "0.5")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count(f"pksm on domain {vm}") == 2

    # enable on a running domain: idempotent, and says when it takes effect
    p = ctl("enable", vm, "--plugin", plugin, *PLUGIN_SETTINGS)
    assert p.returncode == 0, p.stderr
    assert "already enabled" in p.stdout and "next start" in p.stdout, p.stdout

    p = ctl("list", "--json")
    assert p.returncode == 0, p.stderr
    row = {r["domain"]: r for r in json.loads(p.stdout)}[vm]
    assert row["state"] == "running" and row["enabled"] == "yes" and row["loaded"] == "run=1"


def test_pksm_ctl_on_domain_without_pksm(plain_vm):
    p = ctl("--domain", plain_vm, "status")
    assert p.returncode == 1
    assert f"pksm is not loaded in domain {plain_vm}" in p.stderr, p.stderr


def _scrape(port):
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        assert r.status == 200
        text = r.read().decode()
    samples = {}
    types = {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def test_exporter_serves_domain_metrics(vm, plain_vm):
    port = free_port()
    proc = subprocess.Popen([PKSM_EXPORTER, "--listen", f"127.0.0.1:{port}", "--connect", "qemu:///system"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def up():
            assert proc.poll() is None, proc.communicate()
            try:
                return _scrape(port)
            except OSError:
                return None
        samples, types = wait_for(up, 20, 0.2, "pksm-exporter to answer")
        dom = (("domain", vm),)
        assert samples[("pksm_up", dom)] == 1
        assert ("pksm_up", (("domain", plain_vm),)) not in samples, "a domain without pksm must not be listed"
        stats = qmp_return(vm, "query-pksm")
        params = qmp_return(vm, "query-pksm-parameters")
        lay = layout(vm)
        assert samples[("pksm_pages_sharing", dom)] >= (lay["dup"] - lay["seeds"]) // 2
        assert samples[("pksm_zero_pages", dom)] >= lay["zero"] // 2
        assert samples[("pksm_pages_shared", dom)] >= 1
        assert 1 <= samples[("pksm_full_scans_total", dom)] <= stats["full-scans"]
        assert types["pksm_full_scans"] == "counter" and types["pksm_cow_breaks"] == "counter"
        assert samples[("pksm_run", dom)] == 1
        assert samples[("pksm_pages_to_scan", dom)] == params["pages-to-scan"]
        assert samples[("pksm_sleep_seconds", dom)] == pytest.approx(params["sleep-ms"] / 1000.0)
        assert samples[("pksm_scanner_cpu_seconds_total", dom)] > 0
        assert samples[("pksm_cow_breaks_total", dom)] >= 1
        assert samples[("pksm_ram_block_size_bytes", (("block", "pc.ram"), ("domain", vm)))] == MEMORY_MIB << 20
        assert ("pksm_general_profit_bytes", dom) in samples
        assert samples[("pksm_exporter_libvirt_up", ())] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("pksm-exporter did not stop on SIGTERM")
    assert rc == 0, proc.stderr.read()


def test_unmerge_by_domain_name_then_merge_again(vm):
    before = last_round(vm)
    p = ctl("--domain", vm, "unmerge", "--timeout", "120")
    assert p.returncode == 0, p.stderr
    s = qmp_return(vm, "query-pksm")
    assert s["run"] == 0 and s["pages-sharing"] == 0 and s["zero-pages"] == 0 and s["pages-shared"] == 0, s
    assert qmp_return(vm, "query-pksm-parameters")["run"] == 0
    wait_verify_after(vm, max(before, last_round(vm)))  # every page reads what the guest wrote
    # switched on again, it merges again
    assert ctl("--domain", vm, "set", "run=1").returncode == 0
    wait_for(lambda: qmp_return(vm, "query-pksm")["pages-sharing"] > 0, MERGE_TIMEOUT_S, 1.0,
             "pages-sharing > 0 after run=1")
    wait_verify_after(vm, last_round(vm))
