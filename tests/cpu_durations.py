"""``pytest --cpu-durations=N``: the N tests that cost the most CPU time, to audit ``slow``.

pytest's own ``--durations`` measures wall-clock time, which on a shared 2-core machine
says as much about the neighbours' load as about the test. This plugin measures CPU
seconds instead (user + system): of the test's process, every thread of it (XLA compiles
on several), and of the subprocesses it waited for, over setup, call and teardown, so a
module- or session-scoped fixture counts in the first test that asks for it, and a
worker's first import of OTT or matplotlib in the first test that needs it: audit over the
whole fast set (``make test-fast`` plus the option), where those costs land once, not one
test file alone. It works under pytest-xdist (the number travels in the teardown report's
``user_properties``).

The summary lists the top N, then every test that is not marked ``slow`` yet took more
than :data:`SLOW_CPU_SECONDS`: by the marker's rule (pyproject.toml), those belong in
``slow``. Measure on a warm compile cache (a second run), as the developer's loop runs.

Registered from ``tests/conftest.py`` (``pytest_plugins``); off unless the option is given.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

# The `slow` marker's threshold for an in-process test, in CPU seconds on a warm compile
# cache (pyproject.toml states it; tests/test_suite_rules.py checks the two agree).
SLOW_CPU_SECONDS = 2.0
PROPERTY = "cpu_seconds"
_KEY = pytest.StashKey[float]()
_measured: list[tuple[float, str, bool]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("icnn").addoption(
        "--cpu-durations",
        type=int,
        default=None,
        metavar="N",
        help="list the N tests with the most CPU seconds (0: all), and the ones not marked"
        f" slow that took over {SLOW_CPU_SECONDS:g} s",
    )


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _measuring(config: pytest.Config) -> bool:
    return config.getoption("cpu_durations") is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    start = _cpu_seconds()
    yield
    if _measuring(item.config):
        item.stash[_KEY] = _cpu_seconds() - start


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    start = _cpu_seconds()
    yield
    if _measuring(item.config):
        item.stash[_KEY] = item.stash.get(_KEY, 0.0) + _cpu_seconds() - start


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    start = _cpu_seconds()
    yield
    if _measuring(item.config):
        # Before the teardown report is made, so it carries the property (to the
        # xdist controller too).
        item.user_properties.append((PROPERTY, item.stash.get(_KEY, 0.0) + _cpu_seconds() - start))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "teardown":
        return
    for name, value in report.user_properties:
        if name == PROPERTY:
            _measured.append((float(value), report.nodeid, "slow" in report.keywords))


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    count = config.getoption("cpu_durations")
    if count is None or not _measured:
        return
    ranked = sorted(_measured, reverse=True)
    write = terminalreporter.write_line
    terminalreporter.section("CPU seconds per test (setup + call + teardown, subprocesses too)")
    for seconds, nodeid, slow in ranked[: count or None]:
        write(f"{seconds:7.2f}s {'slow ' if slow else '     '}{nodeid}")
    write(f"{sum(seconds for seconds, _, _ in ranked):7.2f}s in all, {len(ranked)} tests")
    over = [(seconds, nodeid) for seconds, nodeid, slow in ranked if not slow]
    over = [(seconds, nodeid) for seconds, nodeid in over if seconds > SLOW_CPU_SECONDS]
    if over:
        write(f"not marked slow, over {SLOW_CPU_SECONDS:g} s of CPU (the marker's rule):")
        for seconds, nodeid in over:
            write(f"{seconds:7.2f}s {nodeid}")
