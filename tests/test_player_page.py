"""The built-in player (web/static/watch.html + player.js) in headless Chromium, no mocks. Two sources of live
HLS: ffmpeg writing a two-rendition stream behind a small stand-in server (tests/hls_fixture.py), and the real
mediaserver fed by an RTMP publish (marked media)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.hls_fixture import FfmpegLive, PlayerSite, page_config
from tests.browser import launch
from tests.server_fixture import run_server, small_config

pytestmark = pytest.mark.browser

TITLE = "Sunday <b>Service</b> & Prayer"  # markup in a title must show as text
OFFLINE_TEXT = "offline"



@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    playwright_sync = pytest.importorskip("playwright.sync_api")
    with playwright_sync.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Any) -> Iterator[Any]:
    browser = launch(playwright, "no-user-gesture-required")
    yield browser
    browser.close()


@dataclass
class LiveSource:
    """A watch page whose stream is not published until start() is called."""

    name: str
    watch_url: str
    start: Callable[[], None]
    levels: list[str]  # quality labels the menu should list after "Auto", highest first
    dvr_window: float
    cleanups: list[Callable[[], None]] = field(default_factory=list)


def ffmpeg_source(tmp_path: Path) -> LiveSource:
    site = PlayerSite(tmp_path / "live").start()
    site.pages["test"] = page_config("test", TITLE, "/live/test/master.m3u8", dvr_window_seconds=7200)
    ffmpeg = FfmpegLive(site.hls_root / "test", seconds=40)

    def start() -> None:
        ffmpeg.start()

    return LiveSource("ffmpeg", site.watch_url("test"), start, ["360p", "180p"], 7200, [ffmpeg.stop, site.stop])


def server_source(tmp_path: Path) -> LiveSource:
    from tests.media_source import start_publisher
    from tests.server_fixture import run_server, small_config

    handle = run_server(small_config(tmp_path / "data", dvr_window=120.0, reconnect_window=2.0))
    stream = handle.create_stream(TITLE)
    publishers: list[Any] = []

    def start() -> None:
        publishers.append(start_publisher(handle.rtmp_url(stream["stream_key"]), seconds=40.0))

    def stop_publishers() -> None:
        for publisher in publishers:
            publisher.kill()
            publisher.join(10)

    # The source is 320x180: the 360p rung is dropped, 180p and 144p remain.
    return LiveSource("server", stream["watch_url"], start, ["180p", "144p"], 120, [stop_publishers, handle.stop])


@pytest.fixture(params=["ffmpeg", pytest.param("server", marks=pytest.mark.media)])
def live_source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveSource]:
    source = ffmpeg_source(tmp_path) if request.param == "ffmpeg" else server_source(tmp_path)
    try:
        yield source
    finally:
        for cleanup in source.cleanups:
            cleanup()


def open_page(browser: Any, url: str, width: int = 1280, height: int = 720) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    return page, errors


def behind_live(page: Any) -> float:
    return float(page.evaluate("Number(document.getElementById('seek').max) - window.player.video.currentTime"))


def test_player_plays_live_with_quality_menu_and_dvr(live_source: LiveSource, browser: Any) -> None:
    page, errors = open_page(browser, live_source.watch_url)
    try:
        assert page.locator("#title").inner_text() == TITLE
        assert page.title().startswith(TITLE)

        # Opened before the broadcast is up: the page says so, then starts by itself once it is.
        page.wait_for_function(f"document.getElementById('status').textContent.includes('{OFFLINE_TEXT}')",
                               timeout=15_000)
        live_source.start()
        page.wait_for_function("window.player && window.player.video.currentTime > 0.5", timeout=40_000)
        assert page.locator("#status").inner_text() == ""
        t0 = page.evaluate("window.player.video.currentTime")
        time.sleep(3.0)
        t1 = page.evaluate("window.player.video.currentTime")
        assert t1 > t0 + 1.5, (t0, t1)
        assert page.evaluate("window.player.video.muted") is False  # autoplay with sound is allowed here
        assert page.locator("#unmute").is_hidden()
        page.wait_for_selector("#live-badge:not([hidden])", timeout=10_000)
        assert page.locator("#live-badge").inner_text() == "LIVE"
        assert page.locator("#go-live").is_hidden()
        target = page.evaluate("window.player.hls.latestLevelDetails.targetduration")

        # The quality menu: Auto, then one entry per rendition, highest first; the lowest makes the picture smaller.
        options = page.locator("#quality option").all_inner_texts()
        assert options[0].startswith("Auto") and options[1:] == live_source.levels, options
        lowest = int(live_source.levels[-1].rstrip("p"))
        index = page.evaluate(f"window.player.hls.levels.findIndex(l => l.height === {lowest})")
        page.select_option("#quality", str(index))
        page.wait_for_function(f"window.player.video.videoHeight === {lowest}", timeout=15_000)
        assert page.evaluate("window.player.hls.currentLevel") == index
        assert page.evaluate("window.player.hls.autoLevelEnabled") is False

        # The DVR bar spans hls.js's fragments (not video.seekable), and hls.js may lag that far behind live.
        page.wait_for_function(
            "(() => { const s = document.getElementById('seek'); return Number(s.max) - Number(s.min) > 12; })()",
            timeout=30_000,
        )
        first_start = page.evaluate("window.player.hls.latestLevelDetails.fragments[0].start")
        assert abs(float(page.eval_on_selector("#seek", "s => Number(s.min)")) - first_start) < 0.5
        assert page.evaluate("window.player.hls.maxLatency") >= live_source.dvr_window

        # Scrub back to the start of the window: "Go live" appears, and playback stays back there.
        page.evaluate(
            """() => { const s = document.getElementById('seek');
                       s.value = String(Number(s.min) + 1);
                       s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }"""
        )
        page.wait_for_selector("#go-live:not([hidden])", timeout=10_000)
        assert page.locator("#live-badge").is_hidden()
        assert "behind live" in page.locator("#position").inner_text()
        time.sleep(2.0)  # no snap back to live
        assert behind_live(page) > 8, behind_live(page)
        assert page.locator("#go-live").is_visible()
        assert page.evaluate("window.player.video.paused") is False

        page.set_viewport_size({"width": 360, "height": 740})
        page.screenshot(path=f"/tmp/player-{live_source.name}-phone.png")
        page.set_viewport_size({"width": 1280, "height": 720})

        # "Go live" returns to the live edge: about three target durations behind the newest segment.
        page.click("#go-live")
        page.wait_for_selector("#live-badge:not([hidden])", timeout=10_000)
        assert page.locator("#go-live").is_hidden()
        behind = behind_live(page)
        assert behind < 3 * target + 1.5, (behind, target)
        page.screenshot(path=f"/tmp/player-{live_source.name}-desktop.png")
    finally:
        page.close()
    assert errors == []


def test_player_shows_offline_message(live_source: LiveSource, browser: Any) -> None:
    page, errors = open_page(browser, live_source.watch_url)
    try:
        page.wait_for_function(f"document.getElementById('status').textContent.includes('{OFFLINE_TEXT}')",
                               timeout=15_000)
        assert page.locator("#live-badge").is_hidden()
        assert page.evaluate("window.player.video.paused") is True
    finally:
        page.close()
    assert errors == []


def test_player_starts_muted_when_autoplay_with_sound_is_blocked(playwright: Any, tmp_path: Path) -> None:
    site = PlayerSite(tmp_path / "live").start()
    ffmpeg = FfmpegLive(site.hls_root / "test", seconds=30).start()
    browser = launch(playwright, "document-user-activation-required")
    try:
        site.pages["test"] = page_config("test", "Evening Prayer", "/live/test/master.m3u8")
        ffmpeg.wait_for_segments(2)
        page, errors = open_page(browser, site.watch_url("test"))
        page.wait_for_function("window.player && window.player.video.currentTime > 0.5", timeout=20_000)
        assert page.evaluate("window.player.video.muted") is True
        assert page.locator("#unmute").is_visible()
        page.click("#unmute")  # a user gesture: sound may start now
        page.wait_for_function("!window.player.video.muted && !window.player.video.paused", timeout=5_000)
        assert page.locator("#unmute").is_hidden()
        page.click("#mute")  # muting by choice: no "Tap to unmute" nagging
        assert page.evaluate("window.player.video.muted") is True
        assert page.locator("#unmute").is_hidden()
        page.close()
        assert errors == []
    finally:
        browser.close()
        ffmpeg.stop()
        site.stop()


def test_player_shows_a_finished_recording_as_vod(browser: Any, tmp_path: Path) -> None:
    site = PlayerSite(tmp_path / "live").start()
    ffmpeg = FfmpegLive(site.hls_root / "test", seconds=6, realtime=False).start()
    try:
        ffmpeg.wait()  # ENDLIST written: hls.js reports details.live === false
        site.pages["test"] = page_config("test", "Last Sunday", "/live/test/master.m3u8", status="ENDED")
        page, errors = open_page(browser, site.watch_url("test"))
        page.wait_for_function("window.player && window.player.video.currentTime > 0.5", timeout=20_000)
        assert page.evaluate("window.player.hls.latestLevelDetails.live") is False
        assert page.locator("#live-badge").is_hidden()
        assert page.locator("#go-live").is_hidden()
        assert page.eval_on_selector("#seek", "s => [Number(s.min), Number(s.max)]") == pytest.approx([0, 6], abs=0.2)
        assert page.locator("#position").inner_text().endswith("/ 00:06")
        page.close()
        assert errors == []
    finally:
        ffmpeg.stop()
        site.stop()


@pytest.mark.media
def test_two_viewers_chat_react_and_give(tmp_path: Path, browser: Any) -> None:
    server = run_server(small_config(tmp_path / "room-data"))
    try:
        status, stream = server.api("POST", "/api/streams", {
            "title": "Family Service", "giving_enabled": True, "giving_url": "https://give.example.org/family",
            "giving_message": "Support the food bank"})
        assert status == 201
        pages = []
        errors: list[str] = []
        for name in ("Ruth", "Boaz"):
            context = browser.new_context(viewport={"width": 390, "height": 844})
            # The giving page is outside this machine: answer it locally so the click is observable.
            context.route("https://give.example.org/**", lambda route: route.fulfill(status=200, body="thanks", content_type="text/html"))
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.add_init_script(f"localStorage.setItem('chat-name', {name!r})")
            page.goto(stream["watch_url"])
            page.wait_for_function("document.getElementById('viewer-count').textContent.includes('2') || true")
            pages.append(page)
        ruth, boaz = pages
        ruth.wait_for_selector("#chat-text")
        boaz.wait_for_function("document.getElementById('viewer-count').textContent.includes('2')", timeout=10_000)
        ruth.fill("#chat-text", "Where you go I will go <script>alert(1)</script>")
        ruth.press("#chat-text", "Enter")
        boaz.wait_for_selector("#messages li", timeout=10_000)
        line = boaz.locator("#messages li").last
        assert line.locator(".author").inner_text() == "Ruth"
        assert "<script>alert(1)</script>" in line.inner_text()  # shown as text, never run
        boaz.click("[data-reaction=PRAY]")
        ruth.wait_for_selector(".float", timeout=5_000)
        assert "Support the food bank" in boaz.locator("#give").inner_text()
        with boaz.context.expect_page() as new_tab:
            boaz.click("#give")
        assert new_tab.value.url == "https://give.example.org/family"
        boaz.screenshot(path="/tmp/room-phone.png")
        for page in pages:
            page.context.close()
        assert errors == []
    finally:
        server.stop()


@pytest.mark.media
def test_player_plays_a_recording_kept_as_mp4_only(tmp_path: Path, browser: Any) -> None:
    """After retention drops a recording's HLS segments, the watch page plays its MP4."""
    from mediaserver.retention import DAY
    from tests.media_source import publish
    from tests.test_broadcast import wait_recording

    server = run_server(small_config(tmp_path / "data", reconnect_window=0.5))
    try:
        stream = server.create_stream("Advent Sunday")
        publish(server.rtmp_url(stream["stream_key"]), seconds=3.0)
        recording = wait_recording(server, stream["id"])["recording"]
        assert server.server.retention is not None
        report = server.call(server.server.retention.run_once(time.time() + 31 * DAY))
        assert report.segments_dropped == [recording["id"]]
        assert server.get(f"/hls/{stream['id']}/master.m3u8")[0] == 404  # the HLS copy is gone
        page, errors = open_page(browser, f"{server.http}/watch/{stream['id']}")
        page.wait_for_function("window.player && window.player.video.currentTime > 0.5", timeout=20_000)
        assert page.evaluate("window.player.hls") is None
        assert page.evaluate("window.player.video.currentSrc").endswith("/recording.mp4")
        page.close()
        assert errors == []
    finally:
        server.stop()
