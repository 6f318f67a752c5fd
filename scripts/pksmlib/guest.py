"""Launch and stop pksm test guests (QEMU under TCG) for tests and scripts.

    from pksmlib.guest import Guest, plugin_path
    with Guest(workdir, plugin=plugin_path(), plugin_args={"sleep-ms": 20},
               mem_mib=256, workload={"mib": 64}) as g:
        g.start()
        g.wait_serial(r"PKSM-WORKLOAD READY", timeout=60)
        print(g.qmp().execute("query-pksm")["pages-sharing"], g.rss_kib())

The guest is out/guest/{vmlinuz,initrd.img} from scripts/build-guest.sh: a
busybox initramfs whose workload (guest/workload.c) is configured by kernel
command-line words pksm.KEY=VALUE (the `workload` dict). Its serial console
goes to a file in `workdir`; QEMU's own stdout/stderr to another. Every QEMU
is ended by its PID (QMP quit, then SIGTERM, then SIGKILL), never by name.
Standard library only (Debian's /usr/bin/python3).
"""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from .qmp import QMPClient, QMPConnectionError, QMPError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUEST_DIR = os.path.join(REPO_ROOT, "out", "guest")
QEMU = os.environ.get("PKSM_QEMU", "qemu-system-x86_64")


def build_dir():
    """The meson build directory: $PKSM_BUILD or <repo>/build."""
    return os.environ.get("PKSM_BUILD") or os.path.join(REPO_ROOT, "build")


def plugin_path(build=None):
    """Path of libpksm-qemu.so in a build directory (not checked)."""
    return os.path.join(build or build_dir(), "qemu-plugin", "libpksm-qemu.so")


def ensure_guest_image():
    """Runs scripts/build-guest.sh (idempotent); returns (kernel, initrd)."""
    subprocess.run(["bash", os.path.join(REPO_ROOT, "scripts", "build-guest.sh")],
                   check=True, stdout=subprocess.DEVNULL)
    return os.path.join(GUEST_DIR, "vmlinuz"), os.path.join(GUEST_DIR, "initrd.img")


def ensure_plugin(build=None):
    """Builds the plugin with `meson compile` if needed; returns its path.
    Raises RuntimeError (with meson's output) when it cannot be built."""
    build = build or build_dir()
    if not os.path.exists(os.path.join(build, "build.ninja")):
        r = subprocess.run(["meson", "setup", build, REPO_ROOT], cwd=REPO_ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode:
            raise RuntimeError(f"meson setup {build} failed:\n{r.stdout[-4000:]}")
    r = subprocess.run(["meson", "compile", "-C", build], cwd=REPO_ROOT,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    path = plugin_path(build)
    if r.returncode or not os.path.exists(path):
        raise RuntimeError(f"meson compile -C {build} did not produce {path}:\n{r.stdout[-4000:]}")
    return path


class GuestError(Exception):
    """The guest did not do what was waited for (QEMU exited, timeout)."""


class Guest:
    """One QEMU process running the pksm test guest.

    workdir      directory for the serial log and QEMU's output
    plugin       path of libpksm-qemu.so, or None for plain QEMU
    plugin_args  dict of plugin arguments (run, pages-to-scan, sleep-ms, ...)
    mem_mib      guest RAM
    mem_merge    -machine mem-merge=on (the kernel's KSM may merge guest RAM)
    workload     dict of workload options (mode, mib, dup, zero, seeds, verify,
                 cow-after, cow-every, cow-frac, bw-mib, seconds), passed as
                 pksm.KEY=VALUE on the kernel command line
    extra_args   more QEMU arguments
    incoming     None, or a migration URI for -incoming (e.g. "unix:/tmp/x")
    name         prefix of the files in workdir
    new_session  run QEMU in its own session, so a terminal's Ctrl-C reaches
                 only the script (which then stops QEMU itself)
    """

    def __init__(self, workdir, plugin=None, plugin_args=None, mem_mib=256, mem_merge=False,
                 extra_args=(), incoming=None, workload=None, name="guest", smp=1,
                 kernel=None, initrd=None, append_extra="", new_session=False):
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.plugin = plugin
        self.plugin_args = dict(plugin_args or {})
        self.mem_mib = mem_mib
        self.mem_merge = mem_merge
        self.extra_args = list(extra_args)
        self.incoming = incoming
        self.workload = dict(workload or {})
        self.name = name
        self.smp = smp
        self.kernel = kernel or os.path.join(GUEST_DIR, "vmlinuz")
        self.initrd = initrd or os.path.join(GUEST_DIR, "initrd.img")
        self.append_extra = append_extra
        self.new_session = new_session
        self.serial_path = os.path.join(self.workdir, f"{name}.serial.log")
        self.qemu_log_path = os.path.join(self.workdir, f"{name}.qemu.log")
        # unix socket paths are limited to 107 bytes: keep them short.
        self.sock_dir = tempfile.mkdtemp(prefix="pksm-", dir="/tmp")
        self.qmp_path = os.path.join(self.sock_dir, f"{name}.qmp")
        self.proc = None
        self._qmp = None
        self._qemu_log = None

    # ---- launching -------------------------------------------------------
    def kernel_cmdline(self):
        words = ["console=ttyS0", "panic=-1", "quiet"]
        words += [f"pksm.{k}={v}" for k, v in self.workload.items()]
        if self.append_extra:
            words.append(self.append_extra)
        return " ".join(words)

    def command(self):
        machine = f"pc,mem-merge={'on' if self.mem_merge else 'off'}"
        cmd = [QEMU, "-accel", "tcg", "-machine", machine, "-m", str(self.mem_mib),
               "-smp", str(self.smp), "-name", f"{self.name},debug-threads=on", "-nodefaults", "-no-user-config", "-display", "none",
               "-no-reboot", "-serial", f"file:{self.serial_path}",
               "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
               "-kernel", self.kernel, "-initrd", self.initrd,
               "-append", self.kernel_cmdline()]
        if self.plugin:
            arg = self.plugin + "".join(f",{k}={v}" for k, v in self.plugin_args.items())
            cmd += ["-plugin", arg]
        if self.incoming:
            cmd += ["-incoming", self.incoming]
        return cmd + self.extra_args

    def start(self, wait_qmp=True, timeout=30.0):
        """Starts QEMU. With wait_qmp, returns once QMP answers (raises
        GuestError with QEMU's output if it exits first)."""
        for p in (self.kernel, self.initrd):
            if not os.path.exists(p):
                raise GuestError(f"{p} missing: run scripts/build-guest.sh")
        if self.plugin and not os.path.exists(self.plugin):
            raise GuestError(f"plugin {self.plugin} missing: run meson compile -C build")
        for p in (self.serial_path, self.qmp_path):
            if os.path.exists(p):
                os.unlink(p)
        self._qemu_log = open(self.qemu_log_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=self._qemu_log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, start_new_session=self.new_session)
        if wait_qmp:
            deadline = time.monotonic() + timeout
            while not os.path.exists(self.qmp_path):
                self._check_alive("starting")
                if time.monotonic() > deadline:
                    raise GuestError(f"{self.name}: no QMP socket after {timeout}s\n{self.qemu_log()}")
                time.sleep(0.05)
            self.qmp()
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _check_alive(self, what):
        if self.proc is None:
            raise GuestError(f"{self.name}: not started")
        rc = self.proc.poll()
        if rc is not None:
            raise GuestError(f"{self.name}: QEMU exited with status {rc} while {what}\n"
                             f"--- QEMU output:\n{self.qemu_log()}\n"
                             f"--- serial (tail):\n{self.serial()[-3000:]}")

    def wait_exit(self, timeout=30.0):
        """Waits for QEMU to exit by itself; returns its exit status."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise GuestError(f"{self.name}: QEMU still running after {timeout}s")

    # ---- output ----------------------------------------------------------
    def qemu_log(self):
        try:
            with open(self.qemu_log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def serial(self):
        try:
            with open(self.serial_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_serial(self, pattern, timeout=60.0, after=0):
        """Waits until `pattern` (a regex) matches the serial log at or after
        character offset `after`; returns the match (m.end() is an absolute
        offset usable as the next `after`)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.serial()
            m = rx.search(text, after)
            if m:
                return m
            self._check_alive(f"waiting for {pattern!r} on the serial console")
            if time.monotonic() > deadline:
                raise GuestError(f"{self.name}: {pattern!r} not seen within {timeout}s\n"
                                 f"--- serial (tail):\n{text[-3000:]}\n--- QEMU output:\n{self.qemu_log()}")
            time.sleep(0.1)

    # ---- the workload's reports -----------------------------------------
    def layout(self):
        """The workload's layout line as a dict of ints (pages, dup, seeds, zero, unique, mib)."""
        m = re.search(r"PKSM-WORKLOAD layout (.*)", self.serial())
        if not m:
            raise GuestError(f"{self.name}: no layout line yet")
        return {k: int(v) for k, v in re.findall(r"(\S+)=(\d+)", m.group(1))}

    def verify_rounds(self, after=0):
        """[(round, errors)] of every verification round reported so far."""
        return [(int(r), int(e)) for r, e in
                re.findall(r"PKSM-WORKLOAD verify round=(\d+) errors=(\d+)", self.serial()[after:])]

    def cow_rounds(self, after=0):
        return [dict((k, int(v)) for k, v in re.findall(r"(\S+)=(\d+)", line))
                for line in re.findall(r"PKSM-WORKLOAD cow (.*)", self.serial()[after:])]

    def failures(self):
        """Every VERIFY FAILED line the workload printed."""
        return re.findall(r"PKSM-WORKLOAD VERIFY FAILED.*", self.serial())

    def bandwidth(self, after=0):
        """[(t, MB/s)] of the workload's bandwidth reports."""
        return [(float(t), float(v)) for t, v in
                re.findall(r"PKSM-WORKLOAD bw t=([\d.]+) MBps=([\d.]+)", self.serial()[after:])]

    def bw_total_mb(self):
        """MB the bandwidth loop has moved since READY, as of its last report."""
        found = re.findall(r"PKSM-WORKLOAD bw t=[\d.]+ MBps=[\d.]+ MB=(\d+)", self.serial())
        return float(found[-1]) if found else 0.0

    def wait_verify(self, count=1, timeout=60.0, after=0):
        """Waits for `count` more verification rounds after offset `after`;
        returns the offset after the last one."""
        pos = after
        for _ in range(count):
            pos = self.wait_serial(r"PKSM-WORKLOAD verify round=\d+ errors=\d+.*\n",
                                   timeout=timeout, after=pos).end()
        return pos

    # ---- QMP and process memory -----------------------------------------
    def qmp(self):
        """The guest's QMP client (connected once, reused)."""
        if self._qmp is None:
            self._check_alive("connecting to QMP")
            self._qmp = QMPClient(self.qmp_path, timeout=30.0, connect_wait=10.0)
        return self._qmp

    def query_pksm(self):
        return self.qmp().execute("query-pksm")

    def smaps_rollup(self):
        """/proc/PID/smaps_rollup of the QEMU process, as {field: kB}."""
        out = {}
        with open(f"/proc/{self.pid}/smaps_rollup") as f:
            for line in f:
                m = re.match(r"(\w+):\s+(\d+) kB", line)
                if m:
                    out[m.group(1)] = int(m.group(2))
        return out

    def rss_kib(self):
        return self.smaps_rollup()["Rss"]

    def pss_kib(self):
        return self.smaps_rollup()["Pss"]

    def thread_cpu_seconds(self, prefix):
        """User+system CPU time of the QEMU threads whose name starts with
        `prefix` (vCPU threads are "CPU N/TCG" or "CPU N/KVM")."""
        total = 0
        task_dir = f"/proc/{self.pid}/task"
        for tid in os.listdir(task_dir):
            try:
                with open(f"{task_dir}/{tid}/comm") as f:
                    if not f.read().startswith(prefix):
                        continue
                with open(f"{task_dir}/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except OSError:
                continue
        return total / os.sysconf("SC_CLK_TCK")

    def vcpu_seconds(self):
        return self.thread_cpu_seconds("CPU ")

    def cpu_seconds(self):
        """User+system CPU time of the whole QEMU process."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # ---- stopping ---------------------------------------------------------
    def stop(self, timeout=10.0):
        """Ends QEMU: QMP quit, then SIGTERM, then SIGKILL, all by PID.
        Returns QEMU's exit status (None if never started)."""
        if self.proc is None:
            self._cleanup()
            return None
        if self.proc.poll() is None:
            try:
                q = self._qmp or QMPClient(self.qmp_path, timeout=5.0)
                self._qmp = q
                q.execute("quit")
            except (QMPError, QMPConnectionError, OSError):
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                pass
        rc = self.proc.wait()
        self._cleanup()
        return rc

    def _cleanup(self):
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        if self._qemu_log is not None:
            self._qemu_log.close()
            self._qemu_log = None
        shutil.rmtree(self.sock_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class KsmKnobs:
    """Sets /sys/kernel/mm/ksm knobs for one comparison and restores every one
    it changed on exit (even on failure). Holds the host-wide lock
    /run/pksm-kernel-ksm.lock (flock, shared with pksm-host) meanwhile, so two
    comparisons never run the kernel's KSM at once, and refuses to start when
    KSM is already running (someone outside the lock uses it)."""

    SYSFS = "/sys/kernel/mm/ksm"
    LOCK = "/run/pksm-kernel-ksm.lock"

    def __init__(self, lock_timeout=900.0, **knobs):
        self.knobs = knobs
        self.saved = {}
        self.lock_timeout = lock_timeout
        self._lock_fd = None

    def read(self, name):
        with open(os.path.join(self.SYSFS, name)) as f:
            return f.read().strip()

    def write(self, name, value):
        with open(os.path.join(self.SYSFS, name), "w") as f:
            f.write(str(value))

    def _acquire(self):
        import fcntl
        self._lock_fd = os.open(self.LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + self.lock_timeout
        told = False
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if not told:
                    print(f"waiting for another kernel KSM comparison (lock {self.LOCK})", flush=True)
                    told = True
                if time.monotonic() > deadline:
                    self._release()
                    raise TimeoutError(f"timed out waiting for {self.LOCK}")
                time.sleep(0.5)

    def _release(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        self._acquire()
        try:
            if self.read("run") != "0":
                raise RuntimeError(f"{self.SYSFS}/run is {self.read('run')}, not 0: someone else "
                                   "uses the kernel's KSM; not touching it")
            for name, value in self.knobs.items():
                if name not in self.saved:
                    self.saved[name] = self.read(name)
                # pages_to_scan etc. must be set before run=1
                if name != "run":
                    self.write(name, value)
            if "run" in self.knobs:
                self.saved.setdefault("run", self.read("run"))
                self.write("run", self.knobs["run"])
        except BaseException:
            self.restore()
            self._release()
            raise
        return self

    def restore(self):
        if "run" in self.saved:
            try:
                self.write("run", self.saved["run"])
            except OSError:
                pass
        for name, value in self.saved.items():
            if name == "run":
                continue
            try:
                self.write(name, value)
            except OSError:
                pass

    def __exit__(self, *exc):
        try:
            self.restore()
        finally:
            self._release()
