"""Simulated live end to end: a real RTMP broadcast (frame numbers drawn into the picture) is recorded,
then re-aired at a time as a live service: LIVE at the air time, playlists growing in real time, the
newest segment's frames those of the moment, chat live, and it ends on its own with webhooks and chat events."""
from __future__ import annotations

import asyncio
import multiprocessing
import time
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

from bench import frame_code
from mediaserver.config import Rendition
from mediaserver.simulated_live import aired_count, rebased
from packager.playlist import SegmentEntry
from tests.chat_client import connect, run
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_series_webhooks import SECRET, Receiver, free_port, loopback_webhooks

FPS = 30
SECONDS = 8.0


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


@pytest.mark.media
def test_a_recording_re_airs_as_a_live_service(tmp_path: Path) -> None:
    config = loopback_webhooks(small_config(tmp_path / "data", reconnect_window=0.0,
                                            renditions=[Rendition("180p", 180, 300_000)]))
    server = run_server(config)
    receiver = Receiver(free_port()).start()
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
        recording = view["recording"]
        _, _, recorded = server.get(f"/hls/{sid}/180p.m3u8")
        recorded_segments = parse_playlist(recorded.decode())
        assert "#EXT-X-ENDLIST" in recorded.decode()

        # A recording of another stream, or none, is refused.
        other = server.create_stream("Other")
        assert server.api("POST", f"/api/streams/{other['id']}/simulated-live",
                          {"recording_id": recording["id"], "air_at": "2030-01-01T00:00:00Z"})[0] == 404

        run(_scenario(server, receiver, sid, recording, recorded_segments))

        # Nothing was recorded again or deleted: the one recording still plays whole.
        assert len(server.server.db.recordings_where("stream_id = ?", [sid])) == 1
        _, _, after = server.get(f"/hls/{sid}/180p.m3u8")
        assert parse_playlist(after.decode()) == recorded_segments
        types = receiver.types(sid)
        assert types.count("stream.live") == 2 and types.count("stream.ended") == 2, types
        assert types.index("stream.live", types.index("stream.ended") + 1) < len(types) - 1
        assert receiver.bad_signatures == 0
    finally:
        receiver.stop()
        server.stop()


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
