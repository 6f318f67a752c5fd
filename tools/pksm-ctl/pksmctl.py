"""pksm-ctl: the operator's command for pksm, the QEMU-side page deduplicator.

It reaches one VM either by its QMP unix socket (--socket PATH) or by its
libvirt domain name (--domain NAME, through libvirt's qemu-monitor-command),
shows and changes pksm's state there, and switches pksm on or off in a
persistent libvirt domain's XML.

Why a domain is reached through libvirt rather than its monitor socket:
libvirt owns the domain's QMP monitor (a second client cannot attach), and
qemu-monitor-command is the supported way to pass a command through it.

Exit status: 0 done, 1 runtime failure (unreachable VM, QEMU refused,
libvirt error), 2 usage error (bad option, unknown key, malformed value).

Standard library only, plus python3-libvirt for --domain, enable, disable
and list (imported only when needed).
"""
import argparse
import json
import os
import shutil
import stat
import sys
import time
import xml.etree.ElementTree as ET

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))
sys.path.insert(0, os.path.join(_REPO, "scripts"))
from pksmlib.qmp import QMPClient, QMPConnectionError, QMPError  # noqa: E402

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
# pksm-ctl records in the domain's <metadata> what it added, so disable
# removes only that (an operator's own <nosharepages/> stays).
PKSM_NS = "urn:x-pksm:libvirt:1"
ET.register_namespace("qemu", QEMU_NS)
ET.register_namespace("pksm", PKSM_NS)

DEFAULT_PLUGIN = "/usr/local/lib/qemu-plugins/libpksm-qemu.so"
DEFAULT_URI = os.environ.get("LIBVIRT_DEFAULT_URI", "qemu:///system")
LIBVIRT_QEMU_UID = None  # looked up lazily (pwd) for the readability check

# QMP parameters of pksm-set-parameters (qmp/pksm.json) and their types.
SET_KEYS = {
    "run": "int",
    "pages-to-scan": "int",
    "sleep-ms": "int",
    "delay": "int",
    "use-zero-pages": "bool",
    "max-page-sharing": "int",
    "new-ratio": "int",
}
# -plugin arguments (qemu-plugin/plugin_args.h): the QMP keys plus those set
# at start only: dirty-log, mode (the classic KSM algorithm, for comparisons)
# and log (a file for the scanner's log lines, written by QEMU's user).
ENUMS = {"dirty-log": ("auto", "qemu", "uffd", "checksum"), "mode": ("pksm", "ksm")}
PLUGIN_KEYS = dict(SET_KEYS, **{"dirty-log": "enum", "mode": "enum", "log": "path"})

PAGE_SIZE = 4096


class UsageError(Exception):
    """Bad command line: exit status 2."""


class CtlError(Exception):
    """Runtime failure: exit status 1."""


# --------------------------------------------------------------------------
# KEY=VALUE parsing

def _normalize_key(key):
    return key.strip().replace("_", "-")


def _parse_bool(key, text):
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"invalid value '{text}' for '{key}': expected 0 or 1")


def _parse_int(key, text):
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise UsageError(f"invalid value '{text}' for '{key}': expected an integer") from None


def parse_assignments(items, keys, what):
    """Parses KEY=VALUE words into an ordered dict of typed values.

    keys: the allowed keys and their types. Unknown keys and malformed
    values are usage errors naming them. Ranges are left to the plugin,
    which is the authority on them and names the argument it refuses."""
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"expected KEY=VALUE, got '{item}'")
        raw_key, value = item.split("=", 1)
        key = _normalize_key(raw_key)
        if key not in keys:
            hint = ""
            if what == "set" and key in PLUGIN_KEYS:
                hint = (f" ({key} is a plugin argument, fixed at start: change it with "
                        f"'pksm-ctl enable DOMAIN {key}=...' and restart the VM)")
            raise UsageError(f"unknown key '{raw_key}' for {what}; valid keys: {', '.join(keys)}{hint}")
        kind = keys[key]
        if kind == "int":
            out[key] = _parse_int(key, value)
        elif kind == "bool":
            out[key] = _parse_bool(key, value)
        elif kind == "enum":
            v = value.strip()
            if v not in ENUMS[key]:
                raise UsageError(f"invalid value '{value}' for '{key}': expected one of {', '.join(ENUMS[key])}")
            out[key] = v
        else:  # a path: QEMU splits -plugin arguments at commas
            if not value or "," in value:
                raise UsageError(f"invalid value '{value}' for '{key}': expected a path without commas")
            out[key] = value
    return out


# --------------------------------------------------------------------------
# Reaching a VM

def _libvirt():
    try:
        import libvirt  # noqa: F401
        import libvirt_qemu  # noqa: F401
    except ImportError:
        raise CtlError("python3-libvirt is not installed (apt-get install python3-libvirt, or run scripts/setup.sh --libvirt)") from None
    # libvirt prints every error on stderr by default; we report our own.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt, libvirt_qemu


def open_libvirt(uri, readonly=False):
    libvirt, _ = _libvirt()
    try:
        return libvirt.openReadOnly(uri) if readonly else libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise CtlError(f"cannot connect to libvirt at {uri}: {e.get_error_message()} (is libvirtd running?)") from None


def lookup_domain(conn, name):
    libvirt, _ = _libvirt()
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise CtlError(f"no libvirt domain named '{name}' (see 'virsh list --all')") from None
        raise CtlError(f"libvirt: {e.get_error_message()}") from None


class Target:
    """One VM reached over QMP. execute() returns the parsed "return" or
    raises QMPError (QEMU refused) / CtlError (VM not reachable)."""

    label = ""

    def execute(self, command, arguments=None):
        raise NotImplementedError

    def close(self):
        pass

    def require_pksm(self):
        """query-pksm, with CommandNotFound turned into a clear message."""
        try:
            return self.execute("query-pksm")
        except QMPError as e:
            if e.error_class == "CommandNotFound":
                raise CtlError(f"pksm is not loaded in {self.label} (enable it with 'pksm-ctl enable DOMAIN' and restart the VM)") from None
            raise CtlError(f"{self.label}: query-pksm failed: {e.desc}") from None


class SocketTarget(Target):
    def __init__(self, path, timeout=10.0):
        self.label = f"the VM at {path}"
        try:
            self.client = QMPClient(path, timeout=timeout)
        except QMPConnectionError as e:
            raise CtlError(str(e)) from None
        except OSError as e:
            raise CtlError(f"cannot connect to QMP socket {path}: {e}") from None

    def execute(self, command, arguments=None):
        try:
            return self.client.execute(command, arguments)
        except QMPConnectionError as e:
            raise CtlError(str(e)) from None

    def close(self):
        self.client.close()


class DomainTarget(Target):
    def __init__(self, name, uri=DEFAULT_URI, conn=None, domain=None):
        self.name = name
        self.label = f"domain {name}"
        self.libvirt, self.libvirt_qemu = _libvirt()
        self.conn = conn or open_libvirt(uri)
        self._own_conn = conn is None
        self.dom = domain or lookup_domain(self.conn, name)

    def execute(self, command, arguments=None):
        msg = {"execute": command}
        if arguments is not None:
            msg["arguments"] = arguments
        try:
            raw = self.libvirt_qemu.qemuMonitorCommand(self.dom, json.dumps(msg), 0)
        except self.libvirt.libvirtError as e:
            code = e.get_error_code()
            if code == self.libvirt.VIR_ERR_OPERATION_INVALID:
                raise CtlError(f"domain {self.name} is not running") from None
            raise CtlError(f"domain {self.name}: {e.get_error_message()}") from None
        try:
            reply = json.loads(raw)
        except ValueError:
            raise CtlError(f"domain {self.name}: unparsable monitor reply {raw!r}") from None
        if "error" in reply:
            raise QMPError(command, reply["error"])
        if "return" not in reply:
            raise CtlError(f"domain {self.name}: monitor reply without 'return': {raw!r}")
        return reply["return"]

    def close(self):
        if self._own_conn:
            try:
                self.conn.close()
            except Exception:
                pass


def open_target(args):
    if args.socket and args.domain:
        raise UsageError("give either --socket or --domain, not both")
    if args.socket:
        return SocketTarget(args.socket)
    if args.domain:
        return DomainTarget(args.domain, args.connect)
    raise UsageError("which VM? give --socket PATH (a QMP unix socket) or --domain NAME (a libvirt domain)")


# --------------------------------------------------------------------------
# Formatting

def human_bytes(n):
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.1f} {unit}"
        n /= 1024.0
    return f"{sign}{n}"


def pages_and_bytes(pages):
    return f"{pages} ({human_bytes(pages * PAGE_SIZE)})"


def _get(d, key, default=0):
    v = d.get(key, default)
    return default if v is None else v


RUN_NAMES = {0: "0 (stopped)", 1: "1 (running)", 2: "2 (unmerging)"}


def format_status(label, info, params, prev=None, dt=None):
    """A readable table of query-pksm (+ query-pksm-parameters). With prev
    and dt, adds per-second rates for the counters that move."""
    lines = []

    def row(name, value, note=""):
        lines.append(f"  {name:<22} {value}{('   ' + note) if note else ''}")

    def rate(key):
        if prev is None or not dt:
            return ""
        d = _get(info, key) - _get(prev, key)
        return f"{d / dt:+.0f}/s"

    run = _get(info, "run")
    lines.append(f"pksm on {label}")
    state = RUN_NAMES.get(run, str(run))
    if info.get("paused"):
        state += f", paused ({info.get('paused-reason') or 'unknown reason'})"
    row("run", state)
    row("mode / dirty log", f"{info.get('mode', '?')} / {info.get('dirty-log', '?')}")
    sharing = _get(info, "pages-sharing")
    zero = _get(info, "zero-pages")
    lines.append("saving")
    row("pages sharing", pages_and_bytes(sharing), rate("pages-sharing"))
    row("zero pages", pages_and_bytes(zero), rate("zero-pages"))
    row("saved", human_bytes((sharing + zero) * PAGE_SIZE), "(pages sharing + zero pages)")
    row("general profit", human_bytes(_get(info, "general-profit")), "(saved minus pksm's own records)")
    lines.append("pages")
    row("shared", _get(info, "pages-shared"), "(stable pages in use)")
    row("unshared", _get(info, "pages-unshared"), "(waiting in the unstable tree)")
    row("volatile", _get(info, "pages-volatile"), "(changing or on probation)")
    row("cow breaks", _get(info, "cow-breaks"), rate("cow-breaks"))
    row("stable chains / dups", f"{_get(info, 'stable-node-chains')} / {_get(info, 'stable-node-dups')}")
    lines.append("scanner")
    row("full scans", _get(info, "full-scans"), rate("full-scans"))
    row("pages scanned", _get(info, "pages-scanned"), rate("pages-scanned"))
    row("merges / failures", f"{_get(info, 'merges')} / {_get(info, 'merge-failures')}"
        + (f" (budget: {_get(info, 'budget-refusals')})" if _get(info, "budget-refusals") else ""))
    row("lists new/rescan/del", f"{_get(info, 'new-list')} / {_get(info, 'rescan-list')} / {_get(info, 'del-list')}")
    prob = info.get("probation") or []
    if prob:
        row("probation", " ".join(str(x) for x in prob), "(new-list pages by count 0,1,...)")
    row("mappings (VMAs)", f"{_get(info, 'vmas-used')} of {_get(info, 'vma-budget')}")
    cpu = _get(info, "scanner-cpu-ns") / 1e9
    cpu_note = ""
    if prev is not None and dt:
        cpu_note = f"{100.0 * (cpu - _get(prev, 'scanner-cpu-ns') / 1e9) / dt:.1f}% of a CPU"
    row("scanner CPU", f"{cpu:.2f} s", cpu_note)
    if params:
        lines.append("parameters")
        lines.append("  " + "  ".join(f"{k}={_fmt_param(v)}" for k, v in _ordered(params)))
    blocks = info.get("ram-blocks") or []
    if blocks:
        lines.append("RAM blocks")
        lines.append(f"  {'name':<22} {'size':>10} {'sharing':>10} {'zero':>10}")
        for b in blocks:
            lines.append(f"  {b.get('name', '?'):<22} {human_bytes(_get(b, 'size')):>10} "
                         f"{_get(b, 'pages-sharing'):>10} {_get(b, 'zero-pages'):>10}")
    skipped = info.get("skipped-blocks") or []
    if skipped:
        lines.append("skipped blocks: " + ", ".join(f"{s.get('name', '?')} ({s.get('reason', '?')})" for s in skipped))
    return "\n".join(lines)


def _ordered(params):
    """Parameters in the order of the schema, unknown ones after."""
    known = [(k, params[k]) for k in SET_KEYS if k in params]
    return known + sorted((k, v) for k, v in params.items() if k not in SET_KEYS)


def _fmt_param(v):
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


# --------------------------------------------------------------------------
# Domain XML editing (enable / disable)

def _q(tag):
    return f"{{{QEMU_NS}}}{tag}"


def _p(tag):
    return f"{{{PKSM_NS}}}{tag}"


def is_pksm_plugin_arg(value):
    path = value.split(",", 1)[0]
    return "pksm" in os.path.basename(path)


def find_plugin_args(root):
    """[(commandline element, index of '-plugin' arg, value)] of pksm plugins."""
    found = []
    for cl in root.findall(_q("commandline")):
        args = list(cl.findall(_q("arg")))
        for i, a in enumerate(args[:-1]):
            if a.get("value") == "-plugin" and is_pksm_plugin_arg(args[i + 1].get("value", "")):
                found.append((cl, args[i], args[i + 1]))
    return found


def plugin_argument(path, settings):
    parts = [path]
    if "run" not in settings:
        parts.append("run=1")
    for k, v in settings.items():
        parts.append(f"{k}={int(v) if isinstance(v, bool) else v}")
    return ",".join(parts)


def _metadata_marker(root, create):
    md = root.find("metadata")
    if md is None:
        if not create:
            return None
        md = ET.Element("metadata")
        # keep <metadata> near the top, after name/uuid/title/description
        pos = 0
        for i, child in enumerate(list(root)):
            if child.tag in ("name", "uuid", "genid", "title", "description"):
                pos = i + 1
        root.insert(pos, md)
    mark = md.find(_p("pksm"))
    if mark is None and create:
        mark = ET.SubElement(md, _p("pksm"))
    return mark


def enable_xml(xml_text, plugin_arg):
    """Returns (new XML, changed). Adds or updates the -plugin arguments in
    <qemu:commandline> and <memoryBacking><nosharepages/>."""
    root = ET.fromstring(xml_text)
    changed = False
    existing = find_plugin_args(root)
    if existing:
        cl, flag, val = existing[0]
        if val.get("value") != plugin_arg:
            val.set("value", plugin_arg)
            changed = True
        for cl2, flag2, val2 in existing[1:]:  # duplicates: keep one
            cl2.remove(flag2)
            cl2.remove(val2)
            changed = True
    else:
        cl = root.find(_q("commandline"))
        if cl is None:
            cl = ET.SubElement(root, _q("commandline"))
        ET.SubElement(cl, _q("arg"), {"value": "-plugin"})
        ET.SubElement(cl, _q("arg"), {"value": plugin_arg})
        changed = True
    mb = root.find("memoryBacking")
    if mb is None:
        mb = ET.Element("memoryBacking")
        # libvirt's schema lets memoryBacking go anywhere among the
        # top-level elements; put it before <os> for readability.
        os_el = root.find("os")
        root.insert(list(root).index(os_el) if os_el is not None else len(root), mb)
    if mb.find("nosharepages") is None:
        ET.SubElement(mb, "nosharepages")
        mark = _metadata_marker(root, create=True)
        mark.set("nosharepages", "added")
        changed = True
    elif _metadata_marker(root, create=False) is None:
        _metadata_marker(root, create=True).set("nosharepages", "kept")
        changed = True
    return _serialize(root), changed


def disable_xml(xml_text):
    """Returns (new XML, changed). Removes pksm's -plugin arguments, and
    <nosharepages/> only if pksm-ctl added it."""
    root = ET.fromstring(xml_text)
    changed = False
    for cl, flag, val in find_plugin_args(root):
        cl.remove(flag)
        cl.remove(val)
        changed = True
    for cl in root.findall(_q("commandline")):
        if len(cl) == 0:
            root.remove(cl)
    md = root.find("metadata")
    mark = md.find(_p("pksm")) if md is not None else None
    if mark is not None:
        if mark.get("nosharepages") == "added":
            mb = root.find("memoryBacking")
            nsp = mb.find("nosharepages") if mb is not None else None
            if nsp is not None:
                mb.remove(nsp)
                if len(mb) == 0 and not mb.attrib:
                    root.remove(mb)
        md.remove(mark)
        if len(md) == 0:
            root.remove(md)
        changed = True
    return _serialize(root), changed


def _serialize(root):
    return ET.tostring(root, encoding="unicode")


def plugin_readable_by_qemu_user(path):
    """'' if user libvirt-qemu can read path (and traverse its directories),
    else the reason."""
    import pwd
    try:
        pw = pwd.getpwnam("libvirt-qemu")
        uid, groups = pw.pw_uid, {pw.pw_gid}
        import grp
        groups |= {g.gr_gid for g in grp.getgrall() if "libvirt-qemu" in g.gr_mem}
    except KeyError:
        return ""  # no such user: not a Debian libvirt host, cannot judge

    def allowed(st, bit_user, bit_group, bit_other):
        if st.st_uid == uid:
            return bool(st.st_mode & bit_user)
        if st.st_gid in groups:
            return bool(st.st_mode & bit_group)
        return bool(st.st_mode & bit_other)

    p = os.path.abspath(path)
    d = os.path.dirname(p)
    while True:
        st = os.stat(d)
        if not allowed(st, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
            return f"directory {d} is not searchable by user libvirt-qemu"
        if d == "/":
            break
        d = os.path.dirname(d)
    st = os.stat(p)
    if not allowed(st, stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH):
        return f"{p} is not readable by user libvirt-qemu"
    return ""


# --------------------------------------------------------------------------
# Subcommands

def cmd_status(args):
    t = open_target(args)
    try:
        info = t.require_pksm()
        params = t.execute("query-pksm-parameters")
    except QMPError as e:
        raise CtlError(f"{t.label}: {e.desc}") from None
    finally:
        t.close()
    if args.json:
        print(json.dumps({"stats": info, "parameters": params}, indent=2, sort_keys=True))
    else:
        print(format_status(t.label, info, params))
    return 0


def cmd_set(args):
    settings = parse_assignments(args.assignments, SET_KEYS, "set")
    if not settings:
        raise UsageError("set: give at least one KEY=VALUE")
    t = open_target(args)
    try:
        t.require_pksm()
        try:
            t.execute("pksm-set-parameters", settings)
        except QMPError as e:
            raise CtlError(f"{t.label} refused the parameters: {e.desc}") from None
        params = t.execute("query-pksm-parameters")
    finally:
        t.close()
    print("parameters now: " + "  ".join(f"{k}={_fmt_param(v)}" for k, v in _ordered(params)))
    return 0


def cmd_unmerge(args):
    t = open_target(args)
    try:
        t.require_pksm()
        try:
            t.execute("pksm-set-parameters", {"run": 2})
        except QMPError as e:
            raise CtlError(f"{t.label} refused run=2: {e.desc}") from None
        if args.no_wait:
            print("unmerging started (run=2); pksm stops (run=0) when every page is private again")
            return 0
        deadline = time.monotonic() + args.timeout
        while True:
            info = t.execute("query-pksm")
            merged = _get(info, "pages-sharing") + _get(info, "zero-pages") + _get(info, "pages-shared")
            if _get(info, "run") == 0 and merged == 0:
                break
            if info.get("paused") and merged == 0:
                # A paused scanner does not run the unmerge pass, but there
                # is nothing to give back: stopping is all that is left.
                t.execute("pksm-set-parameters", {"run": 0})
                continue
            if time.monotonic() > deadline:
                why = f" (merging is paused: {info.get('paused-reason')})" if info.get("paused") else ""
                raise CtlError(f"unmerge not finished after {args.timeout:.0f} s{why}: run={_get(info, 'run')} "
                               f"pages-sharing={_get(info, 'pages-sharing')} zero-pages={_get(info, 'zero-pages')}")
            time.sleep(0.2)
    finally:
        t.close()
    print(f"unmerged: every page of {t.label} is private again; pksm is stopped (run=0). "
          "Start it again with 'pksm-ctl ... set run=1'.")
    return 0


def cmd_watch(args):
    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    t = open_target(args)
    clear = sys.stdout.isatty() and not args.no_clear
    prev = prev_t = None
    n = 0
    try:
        while True:
            info = t.require_pksm()
            params = t.execute("query-pksm-parameters")
            now = time.monotonic()
            text = format_status(t.label, info, params, prev, (now - prev_t) if prev_t else None)
            stamp = time.strftime("%H:%M:%S")
            if clear:
                sys.stdout.write("\033[H\033[2J")
            elif n:
                sys.stdout.write("\n")
            sys.stdout.write(f"[{stamp}]  every {args.interval:g} s" + ("  (Ctrl-C to stop)" if clear else "") + "\n")
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
            prev, prev_t = info, now
            n += 1
            if args.count and n >= args.count:
                break
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        t.close()
    return 0


def _edit_domain(args, edit):
    libvirt, _ = _libvirt()
    conn = open_libvirt(args.connect)
    try:
        dom = lookup_domain(conn, args.domain_name)
        if not dom.isPersistent():
            raise CtlError(f"domain {args.domain_name} is transient: enable/disable edit a persistent "
                           "definition (virsh define it first, or put the plugin in the XML you create it from)")
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
        old = dom.XMLDesc(flags)
        new, changed = edit(old)
        if changed:
            try:
                conn.defineXMLFlags(new, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
            except libvirt.libvirtError as e:
                raise CtlError(f"libvirt refused the edited definition of {args.domain_name}: {e.get_error_message()}") from None
        running = dom.isActive()
        return changed, running
    finally:
        conn.close()


def cmd_enable(args):
    settings = parse_assignments(args.settings, PLUGIN_KEYS, "enable")
    plugin = os.path.abspath(args.plugin)
    if "," in plugin:
        raise UsageError(f"plugin path '{plugin}' contains a comma, which QEMU's -plugin option cannot take")
    local = args.connect.startswith(("qemu:///", "qemu+unix:///"))
    if local and not args.force:
        if not os.path.isfile(plugin):
            hint = " (install it with 'pksm-ctl install-plugin', or pass --plugin PATH)" if args.plugin == DEFAULT_PLUGIN else ""
            raise CtlError(f"plugin not found: {plugin}{hint}")
        why = plugin_readable_by_qemu_user(plugin)
        if why:
            raise CtlError(f"QEMU runs as libvirt-qemu and could not load the plugin: {why} "
                           "(install it with 'pksm-ctl install-plugin', or use --force)")
    arg = plugin_argument(plugin, settings)
    changed, running = _edit_domain(args, lambda x: enable_xml(x, arg))
    if not changed:
        print(f"pksm is already enabled in domain {args.domain_name} (-plugin {arg})")
    else:
        print(f"pksm enabled in domain {args.domain_name}: -plugin {arg}; kernel KSM off for its RAM (<nosharepages/>)")
    if local:
        problem = userfaultfd_problem()
        if problem:
            print(f"pksm-ctl: warning: {problem}", file=sys.stderr)
    if running:
        print(f"domain {args.domain_name} is running: the change takes effect at its next start "
              f"(e.g. 'virsh shutdown {args.domain_name}' then 'virsh start {args.domain_name}')")
    return 0


def cmd_disable(args):
    changed, running = _edit_domain(args, disable_xml)
    if not changed:
        print(f"pksm is not enabled in domain {args.domain_name}; nothing to do")
    else:
        print(f"pksm disabled in domain {args.domain_name}")
        if running:
            print(f"domain {args.domain_name} is running: pksm stays loaded until its next start; "
                  f"'pksm-ctl --domain {args.domain_name} unmerge' gives back its merged pages now")
    return 0


def cmd_list(args):
    libvirt, _ = _libvirt()
    conn = open_libvirt(args.connect)
    rows = []
    try:
        for dom in sorted(conn.listAllDomains(0), key=lambda d: d.name()):
            enabled = "-"
            if dom.isPersistent():
                try:
                    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
                    enabled = "yes" if find_plugin_args(root) else "no"
                except libvirt.libvirtError:
                    enabled = "?"
            state, loaded, saved = "shut off", "-", "-"
            if dom.isActive():
                state = "running"
                t = DomainTarget(dom.name(), conn=conn, domain=dom)
                try:
                    info = t.execute("query-pksm")
                    loaded = f"run={_get(info, 'run')}"
                    saved = human_bytes((_get(info, "pages-sharing") + _get(info, "zero-pages")) * PAGE_SIZE)
                except QMPError as e:
                    loaded = "no" if e.error_class == "CommandNotFound" else f"error: {e.desc}"
                except CtlError as e:
                    loaded = f"error: {e}"
            rows.append((dom.name(), state, enabled, loaded, saved))
    finally:
        conn.close()
    if args.json:
        print(json.dumps([dict(zip(("domain", "state", "enabled", "loaded", "saved"), r)) for r in rows], indent=2))
        return 0
    print(f"{'domain':<24} {'state':<9} {'enabled':<8} {'loaded':<10} saved")
    for r in rows:
        print(f"{r[0]:<24} {r[1]:<9} {r[2]:<8} {r[3]:<10} {r[4]}")
    return 0


def cmd_install_plugin(args):
    src = args.source
    if src is None:
        build = os.environ.get("PKSM_BUILD", os.path.join(_REPO, "build"))
        src = os.path.join(build, "qemu-plugin", "libpksm-qemu.so")
    if not os.path.isfile(src):
        raise CtlError(f"plugin not built: {src} (run 'meson setup build && meson compile -C build', or pass --from PATH)")
    dest = os.path.abspath(args.dest)
    try:
        os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
        tmp = dest + ".tmp"
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)  # atomic: a QEMU starting now sees old or new, never half
    except OSError as e:
        raise CtlError(f"cannot install the plugin to {dest}: {e.strerror or e}") from None
    why = plugin_readable_by_qemu_user(dest)
    print(f"installed {src} -> {dest}")
    if why:
        print(f"warning: {why}; libvirt's QEMU will not be able to load it", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------
# Host set-up: userfaultfd for QEMU under libvirt

USERFAULTFD_DEV = "/dev/userfaultfd"
UDEV_RULE = "/etc/udev/rules.d/70-pksm-userfaultfd.rules"
QEMU_CONF = "/etc/libvirt/qemu.conf"
CONF_BEGIN = "# >>> pksm: QEMU may open /dev/userfaultfd in libvirt's private /dev (pksm-ctl host-setup)"
CONF_END = "# <<< pksm"
# libvirt's built-in default list (qemu.conf's commented cgroup_device_acl) plus the device.
DEFAULT_DEVICE_ACL = ["/dev/null", "/dev/full", "/dev/zero", "/dev/random", "/dev/urandom",
                      "/dev/ptmx", "/dev/kvm"]


def _conf_active_lines(text):
    return [l for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]


def _conf_setting(text, key):
    """The raw value text of an uncommented `key = ...` (lists may span lines)."""
    lines = _conf_active_lines(text)
    for i, l in enumerate(lines):
        if l.split("=", 1)[0].strip() == key and "=" in l:
            value = l.split("=", 1)[1]
            j = i
            while value.count("[") > value.count("]") and j + 1 < len(lines):
                j += 1
                value += lines[j]
            return value.strip()
    return None


def userfaultfd_problem():
    """'' if a QEMU that libvirt runs as libvirt-qemu can get a userfaultfd
    (pksm needs one to merge safely), else what is missing."""
    try:
        with open("/proc/sys/vm/unprivileged_userfaultfd") as f:
            if f.read().strip() == "1":
                return ""
    except OSError:
        pass
    if not os.path.exists(USERFAULTFD_DEV):
        return (f"{USERFAULTFD_DEV} does not exist (kernel older than 6.1) and vm.unprivileged_userfaultfd is 0: "
                "QEMU under libvirt cannot use userfaultfd, so pksm cannot merge (see docs/operator-guide.md)")
    import grp
    st = os.stat(USERFAULTFD_DEV)
    try:
        qemu_gids = {grp.getgrnam(g).gr_gid for g in ("libvirt-qemu", "kvm") if _group_exists(g)}
    except KeyError:
        qemu_gids = set()
    if not ((st.st_gid in qemu_gids and st.st_mode & 0o060 == 0o060) or st.st_mode & 0o006 == 0o006):
        return (f"user libvirt-qemu cannot open {USERFAULTFD_DEV} and vm.unprivileged_userfaultfd is 0: "
                "pksm will not merge in libvirt guests; run 'pksm-ctl host-setup' (then restart libvirtd)")
    try:
        with open(QEMU_CONF) as f:
            conf = f.read()
    except OSError:
        return ""  # no libvirt qemu.conf: cannot judge
    ns = _conf_setting(conf, "namespaces")
    if ns is not None and ns.replace(" ", "") == "[]":
        return ""
    acl = _conf_setting(conf, "cgroup_device_acl")
    if acl is None or USERFAULTFD_DEV not in acl:
        return (f"{USERFAULTFD_DEV} is not in cgroup_device_acl of {QEMU_CONF}, so it is missing from the private "
                "/dev libvirt gives QEMU: pksm will not merge in libvirt guests; run 'pksm-ctl host-setup' "
                "(then restart libvirtd)")
    return ""


def _group_exists(name):
    import grp
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def cmd_host_setup(args):
    import grp
    if args.check:
        problem = userfaultfd_problem()
        if problem:
            raise CtlError(problem)
        print("ok: QEMU under libvirt can use userfaultfd")
        return 0
    if os.geteuid() != 0:
        raise CtlError("host-setup changes /dev/userfaultfd, udev rules and libvirt's qemu.conf: run it as root")
    try:
        with open(QEMU_CONF) as f:
            conf = f.read()
    except OSError as e:
        raise CtlError(f"cannot read {QEMU_CONF}: {e.strerror} (is libvirt-daemon-system installed?)") from None
    if args.undo:
        changed = []
        if CONF_BEGIN in conf:
            head, rest = conf.split(CONF_BEGIN, 1)
            tail = rest.split(CONF_END, 1)[1] if CONF_END in rest else ""
            conf = head.rstrip("\n") + "\n" + tail.lstrip("\n")
            _write_atomic(QEMU_CONF, conf)
            changed.append(f"removed pksm's cgroup_device_acl from {QEMU_CONF}")
        if os.path.exists(UDEV_RULE):
            os.unlink(UDEV_RULE)
            changed.append(f"removed {UDEV_RULE}")
        if os.path.exists(USERFAULTFD_DEV):
            st = os.stat(USERFAULTFD_DEV)
            if (st.st_uid, st.st_gid, st.st_mode & 0o777) != (0, 0, 0o600):
                os.chown(USERFAULTFD_DEV, 0, 0)
                os.chmod(USERFAULTFD_DEV, 0o600)
                changed.append(f"{USERFAULTFD_DEV} back to root:root 0600 (the kernel's default)")
        print("\n".join(changed) if changed else "nothing to undo")
        if changed:
            print("restart libvirtd for qemu.conf to take effect (running domains survive a restart)")
        return 0

    if not os.path.exists(USERFAULTFD_DEV):
        raise CtlError(f"{USERFAULTFD_DEV} does not exist (it needs Linux 6.1 or later). The alternative is "
                       "'sysctl vm.unprivileged_userfaultfd=1' (host-wide: read docs/operator-guide.md, section 8)")
    if not _group_exists("libvirt-qemu"):
        raise CtlError("there is no group libvirt-qemu: install libvirt-daemon-system first")
    acl = _conf_setting(conf, "cgroup_device_acl")
    if acl is not None and USERFAULTFD_DEV not in acl and CONF_BEGIN not in conf:
        raise CtlError(f"{QEMU_CONF} already sets cgroup_device_acl: add \"{USERFAULTFD_DEV}\" to that list "
                       "yourself, then run host-setup again")
    gid = grp.getgrnam("libvirt-qemu").gr_gid
    changed = []
    st = os.stat(USERFAULTFD_DEV)
    if st.st_gid != gid or st.st_mode & 0o777 != 0o660:
        os.chown(USERFAULTFD_DEV, 0, gid)
        os.chmod(USERFAULTFD_DEV, 0o660)
        changed.append(f"{USERFAULTFD_DEV}: group libvirt-qemu, mode 0660")
    rule = 'KERNEL=="userfaultfd", GROUP="libvirt-qemu", MODE="0660"\n'
    current = None
    try:
        with open(UDEV_RULE) as f:
            current = f.read()
    except OSError:
        pass
    if current != "# pksm (pksm-ctl host-setup): QEMU under libvirt may use userfaultfd\n" + rule:
        os.makedirs(os.path.dirname(UDEV_RULE), exist_ok=True)
        _write_atomic(UDEV_RULE, "# pksm (pksm-ctl host-setup): QEMU under libvirt may use userfaultfd\n" + rule)
        changed.append(f"{UDEV_RULE} (keeps that after a reboot)")
    if acl is None:
        items = ", ".join(f'"{d}"' for d in DEFAULT_DEVICE_ACL + [USERFAULTFD_DEV])
        conf = conf.rstrip("\n") + f"\n\n{CONF_BEGIN}\ncgroup_device_acl = [ {items} ]\n{CONF_END}\n"
        _write_atomic(QEMU_CONF, conf)
        changed.append(f"{QEMU_CONF}: cgroup_device_acl with {USERFAULTFD_DEV} (libvirt's defaults kept)")
    if changed:
        print("\n".join(changed))
        print("now restart libvirtd (systemctl restart libvirtd; running domains survive), "
              "then (re)start the VMs that use pksm")
    else:
        print("host already set up for pksm")
    problem = userfaultfd_problem()
    if problem:
        raise CtlError(f"still not usable: {problem}")
    return 0


def _write_atomic(path, text):
    st = os.stat(path) if os.path.exists(path) else None
    tmp = path + ".pksm-tmp"
    with open(tmp, "w") as f:
        f.write(text)
    if st is not None:
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o7777)
    else:
        os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# --------------------------------------------------------------------------

def build_parser():
    p = argparse.ArgumentParser(
        prog="pksm-ctl",
        description="Control and observe pksm (QEMU-side memory deduplication) in one VM.",
        epilog="Examples:\n"
               "  pksm-ctl host-setup                     once per host: let libvirt's QEMU use userfaultfd\n"
               "  pksm-ctl install-plugin                 copy the built plugin where libvirt's QEMU can read it\n"
               "  pksm-ctl enable vm1 delay=2             load pksm in vm1 from its next start\n"
               "  pksm-ctl --domain vm1 status            statistics of a libvirt domain\n"
               "  pksm-ctl --socket /run/vm1.qmp watch    live view of a QEMU started with -qmp unix:...\n"
               "  pksm-ctl --domain vm1 set pages-to-scan=2000 sleep-ms=10\n"
               "  pksm-ctl --domain vm1 unmerge           give every page back, then stop\n"
               "Exit status: 0 ok, 1 runtime error, 2 usage error.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    tgt = argparse.ArgumentParser(add_help=False)
    tgt.add_argument("--socket", "-s", metavar="PATH", help="the VM's QMP unix socket")
    tgt.add_argument("--domain", "-d", metavar="NAME", help="a running libvirt domain")
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--connect", "-c", metavar="URI", default=DEFAULT_URI,
                      help=f"libvirt URI (default {DEFAULT_URI})")
    # --socket/--domain/--connect are accepted before or after the subcommand
    p.add_argument("--socket", "-s", metavar="PATH", dest="g_socket", help=argparse.SUPPRESS)
    p.add_argument("--domain", "-d", metavar="NAME", dest="g_domain", help=argparse.SUPPRESS)
    p.add_argument("--connect", "-c", metavar="URI", dest="g_connect", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("status", parents=[tgt, conn], help="statistics and parameters as a table (or --json)")
    s.add_argument("--json", action="store_true", help="one JSON object: {stats, parameters}")
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("query", parents=[tgt, conn], help="same as 'status --json'")
    s.set_defaults(func=cmd_status, json=True)

    s = sub.add_parser("set", parents=[tgt, conn], help="change parameters: KEY=VALUE ...",
                       description="Keys: " + ", ".join(SET_KEYS) + ". Applied all or nothing.")
    s.add_argument("assignments", nargs="*", metavar="KEY=VALUE")
    s.set_defaults(func=cmd_set)

    s = sub.add_parser("watch", parents=[tgt, conn], help="refresh the status table until Ctrl-C")
    s.add_argument("--interval", "-n", type=float, default=2.0, help="seconds between refreshes (default 2)")
    s.add_argument("--count", type=int, default=0, help="stop after N refreshes (0: never)")
    s.add_argument("--no-clear", action="store_true", help="append instead of redrawing the screen")
    s.set_defaults(func=cmd_watch)

    s = sub.add_parser("unmerge", parents=[tgt, conn], help="unmerge every page (run=2), wait until done")
    s.add_argument("--no-wait", action="store_true", help="return once unmerging has started")
    s.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default 300)")
    s.set_defaults(func=cmd_unmerge)

    s = sub.add_parser("enable", parents=[conn], help="load pksm in a persistent domain from its next start",
                       description="Adds '-plugin PATH,run=1,KEY=VALUE...' to the domain's <qemu:commandline> "
                                   "(with the xmlns:qemu namespace) and <memoryBacking><nosharepages/> so the "
                                   "kernel's KSM leaves the guest's RAM to pksm. Idempotent; running again with "
                                   "other settings updates them. Plugin keys: " + ", ".join(PLUGIN_KEYS) + ".")
    s.add_argument("domain_name", metavar="DOMAIN")
    s.add_argument("settings", nargs="*", metavar="KEY=VALUE")
    s.add_argument("--plugin", default=DEFAULT_PLUGIN, help=f"plugin path as QEMU sees it (default {DEFAULT_PLUGIN})")
    s.add_argument("--force", action="store_true", help="skip the check that libvirt's QEMU can read the plugin")
    s.set_defaults(func=cmd_enable)

    s = sub.add_parser("disable", parents=[conn], help="remove pksm from a persistent domain from its next start")
    s.add_argument("domain_name", metavar="DOMAIN")
    s.set_defaults(func=cmd_disable)

    s = sub.add_parser("list", parents=[conn], help="libvirt domains: pksm enabled? loaded? saving")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("host-setup", help="let QEMU under libvirt use userfaultfd (needed to merge); --undo",
                       description="pksm merges under userfaultfd write protection. libvirt runs QEMU as user "
                                   "libvirt-qemu without privileges, and the kernel allows unprivileged "
                                   "userfaultfd only through /dev/userfaultfd. This gives group libvirt-qemu "
                                   "access to that device (now and, by a udev rule, after reboots) and adds it "
                                   "to cgroup_device_acl in /etc/libvirt/qemu.conf so it exists in the private "
                                   "/dev libvirt gives QEMU. Restart libvirtd afterwards.")
    s.add_argument("--undo", action="store_true", help="remove what host-setup added")
    s.add_argument("--check", action="store_true", help="only say whether the host is set up (exit 1 if not)")
    s.set_defaults(func=cmd_host_setup)

    s = sub.add_parser("install-plugin", help="copy the built plugin to a path libvirt's QEMU can read")
    s.add_argument("--from", dest="source", metavar="PATH",
                   help="the plugin to install (default $PKSM_BUILD or build/ in the repository: qemu-plugin/libpksm-qemu.so)")
    s.add_argument("--dest", default=DEFAULT_PLUGIN, help=f"where (default {DEFAULT_PLUGIN})")
    s.set_defaults(func=cmd_install_plugin)
    return p


def main(argv=None):
    parser = build_parser()
    # KEY=VALUE words may come after options (enable vm1 --plugin P delay=2);
    # argparse leaves those over, so they are collected here.
    args, extra = parser.parse_known_args(argv)
    if extra:
        dest = {"enable": "settings", "set": "assignments"}.get(getattr(args, "command", None))
        if dest and all("=" in e and not e.startswith("-") for e in extra):
            getattr(args, dest).extend(extra)
        else:
            parser.error("unrecognized arguments: " + " ".join(extra))
    if not getattr(args, "command", None):
        parser.print_usage(sys.stderr)
        print("pksm-ctl: error: give a command (status, set, watch, unmerge, enable, disable, list, install-plugin, host-setup)",
              file=sys.stderr)
        return 2
    for name in ("socket", "domain", "connect"):
        g = getattr(args, "g_" + name, None)
        if g is not None and hasattr(args, name):
            if name == "connect" and args.connect == DEFAULT_URI:
                args.connect = g
            elif name != "connect" and getattr(args, name) is None:
                setattr(args, name, g)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"pksm-ctl: error: {e}", file=sys.stderr)
        return 2
    except CtlError as e:
        print(f"pksm-ctl: {e}", file=sys.stderr)
        return 1
    except QMPError as e:
        print(f"pksm-ctl: QEMU refused {e.command}: {e.desc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
