"""End to end: a real RTMP publish through the running server, read back as a player would."""
from __future__ import annotations

import io
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

import av
import pytest

from tests.hls_reader import decode_segment, parse_master, parse_media
from tests.media_source import PublishError, publish, start_publisher
from tests.server_fixture import ServerHandle, run_server, small_config

pytestmark = pytest.mark.media


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stream_status(server: ServerHandle, stream_id: str) -> dict[str, Any]:
    status, body = server.api("GET", f"/api/streams/{stream_id}")
    assert status == 200, body
    return body


def fetch_text(server: ServerHandle, path: str) -> str:
    status, headers, body = server.get(path)
    assert status == 200, (path, status, body[:200])
    return body.decode()


def wait_recording(server: ServerHandle, stream_id: str, timeout: float = 60) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        body = stream_status(server, stream_id)
        rec = body["recording"]
        return body if rec and rec["mp4_url"] and body["status"] == "ENDED" else None

    return wait_for(ready, timeout, "the recording")


@pytest.fixture
def server(tmp_path: Path) -> Any:
    handle = run_server(small_config(tmp_path / "data", dvr_window=3.0))
    yield handle
    handle.stop()


def garbage_client(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(os.urandom(5000))
        try:
            s.recv(100)
        except OSError:
            pass


def stalled_handshake_client(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"\x03" + os.urandom(700))  # C0 and half of C1, then silence
    return s


def test_first_broadcast_end_to_end(server: ServerHandle) -> None:
    stream = server.create_stream("Sunday Service")
    assert stream["rtmp_url"].endswith("/live") and stream["stream_key"]
    stream_id = stream["id"]
    assert stream_status(server, stream_id)["status"] == "SCHEDULED"

    seconds = 7.0
    publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=seconds, width=320, height=180, fps=30)
    # Garbage and a stalled handshake on the same port must not disturb the broadcast.
    garbage_client(server.rtmp_port)
    stalled = stalled_handshake_client(server.rtmp_port)

    wait_for(lambda: stream_status(server, stream_id)["status"] == "LIVE", 20, "LIVE")
    master = parse_master(fetch_text(server, f"/hls/{stream_id}/master.m3u8"))
    resolutions = {attrs["RESOLUTION"]: uri for attrs, uri in master}
    # The 360p rung is taller than the 320x180 source and is dropped.
    assert set(resolutions) == {"320x180", "256x144"}
    for attrs, _ in master:
        assert int(attrs["BANDWIDTH"]) >= int(attrs["AVERAGE-BANDWIDTH"]) > 0
        assert attrs["CODECS"].startswith("avc1.") and "mp4a.40.2" in attrs["CODECS"]
        assert abs(float(attrs["FRAME-RATE"]) - 30) < 0.5

    # The live playlist slides with the 3 s DVR window while the broadcast goes on.
    def slid() -> bool:
        playlist = parse_media(fetch_text(server, f"/hls/{stream_id}/180p.m3u8"))
        assert not playlist.ended
        assert len(playlist.program_date_times) == len(playlist.segments)
        return playlist.media_sequence > 0 and playlist.duration <= 3.0 + 1e-6

    wait_for(slid, 20, "the DVR window to slide")
    status, headers, _ = server.get(f"/hls/{stream_id}/180p.m3u8")
    assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    assert "max-age=1" in headers["Cache-Control"] and headers["Access-Control-Allow-Origin"] == "*"

    publisher.join(30)
    assert publisher.error is None
    stalled.close()
    body = wait_recording(server, stream_id)
    recording = body["recording"]
    assert body["actual_start"] and body["actual_end"] and body["actual_end"] > body["actual_start"]

    # VOD playlists cover the whole broadcast, within one segment.
    vod_master = parse_master(fetch_text(server, recording["playback_url"]))
    assert {attrs["RESOLUTION"] for attrs, _ in vod_master} == {"320x180", "256x144"}
    base = recording["playback_url"].rsplit("/", 1)[0]
    per_rendition: dict[str, list[Any]] = {}
    for attrs, uri in vod_master:
        playlist = parse_media(fetch_text(server, f"{base}/{uri}"))
        assert playlist.ended and playlist.vod and playlist.media_sequence == 0
        assert abs(playlist.duration - seconds) <= 1.0 + 0.1, playlist.duration
        width, height = map(int, attrs["RESOLUTION"].split("x"))
        init = server.get(f"{base}/{playlist.segments[0][2]}")[2]
        decoded = []
        for uri_, duration, _map in playlist.segments:
            status, headers, data = server.get(f"{base}/{uri_}")
            assert status == 200 and headers["Content-Type"] == "video/iso.segment"
            assert "immutable" in headers["Cache-Control"]
            seg = decode_segment(init, data)
            assert (seg.width, seg.height) == (width, height)
            assert seg.first_is_keyframe
            assert seg.audio_frames > 0
            decoded.append((round(seg.first_pts, 3), duration))
        per_rendition[attrs["RESOLUTION"]] = decoded
    # Segment boundaries match across renditions: same start times, same durations.
    first, second = per_rendition.values()
    assert first == second

    # The stream's own playback URL now serves the recording.
    vod_via_stream = parse_media(fetch_text(server, f"/hls/{stream_id}/180p.m3u8"))
    assert vod_via_stream.ended

    # The MP4 plays to the end.
    status, headers, mp4 = server.get(recording["mp4_url"])
    assert status == 200 and headers["Content-Type"] == "video/mp4"
    assert recording["size"] == len(mp4)
    with av.open(io.BytesIO(mp4)) as container:
        assert container.streams.video[0].height == 180
        frames = sum(1 for _ in container.decode(video=0))
        last_time = container.duration / 1_000_000 if container.duration else 0
    assert abs(frames - publisher.frames) <= 3, (frames, publisher.frames)
    assert abs(last_time - seconds) <= 1.0 and abs(recording["duration"] - seconds) <= 1.0
    # moov before mdat: the download starts playing before it has finished.
    assert mp4.find(b"moov") < mp4.find(b"mdat")


def test_reconnect_inside_window_continues_the_broadcast(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=8.0))
    try:
        stream = server.create_stream()
        url = server.rtmp_url(stream["stream_key"])
        frames = publish(url, seconds=3.0)
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "ENDING", 10, "ENDING")
        frames += publish(url, seconds=3.0)
        body = wait_recording(server, stream["id"])
        status, listing = server.api("GET", "/api/streams")
        assert status == 200
        base = body["recording"]["playback_url"].rsplit("/", 1)[0]
        playlist = parse_media(fetch_text(server, f"{base}/180p.m3u8"))
        assert playlist.discontinuities == 1
        assert abs(playlist.duration - 6.0) <= 1.2, playlist.duration
        assert len({m for _, _, m in playlist.segments}) == 2  # one init segment per connection
        broadcasts = os.listdir(tmp_path / "data" / "media" / stream["id"])
        assert len(broadcasts) == 1
    finally:
        server.stop()


def test_wrong_key_is_refused_and_server_goes_on(server: ServerHandle) -> None:
    with pytest.raises(PublishError):
        publish(server.rtmp_url("sk_not-a-real-key"), seconds=1.0)
    stream = server.create_stream()
    publish(server.rtmp_url(stream["stream_key"]), seconds=1.5)
    wait_for(lambda: stream_status(server, stream["id"])["actual_start"], 10, "the good stream to go live")


def test_second_publisher_on_a_live_key_is_refused(server: ServerHandle) -> None:
    stream = server.create_stream()
    url = server.rtmp_url(stream["stream_key"])
    first = start_publisher(url, seconds=4.0)
    wait_for(lambda: stream_status(server, stream["id"])["status"] == "LIVE", 15, "LIVE")
    with pytest.raises(PublishError):
        publish(url, seconds=1.0)
    first.join(20)
    assert first.error is None


def test_admin_end_skips_the_reconnect_window(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=120.0))
    try:
        stream = server.create_stream()
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=30.0)
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "LIVE", 15, "LIVE")
        time.sleep(1.5)
        status, body = server.api("POST", f"/api/streams/{stream['id']}/end")
        assert status == 200 and body["status"] == "ENDED"
        publisher.join(15)  # the server closed the encoder's connection
        assert not publisher.is_alive()
        body = wait_recording(server, stream["id"])
        assert body["recording"]["duration"] > 1.0
        status, body = server.api("POST", f"/api/streams/{stream['id']}/end")
        assert status == 409
    finally:
        server.stop()


def test_passthrough_rung_copies_the_source(tmp_path: Path) -> None:
    from mediaserver.config import Rendition

    ladder = [Rendition("source", 1080, 2_000_000, passthrough=True), Rendition("144p", 144, 200_000)]
    server = run_server(small_config(tmp_path / "data", renditions=ladder, reconnect_window=0.0))
    try:
        stream = server.create_stream()
        # A 2 s source GOP: the passthrough rung can only cut at the source's keyframes.
        publish(server.rtmp_url(stream["stream_key"]), seconds=6.0, gop_seconds=2.0)
        body = wait_recording(server, stream["id"])
        base = body["recording"]["playback_url"].rsplit("/", 1)[0]
        variants = dict((attrs["RESOLUTION"], uri) for attrs, uri in parse_master(fetch_text(server, body["recording"]["playback_url"])))
        assert set(variants) == {"320x180", "256x144"}
        starts = []
        for resolution, uri in variants.items():
            playlist = parse_media(fetch_text(server, f"{base}/{uri}"))
            assert abs(playlist.duration - 6.0) <= 1.0
            init = server.get(f"{base}/{playlist.segments[0][2]}")[2]
            segs = [decode_segment(init, server.get(f"{base}/{u}")[2]) for u, _, _ in playlist.segments]
            assert all(s.first_is_keyframe for s in segs)
            assert all(1.9 <= d <= 2.1 for _, d, _ in playlist.segments[:-1])
            starts.append([round(s.first_pts, 3) for s in segs])
        # The encoded rung puts its keyframes where the source has them.
        assert starts[0] == starts[1]
        # The source rung is the publisher's own bitstream: x264 signs its settings (the publisher's
        # 2 s GOP is keyint=60) into the first keyframe; our encoder's rung carries its own.
        first_segments = {}
        for resolution, uri in variants.items():
            playlist = parse_media(fetch_text(server, f"{base}/{uri}"))
            first_segments[resolution] = server.get(f"{base}/{playlist.segments[0][0]}")[2]
        assert b"keyint=60 " in first_segments["320x180"]
        assert b"keyint=60 " not in first_segments["256x144"]
    finally:
        server.stop()
