"""Headless Chromium for the browser tests: Debian's chromium through tests/chromium (no real-time threads)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = str(Path(__file__).resolve().parent / "chromium")
BASE_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--no-first-run"]
# The Go-live page's camera and microphone: Chromium's fake devices, permission granted without a prompt.
FAKE_MEDIA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def launch(playwright: Any, autoplay_policy: str = "no-user-gesture-required", *extra: str) -> Any:
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("/usr/bin/chromium is missing: install Debian's chromium (.ci/run does)")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=[*BASE_ARGS, f"--autoplay-policy={autoplay_policy}", *extra])


def module_browser(*extra: str) -> Iterator[Any]:
    """The body of a module-scoped `browser` fixture: one Chromium for the module's tests."""
    playwright_sync = pytest.importorskip("playwright.sync_api")
    with playwright_sync.sync_playwright() as playwright:
        chromium = launch(playwright, "no-user-gesture-required", *extra)
        yield chromium
        chromium.close()
