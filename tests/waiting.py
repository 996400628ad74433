"""Waiting in a test for what another thread or process does: poll the check, never sleep a guessed time."""
from __future__ import annotations

import time
from typing import Any, Callable


def until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """check()'s first truthy value; AssertionError naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
