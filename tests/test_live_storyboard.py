"""The live storyboard of the DVR bar, end to end: a private RTMP broadcast whose frames carry their numbers
(bench/frame_code.py), read back while it is live as a viewer with a playback token would: the storyboard's tiles
show the frames of their cue times (the frames read independently from the top rung's segments), it grows, tiles
leave with the DVR window, and without the token nothing of it is served. Then the player in Chromium: hovering
the live DVR bar shows the tile of the cue for the time under the pointer."""
from __future__ import annotations

import io
import multiprocessing
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator
from urllib.parse import quote

import av
import numpy as np
import pytest

from bench import frame_code
from mediaserver.live_storyboard import LiveTiler
from packager.live_storyboard import LiveStoryboard, TileUri
from packager.playlist import RenditionTrack, SegmentEntry
from tests.browser import module_browser
from tests.hls_reader import parse_master, parse_media
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.media_source import publish_numbered
from tests.test_thumbnails_replay import FPS, decode_jpeg, luma

pytestmark = pytest.mark.media

SECONDS = 18.0
DVR = 6.0        # seconds of rewind: tiles leave the storyboard within the broadcast
INTERVAL = 2.0   # a tile every two seconds of media (1 s segments)


def pdt_seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def parse_live_vtt(text: str) -> tuple[float, list[tuple[float, float, str, tuple[int, int, int, int]]]]:
    """The origin (unix seconds) and the cues (start and end as unix seconds, image URI, xywh)."""
    assert text.startswith("WEBVTT"), text
    origin = re.search(r"^X-PROGRAM-DATE-TIME-ORIGIN=(\S+)$", text, re.M)
    assert origin is not None, text
    zero = pdt_seconds(origin.group(1))

    def seconds(stamp: str) -> float:
        h, m, s = stamp.split(":")
        return zero + int(h) * 3600 + int(m) * 60 + float(s)
    cues = [(seconds(a), seconds(b), uri, (int(x), int(y), int(w), int(h)))
            for a, b, uri, x, y, w, h in re.findall(r"(\S+) --> (\S+)\n(\S+)#xywh=(\d+),(\d+),(\d+),(\d+)", text)]
    return zero, cues


def fetch(server: ServerHandle, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(server.http + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@dataclass
class Observed:
    """What a viewer saw while the broadcast was live."""
    stream_id: str
    token: str
    frames: dict[int, np.ndarray] = field(default_factory=dict)          # frame number -> 160x90 luma
    segments: dict[int, tuple[float, float, int]] = field(default_factory=dict)  # seq -> (pdt, dur, first frame)
    windows: list[tuple[float, float]] = field(default_factory=list)     # (lowest rung's first pdt, vtt's first cue)
    counts: list[int] = field(default_factory=list)
    tiles: dict[str, tuple[float, bytes]] = field(default_factory=dict)  # tile URI -> (cue start, jpeg)
    gone: dict[str, int] = field(default_factory=dict)  # tile URI -> its status once out of the window (still live)
    probes: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    cpu_per_tile: float | None = None


def watch_live(server: ServerHandle, stream_id: str, token: str, done: Any) -> Observed:
    seen = Observed(stream_id, token)
    q = f"?token={quote(token, safe='')}"
    base = f"/hls/{stream_id}/"
    inits: dict[str, bytes] = {}
    top = low = None
    while not done():
        time.sleep(0.25)
        if top is None:
            status, _, body = fetch(server, f"{base}master.m3u8{q}")
            if status != 200:
                continue
            variants = sorted(parse_master(body.decode()), key=lambda v: int(v[0]["RESOLUTION"].split("x")[1]))
            low, top = variants[0][1].split("?")[0], variants[-1][1].split("?")[0]
        # The lowest rung's window first, then the storyboard: every cue must be inside that window.
        status, _, body = fetch(server, f"{base}{low}{q}")
        status_vtt, headers, vtt = fetch(server, f"{base}storyboard.vtt{q}")
        if status != 200 or status_vtt != 200:
            continue
        window_start = pdt_seconds(parse_media(body.decode()).program_date_times[0])
        _, cues = parse_live_vtt(vtt.decode())
        seen.counts.append(len(cues))
        if cues:
            seen.windows.append((window_start, cues[0][0]))
        for uri, (start, _) in seen.tiles.items():
            if uri not in seen.gone and start < window_start - 1e-3:  # its segment has left the window
                seen.gone[uri] = fetch(server, base + uri)[0]
        for start, _, uri, _xywh in cues:
            if uri not in seen.tiles:
                status, _, jpeg = fetch(server, base + uri)
                if status == 200:
                    seen.tiles[uri] = (start, jpeg)
        # The top rung's new segments, decoded: every frame's number, and each segment's first.
        status, _, body = fetch(server, f"{base}{top}{q}")
        if status != 200:
            continue
        playlist = parse_media(body.decode())
        for i, ((uri, duration, map_uri), stamp) in enumerate(zip(playlist.segments, playlist.program_date_times)):
            sequence = playlist.media_sequence + i
            if sequence in seen.segments:
                continue
            map_path = map_uri.split("?")[0]
            if map_path not in inits:
                inits[map_path] = fetch(server, base + map_uri)[2]
            status, _, data = fetch(server, base + uri)
            assert status == 200
            numbers = []
            with av.open(io.BytesIO(inits[map_path] + data), "r", format="mp4") as source:
                for frame in source.decode(video=0):
                    number = frame_code.read_frame(frame)
                    if number is not None:
                        numbers.append(number)
                        seen.frames[number] = frame.reformat(width=160, height=90, format="gray").to_ndarray()
            if numbers:
                seen.segments[sequence] = (pdt_seconds(stamp), duration, numbers[0])
        if len(seen.counts) == 20:  # mid-broadcast: the access probes, on the live storyboard
            # The newest tile: an older one may already have left the 6 s window (404) on a slow machine.
            first_tile = next(reversed(list(seen.tiles)), None)
            seen.probes["anonymous"] = fetch(server, f"{base}storyboard.vtt")[:2]
            seen.probes["forged"] = fetch(server, f"{base}storyboard.vtt?token=forged.token")[:2]
            seen.probes["token"] = (status_vtt, headers)
            if first_tile is not None:
                seen.probes["tile anonymous"] = fetch(server, base + first_tile.split("?")[0])[:2]
                seen.probes["tile token"] = fetch(server, base + first_tile)[:2]
        broadcast = server.server.manager.broadcasts.get(stream_id)
        if broadcast is not None and broadcast.tiler is not None:
            seen.cpu_per_tile = broadcast.tiler.cpu_per_tile()
    return seen


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    config = small_config(tmp_path_factory.mktemp("data"), dvr_window=DVR)
    config.hls.storyboard_interval = INTERVAL
    server = run_server(config)
    try:
        status, stream = server.api("POST", "/api/streams", {"title": "Live Board", "visibility": "PRIVATE"})
        assert status == 201, stream
        status, grant = server.api("POST", f"/api/streams/{stream['id']}/playback-tokens", {"ttl": 600})
        assert status == 201, grant
        ctx = multiprocessing.get_context("spawn")
        queue: "multiprocessing.Queue[float]" = ctx.Queue()
        publisher = ctx.Process(target=publish_numbered, args=(server.rtmp_url(stream["stream_key"]), SECONDS, queue, 0, "gradient"),
                                daemon=True)
        publisher.start()
        queue.get(timeout=60)
        seen = watch_live(server, stream["id"], grant["token"], lambda: not publisher.is_alive())
        publisher.join(60)
        assert publisher.exitcode == 0
        yield seen
    finally:
        server.stop()


def test_live_tiles_show_the_frames_of_their_cue_times(observed: Observed) -> None:
    print(f"live storyboard: {len(observed.tiles)} tiles, CPU per tile {observed.cpu_per_tile}")
    assert len(observed.tiles) >= SECONDS / INTERVAL * 0.6, observed.tiles.keys()
    assert len(observed.frames) > SECONDS * FPS * 0.6
    checked = 0
    for uri, (start, jpeg) in observed.tiles.items():
        # Independently: the top rung's segment playing at the cue's date, and the frame that far into it.
        found = [(pdt, number) for pdt, duration, number in observed.segments.values() if pdt <= start + 1e-3 < pdt + duration]
        if not found:
            continue  # a segment that left the window before this reader fetched it
        pdt, number = found[0]
        expected = number + (start - pdt) * FPS
        tile = decode_jpeg(jpeg)
        assert tile.shape[:2] == (90, 160)
        y = luma(tile).astype(np.int16)
        nearest = min(observed.frames, key=lambda n: float(np.abs(observed.frames[n].astype(np.int16) - y).mean()))
        assert expected - 1.5 <= nearest <= expected + 1.5, (uri, start, nearest, expected)
        checked += 1
    assert checked >= len(observed.tiles) * 0.6, (checked, len(observed.tiles))


def test_storyboard_grows_and_drops_what_leaves_the_window(observed: Observed) -> None:
    counts = [c for c in observed.counts if c]
    assert counts and counts[0] < max(counts), counts  # grew while the window filled
    # Never more tiles than the window holds (one every INTERVAL; a partial step each side)...
    assert max(counts) <= DVR / INTERVAL + 2, counts
    # ... no cue older than the window the rung's playlist listed just before ...
    for window_start, first_cue in observed.windows:
        assert first_cue >= window_start - 1e-3, (window_start, first_cue)
    # ... and the early tiles, served while they were in the window, are gone now.
    assert observed.gone and all(status == 404 for status in observed.gone.values()), observed.gone


def test_private_storyboard_needs_the_token(observed: Observed) -> None:
    probes = observed.probes
    assert probes["anonymous"][0] in (401, 403), probes
    assert probes["forged"][0] in (401, 403), probes
    status, headers = probes["token"]
    assert status == 200 and headers["Content-Type"].startswith("text/vtt")
    cache = headers["Cache-Control"]
    max_age = re.search(r"max-age=(\d+)", cache)
    assert "private" in cache and "immutable" not in cache and max_age is not None and int(max_age.group(1)) <= 10
    assert probes["tile anonymous"][0] in (401, 403), probes
    assert probes["tile token"][0] == 200 and probes["tile token"][1]["Content-Type"] == "image/jpeg"


# -- the player ------------------------------------------------------------------------------------------
WAIT_MS = 30000
BAR = """() => {
    const seek = document.getElementById('seek'), box = seek.getBoundingClientRect();
    const d = window.player.hls && window.player.hls.latestLevelDetails;
    return { min: Number(seek.min), max: Number(seek.max), left: box.left, width: box.width,
             top: box.top, height: box.height,
             frags: d ? d.fragments.map((f) => [f.sn, f.start, f.duration]) : [] };
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from module_browser()


def test_hovering_the_live_dvr_bar_shows_the_tile_of_that_moment(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    config = small_config(tmp_path_factory.mktemp("data"))  # an hour of DVR: nothing leaves it here
    config.hls.storyboard_interval = INTERVAL
    server = run_server(config)
    ctx = multiprocessing.get_context("spawn")
    queue: "multiprocessing.Queue[float]" = ctx.Queue()
    stream = server.create_stream("Live Board Player")
    publisher = ctx.Process(target=publish_numbered, args=(server.rtmp_url(stream["stream_key"]), 60.0, queue, 0, "gradient"),
                            daemon=True)
    page = None
    try:
        publisher.start()
        queue.get(timeout=60)
        base = f"/hls/{stream['id']}/"

        def cues() -> list[tuple[float, float, str, tuple[int, int, int, int]]]:
            status, _, vtt = server.get(base + "storyboard.vtt")
            return parse_live_vtt(vtt.decode())[1] if status == 200 else []
        deadline = time.monotonic() + 90
        while len(cues()) < 5:
            assert time.monotonic() < deadline, "the live storyboard did not grow"
            time.sleep(0.5)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{server.http}/watch/{stream['id']}")
        page.wait_for_function("() => window.player && window.player.hls && window.player.hls.latestLevelDetails"
                               " && !document.getElementById('seek').disabled"
                               " && Number(document.querySelector('.storyboard').dataset.cues) >= 4", timeout=WAIT_MS)
        seen: set[str] = set()
        for attempt in range(40):
            if len(seen) >= 3:
                break
            before = page.evaluate(BAR)
            # Independently of the page: the dates of the playlist's segments, read here, and the storyboard's cues.
            status, _, body = server.get(base + "144p.m3u8")
            assert status == 200
            playlist = parse_media(body.decode())
            dates = {playlist.media_sequence + i: pdt_seconds(s) for i, s in enumerate(playlist.program_date_times)}
            # Only cues the page has loaded too (it re-reads storyboard.vtt on its own clock): with an hour of DVR
            # nothing leaves the front, so the page's cues are the first `known` of the server's.
            known = min(len(cues_now := cues()), int(page.evaluate(
                "Number(document.querySelector('.storyboard').dataset.cues)")))
            board = cues_now[:known]
            target = board[[0, len(board) // 2, len(board) - 2][len(seen) % 3]]
            moment = (target[0] + target[1]) / 2  # mid-cue: a pixel of pointer either way stays inside it
            frag = next((f for f in before["frags"] if f[0] in dates and dates[f[0]] <= moment < dates[f[0]] + f[2]), None)
            if frag is None or before["max"] <= before["min"]:
                continue
            value = frag[1] + (moment - dates[frag[0]])
            fraction = (value - before["min"]) / (before["max"] - before["min"])
            if not 0.01 < fraction < 0.99:
                continue
            page.mouse.move(before["left"] + before["width"] * fraction, before["top"] + before["height"] / 2)
            page.wait_for_function("() => !document.querySelector('.storyboard').hidden", timeout=WAIT_MS)
            tip = page.evaluate("""() => {
                const image = getComputedStyle(document.querySelector('.storyboard-image'));
                return { x: image.backgroundPositionX, y: image.backgroundPositionY, w: image.width, h: image.height,
                         url: image.backgroundImage, label: document.querySelector('.storyboard-time').textContent };
            }""")
            if page.evaluate(BAR) != before:
                continue  # the bar moved under the pointer (a playlist reload): the time under it is not `value`
            _, _, uri, (x, y, w, h) = target
            assert re.search(rf"{re.escape(base + uri)}\"?\)$", tip["url"]), (tip, target, moment)
            assert (-float(tip["x"][:-2]), -float(tip["y"][:-2])) == (x, y), tip
            assert (tip["w"], tip["h"]) == (f"{w}px", f"{h}px"), tip
            assert tip["label"].startswith("\u2212"), tip  # how far behind live, as the bar's label says it
            seen.add(uri)
            page.mouse.move(before["left"] + before["width"] / 2, before["top"] - 200)
            page.wait_for_function("() => document.querySelector('.storyboard').hidden", timeout=WAIT_MS)
        assert len(seen) >= 3, seen
        page.mouse.move(before["left"] + before["width"] * 0.5, before["top"] + before["height"] / 2)
        page.screenshot(path=str(tmp_path_factory.mktemp("shots") / "live-storyboard.png"))
    finally:
        if page is not None:
            page.close()
        if publisher.is_alive():
            publisher.terminate()
        publisher.join(10)
        server.stop()


# -- the bookkeeping, without a server ---------------------------------------------------------------------
def entry(sequence: int, start: float, pdt: float) -> SegmentEntry:
    return SegmentEntry(sequence, start, 1.0, f"144p/seg-{sequence}.m4s", "144p/init-0.mp4", pdt, 1000)


def test_tiles_are_due_on_the_interval_grid_and_leave_with_the_window() -> None:
    board = LiveStoryboard(interval=2.0)
    made = []
    for n in range(10):
        e = entry(n, float(n), 1_000_000.5 + n)
        if board.note_segment(e) and n != 2:  # the tile due at segment 2 was skipped (busy): segment 3 gives it
            board.add(e, b"jpeg%d" % n)
            made.append(n)
    assert made == [0, 3, 4, 6, 8]
    board.drop_before(4)
    assert list(board.tiles) == [4, 6, 8] and board.tile(3) is None and board.tile(4) == b"jpeg4"
    _, cues = parse_live_vtt(board.render(TileUri("b1", "?token=t")))
    assert [round(c[0] - 1_000_000.5, 3) for c in cues] == [4.0, 6.0, 8.0]
    assert round(cues[-1][1] - 1_000_000.5, 3) == 10.0  # the last cue runs to the newest segment's end
    assert cues[0][2] == "b1/live-storyboard/4.jpg?token=t"


def test_a_busy_tiler_skips_the_segment_rather_than_queueing_it() -> None:
    track = RenditionTrack("144p", height=144)
    track.set_format(0, 256, 144, "avc1", 30.0, 200_000)
    board = LiveStoryboard(interval=1.0)
    tiler = LiveTiler(board, lambda rung: None)
    tiler.working = True  # a tile in the making
    tiler.offer({"144p": track}, track, entry(0, 0.0, 1_000_000.0), b"", b"", None, "media/x")  # type: ignore[arg-type]
    assert tiler.skipped == 1 and not board.tiles
    assert board.note_segment(entry(1, 1.0, 1_000_001.0))  # still due: the next segment gives it
