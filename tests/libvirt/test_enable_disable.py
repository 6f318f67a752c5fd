"""pksm-ctl enable / disable on persistent libvirt domains, and pksm-ctl's
errors for domains that do not exist or cannot be reached.

These edit definitions only (nothing boots), so they do not need the
plugin: the plugin path is a name that does not exist, passed with --force
(the readability check is tested on its own below).
"""
import os
import xml.etree.ElementTree as ET

from libvirt_env import TAG, ctl, domain_xml, virsh

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
FAKE_PLUGIN = f"/usr/local/lib/qemu-plugins/lib{TAG}-absent-pksm.so"


def inactive_xml(name):
    return virsh("dumpxml", "--inactive", name).stdout


def plugin_args(xml):
    """The values following each -plugin in <qemu:commandline>."""
    root = ET.fromstring(xml)
    vals = [a.get("value") for a in root.iter(f"{{{QEMU_NS}}}arg")]
    return [vals[i + 1] for i, v in enumerate(vals[:-1]) if v == "-plugin"]


def has_nosharepages(xml):
    return ET.fromstring(xml).find("memoryBacking/nosharepages") is not None


def define_plain(domains, suffix, extra_memory_backing=False):
    name = f"{TAG}-{suffix}"
    xml = domain_xml(name, "/var/lib/libvirt/boot/none-vmlinuz", "/var/lib/libvirt/boot/none-initrd",
                     f"/var/log/libvirt/qemu/{name}-serial.log", "console=ttyS0")
    if extra_memory_backing:
        xml = xml.replace("  <os>", "  <memoryBacking><nosharepages/></memoryBacking>\n  <os>", 1)
    domains.define(name, xml)
    return name


def test_enable_adds_plugin_namespace_and_nosharepages(domains):
    name = define_plain(domains, "xml1")
    before = inactive_xml(name)
    assert plugin_args(before) == [] and not has_nosharepages(before)

    p = ctl("enable", name, "--plugin", FAKE_PLUGIN, "--force", "delay=2", "pages_to_scan=500", "dirty-log=auto")
    assert p.returncode == 0, p.stderr
    assert "enabled" in p.stdout
    after = inactive_xml(name)
    # libvirt kept the qemu:commandline: only possible with xmlns:qemu declared
    assert f"xmlns:qemu=\"{QEMU_NS}\"" in after or f"xmlns:qemu='{QEMU_NS}'" in after
    assert plugin_args(after) == [f"{FAKE_PLUGIN},run=1,delay=2,pages-to-scan=500,dirty-log=auto"]
    assert has_nosharepages(after)
    assert "urn:x-pksm:libvirt:1" in after  # the marker disable relies on survived libvirt's parsing

    # idempotent: the same command again changes nothing
    p = ctl("enable", name, "--plugin", FAKE_PLUGIN, "--force", "delay=2", "pages_to_scan=500", "dirty-log=auto")
    assert p.returncode == 0, p.stderr
    assert "already enabled" in p.stdout
    assert inactive_xml(name) == after

    # other settings replace the old ones; still exactly one -plugin
    p = ctl("enable", name, "--plugin", FAKE_PLUGIN, "--force", "run=0", "use-zero-pages=0")
    assert p.returncode == 0, p.stderr
    assert plugin_args(inactive_xml(name)) == [f"{FAKE_PLUGIN},run=0,use-zero-pages=0"]

    p = ctl("disable", name)
    assert p.returncode == 0, p.stderr
    assert "disabled" in p.stdout
    off = inactive_xml(name)
    assert plugin_args(off) == []
    assert not has_nosharepages(off), "disable must remove the <nosharepages/> that enable added"
    assert "qemu:commandline" not in off
    assert "<metadata" not in off and "x-pksm" not in off  # no leftover marker either

    p = ctl("disable", name)
    assert p.returncode == 0, p.stderr
    assert "not enabled" in p.stdout
    assert inactive_xml(name) == off


def test_disable_keeps_operators_own_nosharepages(domains):
    name = define_plain(domains, "xml2", extra_memory_backing=True)
    assert ctl("enable", name, "--plugin", FAKE_PLUGIN, "--force").returncode == 0
    assert plugin_args(inactive_xml(name)) == [f"{FAKE_PLUGIN},run=1"]
    p = ctl("disable", name)
    assert p.returncode == 0, p.stderr
    xml = inactive_xml(name)
    assert plugin_args(xml) == []
    assert has_nosharepages(xml), "the operator's own <nosharepages/> must survive disable"


def test_enable_keeps_other_qemu_commandline_args(domains):
    name = f"{TAG}-xml3"
    xml = domain_xml(name, "/var/lib/libvirt/boot/none-vmlinuz", "/var/lib/libvirt/boot/none-initrd",
                     f"/var/log/libvirt/qemu/{name}-serial.log", "console=ttyS0")
    xml = xml.replace("<domain type='qemu'>", f"<domain type='qemu' xmlns:qemu='{QEMU_NS}'>").replace(
        "</domain>", "  <qemu:commandline>\n    <qemu:arg value='-msg'/>\n    <qemu:arg value='guest-name=on'/>\n"
        "  </qemu:commandline>\n</domain>")
    domains.define(name, xml)
    assert ctl("enable", name, "--plugin", FAKE_PLUGIN, "--force").returncode == 0
    root = ET.fromstring(inactive_xml(name))
    vals = [a.get("value") for a in root.iter(f"{{{QEMU_NS}}}arg")]
    assert vals == ["-msg", "guest-name=on", "-plugin", f"{FAKE_PLUGIN},run=1"]
    assert ctl("disable", name).returncode == 0
    root = ET.fromstring(inactive_xml(name))
    assert [a.get("value") for a in root.iter(f"{{{QEMU_NS}}}arg")] == ["-msg", "guest-name=on"]


def test_enable_refuses_missing_or_unreadable_plugin(domains, tmp_path):
    name = define_plain(domains, "xml4")
    p = ctl("enable", name, "--plugin", FAKE_PLUGIN)
    assert p.returncode == 1
    assert "plugin not found" in p.stderr and FAKE_PLUGIN in p.stderr
    # a plugin under a directory libvirt-qemu cannot enter (mode 0700)
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    so = hidden / "libpksm-qemu.so"
    so.write_bytes(b"\x7fELF")
    os.chmod(hidden, 0o700)
    p = ctl("enable", name, "--plugin", str(so))
    assert p.returncode == 1
    assert "libvirt-qemu" in p.stderr and str(hidden) in p.stderr
    assert plugin_args(inactive_xml(name)) == []  # nothing was changed


def test_enable_rejects_bad_keys_and_values(domains):
    name = define_plain(domains, "xml5")
    p = ctl("enable", name, "--plugin", FAKE_PLUGIN, "--force", "bogus=1")
    assert p.returncode == 2 and "unknown key 'bogus'" in p.stderr
    p = ctl("enable", name, "--plugin", FAKE_PLUGIN, "--force", "delay=soon")
    assert p.returncode == 2 and "'delay'" in p.stderr and "soon" in p.stderr
    p = ctl("enable", name, "--plugin", FAKE_PLUGIN, "--force", "dirty-log=magic")
    assert p.returncode == 2 and "'dirty-log'" in p.stderr
    assert plugin_args(inactive_xml(name)) == []


def test_unknown_domain_errors(libvirt_host):
    missing = f"{TAG}-no-such-domain"
    for args in (["enable", missing, "--force"], ["disable", missing],
                 ["--domain", missing, "status"], ["--domain", missing, "set", "delay=1"]):
        p = ctl(*args)
        assert p.returncode == 1, (args, p.stdout, p.stderr)
        assert f"no libvirt domain named '{missing}'" in p.stderr, p.stderr


def test_usage_errors():
    p = ctl("status")
    assert p.returncode == 2 and "--socket" in p.stderr and "--domain" in p.stderr
    p = ctl("--socket", "/nonexistent/qmp.sock", "status")
    assert p.returncode == 1 and "/nonexistent/qmp.sock" in p.stderr
    p = ctl("--socket", "/x", "--domain", "y", "status")
    assert p.returncode == 2
    p = ctl("--socket", "/x", "set", "nonsense=3")
    assert p.returncode == 2 and "unknown key 'nonsense'" in p.stderr
    p = ctl("--socket", "/x", "set")
    assert p.returncode == 2
    p = ctl("frobnicate")
    assert p.returncode == 2


def test_domain_not_running(domains):
    name = define_plain(domains, "xml6")
    p = ctl("--domain", name, "status")
    assert p.returncode == 1 and f"domain {name} is not running" in p.stderr, p.stderr
