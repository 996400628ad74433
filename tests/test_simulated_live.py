"""Simulated live end to end: a real RTMP broadcast (frame numbers drawn into the picture) is recorded,
then re-aired at a time as a live service: LIVE at the air time, playlists growing in real time, the
newest segment's frames those of the moment, chat live, and it ends on its own with webhooks and chat events.
A stored re-air survives a restart (joined in progress when its time passed meanwhile); a series template or a
PATCH arms one, also with another stream's recording of the same organization; Chromium plays one as live."""
from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import av
import numpy as np
import pytest

from bench import frame_code
from mediaserver.config import Rendition
from mediaserver.simulated_live import SimulatedLive, aired_count, rebased
from packager.playlist import SegmentEntry
from tests.browser import module_browser
from tests.chat_client import connect, run
from tests.server_fixture import ServerHandle, run_server, small_config
from web.simulated_api import SIMULATED
from tests.test_series_webhooks import SECRET, Receiver, free_port, loopback_webhooks

FPS = 30
SECONDS = 10.0


def publish_numbered(url: str, seconds: float) -> int:
    """Publish `seconds` of 320x180 H.264 + AAC over RTMP, each frame's number drawn (bench/frame_code.py);
    paced at real time so the recording's timeline is the source's."""
    container = av.open(url, "w", format="flv", timeout=10)
    video = container.add_stream("libx264", rate=FPS)
    video.width, video.height, video.pix_fmt = 320, 180, "yuv420p"
    video.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(FPS)}
    audio = container.add_stream("aac", rate=48000, layout="stereo")
    samples = 48000 // FPS
    start = time.perf_counter()
    frames = int(seconds * FPS)
    for i in range(frames):
        delay = start + i / FPS - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yuv = np.full((180 * 3 // 2, 320), 128, np.uint8)
        yuv[:180] = 60
        frame_code.draw(yuv[:180], i)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts, frame.time_base = i, Fraction(1, FPS)
        for packet in video.encode(frame):
            container.mux(packet)
        aframe = av.AudioFrame.from_ndarray(np.zeros((2, samples), np.float32), format="fltp", layout="stereo")
        aframe.sample_rate, aframe.pts, aframe.time_base = 48000, i * samples, Fraction(1, 48000)
        for packet in audio.encode(aframe):
            container.mux(packet)
    for stream in (video, audio):
        for packet in stream.encode(None):
            container.mux(packet)
    container.close()
    return frames


def parse_playlist(text: str) -> list[tuple[float, float, str]]:
    """(program date time, duration, uri) of every segment of a media playlist."""
    out, pdt, duration = [], 0.0, 0.0
    for line in text.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp()
        elif line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line and not line.startswith("#"):
            out.append((pdt, duration, line))
    return out


def frame_numbers(server: ServerHandle, stream_id: str, text: str, uri: str) -> list[int]:
    """The numbers drawn in the frames of one listed segment, decoded from its init + media bytes."""
    maps = [line for line in text.splitlines() if line.startswith("#EXT-X-MAP:")]
    init_uri = maps[-1].split('URI="')[1].split('"')[0]
    status, _, init = server.get(f"/hls/{stream_id}/{init_uri}")
    assert status == 200
    status, _, media = server.get(f"/hls/{stream_id}/{uri}")
    assert status == 200
    path = Path(server.server.config.data_path) / f"probe-{time.monotonic_ns()}.mp4"
    path.write_bytes(init + media)
    numbers = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            number = frame_code.read_frame(frame)
            assert number is not None
            numbers.append(number)
    return numbers


def wait_status(server: ServerHandle, stream_id: str, status: str, timeout: float) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.api("GET", f"/api/streams/{stream_id}")[1]["status"] == status:
            return time.time()
        time.sleep(0.05)
    raise AssertionError(f"stream never {status}")


def test_rebased_and_aired_count() -> None:
    entries = [SegmentEntry(i, 10.0 + i, 1.0, f"v/seg-{i}.m4s", "v/init-0.mp4", 5.0 + i, 100) for i in range(4)]
    dated = rebased(entries, 1000.0)
    assert [e.program_date_time for e in dated] == [1000.0, 1001.0, 1002.0, 1003.0]
    assert [aired_count(entries, t) for t in (0.0, 0.99, 1.0, 2.5, 99.0)] == [0, 0, 1, 2, 4]


@dataclass
class Env:
    """One server for the module (replaced by the restart test) and one real recording, made once."""

    config: Any
    server: ServerHandle
    receiver: Receiver
    sid: str
    recording: dict[str, Any]
    recorded_segments: list[tuple[float, float, str]]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp_path = tmp_path_factory.mktemp("simulated")
    config = loopback_webhooks(small_config(tmp_path / "data", reconnect_window=0.0,
                                            renditions=[Rendition("180p", 180, 300_000)]))
    server = run_server(config)
    receiver = Receiver(free_port()).start()
    state = Env(config, server, receiver, "", {}, [])
    try:
        assert server.api("POST", "/api/webhooks", {"url": f"http://127.0.0.1:{receiver.port}/hook",
                                                    "secret": SECRET, "events": ["*"]})[0] == 201
        stream = server.create_stream("Sunday re-air")
        sid = stream["id"]
        # In a child process, as tests/media_source.py does: PyAV's blocking RTMP writes must not hold this
        # process's GIL against the server's event loop.
        publisher = multiprocessing.get_context("spawn").Process(
            target=publish_numbered, args=(server.rtmp_url(stream["stream_key"]), SECONDS), daemon=True)
        publisher.start()
        publisher.join(60)
        assert publisher.exitcode == 0
        deadline = time.time() + 60
        while True:
            view = server.api("GET", f"/api/streams/{sid}")[1]
            if view["recording"] and view["recording"]["status"] == "READY":
                break
            assert time.time() < deadline, "no recording"
            time.sleep(0.2)
        _, _, recorded = server.get(f"/hls/{sid}/180p.m3u8")
        assert "#EXT-X-ENDLIST" in recorded.decode()
        state.sid, state.recording, state.recorded_segments = sid, view["recording"], parse_playlist(recorded.decode())
        yield state
    finally:
        receiver.stop()
        state.server.stop()


def stamp(at: float) -> str:
    return datetime.fromtimestamp(at, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def simulated(server: ServerHandle) -> SimulatedLive:
    return server.server.runner.app[SIMULATED]


@pytest.mark.media
def test_a_recording_re_airs_as_a_live_service(env: Env) -> None:
    server, receiver, sid, recording = env.server, env.receiver, env.sid, env.recording
    # Another organization's stream cannot re-air it: not found, as everything of another organization.
    db = server.server.db
    elsewhere = db.org("elsewhere") or db.create_org("elsewhere", "Elsewhere")
    foreign, _ = db.create_stream("Elsewhere service", elsewhere["id"])
    assert server.api("POST", f"/api/streams/{foreign['id']}/simulated-live",
                      {"recording_id": recording["id"], "air_at": "2030-01-01T00:00:00Z"})[0] == 404

    run(_scenario(server, receiver, sid, recording, env.recorded_segments))

    # Nothing was recorded again or deleted: the one recording still plays whole.
    assert len(server.server.db.recordings_where("stream_id = ?", [sid])) == 1
    _, _, after = server.get(f"/hls/{sid}/180p.m3u8")
    assert parse_playlist(after.decode()) == env.recorded_segments
    types = receiver.types(sid)
    assert types.count("stream.live") == 2 and types.count("stream.ended") == 2, types
    assert types.index("stream.live", types.index("stream.ended") + 1) < len(types) - 1
    assert receiver.bad_signatures == 0


async def _scenario(server: ServerHandle, receiver: Receiver, sid: str, recording: dict[str, Any],
                    recorded_segments: list[tuple[float, float, str]]) -> None:
    api = lambda *a: asyncio.to_thread(server.api, *a)  # noqa: E731
    get = lambda path: asyncio.to_thread(server.get, path)  # noqa: E731
    async with aiohttp.ClientSession() as session:
        alice = await connect(session, server, sid, name="Alice")
        bob = await connect(session, server, sid, name="Bob")
        air_at = time.time() + 2.0
        stamp = datetime.fromtimestamp(air_at, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        status, view = await api("POST", f"/api/streams/{sid}/simulated-live",
                                 {"recording_id": recording["id"], "air_at": stamp})
        assert status == 200, view
        assert view["status"] == "SCHEDULED"
        air_at = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        live_seen = await asyncio.to_thread(wait_status, server, sid, "LIVE", 15)
        assert live_seen >= air_at  # not a moment early
        await bob.expect("stream:live", timeout=10)

        # A viewer joining ~4 s in: the playlist ends around 4 s of media, never ahead of the wall clock.
        await asyncio.sleep(max(0.0, air_at + 4.2 - time.time()))
        before = time.time()
        _, _, body = await get(f"/hls/{sid}/180p.m3u8")
        after = time.time()
        text = body.decode()
        listed = parse_playlist(text)
        assert "#EXT-X-ENDLIST" not in text
        total = sum(d for _, d, _ in listed)
        assert 2.0 <= total <= after - air_at + 0.05, (total, before - air_at)
        assert len(listed) < len(recorded_segments)
        # Dated from the air time, segment after segment.
        assert air_at - 0.01 <= listed[0][0] <= live_seen + 0.01
        for (pdt, duration, _), (next_pdt, _, _) in zip(listed, listed[1:]):
            assert abs(pdt + duration - next_pdt) < 0.01
        # The newest segment shows the frames of ~4 s in, not of the start: the frame numbers say so.
        numbers = await asyncio.to_thread(frame_numbers, server, sid, text, listed[-1][2])
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        newest_start = total - listed[-1][1]
        assert abs(numbers[0] / FPS - newest_start) < 0.1, (numbers[0], newest_start)
        assert numbers[-1] / FPS <= after - air_at
        assert numbers[0] / FPS >= 1.0

        # Chat is live meanwhile.
        await alice.send("chat:message", {"text": "Watching the re-air"})
        assert (await bob.expect("chat:message", lambda d: d["author"] == "Alice"))["text"] == "Watching the re-air"

        # It grows, and the DVR window keeps the first segments.
        await asyncio.sleep(2.0)
        _, _, grown = await get(f"/hls/{sid}/180p.m3u8")
        grown_listed = parse_playlist(grown.decode())
        assert len(grown_listed) > len(listed)
        assert [u for _, _, u in grown_listed[:len(listed)]] == [u for _, _, u in listed]
        assert grown_listed[0][2] == recorded_segments[0][2]

        # It ends on its own after the recording's duration.
        await asyncio.to_thread(wait_status, server, sid, "ENDED", 20)
        await bob.expect("stream:ended", timeout=10)
        deadline = time.time() + 15
        while receiver.types(sid).count("stream.ended") < 2:
            assert time.time() < deadline, receiver.types(sid)
            await asyncio.sleep(0.1)


@pytest.mark.media
def test_series_and_single_occurrences_re_air_a_recording_of_another_stream(env: Env) -> None:
    server, rid = env.server, env.recording["id"]
    db = server.server.db
    elsewhere = db.org("elsewhere") or db.create_org("elsewhere", "Elsewhere")
    _, other_token = db.create_token(elsewhere["id"], "other church")
    series_body = {"title": "Campus re-air", "rrule": "FREQ=WEEKLY;BYDAY=SU", "start_time": "10:00", "duration": 60,
                   "timezone": "UTC", "simulated_recording_id": rid}
    # Validated: an unknown recording, or one of another organization, is refused.
    status, body = server.api("POST", "/api/series", {**series_body, "simulated_recording_id": "nope"})
    assert status == 400 and "simulated_recording_id" in body["details"], body
    status, body = server.api("POST", "/api/series", series_body, token=other_token)
    assert status == 400 and "simulated_recording_id" in body["details"], body

    status, series = server.api("POST", "/api/series", series_body)
    assert status == 201, series
    rows = db.query_streams("series_id = ?", [series["id"]], "scheduled_start", 100, 0)
    assert rows
    for row in rows:  # every occurrence carries it, and is armed for its own start
        view = server.api("GET", f"/api/streams/{row['id']}")[1]
        assert view["simulated_recording_id"] == rid
    deadline = time.time() + 10
    while not all((a := simulated(server).airing(r["id"])) is not None and a.status == "SCHEDULED"
                  and a.air_at == r["scheduled_start"] and a.recording_id == rid for r in rows):
        assert time.time() < deadline, "occurrences not armed"
        time.sleep(0.05)

    # One occurrence moved to now (a campus airing the sermon of the main stream): PATCH with its start.
    campus = rows[0]["id"]
    status, body = server.api("PATCH", f"/api/streams/{campus}", {"simulated_recording_id": "nope"})
    assert status == 400 and "simulated_recording_id" in body["details"]
    assert server.api("PATCH", f"/api/streams/{campus}", {"simulated_recording_id": rid}, token=other_token)[0] == 404
    air_at = time.time() + 1.5
    status, view = server.api("PATCH", f"/api/streams/{campus}", {"scheduled_start": stamp(air_at), "simulated_recording_id": rid})
    assert status == 200, view
    air_at = datetime.fromisoformat(view["scheduled_start"].replace("Z", "+00:00")).timestamp()
    live_seen = wait_status(server, campus, "LIVE", 15)
    assert live_seen >= air_at
    # Another organization's token does not see it; its playlist serves the main stream's media.
    assert server.api("GET", f"/api/streams/{campus}", token=other_token)[0] == 404
    time.sleep(max(0.0, air_at + 3.2 - time.time()))
    _, _, body_bytes = server.get(f"/hls/{campus}/180p.m3u8")
    text = body_bytes.decode()
    listed = parse_playlist(text)
    assert listed and "#EXT-X-ENDLIST" not in text
    numbers = frame_numbers(server, campus, text, listed[-1][2])
    newest_start = sum(d for _, d, _ in listed) - listed[-1][1]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert abs(numbers[0] / FPS - newest_start) < 0.1 and numbers[0] >= FPS
    # An admin may end it early, as any live service.
    assert server.api("POST", f"/api/streams/{campus}/end")[0] == 200
    wait_status(server, campus, "ENDED", 15)
    assert len(db.recordings_where("stream_id = ?", [campus])) == 0


@pytest.mark.media
def test_a_stored_re_air_survives_a_restart(env: Env) -> None:
    server, rid = env.server, env.recording["id"]
    later, soon = server.create_stream("Next week")["id"], server.create_stream("Restarted")["id"]
    far = time.time() + 3600
    assert server.api("POST", f"/api/streams/{later}/simulated-live", {"recording_id": rid, "air_at": stamp(far)})[0] == 200
    status, view = server.api("POST", f"/api/streams/{soon}/simulated-live",
                              {"recording_id": rid, "air_at": stamp(time.time() + 2.0)})
    assert status == 200
    air_at = datetime.fromisoformat(view["scheduled_start"].replace("Z", "+00:00")).timestamp()
    server.stop()
    time.sleep(max(0.0, air_at + 3.5 - time.time()))  # its air time passes while the server is down
    env.server = server = run_server(env.config)
    restarted = time.time()
    wait_status(server, soon, "LIVE", 15)
    _, _, body = server.get(f"/hls/{soon}/180p.m3u8")
    fetched = time.time()
    text = body.decode()
    listed = parse_playlist(text)
    # Joined in progress: dated from the scheduled air time, with the media of the time since then.
    assert abs(listed[0][0] - air_at) < 0.01
    total = sum(d for _, d, _ in listed)
    assert restarted - air_at - 1.5 <= total <= fetched - air_at + 0.05, (total, restarted - air_at)
    numbers = frame_numbers(server, soon, text, listed[-1][2])
    assert abs(numbers[0] / FPS - (total - listed[-1][1])) < 0.1 and numbers[0] >= 2 * FPS
    # The one still ahead was reloaded for its time.
    view = server.api("GET", f"/api/streams/{later}")[1]
    assert view["status"] == "SCHEDULED" and view["simulated_recording_id"] == rid
    airing = simulated(server).airing(later)
    assert airing is not None and airing.status == "SCHEDULED" and abs(airing.air_at - far) < 0.001
    # Cancelling forgets it for good (a restart does not bring it back).
    status, view = server.api("DELETE", f"/api/streams/{later}/simulated-live")
    assert status == 200 and view["simulated_recording_id"] is None
    wait_status(server, soon, "ENDED", 20)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from module_browser()


@pytest.mark.media
def test_chromium_plays_a_re_air_as_live_with_its_chat(env: Env, browser: Any, tmp_path: Path) -> None:
    server = env.server
    sid = server.create_stream("Evening re-air")["id"]
    assert server.api("POST", f"/api/streams/{sid}/simulated-live",
                      {"recording_id": env.recording["id"], "air_at": stamp(time.time() + 0.5)})[0] == 200
    wait_status(server, sid, "LIVE", 15)
    errors: list[str] = []
    pages = []
    for name in ("Naomi", "Ruth"):
        context = browser.new_context()
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.add_init_script(f"localStorage.setItem('chat-name', '{name}')")
        page.goto(f"{server.http}/watch/{sid}")
        pages.append(page)
    naomi, ruth = pages
    # It plays as live: time advances, and the LIVE badge is shown.
    naomi.wait_for_function("document.querySelector('video').currentTime > 0.3", timeout=15_000)
    start = naomi.evaluate("document.querySelector('video').currentTime")
    naomi.wait_for_function(f"document.querySelector('video').currentTime > {start + 1.0}", timeout=10_000)
    naomi.wait_for_selector("#live-badge:not([hidden])", timeout=10_000)
    naomi.screenshot(path=str(tmp_path / "re-air.png"))
    # The chat is live both ways.
    for sender, receiver, text in ((naomi, ruth, "Amen from the re-air"), (ruth, naomi, "Hello Naomi")):
        sender.wait_for_selector("#chat-text")
        sender.fill("#chat-text", text)
        sender.press("#chat-text", "Enter")
        receiver.wait_for_function(
            f"[...document.querySelectorAll('#messages li')].some(li => li.textContent.includes({text!r}))",
            timeout=10_000)
    for page in pages:
        page.context.close()
    assert errors == []
