"""A small, synchronous QMP client (QEMU Machine Protocol over a unix socket).

Used by pksm-ctl, the exporter and the tests. Standard library only.

    with QMPClient("/run/vm.qmp") as q:
        stats = q.execute("query-pksm")            # the parsed "return"
        q.execute("pksm-set-parameters", {"delay": 2})

A QMP error reply raises QMPError (its .error_class and .desc come from QEMU);
asynchronous events that arrive meanwhile are kept in .events.
"""
import json
import socket
import time


class QMPError(Exception):
    """QEMU answered a command with {"error": {...}}."""

    def __init__(self, command, error):
        self.command = command
        self.error_class = error.get("class", "")
        self.desc = error.get("desc", "")
        super().__init__(f"{command}: {self.error_class}: {self.desc}")


class QMPConnectionError(Exception):
    """The socket could not be reached or closed unexpectedly."""


class QMPClient:
    def __init__(self, path, timeout=10.0, connect_wait=0.0):
        """Connects and negotiates capabilities. connect_wait: seconds to keep
        retrying while the socket does not exist yet (a QEMU still starting)."""
        self.path = path
        self.events = []
        self._buf = b""
        deadline = time.monotonic() + connect_wait
        while True:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.settimeout(timeout)
                self._sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                self._sock.close()
                if time.monotonic() >= deadline:
                    raise QMPConnectionError(f"cannot connect to QMP socket {path}: {e.strerror}") from e
                time.sleep(0.05)
            except OSError as e:
                self._sock.close()
                raise QMPConnectionError(f"cannot connect to QMP socket {path}: {e}") from e
        greeting = self._read_message()
        if "QMP" not in greeting:
            raise QMPConnectionError(f"{path}: not a QMP monitor (greeting {greeting!r})")
        self.greeting = greeting
        self.execute("qmp_capabilities")

    def _read_message(self):
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout as e:
                raise QMPConnectionError(f"{self.path}: timed out waiting for QEMU") from e
            if not chunk:
                raise QMPConnectionError(f"{self.path}: connection closed by QEMU")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command, arguments=None):
        """Runs one command and returns its "return" value; raises QMPError."""
        msg = {"execute": command}
        if arguments is not None:
            msg["arguments"] = arguments
        self._sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read_message()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise QMPError(command, reply["error"])
            if "return" in reply:
                return reply["return"]

    def wait_event(self, name, timeout=10.0):
        """Returns the first event called `name` (already received or new)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("event") == name:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name} event within {timeout}s")
            old = self._sock.gettimeout()
            self._sock.settimeout(left)
            try:
                self.events.append(self._read_message())
            except QMPConnectionError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no {name} event within {timeout}s")
                raise
            finally:
                self._sock.settimeout(old)

    def close(self):
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
