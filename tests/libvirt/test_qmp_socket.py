"""pksm-ctl --socket and pksm-exporter --socket NAME=PATH against a QEMU
started without libvirt (its own QMP unix socket). The VM is created
stopped (-S): the plugin is loaded and answers QMP, no guest has to boot.
"""
import os
import signal
import subprocess
import tempfile

import pytest

from libvirt_env import PKSM_EXPORTER, ctl, wait_for
from pksmlib.qmp import QMPClient


@pytest.fixture(scope="module")
def qemu_socket(plugin):
    tmp = tempfile.mkdtemp(prefix="pksm-ctl-sock-")
    sock = os.path.join(tmp, "qmp.sock")
    log = open(os.path.join(tmp, "qemu.log"), "w+")
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc,mem-merge=off", "-m", "64", "-S",
         "-display", "none", "-nodefaults", "-no-user-config",
         "-plugin", f"{plugin},run=1,pages-to-scan=1000,sleep-ms=50",
         "-qmp", f"unix:{sock},server=on,wait=off"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        def ready():
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"QEMU exited {proc.returncode}: {log.read()}")
            return os.path.exists(sock)
        wait_for(ready, 30, 0.1, "QEMU's QMP socket")
        yield sock
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for f in ("qmp.sock", "qemu.log"):
            try:
                os.unlink(os.path.join(tmp, f))
            except FileNotFoundError:
                pass
        os.rmdir(tmp)


def test_ctl_status_and_set_over_socket(qemu_socket):
    p = ctl("--socket", qemu_socket, "status")
    assert p.returncode == 0, p.stderr
    assert f"pksm on the VM at {qemu_socket}" in p.stdout and "pc.ram" in p.stdout
    p = ctl("--socket", qemu_socket, "set", "delay=5", "use-zero-pages=0")
    assert p.returncode == 0, p.stderr
    with QMPClient(qemu_socket) as q:
        params = q.execute("query-pksm-parameters")
    assert params["delay"] == 5 and params["use-zero-pages"] is False
    p = ctl("--socket", qemu_socket, "set", "new-ratio=100")
    assert p.returncode == 1 and "'new-ratio'" in p.stderr, p.stderr


def test_exporter_with_socket_only(qemu_socket):
    p = subprocess.run([PKSM_EXPORTER, "--once", "--no-libvirt", "--socket", f"rawvm={qemu_socket}"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    from prometheus_client.parser import text_string_to_metric_families
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(p.stdout) for s in fam.samples}
    assert samples[("pksm_up", (("domain", "rawvm"),))] == 1
    assert samples[("pksm_ram_block_size_bytes", (("block", "pc.ram"), ("domain", "rawvm")))] == 64 << 20
    assert ("pksm_exporter_libvirt_up", ()) not in samples
    # a socket nobody listens on: pksm_up 0, the exporter itself still answers
    p = subprocess.run([PKSM_EXPORTER, "--once", "--no-libvirt", "--socket", "gone=/nonexistent/qmp.sock"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert 'pksm_up{domain="gone"} 0.0' in p.stdout
    assert "/nonexistent/qmp.sock" in p.stderr


def test_exporter_usage_errors():
    for args in (["--listen", "nonsense"], ["--socket", "nopath"], ["--no-libvirt"]):
        p = subprocess.run([PKSM_EXPORTER, *args], capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, (args, p.stderr)


def test_unprivileged_qemu_without_userfaultfd_is_reported(plugin):
    """A QEMU running as an unprivileged user (nobody) that may not use
    userfaultfd: pksm must say so (paused: uffd-unavailable) in pksm-ctl
    and the exporter rather than merge unsafely, and unmerge still ends
    with run=0. With vm.unprivileged_userfaultfd=1 it must not be paused."""
    import pwd
    nobody = pwd.getpwnam("nobody")
    with open("/proc/sys/vm/unprivileged_userfaultfd") as f:
        sysctl_open = f.read().strip() == "1"
    sockdir = tempfile.mkdtemp(prefix="pksm-nobody-")  # /tmp/pytest-of-root is 0700
    os.chmod(sockdir, 0o755)
    os.chown(sockdir, nobody.pw_uid, nobody.pw_gid)
    sock = os.path.join(sockdir, "qmp.sock")

    def drop():
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc,mem-merge=off", "-m", "64", "-S",
         "-display", "none", "-nodefaults", "-no-user-config", "-plugin", f"{plugin},run=1",
         "-qmp", f"unix:{sock},server=on,wait=off"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=drop)
    try:
        wait_for(lambda: os.path.exists(sock) or proc.poll() is not None, 30, 0.1, "QEMU's QMP socket")
        assert proc.poll() is None, proc.communicate()[0]
        with QMPClient(sock) as q:
            info = wait_for(lambda: (lambda i: i if (i["paused"] or i["full-scans"] > 0) else None)(
                q.execute("query-pksm")), 30, 0.2, "pksm to pause or scan")
        if sysctl_open:
            assert not info["paused"], info["paused-reason"]
            return
        assert info["paused"] and info["paused-reason"] == "uffd-unavailable", info
        p = ctl("--socket", sock, "status")
        assert p.returncode == 0 and "paused (uffd-unavailable)" in p.stdout, p.stdout + p.stderr
        p = subprocess.run([PKSM_EXPORTER, "--once", "--no-libvirt", "--socket", f"u={sock}"],
                           capture_output=True, text=True, timeout=60)
        assert 'pksm_paused{domain="u"} 1.0' in p.stdout
        assert 'paused_reason="uffd-unavailable"' in p.stdout
        p = ctl("--socket", sock, "unmerge", "--timeout", "20")
        assert p.returncode == 0, p.stderr
        with QMPClient(sock) as q:
            assert q.execute("query-pksm")["run"] == 0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if os.path.exists(sock):
            os.unlink(sock)
        os.rmdir(sockdir)
