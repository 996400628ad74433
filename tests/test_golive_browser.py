"""The "Go live from this browser" page in headless Chromium publishing its fake camera and microphone over
WHIP to the real server: reached from the player page, the level meter moves, the ladder decodes, Stop ends
the broadcast and leaves a recording."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.hls_reader import decode_segment, parse_master, parse_media
from tests.browser import FAKE_MEDIA, module_browser
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_broadcast import stream_status, wait_for, wait_recording

pytestmark = [pytest.mark.media, pytest.mark.browser]



@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from module_browser(*FAKE_MEDIA)


def ladder_decodes(server: ServerHandle, stream_id: str) -> list[tuple[str, int]] | None:
    """Every live rung's newest segment decoded (PyAV): its size matches the master playlist, it has pictures
    and audio. Returns (resolution, frames) per rung, or None while not there yet."""
    status, _, body = server.get(f"/hls/{stream_id}/master.m3u8")
    if status != 200:
        return None
    decoded = []
    for attrs, uri in parse_master(body.decode()):
        status, _, text = server.get(f"/hls/{stream_id}/{uri}")
        playlist = parse_media(text.decode()) if status == 200 else None
        if playlist is None or not playlist.segments:
            return None
        segment_uri, _, init_uri = playlist.segments[-1]
        segment = decode_segment(server.get(f"/hls/{stream_id}/{init_uri}")[2],
                                 server.get(f"/hls/{stream_id}/{segment_uri}")[2])
        assert f"{segment.width}x{segment.height}" == attrs["RESOLUTION"]
        if segment.frames == 0 or segment.audio_frames == 0:
            return None
        decoded.append((attrs["RESOLUTION"], segment.frames))
    return decoded or None


def test_go_live_page_publishes_the_camera(tmp_path: Path, browser: Any) -> None:
    # A long reconnect window: only Stop (DELETE) can end the broadcast within the test.
    server = run_server(small_config(tmp_path / "data", reconnect_window=60.0))
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        stream = server.create_stream("Morning Prayer")
        key = stream["stream_key"]
        # Staff reach the page from the player page.
        page.goto(f"{server.http}/watch/{stream['id']}")
        page.click("text=Staff: go live from this browser")
        page.wait_for_url(f"{server.http}/golive/{stream['id']}")
        assert page.text_content("#title") == "Go live: Morning Prayer"

        page.click("#camera")
        page.wait_for_function("document.getElementById('camera-select').options.length > 0 "
                               "&& !document.getElementById('camera-select').disabled")
        assert page.locator("#mic-select option").count() >= 1
        # The fake microphone beeps: the meter must rise above silence within a few seconds.
        page.wait_for_function("document.getElementById('level').value > 0.05", timeout=8000)

        page.fill("#key", key)
        page.click("#start")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('You are live')",
                               timeout=15000)
        assert key not in page.url
        assert page.is_visible("#on-air") and page.is_enabled("#stop") and not page.is_enabled("#start")

        wait_for(lambda: stream_status(server, stream["id"])["status"] == "LIVE", 20, "LIVE")
        # On a loaded CI box the master once listed a single rung at first; the others must follow.
        rungs = wait_for(lambda: (found := ladder_decodes(server, stream["id"])) and len(found) >= 2 and found, 30,
                         "two rungs or more to decode")
        assert len(rungs) >= 2, rungs
        time.sleep(1.0)

        page.click("#stop")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Stopped')",
                               timeout=15000)
        assert page.is_enabled("#start") and not page.is_visible("#on-air")
        body = wait_recording(server, stream["id"], timeout=30)  # well inside the 60 s window: Stop ended it
        assert body["status"] == "ENDED" and body["recording"]["duration"] > 2.0
        assert not errors, errors
    finally:
        context.close()
        server.stop()
