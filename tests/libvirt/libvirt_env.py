"""Shared set-up of the libvirt integration tests.

The tests run against the host's real libvirt (qemu:///system). What they
need and do not find they bring up themselves, and they take away exactly
what they brought:

- virtlogd and libvirtd are started by hand when their pidfiles name no
  live process (there is no systemd here), and stopped by the PIDs in
  those pidfiles afterwards; daemons that were already running are left;
- the plugin, kernel and initrd are installed under test-specific names
  where user libvirt-qemu can read them (/usr/local/lib/qemu-plugins,
  /var/lib/libvirt/boot) and removed afterwards;
- domains are named pksm-test-<pid>-..., destroyed and undefined afterwards.

A prerequisite that is missing (libvirt not installed, the plugin not
built, libvirtd never answering) fails the tests loudly; nothing is skipped.
One lock file serialises concurrent runs of this suite on one host.
"""
import fcntl
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("PKSM_BUILD", os.path.join(REPO, "build"))
PLUGIN_BUILT = os.path.join(BUILD, "qemu-plugin", "libpksm-qemu.so")
PKSM_CTL = os.path.join(REPO, "tools", "pksm-ctl", "pksm-ctl")
PKSM_EXPORTER = os.path.join(REPO, "tools", "pksm-exporter", "pksm-exporter")
URI = "qemu:///system"
TAG = f"pksm-test-{os.getpid()}"
PLUGIN_DIR = "/usr/local/lib/qemu-plugins"
BOOT_DIR = "/var/lib/libvirt/boot"
SERIAL_DIR = "/var/log/libvirt/qemu"
LOCK_PATH = "/run/lock/pksm-libvirt-tests.lock"
DAEMONS = [("virtlogd", "/usr/sbin/virtlogd", "/run/virtlogd.pid"),
           ("libvirtd", "/usr/sbin/libvirtd", "/run/libvirtd.pid")]
DAEMON_WAIT_S = 60

sys.path.insert(0, os.path.join(REPO, "scripts"))


# ---------------------------------------------------------------------------
# small helpers shared by the test files

def run(cmd, check=True, timeout=120, **kw):
    """Runs a command, returns CompletedProcess (text). check: fail the test
    with the command's output if it exits non-zero."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def virsh(*args, check=True, timeout=120):
    return run(["virsh", "-c", URI, *args], check=check, timeout=timeout)


def qmp_return(domain, command, arguments=None):
    """The parsed "return" of a QMP command run through
    `virsh qemu-monitor-command DOMAIN --return-value`."""
    msg = {"execute": command}
    if arguments is not None:
        msg["arguments"] = arguments
    p = virsh("qemu-monitor-command", domain, "--return-value", json.dumps(msg), check=False)
    if p.returncode != 0:
        pytest.fail(f"{command} on {domain} failed: {p.stderr}\n--- {domain_log_path(domain)}:\n"
                    f"{domain_log_tail(domain)}")
    return json.loads(p.stdout)


def qmp_reply(domain, command, arguments=None):
    """The whole parsed reply ({"return": ...} or {"error": ...}) of a QMP
    command through virsh (plain mode: a QMP error still exits 0)."""
    msg = {"execute": command}
    if arguments is not None:
        msg["arguments"] = arguments
    p = virsh("qemu-monitor-command", domain, json.dumps(msg))
    return json.loads(p.stdout)


def ctl(*args, timeout=120):
    """Runs pksm-ctl (against qemu:///system); returns CompletedProcess."""
    env = dict(os.environ, LIBVIRT_DEFAULT_URI=URI)
    return subprocess.run([PKSM_CTL, *args], capture_output=True, text=True, timeout=timeout, env=env)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def read_pidfile(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def wait_for(predicate, timeout, interval=0.5, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def domain_xml(name, kernel, initrd, serial, cmdline, memory_mib=192, plugin_arg=None):
    """A TCG domain booting the test guest directly (no disk, no NIC), its
    serial console written to a file. plugin_arg: put the plugin in by
    hand (with the xmlns:qemu namespace) instead of using pksm-ctl enable."""
    qemu = ""
    ns = ""
    if plugin_arg:
        ns = " xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"
        qemu = (f"  <qemu:commandline>\n    <qemu:arg value='-plugin'/>\n"
                f"    <qemu:arg value='{plugin_arg}'/>\n  </qemu:commandline>\n")
    return f"""<domain type='qemu'{ns}>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='{serial}'/><target port='0'/></serial>
    <console type='file'><source path='{serial}'/><target type='serial' port='0'/></console>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
{qemu}</domain>
"""


class Domains:
    """Defines domains and removes every one of them at teardown."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.names = []

    def define(self, name, xml):
        path = os.path.join(self.workdir, f"{name}.xml")
        with open(path, "w") as f:
            f.write(xml)
        self.names.append(name)
        virsh("define", "--validate", path)
        return name

    def remove(self, name):
        virsh("destroy", name, check=False)
        virsh("undefine", name, check=False)
        for path in (serial_path(name), domain_log_path(name)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def cleanup(self):
        for name in reversed(self.names):
            self.remove(name)
        self.names.clear()


def serial_path(name):
    return os.path.join(SERIAL_DIR, f"{name}-serial.log")


def domain_log_path(name):
    return os.path.join(SERIAL_DIR, f"{name}.log")


def domain_log_tail(name, lines=30):
    """The end of libvirt's log of the domain (QEMU's command line and
    stderr, where the plugin writes its messages)."""
    try:
        with open(domain_log_path(name), errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(no domain log: {e})"


def start_domain(name, *flags):
    p = virsh("start", *flags, name, check=False)
    if p.returncode != 0:
        pytest.fail(f"virsh start {name} failed: {p.stderr}\n--- {domain_log_path(name)}:\n{domain_log_tail(name)}")


def qemu_pid(name):
    return read_pidfile(f"/run/libvirt/qemu/{name}.pid")


# ---------------------------------------------------------------------------
# fixtures

@pytest.fixture(scope="session")
def libvirt_host(tmp_path_factory):
    """libvirt answering on qemu:///system; daemons started here are
    stopped at the end (by the PIDs in their pidfiles)."""
    for tool in ("virsh", "/usr/sbin/libvirtd", "/usr/sbin/virtlogd"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not found: install libvirt with scripts/setup.sh --libvirt")
    os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
    lock = open(LOCK_PATH, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    started = []
    restore = []  # callables undoing host changes, run in reverse order
    try:
        libvirtd_running = bool(read_pidfile("/run/libvirtd.pid")) and pid_alive(read_pidfile("/run/libvirtd.pid"))
        if ctl("host-setup", "--check").returncode != 0:
            # QEMU under libvirt (user libvirt-qemu, no privileges) needs a
            # userfaultfd to merge. With a libvirtd of our own: the documented
            # set-up (pksm-ctl host-setup), undone afterwards. With someone
            # else's libvirtd (which we must not restart): the host-wide sysctl
            # for the duration of the tests (also on kernels without the device).
            if not libvirtd_running and os.path.exists(UFFD_DEV):
                restore.append(_host_setup_undo())
                p = ctl("host-setup")
                assert p.returncode == 0, p.stderr
            else:
                with open(SYSCTL_UFFD) as f:
                    old = f.read().strip()
                restore.append(lambda: _write(SYSCTL_UFFD, old))
                _write(SYSCTL_UFFD, "1")
            assert ctl("host-setup", "--check").returncode == 0
        for name, binary, pidfile in DAEMONS:
            pid = read_pidfile(pidfile)
            if pid and pid_alive(pid):
                continue
            p = subprocess.run([binary, "-d"], capture_output=True, text=True, timeout=30)
            if p.returncode != 0:
                pytest.fail(f"{binary} -d failed ({p.returncode}): {p.stderr}")
            pid = wait_for(lambda: read_pidfile(pidfile), 10, 0.05, f"{pidfile}")
            started.append((name, pid))
        deadline = time.monotonic() + DAEMON_WAIT_S
        while True:
            p = subprocess.run(["virsh", "-c", URI, "version"], capture_output=True, text=True, timeout=DAEMON_WAIT_S)
            if p.returncode == 0:
                break
            if time.monotonic() > deadline:
                log = ""
                try:
                    with open("/var/log/libvirt/libvirtd.log") as f:
                        log = "".join(f.readlines()[-20:])
                except OSError:
                    pass
                pytest.fail(f"libvirt never answered 'virsh version' within {DAEMON_WAIT_S} s: {p.stderr}\n{log}")
            time.sleep(0.2)
        yield {"started": [n for n, _ in started]}
    finally:
        # libvirtd first, virtlogd last (it holds QEMU's stderr pipes).
        if any(n == "libvirtd" for n, _ in started):
            # the empty "machine" cgroups our libvirtd made (rmdir fails on non-empty ones)
            for d in glob.glob("/sys/fs/cgroup/*/machine") + glob.glob("/sys/fs/cgroup/unified/machine"):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
        for name, pid in reversed(started):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 30
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        for undo in reversed(restore):
            undo()
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


SYSCTL_UFFD = "/proc/sys/vm/unprivileged_userfaultfd"
QEMU_CONF = "/etc/libvirt/qemu.conf"
UFFD_DEV = "/dev/userfaultfd"
UDEV_RULE = "/etc/udev/rules.d/70-pksm-userfaultfd.rules"


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _host_setup_undo():
    """Snapshot of what `pksm-ctl host-setup` changes; the returned callable
    runs `host-setup --undo` and then puts back exactly what was there."""
    with open(QEMU_CONF, "rb") as f:
        conf = f.read()
    st = os.stat(UFFD_DEV) if os.path.exists(UFFD_DEV) else None
    had_rule = os.path.exists(UDEV_RULE)

    def undo():
        p = ctl("host-setup", "--undo")
        problems = [] if p.returncode == 0 else [f"host-setup --undo failed: {p.stderr}"]
        with open(QEMU_CONF, "rb") as f:
            if f.read() != conf:
                problems.append(f"host-setup --undo left {QEMU_CONF} different from before")
                with open(QEMU_CONF, "wb") as g:
                    g.write(conf)
        if st is not None:
            now = os.stat(UFFD_DEV)
            if (now.st_uid, now.st_gid, now.st_mode) != (st.st_uid, st.st_gid, st.st_mode):
                os.chown(UFFD_DEV, st.st_uid, st.st_gid)
                os.chmod(UFFD_DEV, st.st_mode & 0o7777)
        if not had_rule and os.path.exists(UDEV_RULE):
            problems.append(f"host-setup --undo left {UDEV_RULE}")
            os.unlink(UDEV_RULE)
        # everything is restored by now; a failed undo still fails the run
        assert not problems, problems
    return undo


@pytest.fixture(scope="session")
def guest_files(libvirt_host):
    """Kernel and initrd of the test guest, readable by libvirt."""
    p = run(["bash", os.path.join(REPO, "scripts", "build-guest.sh")], check=False, timeout=600)
    if p.returncode != 0:
        pytest.fail(f"scripts/build-guest.sh failed: {p.stdout}{p.stderr}")
    src_k = os.path.join(REPO, "out", "guest", "vmlinuz")
    src_i = os.path.join(REPO, "out", "guest", "initrd.img")
    kernel = os.path.join(BOOT_DIR, f"{TAG}-vmlinuz")
    initrd = os.path.join(BOOT_DIR, f"{TAG}-initrd.img")
    os.makedirs(BOOT_DIR, exist_ok=True)
    for s, d in ((src_k, kernel), (src_i, initrd)):
        shutil.copyfile(s, d)
        os.chmod(d, 0o644)
    yield {"kernel": kernel, "initrd": initrd}
    for d in (kernel, initrd):
        try:
            os.unlink(d)
        except FileNotFoundError:
            pass


@pytest.fixture(scope="session")
def plugin(libvirt_host):
    """The built plugin, installed by `pksm-ctl install-plugin` under a
    test-specific name libvirt-qemu can read."""
    if not os.path.isfile(PLUGIN_BUILT):
        pytest.fail(f"plugin not built: {PLUGIN_BUILT} (meson compile -C {BUILD})")
    created_dir = not os.path.isdir(PLUGIN_DIR)
    dest = os.path.join(PLUGIN_DIR, f"lib{TAG}.so")  # basename contains "pksm"
    p = run([PKSM_CTL, "install-plugin", "--from", PLUGIN_BUILT, "--dest", dest], check=False)
    assert p.returncode == 0, p.stderr
    assert "warning" not in p.stderr, p.stderr
    st = os.stat(dest)
    assert st.st_mode & 0o777 == 0o644
    with open(PLUGIN_BUILT, "rb") as a, open(dest, "rb") as b:
        assert a.read() == b.read()
    yield dest
    os.unlink(dest)
    if created_dir:
        try:
            os.rmdir(PLUGIN_DIR)
        except OSError:
            pass


@pytest.fixture(scope="session")
def domains(libvirt_host, tmp_path_factory):
    d = Domains(str(tmp_path_factory.mktemp("libvirt-xml")))
    yield d
    d.cleanup()
