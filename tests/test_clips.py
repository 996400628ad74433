"""Clips, end to end: a real RTMP publish with the frame number drawn into every picture (bench/frame_code.py);
a clip from the live DVR window while on air and one from the recording, both starting and ending off keyframes.
The MP4's decoded frames are exactly the requested run (first and last read from the picture, every frame between
in order), the GOPs between the edges are the source rung's packets byte for byte, the VOD playlist plays in PyAV,
clip.ready reaches a real webhook receiver, and access follows the stream (another church 404, private needs a
token). The reference for "which frame is at t seconds" is the recording MP4 the server made on its own path.
A second broadcast sends x264 with B-frames into a passthrough top rung: the cut is still the exact run (decode
order differs from presentation order in the copied middle), each frame at its own time, the first at 0, with
even decode steps across the joins; its reference is the rung's own playlist, read by FFmpeg. Every clip MP4 is
fast start (moov before mdat, read from the top-level boxes).
"""
from __future__ import annotations

import multiprocessing
import struct
import time
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Any, Iterator

import av
import pytest

from bench import frame_code
from mediaserver.config import Rendition
from tests.media_source import publish_numbered
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_webhooks import Receiver

pytestmark = pytest.mark.media

FPS = 30
SECONDS = 9.0
SECRET = "a-long-webhook-secret-123"


def publish_coded(url: str, seconds: float, bframes: int = 0) -> None:
    """Frame i shows the number i over a picture that changes every frame, with a tone (see publish_numbered)."""
    publish_numbered(url, seconds, None, bframes, "moving", True)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerHandle]:
    config = small_config(tmp_path)
    config.webhooks.allow_private_networks = True  # the receiver is on loopback
    handle = run_server(config)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def passthrough_server(tmp_path: Path) -> Iterator[ServerHandle]:
    """A ladder whose top rung is the source's size, so "auto" copies the source into it (B-frames and all);
    the encoded rungs are x264 without B-frames."""
    handle = run_server(small_config(tmp_path, renditions=[Rendition("180p", 180, 300_000),
                                                           Rendition("144p", 144, 200_000)]))
    try:
        yield handle
    finally:
        handle.stop()


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def numbered_frames(source: str, relative: bool = True) -> list[tuple[float, int | None, bool]]:
    """(seconds from the first frame, or of the media's own clock, frame number read from the picture,
    keyframe) of every video frame."""
    frames = []
    with av.open(source) as container:
        stream = container.streams.video[0]
        first = None
        for packet in container.demux(stream):
            for frame in packet.decode():
                assert frame.pts is not None and stream.time_base is not None
                first = (frame.pts if relative else 0) if first is None else first
                frames.append((float((frame.pts - first) * stream.time_base), frame_code.read_frame(frame),
                               bool(frame.key_frame)))
    return frames


def top_level_boxes(data: bytes) -> list[str]:
    """The MP4's top-level box types in file order, read from the bytes (sizes must tile the file exactly)."""
    boxes, i = [], 0
    while i < len(data):
        assert i + 8 <= len(data), f"a truncated box header at {i}"
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        if size == 1:
            size = struct.unpack(">Q", data[i + 8 : i + 16])[0]
        elif size == 0:
            size = len(data) - i
        assert size >= 8, f"box {kind!r} at {i} has size {size}"
        boxes.append(kind.decode("latin-1"))
        i += size
    assert i == len(data)
    return boxes


def decode_timing(path: str) -> tuple[list[int], list[int], Fraction]:
    """(pts, dts) of every video packet in decode order, and the time base."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        packets = [p for p in container.demux(stream) if p.size]
        return [p.pts or 0 for p in packets], [p.dts or 0 for p in packets], stream.time_base


def video_packets(path: str) -> list[bytes]:
    with av.open(path) as container:
        return [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]


def clip_ready(server: ServerHandle, sid: str, clip_id: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        status, clip = server.api("GET", f"/api/streams/{sid}/clips/{clip_id}")
        assert status == 200 and clip["status"] != "FAILED", clip
        return clip if clip["status"] == "READY" else None

    return wait_for(ready, 90, f"clip {clip_id}")  # type: ignore[no-any-return]


def fetch_recording(server: ServerHandle, sid: str, tmp_path: Path) -> tuple[dict[str, Any], str]:
    """Once the broadcast has ended: its recording (the API's view), saved as tmp_path/recording.mp4, and a
    playback token for the stream's media."""
    def recorded() -> dict[str, Any] | None:
        body = server.api("GET", f"/api/streams/{sid}")[1]
        rec = body.get("recording")
        return rec if body["status"] == "ENDED" and rec and rec.get("mp4_url") else None

    recording = wait_for(recorded, 90, "the recording")
    _, grant = server.api("POST", f"/api/streams/{sid}/playback-tokens", {"ttl": 600})
    token = grant["token"]
    status, _, mp4 = server.get(f"{recording['mp4_url']}?token={token}")
    assert status == 200
    (tmp_path / "recording.mp4").write_bytes(mp4)
    return recording, str(token)


def check_cut(server: ServerHandle, clip: dict[str, Any], token: str, reference: list[tuple[float, int | None, bool]],
              start: float, end: float, tmp_path: Path) -> None:
    """The clip's MP4 holds exactly the reference frames with start <= t < end, and its middle is copied."""
    wanted = [(t, n, key) for t, n, key in reference if start - 1e-6 <= t < end - 1e-6]
    numbers = [n for _, n, _ in wanted]
    assert None not in numbers and numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert not wanted[0][2], "the test should start off a keyframe"
    after_last = reference[reference.index(wanted[-1]) + 1]
    assert not after_last[2], "the test should end inside a GOP"
    status, _, mp4 = server.get(f"{clip['mp4_url']}?token={token}")
    assert status == 200
    boxes = top_level_boxes(mp4)  # fast start: the index first, so a browser plays it while it downloads
    assert boxes[0] == "ftyp" and boxes.count("moov") == 1 and boxes.index("moov") < boxes.index("mdat"), boxes
    path = tmp_path / f"{clip['id']}.mp4"
    path.write_bytes(mp4)
    got = numbered_frames(str(path))
    assert [n for _, n, _ in got] == numbers  # first, last and every frame between, in order
    assert clip["frames"] == len(numbers)
    # Every frame at its own time on the broadcast's clock, relative to the first (no frame shown twice or
    # squeezed out at a join between re-encoded and copied frames).
    assert all(abs(g[0] - (w[0] - wanted[0][0])) < 1e-3 for g, w in zip(got, wanted))
    # The middle: from the first keyframe after the start to the last before the end, the source's packets.
    keys = [i for i, (_, _, key) in enumerate(wanted) if key]
    assert len(keys) >= 2, "the test range should hold whole GOPs"
    recording_packets = video_packets(str(tmp_path / "recording.mp4"))
    first_ref = reference.index(wanted[0])
    source = recording_packets[first_ref : first_ref + len(wanted)]
    clipped = video_packets(str(path))
    assert len(clipped) == len(source)
    middle = range(keys[0], keys[-1])
    assert clipped[keys[0]].endswith(source[keys[0]])  # the source's SPS/PPS put back in band before it
    assert all(clipped[i] == source[i] for i in middle if i != keys[0])
    # ...and the edges really were re-encoded (the cut is not a copy that happens to start on a keyframe).
    assert clipped[0] != source[0] and clipped[-1] != source[-1]


def test_clips_from_live_and_recording(server: ServerHandle, tmp_path: Path) -> None:
    db = server.server.db
    receiver = server.call(Receiver().start())
    try:
        stream = server.create_stream()
        sid = stream["id"]
        status, _ = server.api("PATCH", f"/api/streams/{sid}", {"visibility": "PRIVATE"})
        assert status == 200
        status, hook = server.api("POST", "/api/webhooks", {"url": receiver.url, "secret": SECRET,
                                                            "events": ["clip.ready"]})
        assert status == 201, hook
        hope = db.org("hope") or db.create_org("hope", "Hope Chapel")
        _row, hope_token = db.create_token(hope["id"], "test")

        ctx = multiprocessing.get_context("spawn")
        publisher = ctx.Process(target=publish_coded, args=(server.rtmp_url(stream["stream_key"]), SECONDS),
                                daemon=True)
        publisher.start()
        # Live: once 5 s are on air, clip 1.4 s to 3.6 s of the DVR window.
        wait_for(lambda: server.api("GET", f"/api/streams/{sid}")[1]["status"] == "LIVE", 30, "LIVE")
        status, body = server.api("POST", f"/api/streams/{sid}/clips", {"title": "x", "start": 1.4, "end": 3.6},
                                  token=hope_token)
        assert status == 404, body  # another church's token
        time.sleep(5)
        status, live_clip = server.api("POST", f"/api/streams/{sid}/clips",
                                       {"title": "Call to worship", "start": 1.4, "end": 3.6})
        assert status == 202, live_clip
        assert live_clip["recording_id"] is None and live_clip["status"] == "PROCESSING"
        live_clip = clip_ready(server, sid, live_clip["id"])
        publisher.join(60)
        assert publisher.exitcode == 0

        recording, token = fetch_recording(server, sid, tmp_path)
        reference = numbered_frames(str(tmp_path / "recording.mp4"))
        assert len(reference) >= (SECONDS - 1) * FPS

        status, rec_clip = server.api("POST", f"/api/streams/{sid}/clips", {
            "title": "Sermon", "start": 2.3, "end": 5.7, "recording_id": recording["id"]})
        assert status == 202, rec_clip
        rec_clip = clip_ready(server, sid, rec_clip["id"])

        check_cut(server, live_clip, token, reference, 1.4, 3.6, tmp_path)
        check_cut(server, rec_clip, token, reference, 2.3, 5.7, tmp_path)

        # The VOD playlist over the existing segments plays in PyAV and covers the clip.
        played = numbered_frames(f"{rec_clip['playlist_url']}?token={token}")
        numbers = [n for _, n, _ in played]
        wanted = [n for t, n, _ in reference if 2.3 - 1e-6 <= t < 5.7 - 1e-6]
        assert set(wanted) <= set(numbers) and len(numbers) <= len(wanted) + 2 * FPS

        # Access: private media needs a token; another church sees no clip at all.
        assert server.get(rec_clip["mp4_url"])[0] == 401
        assert server.get(rec_clip["playlist_url"])[0] == 401
        for method, path in (("GET", f"/api/streams/{sid}/clips"), ("GET", f"/api/streams/{sid}/clips/{rec_clip['id']}"),
                             ("DELETE", f"/api/streams/{sid}/clips/{rec_clip['id']}")):
            assert server.api(method, path, token=hope_token)[0] == 404

        # clip.ready, for each clip, at the real receiver.
        def delivered() -> list[dict[str, Any]] | None:
            events = [e for e in receiver.events if e.get("type") == "clip.ready"]
            return events if len(events) == 2 else None

        events = wait_for(delivered, 30, "two clip.ready webhooks")
        assert {e["data"]["clip"]["id"] for e in events} == {live_clip["id"], rec_clip["id"]}

        # Bad ranges name the field; delete removes the clip and its media.
        status, body = server.api("POST", f"/api/streams/{sid}/clips", {"title": "x", "start": 5, "end": 4})
        assert status == 400 and "end" in body["details"]
        status, body = server.api("POST", f"/api/streams/{sid}/clips", {"title": "x", "start": 1, "end": 999})
        assert status == 400 and "end" in body["details"]
        status, listing = server.api("GET", f"/api/streams/{sid}/clips")
        assert [c["id"] for c in listing["clips"]] == [live_clip["id"], rec_clip["id"]]
        assert server.api("DELETE", f"/api/streams/{sid}/clips/{rec_clip['id']}")[0] == 204
        assert server.api("GET", f"/api/streams/{sid}/clips/{rec_clip['id']}")[0] == 404
        assert server.get(f"{rec_clip['mp4_url']}?token={token}")[0] == 404
    finally:
        server.call(receiver.stop())


def test_clip_of_a_source_with_b_frames(passthrough_server: ServerHandle, tmp_path: Path) -> None:
    """x264 with B-frames, as OBS sends it: the top rung copies the source, so the clip's copied GOPs decode in
    another order than they show. The cut is still exactly the requested frames, each at its own time, the first
    at 0, with no sample squeezed to nothing where re-encoded and copied frames meet."""
    server = passthrough_server
    stream = server.create_stream()
    sid = stream["id"]
    ctx = multiprocessing.get_context("spawn")
    publisher = ctx.Process(target=publish_coded, args=(server.rtmp_url(stream["stream_key"]), 6.0, 2), daemon=True)
    publisher.start()
    publisher.join(90)
    assert publisher.exitcode == 0
    recording, token = fetch_recording(server, sid, tmp_path)
    pts, _, _ = decode_timing(str(tmp_path / "recording.mp4"))
    assert any(b < a for a, b in pairwise(pts)), "the recording should keep the source's B-frames"
    # With B-frames the first frame shows a little after the broadcast's timeline starts (its decode time):
    # the reference is the rung's own playlist read by FFmpeg, each frame at its presentation time.
    rung = recording["mp4_url"].replace("recording.mp4", "180p.m3u8")
    reference = numbered_frames(f"{rung}?token={token}", relative=False)
    assert reference[0][0] > 0 and [n for _, n, _ in reference] == list(range(len(reference)))

    status, clip = server.api("POST", f"/api/streams/{sid}/clips", {
        "title": "Anthem", "start": 1.4, "end": 3.6, "recording_id": recording["id"]})
    assert status == 202, clip
    status, short = server.api("POST", f"/api/streams/{sid}/clips", {
        "title": "A moment", "start": 2.2, "end": 2.5, "recording_id": recording["id"]})  # inside one GOP
    assert status == 202, short
    clip = clip_ready(server, sid, clip["id"])
    short = clip_ready(server, sid, short["id"])
    check_cut(server, clip, token, reference, 1.4, 3.6, tmp_path)

    path = str(tmp_path / f"{clip['id']}.mp4")
    pts, dts, tb = decode_timing(path)
    assert any(b < a for a, b in pairwise(pts)), "the copied middle keeps its B-frames"
    with av.open(path) as container:
        first = next(container.decode(video=0))
        assert first.pts is not None and first.pts * tb == 0 and frame_code.read_frame(first) == \
            next(n for t, n, _ in reference if t >= 1.4 - 1e-6)
    frame = Fraction(1, FPS) / tb
    steps = [b - a for a, b in pairwise(dts)]
    assert all(frame / 2 < step < frame * 3 / 2 for step in steps), steps  # even decode steps, none squeezed
    assert all(d <= p for p, d in zip(pts, dts))

    status, _, mp4 = server.get(f"{short['mp4_url']}?token={token}")
    assert status == 200
    (tmp_path / "short.mp4").write_bytes(mp4)
    wanted = [n for t, n, _ in reference if 2.2 - 1e-6 <= t < 2.5 - 1e-6]
    assert [n for _, n, _ in numbered_frames(str(tmp_path / "short.mp4"))] == wanted and len(wanted) == 9
