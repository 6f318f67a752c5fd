"""pksm-exporter: pksm's statistics of every running VM, in Prometheus format.

On each scrape it lists the running libvirt domains, keeps those whose QMP
monitor knows query-pksm (pksm loaded), asks each for query-pksm and
query-pksm-parameters through libvirt's qemu-monitor-command, and serves
the figures with a `domain` label. VMs started without libvirt are added
with --socket NAME=PATH (their QMP unix socket; NAME becomes the label).

Metric names follow node_exporter's ksmd collector (node_ksmd_<file>) with
the prefix pksm_ instead of node_ksmd_: pksm_pages_shared, pksm_pages_sharing,
pksm_pages_unshared, pksm_pages_volatile, pksm_full_scans_total,
pksm_pages_to_scan, pksm_run, pksm_sleep_seconds. merge_across_nodes has no
meaning for pksm (one VM's RAM) and is not exported. pksm's own figures
follow Prometheus naming (counters end in _total, units in the name).

Why query per scrape and not in the background: the figures are then as
fresh as the scrape, and a VM that went away simply disappears.
"""
import argparse
import os
import signal
import sys
import threading
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))
sys.path.insert(0, os.path.join(_REPO, "tools", "pksm-ctl"))
sys.path.insert(0, os.path.join(_REPO, "scripts"))
import pksmctl  # noqa: E402
from pksmlib.qmp import QMPClient, QMPConnectionError, QMPError  # noqa: E402

DEFAULT_LISTEN = "127.0.0.1:9641"
PAGE_SIZE = 4096

# (query-pksm key, metric suffix, help, type) — gauges unless "counter".
STAT_METRICS = [
    ("pages-shared", "pages_shared", "Stable (shared) pages in use, as the kernel's pages_shared.", "gauge"),
    ("pages-sharing", "pages_sharing", "Guest pages mapping a stable page beyond its first mapping: pages saved, as the kernel's pages_sharing.", "gauge"),
    ("pages-unshared", "pages_unshared", "Pages waiting in the unstable tree, as the kernel's pages_unshared.", "gauge"),
    ("pages-volatile", "pages_volatile", "Tracked pages changing too fast or still on probation, as the kernel's pages_volatile.", "gauge"),
    ("full-scans", "full_scans_total", "Completed full passes over the guest's RAM, as the kernel's full_scans.", "counter"),
    ("zero-pages", "zero_pages", "Pages merged onto the zero page, as the kernel's ksm_zero_pages.", "gauge"),
    ("general-profit", "general_profit_bytes", "Bytes saved minus pksm's own record overhead, as the kernel's general_profit.", "gauge"),
    ("cow-breaks", "cow_breaks_total", "Merged pages whose sharing a guest write broke (copy on write).", "counter"),
    ("stable-node-chains", "stable_node_chains", "Stable-tree entries holding duplicates (max_page_sharing reached).", "gauge"),
    ("stable-node-dups", "stable_node_dups", "Stable pages belonging to such chains.", "gauge"),
    ("rmap-items", "rmap_items", "Guest pages pksm tracks.", "gauge"),
    ("pages-scanned", "pages_scanned_total", "Candidate pages examined.", "counter"),
    ("merges", "merges_total", "Successful merges onto a stable or zero page.", "counter"),
    ("merge-failures", "merge_failures_total", "Merges refused (content changed, mapping budget, error).", "counter"),
    ("budget-refusals", "budget_refusals_total", "Merges refused because the mapping (VMA) budget was exhausted.", "counter"),
    ("unmerges", "unmerges_total", "Pages given back a private copy.", "counter"),
    ("pages-compared", "pages_compared_total", "Full page comparisons (memcmp).", "counter"),
    ("partial-hash-hits", "partial_hash_hits_total", "Tree steps decided by the partial hash alone.", "counter"),
    ("partial-hash-misses", "partial_hash_misses_total", "Tree steps where equal partial hashes needed a full compare.", "counter"),
    ("bytes-hashed", "hashed_bytes_total", "Bytes fed to the hash function.", "counter"),
    ("vmas-used", "vmas_used", "Memory mappings the merger created in the QEMU process.", "gauge"),
    ("vma-budget", "vma_budget", "Most mappings the merger may create (from vm.max_map_count).", "gauge"),
]

PARAM_METRICS = [
    ("pages-to-scan", "pages_to_scan", "Candidate pages per wake-up, as the kernel's pages_to_scan.", 1.0),
    ("sleep-ms", "sleep_seconds", "Pause between wake-ups, as the kernel's sleep_millisecs (in seconds).", 0.001),
    ("delay", "delay", "Probation N: unwritten visits a new page needs before it is tried.", 1.0),
    ("use-zero-pages", "use_zero_pages", "1 if all-zero pages are merged onto the zero page.", 1.0),
    ("max-page-sharing", "max_page_sharing", "Mappings per stable page before a duplicate is started.", 1.0),
    ("new-ratio", "new_ratio_percent", "Percent of candidates taken from the new list.", 1.0),
]


class Source:
    """One VM to scrape: name (the `domain` label) and a way to run QMP."""

    def __init__(self, name, execute, close=lambda: None):
        self.name = name
        self.execute = execute
        self.close = close


class PksmCollector:
    """A prometheus_client collector: every collect() is one scrape."""

    def __init__(self, uri=None, sockets=(), use_libvirt=True, qmp_timeout=5.0):
        self.uri = uri or pksmctl.DEFAULT_URI
        self.sockets = list(sockets)
        self.use_libvirt = use_libvirt
        self.qmp_timeout = qmp_timeout
        self._conn = None
        self._has_pksm = {}  # (uuid, id) -> bool, a running QEMU's commands do not change
        self._lock = threading.Lock()

    # -- discovery --------------------------------------------------------
    def _libvirt_sources(self, errors):
        libvirt, libvirt_qemu = pksmctl._libvirt()
        if self._conn is None:
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as e:
                errors.append(f"libvirt {self.uri}: {e.get_error_message()}")
                return None
        try:
            doms = self._conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except libvirt.libvirtError as e:
            errors.append(f"libvirt {self.uri}: {e.get_error_message()}")
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
            return None
        sources = []
        seen = set()
        for dom in doms:
            try:
                key = (dom.UUIDString(), dom.ID())
            except libvirt.libvirtError:
                continue  # went away meanwhile
            seen.add(key)
            target = pksmctl.DomainTarget(dom.name(), conn=self._conn, domain=dom)
            if key not in self._has_pksm:
                try:
                    cmds = target.execute("query-commands")
                    self._has_pksm[key] = any(c.get("name") == "query-pksm" for c in cmds)
                except (QMPError, pksmctl.CtlError):
                    continue  # not answering now; try again next scrape
            if self._has_pksm[key]:
                sources.append(Source(dom.name(), target.execute))
        for key in list(self._has_pksm):
            if key not in seen:
                del self._has_pksm[key]
        return sources

    def _socket_sources(self):
        out = []
        for name, path in self.sockets:
            def execute(cmd, args=None, _path=path, _state={}):
                client = _state.get("c")
                if client is None:
                    try:
                        client = QMPClient(_path, timeout=self.qmp_timeout)
                    except (QMPConnectionError, OSError) as e:
                        raise pksmctl.CtlError(str(e)) from None
                    _state["c"] = client
                try:
                    return client.execute(cmd, args)
                except (QMPConnectionError, OSError) as e:
                    client.close()
                    _state.pop("c", None)
                    raise pksmctl.CtlError(str(e)) from None
            out.append(Source(name, execute))
        return out

    # -- collection -------------------------------------------------------
    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        with self._lock:
            t0 = time.monotonic()
            errors = []
            sources = []
            libvirt_up = None
            if self.use_libvirt:
                found = self._libvirt_sources(errors)
                libvirt_up = found is not None
                sources += found or []
            sources += self._socket_sources_cached()

            lab = ["domain"]
            fams = {}

            def fam(suffix, help_text, kind="gauge", labels=lab):
                if suffix not in fams:
                    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                    name = "pksm_" + (suffix[:-6] if kind == "counter" else suffix)  # client adds _total
                    fams[suffix] = cls(name, help_text, labels=labels)
                return fams[suffix]

            up = fam("up", "1 if pksm's statistics of this VM could be read in this scrape.")
            for key, suffix, help_text, kind in STAT_METRICS:
                fam(suffix, help_text, kind)
            fam("run", "pksm's run state, as the kernel's run: 0 stopped, 1 running, 2 unmerging.")
            fam("paused", "1 while merging is paused by QEMU state (migration, snapshot, ...); pksm_info's paused_reason says why.")
            for key, suffix, help_text, scale in PARAM_METRICS:
                fam(suffix, help_text)
            fam("saved_bytes", "Guest memory saved: (pages_sharing + zero_pages) * page size.")
            fam("scanner_cpu_seconds_total", "CPU time of pksm's scanner thread.", "counter")
            fam("list_pages", "Pages on pksm's work lists (new, rescan, del).", labels=lab + ["list"])
            fam("probation_pages", "New-list pages by probation count (the last bucket: that count or more).",
                labels=lab + ["count"])
            fam("info", "Constant 1; the labels say pksm's mode, dirty-log provider and why merging is paused (if it is).",
                labels=lab + ["mode", "dirty_log", "paused_reason"])
            fam("ram_block_size_bytes", "Size of a RAM block pksm scans.", labels=lab + ["block"])
            fam("ram_block_pages_sharing", "Pages of the block that map a shared stable page.", labels=lab + ["block"])
            fam("ram_block_zero_pages", "Pages of the block merged onto the zero page.", labels=lab + ["block"])
            fam("skipped_block_info", "Constant 1 per RAM block pksm leaves alone; reason says why.",
                labels=lab + ["block", "reason"])

            for src in sources:
                try:
                    info = src.execute("query-pksm")
                    params = src.execute("query-pksm-parameters")
                except (QMPError, pksmctl.CtlError) as e:
                    errors.append(f"{src.name}: {e}")
                    up.add_metric([src.name], 0)
                    continue
                up.add_metric([src.name], 1)
                self._add_vm(src.name, info, params, fams)

            for f in fams.values():
                if f.samples or f is up:
                    yield f
            g = GaugeMetricFamily("pksm_exporter_libvirt_up", "1 if libvirt answered in this scrape (absent with --no-libvirt).")
            if libvirt_up is not None:
                g.add_metric([], 1 if libvirt_up else 0)
                yield g
            g = GaugeMetricFamily("pksm_exporter_errors", "Errors met in this scrape (see the exporter's stderr).")
            g.add_metric([], len(errors))
            yield g
            g = GaugeMetricFamily("pksm_exporter_scrape_duration_seconds", "Time this scrape took.")
            g.add_metric([], time.monotonic() - t0)
            yield g
            for e in errors:
                print(f"pksm-exporter: {e}", file=sys.stderr)

    def _socket_sources_cached(self):
        if not hasattr(self, "_sock_sources"):
            self._sock_sources = self._socket_sources()
        return self._sock_sources

    @staticmethod
    def _add_vm(name, info, params, fams):
        def num(d, k):
            v = d.get(k)
            if isinstance(v, bool):
                return 1.0 if v else 0.0
            return float(v) if isinstance(v, (int, float)) else None

        for key, suffix, _h, _k in STAT_METRICS:
            v = num(info, key)
            if v is not None:
                fams[suffix].add_metric([name], v)
        v = num(info, "run")
        if v is not None:
            fams["run"].add_metric([name], v)
        fams["paused"].add_metric([name], 1.0 if info.get("paused") else 0.0)
        for key, suffix, _h, scale in PARAM_METRICS:
            v = num(params, key)
            if v is not None:
                fams[suffix].add_metric([name], v * scale)
        fams["saved_bytes"].add_metric([name], float((info.get("pages-sharing", 0) + info.get("zero-pages", 0)) * PAGE_SIZE))
        v = num(info, "scanner-cpu-ns")
        if v is not None:
            fams["scanner_cpu_seconds_total"].add_metric([name], v / 1e9)
        for lst in ("new", "rescan", "del"):
            v = num(info, f"{lst}-list")
            if v is not None:
                fams["list_pages"].add_metric([name, lst], v)
        prob = info.get("probation") or []
        for i, v in enumerate(prob):
            label = f"{i}+" if i == len(prob) - 1 else str(i)
            fams["probation_pages"].add_metric([name, label], float(v))
        fams["info"].add_metric([name, str(info.get("mode", "")), str(info.get("dirty-log", "")),
                                 str(info.get("paused-reason") or "") if info.get("paused") else ""], 1.0)
        for b in info.get("ram-blocks") or []:
            bn = str(b.get("name", ""))
            fams["ram_block_size_bytes"].add_metric([name, bn], float(b.get("size", 0)))
            fams["ram_block_pages_sharing"].add_metric([name, bn], float(b.get("pages-sharing", 0)))
            fams["ram_block_zero_pages"].add_metric([name, bn], float(b.get("zero-pages", 0)))
        for s in info.get("skipped-blocks") or []:
            fams["skipped_block_info"].add_metric([name, str(s.get("name", "")), str(s.get("reason", ""))], 1.0)


def parse_listen(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not (0 < int(port) < 65536):
        raise ValueError(f"invalid --listen '{text}': expected ADDR:PORT, e.g. {DEFAULT_LISTEN}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def parse_socket(text):
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"invalid --socket '{text}': expected NAME=PATH (NAME becomes the domain label)")
    return name, path


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="pksm-exporter",
        description="Serve pksm's per-VM statistics in the Prometheus text format (GET /metrics).")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR:PORT",
                   help=f"where to listen (default {DEFAULT_LISTEN}, loopback only)")
    p.add_argument("--connect", "-c", metavar="URI", default=pksmctl.DEFAULT_URI,
                   help=f"libvirt URI (default {pksmctl.DEFAULT_URI})")
    p.add_argument("--socket", action="append", default=[], metavar="NAME=PATH",
                   help="also scrape the QEMU whose QMP socket is PATH, labelled domain=NAME (repeatable)")
    p.add_argument("--no-libvirt", action="store_true", help="do not ask libvirt; only the --socket VMs")
    p.add_argument("--once", action="store_true", help="print one scrape on stdout and exit")
    args = p.parse_args(argv)
    try:
        host, port = parse_listen(args.listen)
        sockets = [parse_socket(s) for s in args.socket]
    except ValueError as e:
        print(f"pksm-exporter: error: {e}", file=sys.stderr)
        return 2
    if args.no_libvirt and not sockets:
        print("pksm-exporter: error: --no-libvirt needs at least one --socket NAME=PATH", file=sys.stderr)
        return 2
    try:
        from prometheus_client import CollectorRegistry, generate_latest, start_http_server
    except ImportError:
        print("pksm-exporter: python3-prometheus-client is not installed (scripts/setup.sh --libvirt)", file=sys.stderr)
        return 1
    if not args.no_libvirt:
        try:
            pksmctl._libvirt()
        except pksmctl.CtlError as e:
            print(f"pksm-exporter: {e}", file=sys.stderr)
            return 1
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PksmCollector(args.connect, sockets, use_libvirt=not args.no_libvirt))
    if args.once:
        sys.stdout.write(generate_latest(registry).decode())
        return 0
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        print(f"pksm-exporter: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"pksm-exporter: serving http://{host}:{port}/metrics"
          + ("" if args.no_libvirt else f" (libvirt {args.connect})")
          + "".join(f" {n}={pth}" for n, pth in sockets), file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(3600):
        pass
    return 0
