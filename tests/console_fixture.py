"""Driving the console in Chromium as a volunteer does: sign in through the form, then use the pages.
Screenshots are kept under test-artifacts/console/ (CI keeps that directory) for a human to look over."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.server_fixture import ServerHandle

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def signed_in_page(browser: Any, server: ServerHandle, token: str, viewport: dict[str, int] = DESKTOP,
                   **context_options: Any) -> Any:
    """A new browser context signed in to the console with `token`; returns its page, on the console."""
    context = browser.new_context(viewport=viewport, **context_options)
    page = context.new_page()
    page.goto(f"{server.http}/admin")
    page.wait_for_url("**/admin/sign-in")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/admin")
    page.wait_for_selector("#nav a", state="attached")  # folded away behind the menu button on a phone
    return page


def screenshot(page: Any, name: str) -> Path:
    """Keep a full-page screenshot as a test artifact; returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
