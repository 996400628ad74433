"""What must not lose a service: a crashing transcoder, a server that dies mid-broadcast, a full disk."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.hls_reader import parse_media
from tests.media_source import start_publisher
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_broadcast import fetch_text, stream_status, wait_for, wait_recording

pytestmark = pytest.mark.media


def worker_pid(server: ServerHandle, stream_id: str) -> int | None:
    broadcast = server.server.manager.broadcasts.get(stream_id)
    if broadcast is None or broadcast.connection is None or broadcast.connection.worker is None:
        return None
    return broadcast.connection.worker.pid


def segment_count(server: ServerHandle, stream_id: str) -> int:
    broadcast = server.server.manager.broadcasts.get(stream_id)
    if broadcast is None:
        return 0
    return sum(len(t.entries) for t in broadcast.tracks.values())


def test_worker_crash_restarts_once_then_fails(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=1.0))
    try:
        stream = server.create_stream()
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=20.0)
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "LIVE", 15, "LIVE")
        first = worker_pid(server, stream["id"])
        assert first
        os.kill(first, signal.SIGKILL)
        # A new worker takes over and segments keep coming.
        wait_for(lambda: (worker_pid(server, stream["id"]) or first) != first, 10, "a restarted worker")
        before = segment_count(server, stream["id"])
        wait_for(lambda: segment_count(server, stream["id"]) >= before + 4, 15, "segments after the restart")
        assert stream_status(server, stream["id"])["status"] == "LIVE"
        playlist = parse_media(fetch_text(server, f"/hls/{stream['id']}/180p.m3u8"))
        assert playlist.discontinuities == 1

        # A second crash on the same connection: the stream is FAILED, the encoder disconnected.
        os.kill(worker_pid(server, stream["id"]) or 0, signal.SIGKILL)
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "FAILED", 15, "FAILED")
        publisher.join(30)
        assert publisher.error is not None
        body = stream_status(server, stream["id"])
        assert "transcod" in (body["error"] or "")
        # What was broadcast before the failure is still kept as a recording.
        wait_for(lambda: (stream_status(server, stream["id"])["recording"] or {}).get("mp4_url"), 60, "recording")
        # And the server is fine: a new publish on the same key starts a new broadcast.
        status, _ = server.api("GET", "/api/streams")
        assert status == 200
    finally:
        server.stop()


def test_server_death_mid_broadcast_keeps_the_recording(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = run_server(small_config(data))
    stream = server.create_stream()
    publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=30.0)
    wait_for(lambda: segment_count(server, stream["id"]) >= 8, 30, "a few segments")
    pid = worker_pid(server, stream["id"])
    # The power goes: the loop stops dead, the worker and the encoder vanish; no clean shutdown runs.
    server.loop.call_soon_threadsafe(server.loop.stop)
    server.thread.join(10)
    if pid:
        os.kill(pid, signal.SIGKILL)
    publisher._process.kill()

    restarted = run_server(small_config(data))
    try:
        body = wait_recording(restarted, stream["id"], timeout=60)
        assert body["status"] == "ENDED"
        recording = body["recording"]
        assert recording["duration"] >= 3.0
        base = recording["playback_url"].rsplit("/", 1)[0]
        playlist = parse_media(fetch_text(restarted, f"{base}/180p.m3u8"))
        assert playlist.ended and abs(playlist.duration - recording["duration"]) < 0.01
        status, _, mp4 = restarted.get(recording["mp4_url"])
        assert status == 200 and len(mp4) == recording["size"]
    finally:
        restarted.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    assert os.system(f"mount -t tmpfs -o size=1200k tmpfs {mount}") == 0
    yield mount
    os.system(f"umount -l {mount}")


def test_full_disk_is_reported_and_the_server_survives(small_disk: Path) -> None:
    # 1.2 MB of disk, 0.5 MB of it reserved: media stops after ~0.7 MB, a few seconds in.
    server = run_server(small_config(small_disk / "data", reconnect_window=1.0, reserve_mb=0.5))
    try:
        stream = server.create_stream()
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=14.0)
        wait_for(lambda: "disk full" in (stream_status(server, stream["id"])["error"] or ""), 40, "a disk-full report")
        # The web side keeps answering while the disk is full.
        assert server.get("/")[0] == 200
        assert server.api("GET", "/api/streams")[0] == 200
        publisher.join(40)
        body = wait_for(lambda: (b := stream_status(server, stream["id"]))["status"] == "ENDED" and b, 30, "the end")
        # What fit on the disk is still a playable recording.
        rec = wait_for(lambda: stream_status(server, stream["id"])["recording"], 30, "the recording")
        playlist = parse_media(fetch_text(server, rec["playback_url"].rsplit("/", 1)[0] + "/180p.m3u8"))
        assert playlist.ended and playlist.duration >= 2.0
    finally:
        server.stop()
