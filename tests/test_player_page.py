"""The built-in player in headless Chromium against a real server and a real RTMP publish."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.media_source import start_publisher
from tests.server_fixture import ServerHandle, run_server, small_config

pytestmark = [pytest.mark.browser, pytest.mark.media]

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_sync = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--autoplay-policy=no-user-gesture-required",
                  "--disable-gpu", "--no-first-run"],
        )
        yield browser
        browser.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerHandle]:
    handle = run_server(small_config(tmp_path / "data", dvr_window=120.0, reconnect_window=2.0))
    yield handle
    handle.stop()


def test_player_plays_live_with_quality_menu_and_dvr(server: ServerHandle, browser: Any) -> None:
    stream = server.create_stream("Sunday <b>Service</b>")
    publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=24.0)
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        # Opened before the broadcast is up: the page says it is waiting, then starts by itself.
        page.goto(stream["watch_url"])
        assert page.locator("#title").inner_text() == "Sunday <b>Service</b>"
        page.wait_for_function("window.player && window.player.video.currentTime > 0.5", timeout=30_000)
        t0 = page.evaluate("window.player.video.currentTime")
        time.sleep(2.5)
        t1 = page.evaluate("window.player.video.currentTime")
        assert t1 > t0 + 1.0, (t0, t1)
        page.wait_for_selector("#live-badge:not([hidden])", timeout=10_000)
        assert page.locator("#live-badge").inner_text() == "LIVE"

        options = page.locator("#quality option").all_inner_texts()
        assert options[0].startswith("Auto") and options[1:] == ["180p", "144p"]

        # Pick 144p: the picture becomes 144 pixels tall.
        index_144 = page.evaluate("window.player.hls.levels.findIndex(l => l.height === 144)")
        page.select_option("#quality", str(index_144))
        page.wait_for_function("window.player.video.videoHeight === 144", timeout=15_000)
        assert page.evaluate("window.player.hls.currentLevel") == index_144

        # Scrub back through the DVR window: Go live appears, and brings playback back to the edge.
        page.wait_for_function(
            "(() => { const s = document.getElementById('seek'); return Number(s.max) - Number(s.min) > 8; })()",
            timeout=20_000,
        )
        page.evaluate(
            """() => { const s = document.getElementById('seek');
                       s.value = String(Number(s.min) + 1);
                       s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }"""
        )
        page.wait_for_selector("#go-live:not([hidden])", timeout=10_000)
        behind = page.evaluate("Number(document.getElementById('seek').max) - window.player.video.currentTime")
        assert behind > 5, behind
        assert "behind live" in page.locator("#position").inner_text()
        page.click("#go-live")
        page.wait_for_selector("#live-badge:not([hidden])", timeout=10_000)
        behind = page.evaluate("Number(document.getElementById('seek').max) - window.player.video.currentTime")
        assert behind < 3 * 1.0 + 2.0, behind
        page.set_viewport_size({"width": 360, "height": 740})
        page.screenshot(path="/tmp/player-phone.png")
    finally:
        page.close()
        publisher.join(40)
    assert errors == []


def test_player_shows_offline_message(server: ServerHandle, browser: Any) -> None:
    stream = server.create_stream("Midweek Prayer")
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(stream["watch_url"])
    page.wait_for_function("document.getElementById('status').textContent.includes('offline')", timeout=15_000)
    page.close()
    assert errors == []
