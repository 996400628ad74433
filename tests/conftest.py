"""Tests run in three pytest-xdist workers (pyproject's addopts: most media tests wait on real time, so three
keep two cores busier than two would). A test marked `exclusive` measures timing the other workers' load would
distort (a player's latency over half a minute): it runs alone, while the other workers wait between tests.

A readers-writer lock across the worker processes, on two files: every test (and every module while its fixtures
are set up) holds LOCK_SH on the gate while it runs; an exclusive test holds LOCK_EX. The turnstile makes it
fair: a waiting exclusive test stops new shared holders from slipping in ahead of it (flock alone would let them
starve it).
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_DIR = Path(tempfile.gettempdir()) / f"mediaserver-tests-{os.getuid()}"


def _lock_files() -> tuple[int, int]:
    # One pair per test run: xdist's workers share the run's testrun uid (plain pytest has none: one process).
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", f"solo-{os.getpid()}")
    _DIR.mkdir(exist_ok=True)
    turnstile = os.open(_DIR / f"{run}.turnstile", os.O_RDWR | os.O_CREAT, 0o600)
    gate = os.open(_DIR / f"{run}.gate", os.O_RDWR | os.O_CREAT, 0o600)
    return turnstile, gate


# The shared hold taken for a module's set-up, until its first test takes its own.
_MODULE_SETUP: list[tuple[int, int]] = []


def _release_module_setup() -> None:
    while _MODULE_SETUP:
        turnstile, gate = _MODULE_SETUP.pop()
        fcntl.flock(gate, fcntl.LOCK_UN)
        os.close(gate)
        os.close(turnstile)


@pytest.fixture(scope="module", autouse=True)
def _module_setup_counts_as_running() -> Iterator[None]:
    """Module fixtures (a server, a broadcast published once for the module) are set up before any test's own
    fixtures, and load the machine as much as a test: they hold the gate shared too, so an exclusive test in the
    other worker never runs beside them."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    turnstile, gate = _lock_files()
    fcntl.flock(turnstile, fcntl.LOCK_EX)
    fcntl.flock(gate, fcntl.LOCK_SH)
    fcntl.flock(turnstile, fcntl.LOCK_UN)
    _MODULE_SETUP.append((turnstile, gate))
    try:
        yield
    finally:
        _release_module_setup()


@pytest.fixture(autouse=True)
def _run_alone_when_exclusive(request: pytest.FixtureRequest) -> Iterator[None]:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield  # one process: nothing runs beside it anyway
        return
    _release_module_setup()  # the module's fixtures are set up: from here each test holds the gate itself
    turnstile, gate = _lock_files()
    exclusive = request.node.get_closest_marker("exclusive") is not None
    try:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if exclusive:
            fcntl.flock(gate, fcntl.LOCK_EX)  # waits for the other worker's current test to finish
            yield
        else:
            fcntl.flock(gate, fcntl.LOCK_SH)
            fcntl.flock(turnstile, fcntl.LOCK_UN)
            yield
    finally:
        fcntl.flock(gate, fcntl.LOCK_UN)
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        os.close(gate)
        os.close(turnstile)


@pytest.fixture(autouse=True)
def _no_realtime_scheduling(request: pytest.FixtureRequest) -> Iterator[None]:
    """A safety net for tests/media_source.py normal_scheduling: a test process left under SCHED_FIFO (SVT-AV1 does
    that to its caller when run as root) passes it to every child it starts, and a Chromium spinning at real-time
    priority starves the machine. Reset after each test, and say which test left it."""
    yield
    from tests.media_source import normal_scheduling

    if hasattr(os, "sched_getscheduler") and (count := normal_scheduling()):
        _DIR.mkdir(exist_ok=True)
        with open(_DIR / "realtime-found.log", "a") as log:
            log.write(f"{request.node.nodeid}: {count} real-time threads put back to SCHED_OTHER\n")
