#!/usr/bin/python3
"""pksm-host end to end: bad options, a small merge, writers, and the
comparison with the kernel's KSM (root + /sys/kernel/mm/ksm; the knobs must
read their prior values afterwards).

Usage: pksm_host_cli_test.py PATH/TO/pksm-host
Run by meson (suite 'host'). Plain unittest; exits non-zero on failure.
"""
import json
import os
import subprocess
import sys
import unittest

BINARY = None
KSM = "/sys/kernel/mm/ksm"
KNOBS = ["run", "pages_to_scan", "sleep_millisecs", "use_zero_pages", "max_page_sharing",
         "merge_across_nodes", "smart_scan"]


def run(args, timeout=300):
    return subprocess.run([BINARY] + args, capture_output=True, text=True, timeout=timeout)


def last_json(out):
    lines = [l for l in out.splitlines() if l.strip()]
    assert lines, "no output"
    return json.loads(lines[-1])


def knobs():
    vals = {}
    for k in KNOBS:
        path = os.path.join(KSM, k)
        if os.path.exists(path):
            with open(path) as f:
                vals[k] = f.read().strip()
    return vals


def wait_ksm_idle(limit=300):
    """Other tools on this host may be running their own KSM comparison:
    wait (bounded) for run=0 rather than fail on someone else's run."""
    import time
    deadline = time.time() + limit
    while time.time() < deadline:
        with open(os.path.join(KSM, "run")) as f:
            if f.read().strip() == "0":
                return True
        time.sleep(1)
    return False


class BadOptions(unittest.TestCase):
    CASES = [
        (["--size-mib", "zero"], "'zero' for --size-mib"),
        (["--mix", "zero=10,dup=10,unique=10"], "sum to 30"),
        (["--mix", "zero=50,copies=50"], "unknown kind 'copies'"),
        (["--writers", "2"], "--writers 2 needs --seconds"),
        (["--dirty-log", "pagemap"], "'pagemap' for --dirty-log"),
        (["--pages-to-scan", "-1"], "'-1' for --pages-to-scan"),
        (["--no-such-option"], "unknown option '--no-such-option'"),
    ]

    def test_bad_options_exit_2_and_name_the_value(self):
        for args, needle in self.CASES:
            with self.subTest(args=args):
                p = run(args, timeout=30)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(needle, p.stderr)
                self.assertNotIn("{", p.stdout)  # nothing ran

    def test_help_exits_0(self):
        p = run(["--help"], timeout=30)
        self.assertEqual(p.returncode, 0)
        self.assertIn("--compare-kernel-ksm", p.stdout)


class SmallRun(unittest.TestCase):
    def test_merges_most_of_the_expected_saving(self):
        p = run(["--size-mib", "16", "--mix", "zero=25,dup=50,unique=25", "--dup-contents", "64",
                 "--pages-to-scan", "2048", "--sleep-ms", "5", "--timeout", "120", "--json"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        r = last_json(p.stdout)
        self.assertEqual(r["pages_total"], 4096)
        # zero pages 1024 + 2048 duplicates of 64 contents: 1024 + 2048 - 64
        self.assertEqual(r["expected_saved"], 1024 + 2048 - 64)
        self.assertTrue(r["steady"], r)
        merged = r["pages_sharing"] + r["ksm_zero_pages"]
        self.assertGreaterEqual(merged, 0.95 * r["expected_saved"], r)
        # and the page tables agree: the saving is real memory
        self.assertGreaterEqual(r["saved_pages"], 0.95 * r["expected_saved"], r)
        self.assertLess(r["pss_after_kib"], r["pss_before_kib"], r)
        self.assertEqual(r["integrity_errors"], 0)
        self.assertEqual(r["lost_writes"], 0)
        for key in ["pages_shared", "seconds_to_steady", "cpu_seconds", "rss_before_kib", "rss_after_kib",
                    "vmas_used", "dirty_log"]:
            self.assertIn(key, r)
        self.assertGreater(r["cpu_seconds"], 0)

    def test_runs_of_64_coalesce_mappings(self):
        p = run(["--size-mib", "16", "--mix", "dup=100", "--dup-contents", "256", "--run-length", "64",
                 "--pages-to-scan", "2048", "--sleep-ms", "5", "--timeout", "120", "--json"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        r = last_json(p.stdout)
        self.assertGreaterEqual(r["saved_pages"], 0.95 * r["expected_saved"], r)
        # one mapping per run of 64 merged pages at most (plus the pieces
        # between runs): far fewer than one per page
        self.assertLess(r["vmas_per_merged_page"], 0.1, r)
        self.assertEqual(r["integrity_errors"], 0)

    def test_vma_budget_caps_merging_and_says_so(self):
        p = run(["--size-mib", "16", "--mix", "zero=25,dup=75", "--dup-contents", "64", "--max-vmas", "300",
                 "--pages-to-scan", "2048", "--sleep-ms", "5", "--timeout", "120", "--json"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("VMA budget reached", p.stdout)
        r = last_json(p.stdout)
        self.assertTrue(r["budget_capped"], r)
        self.assertGreater(r["budget_refusals"], 0, r)
        self.assertLessEqual(r["vmas_used"], 300, r)
        # zero pages need no mapping: they all merge anyway
        self.assertEqual(r["ksm_zero_pages"], 1024, r)
        self.assertLess(r["saved_pages"], r["expected_saved"], r)
        self.assertEqual(r["integrity_errors"], 0, r)

    def test_writers_lose_nothing(self):
        p = run(["--size-mib", "16", "--mix", "zero=20,dup=70,unique=10", "--dup-contents", "32",
                 "--pages-to-scan", "1024", "--sleep-ms", "2", "--writers", "2", "--seconds", "4",
                 "--write-interval-us", "20", "--timeout", "120", "--json"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        r = last_json(p.stdout)
        self.assertGreater(r["writes"], 1000, r)
        self.assertEqual(r["lost_writes"], 0, r)
        self.assertEqual(r["integrity_errors"], 0, r)
        self.assertGreater(r["pages_sharing"] + r["ksm_zero_pages"], 0, r)


class KernelComparison(unittest.TestCase):
    def test_compare_restores_every_knob(self):
        # Prerequisites fail loudly: this test is part of the suite on purpose.
        self.assertEqual(os.geteuid(), 0, "the kernel KSM comparison needs root")
        self.assertTrue(os.access(os.path.join(KSM, "run"), os.W_OK), "no writable /sys/kernel/mm/ksm")
        self.assertTrue(wait_ksm_idle(), "the kernel's KSM stayed in use (run != 0) by someone else")
        before = knobs()
        self.assertEqual(before.get("run"), "0", "ksmd must be idle outside a comparison")
        # Values different from the current ones, so a missed restore shows.
        pts = "777" if before["pages_to_scan"] != "777" else "778"
        p = run(["--size-mib", "8", "--mix", "zero=25,dup=50,unique=25", "--dup-contents", "32",
                 "--pages-to-scan", pts, "--sleep-ms", "7", "--timeout", "120", "--compare-kernel-ksm",
                 "--json"])
        after = knobs()
        self.assertEqual(after, before, "kernel KSM knobs not restored")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # Writers during both phases: nothing lost under either deduplicator.
        pw = run(["--size-mib", "8", "--dup-contents", "32", "--pages-to-scan", pts, "--sleep-ms", "7",
                  "--writers", "2", "--seconds", "1.5", "--timeout", "120", "--compare-kernel-ksm", "--json"])
        r = last_json(p.stdout)
        k = r["kernel_ksm"]
        self.assertEqual(k["pages_total"], r["pages_total"])
        self.assertEqual(k["integrity_errors"], 0)
        self.assertTrue(k["knobs_original"]["restored"])
        self.assertEqual(k["knobs_original"]["pages_to_scan"], before["pages_to_scan"])
        self.assertGreaterEqual(k["saved_pages"], 0.9 * k["expected_saved"], k)
        self.assertGreater(k["cpu_seconds"], 0, k)
        for key in ["seconds_to_steady", "cpu_seconds", "memory_saved"]:
            self.assertIn(key, r["ratios"])
        self.assertEqual(knobs(), before, "kernel KSM knobs not restored after the run with writers")
        self.assertEqual(pw.returncode, 0, pw.stdout + pw.stderr)
        rw = last_json(pw.stdout)
        for phase in (rw, rw["kernel_ksm"]):
            self.assertGreater(phase["writes"], 100, phase)
            self.assertEqual(phase["lost_writes"], 0, phase)
            self.assertEqual(phase["integrity_errors"], 0, phase)

    def test_sigterm_during_the_kernel_phase_restores_knobs(self):
        self.assertEqual(os.geteuid(), 0, "the kernel KSM comparison needs root")
        self.assertTrue(wait_ksm_idle(), "the kernel's KSM stayed in use (run != 0) by someone else")
        before = knobs()
        self.assertEqual(before.get("run"), "0")
        proc = subprocess.Popen([BINARY, "--kernel-only", "--size-mib", "8", "--pages-to-scan", "100",
                                 "--sleep-ms", "50", "--timeout", "120"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Wait until ksmd was started by the tool, then stop it.
        started = False
        for line in proc.stdout:
            if "saved" in line and "[kernel_ksm]" in line:
                started = True
                break
        self.assertTrue(started, "the kernel phase never reported progress")
        self.assertEqual(knobs()["run"], "1")
        proc.terminate()
        out, err = proc.communicate(timeout=120)
        self.assertEqual(proc.returncode, 130, err)
        self.assertEqual(knobs(), before, "knobs not restored after SIGTERM")

    def test_crash_during_the_kernel_phase_restores_knobs(self):
        # A crash signal runs the emergency restore from the signal handler.
        import signal
        self.assertEqual(os.geteuid(), 0, "the kernel KSM comparison needs root")
        self.assertTrue(wait_ksm_idle(), "the kernel's KSM stayed in use (run != 0) by someone else")
        before = knobs()
        proc = subprocess.Popen([BINARY, "--kernel-only", "--size-mib", "8", "--pages-to-scan", "100",
                                 "--sleep-ms", "50", "--timeout", "120"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = False
        for line in proc.stdout:
            if "saved" in line and "[kernel_ksm]" in line:
                started = True
                break
        self.assertTrue(started, "the kernel phase never reported progress")
        self.assertEqual(knobs()["run"], "1")
        proc.send_signal(signal.SIGSEGV)
        out, err = proc.communicate(timeout=120)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("restored from the signal handler", err)
        self.assertEqual(knobs(), before, "knobs not restored after a crash")


if __name__ == "__main__":
    BINARY = os.path.abspath(sys.argv[1])
    unittest.main(argv=[sys.argv[0], "-v"])
