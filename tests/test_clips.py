"""Clips, end to end: a real RTMP publish with the frame number drawn into every picture (bench/frame_code.py);
a clip from the live DVR window while on air and one from the recording, both starting and ending off keyframes.
The MP4's decoded frames are exactly the requested run (first and last read from the picture, every frame between
in order), the GOPs between the edges are the source rung's packets byte for byte, the VOD playlist plays in PyAV,
clip.ready reaches a real webhook receiver, and access follows the stream (another church 404, private needs a
token). The reference for "which frame is at t seconds" is the recording MP4 the server made on its own path.
"""
from __future__ import annotations

import multiprocessing
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import av
import numpy as np
import pytest

from bench import frame_code
from tests.media_source import _frame_image
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_webhooks import Receiver

pytestmark = pytest.mark.media

FPS = 30
SECONDS = 9.0
SECRET = "a-long-webhook-secret-123"


def publish_coded(url: str, seconds: float) -> None:
    """Real-time H.264 (1 s GOP) + AAC over RTMP; frame i shows the number i in its top-left corner."""
    container = av.open(url, "w", format="flv", timeout=10)
    video = container.add_stream("libx264", rate=FPS)
    video.width, video.height, video.pix_fmt = 320, 180, "yuv420p"
    video.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(FPS)}
    audio = container.add_stream("aac", rate=48000, layout="stereo")
    samples = 48000 // FPS
    start = time.perf_counter()
    for i in range(int(seconds * FPS)):
        delay = start + i / FPS - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        img = _frame_image(i, 320, 180)
        frame_code.draw(img, i)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, FPS)
        for packet in video.encode(frame):
            container.mux(packet)
        tone = (0.2 * np.sin(2 * np.pi * 440 * (np.arange(samples) + i * samples) / 48000)).astype(np.float32)
        aframe = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        aframe.sample_rate, aframe.pts = 48000, i * samples
        for packet in audio.encode(aframe):
            container.mux(packet)
    for stream in (video, audio):
        for packet in stream.encode(None):
            container.mux(packet)
    container.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerHandle]:
    config = small_config(tmp_path)
    config.webhooks.allow_private_networks = True  # the receiver is on loopback
    handle = run_server(config)
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


def numbered_frames(source: str) -> list[tuple[float, int | None, bool]]:
    """(seconds from the first frame, frame number read from the picture, keyframe) of every video frame."""
    frames = []
    with av.open(source) as container:
        stream = container.streams.video[0]
        first = None
        for packet in container.demux(stream):
            for frame in packet.decode():
                assert frame.pts is not None and stream.time_base is not None
                first = frame.pts if first is None else first
                frames.append((float((frame.pts - first) * stream.time_base), frame_code.read_frame(frame),
                               bool(frame.key_frame)))
    return frames


def video_packets(path: str) -> list[bytes]:
    with av.open(path) as container:
        return [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]


def clip_ready(server: ServerHandle, sid: str, clip_id: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        status, clip = server.api("GET", f"/api/streams/{sid}/clips/{clip_id}")
        assert status == 200 and clip["status"] != "FAILED", clip
        return clip if clip["status"] == "READY" else None

    return wait_for(ready, 90, f"clip {clip_id}")  # type: ignore[no-any-return]


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
    path = tmp_path / f"{clip['id']}.mp4"
    path.write_bytes(mp4)
    got = numbered_frames(str(path))
    assert [n for _, n, _ in got] == numbers  # first, last and every frame between, in order
    assert clip["frames"] == len(numbers)
    assert abs(got[-1][0] - (wanted[-1][0] - wanted[0][0])) < 1e-3  # on the broadcast's clock
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
