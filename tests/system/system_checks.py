"""Checks shared by the system tests: polling query-pksm, reading the
workload's verdicts from the serial log."""
import json
import time

PAGE = 4096
# The stated fraction: pksm must merge at least this share of the workload's
# duplicate pages (beyond one page per seed) and of its zero pages.
MERGE_FRACTION = 0.9


def mergeable(layout):
    """(duplicate pages that can share, zero pages) of a workload layout."""
    return layout["dup"] - layout["seeds"], layout["zero"]


def wait_pksm(guest, condition, timeout, what):
    """Polls query-pksm until condition(info) holds; returns that info.
    Fails with the last statistics and the serial tail otherwise."""
    deadline = time.monotonic() + timeout
    info = None
    while True:
        info = guest.query_pksm()
        if condition(info):
            return info
        if time.monotonic() > deadline:
            brief = {k: v for k, v in info.items() if not isinstance(v, list)}
            raise AssertionError(
                f"{guest.name}: {what} not reached within {timeout}s; last query-pksm:\n"
                f"{json.dumps(brief, indent=1)}\nserial tail:\n{guest.serial()[-2000:]}")
        assert not guest.failures(), f"{guest.name}: guest verification failed: {guest.failures()}"
        time.sleep(0.5)


def wait_merged(guest, layout, timeout=180, fraction=MERGE_FRACTION):
    """Waits until pksm shares `fraction` of the workload's duplicate pages
    and has dropped `fraction` of its zero pages; returns query-pksm."""
    dup, zero = mergeable(layout)
    return wait_pksm(
        guest,
        lambda i: i["pages-sharing"] >= fraction * dup and i["zero-pages"] >= fraction * zero,
        timeout,
        f"pages-sharing >= {fraction:.0%} of {dup} duplicate pages and "
        f"zero-pages >= {fraction:.0%} of {zero} zero pages")


def assert_verification_ok(guest, min_rounds=1, after=0):
    """The workload verified at least min_rounds times (after offset `after`),
    every round found 0 errors, and no VERIFY FAILED line was printed."""
    failures = guest.failures()
    assert not failures, f"{guest.name}: guest verification failed:\n" + "\n".join(failures[:20])
    rounds = guest.verify_rounds(after)
    assert len(rounds) >= min_rounds, \
        f"{guest.name}: only {len(rounds)} verification rounds (wanted {min_rounds})"
    bad = [r for r in rounds if r[1] != 0]
    assert not bad, f"{guest.name}: verification rounds with errors: {bad}"
    for cow in guest.cow_rounds():
        assert cow["errors"] == 0, f"{guest.name}: COW write read-back failed: {cow}"
