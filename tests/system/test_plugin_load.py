"""Loading libpksm-qemu.so into a stock QEMU: start-up refusals, the QMP
command set, events, and which RAM blocks the plugin scans or skips.

These tests need no guest image: QEMU starts paused (-S) with the plugin, so
its RAM blocks exist and QMP answers, but no guest code runs. Every QEMU is
ended by its PID.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts"))

from pksmlib.qmp import QMPClient, QMPError  # noqa: E402

QEMU = os.environ.get("PKSM_QEMU", "qemu-system-x86_64")
BASE = ["-accel", "tcg", "-machine", "pc,mem-merge=off", "-nodefaults", "-no-user-config",
        "-display", "none", "-S"]


def plugin_arg(plugin, *args):
    return ",".join([plugin] + list(args))


def run_refused(plugin, *args):
    """Starts QEMU with plugin arguments that must be refused; returns stderr."""
    r = subprocess.run([QEMU] + BASE + ["-m", "128", "-plugin", plugin_arg(plugin, *args)],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=60)
    assert r.returncode != 0, f"QEMU started with bad plugin arguments {args}"
    return r.stderr


class Qemu:
    """One paused QEMU with the plugin and a QMP socket."""

    def __init__(self, plugin, plugin_args=(), extra=(), mem="256"):
        self.dir = tempfile.mkdtemp(prefix="pksm-load-")
        self.sock = os.path.join(self.dir, "qmp")
        self.log = open(os.path.join(self.dir, "qemu.log"), "w+")
        cmd = [QEMU] + BASE + ["-m", mem, "-qmp", f"unix:{self.sock},server=on,wait=off",
                               "-plugin", plugin_arg(plugin, *plugin_args)] + list(extra)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        try:
            self.qmp = QMPClient(self.sock, connect_wait=20.0)
        except Exception:
            self.stop()
            raise

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait_for(self, predicate, what, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            info = self.qmp.execute("query-pksm")
            if predicate(info):
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; last query-pksm: {info}\n"
                                     f"QEMU output:\n{self.output()}")
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def qemu_factory(plugin):
    made = []

    def make(*args, **kwargs):
        q = Qemu(plugin, *args, **kwargs)
        made.append(q)
        return q

    yield make
    for q in made:
        q.stop()


@pytest.mark.parametrize("arg,named", [
    ("pages-to-scna=5", "pages-to-scna"),       # unknown key
    ("delay=abc", "'abc'"),                     # not a number
    ("delay=1001", "'1001'"),                   # out of range
    ("pages-to-scan=0", "pages-to-scan=0"),
    ("max-page-sharing=1", "max-page-sharing=1"),
    ("new-ratio=100", "new-ratio=100"),
    ("run=2", "run=2"),                         # unmerging is a QMP action only
    ("use-zero-pages=maybe", "maybe"),
    ("dirty-log=kvm", "'kvm'"),
])
def test_bad_argument_refuses_start_naming_it(plugin, arg, named):
    err = run_refused(plugin, arg)
    assert "pksm" in err and named in err, err


def test_duplicate_argument_is_refused(plugin):
    err = run_refused(plugin, "delay=1", "delay=2")
    assert "given twice" in err, err


def test_loaded_plugin_offers_its_qmp_commands(qemu_factory):
    q = qemu_factory(["delay=3", "pages-to-scan=500", "sleep-ms=15"])
    names = {c["name"] for c in q.qmp.execute("query-commands")}
    assert {"query-pksm", "query-pksm-parameters", "pksm-set-parameters"} <= names
    params = q.qmp.execute("query-pksm-parameters")
    assert params == {"run": 1, "pages-to-scan": 500, "sleep-ms": 15, "delay": 3,
                      "use-zero-pages": True, "max-page-sharing": 256, "new-ratio": 50}
    info = q.wait_for(lambda i: i["ram-blocks"], "pc.ram to be scanned")
    assert info["dirty-log"] == "qemu"
    assert [b["name"] for b in info["ram-blocks"]] == ["pc.ram"]
    assert info["ram-blocks"][0]["size"] == 256 << 20


def test_run_changes_emit_events_and_apply(qemu_factory):
    q = qemu_factory()
    q.qmp.execute("pksm-set-parameters", {"run": 0, "delay": 7})
    ev = q.qmp.wait_event("PKSM_RUN_CHANGED", timeout=10)
    assert ev["data"] == {"run": 0, "reason": "qmp"}
    assert "seconds" in ev["timestamp"]
    assert q.qmp.execute("query-pksm-parameters")["delay"] == 7
    q.wait_for(lambda i: i["run"] == 0, "run 0")
    # run 2 on an idle VM unmerges nothing and falls back to 0 by itself.
    q.qmp.execute("pksm-set-parameters", {"run": 2})
    ev = q.qmp.wait_event("PKSM_RUN_CHANGED", timeout=10)
    assert ev["data"]["run"] == 2
    ev = q.qmp.wait_event("PKSM_RUN_CHANGED", timeout=30)
    assert ev["data"] == {"run": 0, "reason": "unmerge-done"}
    assert q.qmp.execute("query-pksm-parameters")["run"] == 0


def test_bad_qmp_arguments_change_nothing(qemu_factory):
    q = qemu_factory()
    before = q.qmp.execute("query-pksm-parameters")
    for args, named in [({"delay": "3"}, "'delay'"), ({"bogus": 1}, "'bogus'"),
                        ({"delay": 2, "new-ratio": 0}, "'new-ratio'"),
                        ({"use-zero-pages": 1}, "'use-zero-pages'")]:
        with pytest.raises(QMPError) as e:
            q.qmp.execute("pksm-set-parameters", args)
        assert e.value.error_class == "GenericError"
        assert named in e.value.desc, e.value.desc
    assert q.qmp.execute("query-pksm-parameters") == before
    assert q.qmp.execute("query-status")["status"] == "prelaunch"  # QEMU unharmed


def test_non_guest_ram_blocks_are_skipped_with_reasons(qemu_factory):
    # A display device (vga.vram: VGA dirty logging), ROMs, and a shared
    # memfd backend besides the main RAM.
    q = qemu_factory(extra=["-vga", "std",
                            "-object", "memory-backend-memfd,id=shm0,size=32M,share=on",
                            "-device", "pc-dimm,memdev=shm0"],
                     mem="256,slots=2,maxmem=1G")
    info = q.wait_for(lambda i: i["ram-blocks"] and i["skipped-blocks"], "the block scan")
    skipped = {b["name"]: b["reason"] for b in info["skipped-blocks"]}
    scanned = [b["name"] for b in info["ram-blocks"]]
    assert scanned == ["pc.ram"], info
    assert skipped.get("shm0") == "shared", skipped
    assert skipped.get("pc.bios") == "read-only", skipped
    vram = [n for n in skipped if n.endswith("vga.vram")]
    assert vram and skipped[vram[0]] == "display-dirty-log", skipped


def test_memory_backend_named_main_ram_is_scanned(qemu_factory):
    q = qemu_factory(extra=["-object", "memory-backend-ram,id=m0,size=256M",
                            "-machine", "memory-backend=m0"])
    info = q.wait_for(lambda i: i["ram-blocks"], "m0 to be scanned")
    assert [b["name"] for b in info["ram-blocks"]] == ["m0"]


def test_quit_is_clean(qemu_factory):
    q = qemu_factory()
    q.wait_for(lambda i: i["ram-blocks"], "the block scan")
    q.qmp.execute("quit")
    assert q.proc.wait(timeout=20) == 0, q.output()
    assert "pksm: scanner thread stopped" not in q.output()


def test_hot_added_backend_is_followed_and_its_removal_handled(qemu_factory):
    q = qemu_factory()
    q.wait_for(lambda i: [b["name"] for b in i["ram-blocks"]] == ["pc.ram"], "pc.ram")
    q.qmp.execute("object-add", {"qom-type": "memory-backend-ram", "id": "hp1", "size": 64 << 20})
    q.wait_for(lambda i: "hp1" in [b["name"] for b in i["ram-blocks"]], "hp1 to be scanned")
    q.qmp.execute("object-del", {"id": "hp1"})
    info = q.wait_for(lambda i: "hp1" not in [b["name"] for b in i["ram-blocks"]], "hp1 to be dropped")
    assert [b["name"] for b in info["ram-blocks"]] == ["pc.ram"]
    assert "RAM block hp1 is gone" in q.output()
    assert q.qmp.execute("query-status")["status"] == "prelaunch"


def test_virtio_mem_stops_merging_and_is_not_scanned(qemu_factory):
    # virtio-mem requires working discards; pksm's merges would break them.
    q = qemu_factory(extra=["-object", "memory-backend-ram,id=vmem0,size=128M",
                            "-device", "virtio-mem-pci,id=vm0,memdev=vmem0,requested-size=0"],
                     mem="256,maxmem=1G")
    info = q.wait_for(lambda i: i["paused"], "pksm to pause")
    assert info["paused-reason"] == "discard-required", info
    skipped = {b["name"]: b["reason"] for b in info["skipped-blocks"]}
    vmem = [n for n in skipped if n.endswith("vmem0")]  # "<pci address>/vmem0"
    assert vmem and skipped[vmem[0]] == "discard-manager", skipped
    assert not info["ram-blocks"], info  # nothing was taken before the pause


@pytest.mark.parametrize("choice,name", [("uffd", "uffd-sync"), ("uffd-async", "uffd-async"), ("checksum", "checksum"),
                                         ("qemu", "qemu")])
def test_dirty_log_choice_is_reported(qemu_factory, choice, name):
    q = qemu_factory([f"dirty-log={choice}"])
    info = q.wait_for(lambda i: i["ram-blocks"], "the block scan")
    assert info["dirty-log"] == name


def test_incoming_vm_does_not_merge_until_it_runs(qemu_factory):
    # Postcopy would need the guest RAM for its own userfaultfd, and the
    # incoming stream rewrites it: nothing is taken while the VM is incoming.
    q = qemu_factory(extra=["-incoming", "defer"])
    info = q.wait_for(lambda i: i["paused"], "pksm to pause")
    assert info["paused-reason"] == "incoming-migration", info
    time.sleep(0.5)
    info = q.qmp.execute("query-pksm")
    assert info["ram-blocks"] == [] and info["rmap-items"] == 0, info


def test_vma_budget_exhaustion_is_reported_and_zero_pages_go_on(qemu_factory, guest_image, tmp_path):
    kernel, initrd = guest_image
    serial = tmp_path / "serial.log"
    q = qemu_factory(["max-vmas=200", "pages-to-scan=4096", "sleep-ms=10"], mem="256",
                     extra=["-kernel", kernel, "-initrd", initrd,
                            "-append", "console=ttyS0 panic=-1 quiet pksm.mib=32 pksm.verify=2",
                            "-serial", f"file:{serial}"])
    q.qmp.execute("cont")
    ev = q.qmp.wait_event("PKSM_BUDGET_EXHAUSTED", timeout=120)
    assert ev["data"]["vma-budget"] == 200, ev
    assert ev["data"]["vmas-used"] <= 200, ev
    info = q.wait_for(lambda i: i["zero-pages"] > 1000, "zero pages to keep merging", timeout=120)
    assert info["vma-budget"] == 200 and info["vmas-used"] <= 200, info
    assert info["budget-refusals"] > 0, info
    assert q.qmp.execute("query-status")["status"] == "running"
    # The guest's own check of every page it wrote keeps passing.
    deadline = time.monotonic() + 90
    while True:
        text = serial.read_text(errors="replace")
        rounds = [line for line in text.splitlines() if "PKSM-WORKLOAD verify round" in line]
        assert not [r for r in rounds if "errors=0" not in r], text[-2000:]
        if len(rounds) >= 3:
            break
        assert time.monotonic() < deadline, f"guest did not verify 3 rounds:\n{text[-2000:]}"
        time.sleep(1)
