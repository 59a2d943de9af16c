"""Suite-wide set-up: the real-ComfyUI fixtures and a timing summary at the end of the run."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

pytest_plugins = ["harness.plugin"]

# Per test file: [summed wall time of its tests incl. set-up and teardown, test count].
_FILE_TIMES: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
_SESSION_START = time.monotonic()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    start = time.monotonic()
    yield
    rec = _FILE_TIMES[item.location[0]]
    rec[0] += time.monotonic() - start
    rec[1] += 1


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _FILE_TIMES:
        return
    tr = terminalreporter
    tr.section("timing summary (wall seconds per test file, incl. fixture set-up)")
    width = max(len(name) for name in _FILE_TIMES)
    for name, (total, count) in sorted(_FILE_TIMES.items(), key=lambda kv: -kv[1][0]):
        tr.write_line(f"{name:<{width}}  {total:8.1f} s  {int(count):4d} tests")
    tr.write_line(f"{'total (session wall time)':<{width}}  {time.monotonic() - _SESSION_START:8.1f} s")
