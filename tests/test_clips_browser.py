"""Clips in Chromium: the exact-frame MP4 (a plain <video>, progressive download) and the clip's VOD playlist
(hls.js, as the player pages use it) both play. The source is OBS-like x264 with B-frames and the frame number
drawn into every picture; the top rung copies it, so the clip's middle keeps its B-frames.

Each check compares with an independent measurement: the frame shown at time 0 is read from a canvas snapshot of
the <video> (bench/frame_code.py), and must be the frame PyAV decodes first from the same URL (for the MP4, also
the frame the clip asked for, from the rung's own playlist); `duration` must be within one frame of the length
PyAV measures (first frame to the end of the last).
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from bench import frame_code
from mediaserver.config import Rendition
from tests.browser import module_browser
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_clips import FPS, clip_ready, numbered_frames, publish_coded, wait_for

pytestmark = [pytest.mark.media, pytest.mark.browser]

START, END = 1.4, 3.6  # both inside a GOP (keyframes every second)
WAIT_MS = 60_000


@dataclass
class Clip:
    server: ServerHandle
    clip: dict[str, Any]
    first_number: int  # the frame the clip asked for: the first shown at or after START on the timeline


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clip]:
    config = small_config(tmp_path_factory.mktemp("data"), renditions=[Rendition("180p", 180, 300_000),
                                                                         Rendition("144p", 144, 200_000)])
    server = run_server(config)
    try:
        stream = server.create_stream("Clip Sunday")
        sid = stream["id"]
        ctx = multiprocessing.get_context("spawn")
        publisher = ctx.Process(target=publish_coded, args=(server.rtmp_url(stream["stream_key"]), 6.0, 2),
                                daemon=True)
        publisher.start()
        publisher.join(90)
        assert publisher.exitcode == 0

        def recorded() -> dict[str, Any] | None:
            body = server.api("GET", f"/api/streams/{sid}")[1]
            rec = body.get("recording")
            return rec if body["status"] == "ENDED" and rec and rec.get("mp4_url") else None

        recording = wait_for(recorded, 90, "the recording")
        # The frame the clip asks for, from the rung's playlist (each frame at its presentation time).
        timeline = numbered_frames(recording["mp4_url"].replace("recording.mp4", "180p.m3u8"), relative=False)
        first_number = next(n for t, n, _ in timeline if t >= START - 1e-6)
        assert first_number is not None
        status, clip = server.api("POST", f"/api/streams/{sid}/clips",
                                  {"title": "Anthem", "start": START, "end": END, "recording_id": recording["id"]})
        assert status == 202, clip
        yield Clip(server, clip_ready(server, sid, clip["id"]), first_number)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from module_browser()


def absolute(server: ServerHandle, url: str) -> str:
    return f"{server.http}{url}" if url.startswith("/") else url


def measured(url: str) -> tuple[int | None, float]:
    """(number drawn in the first frame, length in seconds from the first frame to the end of the last) by PyAV."""
    frames = numbered_frames(url)
    return frames[0][1], frames[-1][0] + 1 / FPS


def open_page(browser: Any, server: ServerHandle) -> Any:
    page = browser.new_page()
    page.goto(f"{server.http}/")  # any page of the server's origin
    page.set_content("<video muted playsinline></video><canvas></canvas>")
    return page


def shown_number(page: Any, at: float, tmp_path: Path, name: str) -> int | None:
    """Seek the page's <video> to `at`, copy the picture to a canvas and read the frame number from its luma."""
    size = page.evaluate("""async (t) => {
        const video = document.querySelector('video');
        video.pause();
        const seeked = new Promise((done) => video.addEventListener('seeked', done, { once: true }));
        video.currentTime = t;
        await seeked;
        // The seeked picture reaches the canvas once the video can show it (no frame callbacks when headless).
        while (video.readyState < 2) await new Promise((done) => setTimeout(done, 50));
        await new Promise((done) => setTimeout(done, 100));
        const canvas = document.querySelector('canvas');
        canvas.width = video.videoWidth; canvas.height = video.videoHeight;
        canvas.getContext('2d').drawImage(video, 0, 0);
        return [canvas.width, canvas.height];
    }""", at)
    width, height = size
    luma = page.evaluate("""() => {
        const canvas = document.querySelector('canvas');
        const rgba = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        const out = new Array(rgba.length / 4);
        for (let i = 0; i < out.length; i++)
            out[i] = Math.round(0.299 * rgba[4 * i] + 0.587 * rgba[4 * i + 1] + 0.114 * rgba[4 * i + 2]);
        return out;
    }""")
    page.locator("canvas").screenshot(path=str(tmp_path / f"{name}.png"))
    return frame_code.read(np.array(luma, dtype=np.uint8).reshape(height, width))


def check_playback(page: Any, length: float) -> None:
    """readyState >= 2, `duration` within one frame of `length`, and currentTime advancing while it plays."""
    page.wait_for_function("() => document.querySelector('video').readyState >= 2", timeout=WAIT_MS)
    duration = page.evaluate("() => document.querySelector('video').duration")
    assert abs(duration - length) <= 1 / FPS + 1e-3, (duration, length)
    start = page.evaluate("async () => { const v = document.querySelector('video'); await v.play(); "
                          "return v.currentTime; }")
    page.wait_for_function(f"() => document.querySelector('video').currentTime > {start} + 0.3", timeout=WAIT_MS)


def test_chromium_plays_the_clip_mp4(made: Clip, browser: Any, tmp_path: Path) -> None:
    url = absolute(made.server, made.clip["mp4_url"])
    first, length = measured(url)
    assert first == made.first_number
    with av.open(url) as container:
        assert container.streams.video[0].frames == made.clip["frames"]
    page = open_page(browser, made.server)
    try:
        supported = page.evaluate("""() => [
            MediaSource.isTypeSupported('video/mp4; codecs="avc1.42E01E"'),
            document.createElement('video').canPlayType('video/mp4; codecs="avc1.64001f"')]""")
        assert supported[0] and supported[1], f"this Chromium cannot play H.264: {supported}"
        page.evaluate("(src) => { document.querySelector('video').src = src; }", url)
        check_playback(page, length)
        assert shown_number(page, 0, tmp_path, "mp4-first") == made.first_number
        # The last frame: half a frame before the end.
        last = made.first_number + made.clip["frames"] - 1
        assert shown_number(page, length - 0.5 / FPS, tmp_path, "mp4-last") == last
    finally:
        page.close()


def test_hlsjs_plays_the_clip_playlist(made: Clip, browser: Any, tmp_path: Path) -> None:
    url = absolute(made.server, made.clip["playlist_url"])
    first, length = measured(url)
    assert first is not None and first <= made.first_number  # whole segments: it starts at or before the clip
    page = open_page(browser, made.server)
    try:
        page.add_script_tag(url="/static/vendor/hls.min.js")
        page.evaluate("""(src) => {
            const hls = new Hls();
            hls.loadSource(src);
            hls.attachMedia(document.querySelector('video'));
            window.hls = hls;
        }""", url)
        check_playback(page, length)
        assert shown_number(page, 0, tmp_path, "playlist-first") == first
    finally:
        page.close()
