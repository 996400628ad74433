"""A transcode worker on another host: a real `mediaserver transcode-worker` process (its own scratch folder) does the
ladder for a real server; the origin keeps the media, falls back to a local worker when the box refuses or dies.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import av
import pytest

from tests.hls_reader import decode_segment, parse_media
from tests.media_source import PublishError, publish, start_publisher
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_broadcast import fetch_text, stream_status, wait_for, wait_recording
from transcode.job import RenditionSpec, TranscodeJob, WorkerEvent
from transcode.remote_client import RemotePool, RemoteUnavailable, RemoteWorkerProcess
from transcode.remote_protocol import read_secret

pytestmark = pytest.mark.media

FPS = 30
SECRET = "remote-worker-test-secret-0123456789"


class WorkerBox:
    """`mediaserver transcode-worker` in its own process group, logging to a file."""

    def __init__(self, root: Path, secret: str = SECRET, max_jobs: int = 2) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.scratch = root / "scratch"
        self.secret_file = root / "secret"
        self.secret_file.write_text(secret + "\n")
        self.log_path = root / "box.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mediaserver.cli", "transcode-worker", "--listen", "127.0.0.1:0",
             "--secret-file", str(self.secret_file), "--scratch", str(self.scratch), "--max-jobs", str(max_jobs)],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent)
        found = wait_for(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log()), 30, "the box to listen")
        self.address = f"127.0.0.1:{found.group(1)}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """The box loses power: it and its worker processes die at once."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        self.kill()
        self._log.close()


@pytest.fixture
def box(tmp_path: Path) -> Iterator[WorkerBox]:
    handle = WorkerBox(tmp_path / "box")
    yield handle
    handle.stop()


def remote_config(data: Path, box: WorkerBox, secret_file: Path | None = None, **overrides: Any) -> Any:
    config = small_config(data, **overrides)
    config.transcode.remote_workers = [box.address]
    config.transcode.remote_secret_file = str(secret_file or box.secret_file)
    config.validate()
    return config


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except FileNotFoundError:
            pass
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except FileNotFoundError:
        return []


def transcode_workers(pid: int) -> list[list[str]]:
    """The `python -m transcode.worker` processes started by this process (its direct children)."""
    return [cmd for cmd in map(cmdline, children(pid)) if cmd[1:3] == ["-m", "transcode.worker"]]


def segment_count(server: ServerHandle, stream_id: str) -> int:
    broadcast = server.server.manager.broadcasts.get(stream_id)
    return 0 if broadcast is None else sum(len(t.entries) for t in broadcast.tracks.values())


def mp4_frames(server: ServerHandle, url: str) -> tuple[int, int]:
    """Video frames of a recording's MP4, decoded with PyAV, and its height."""
    status, _, data = server.get(url)
    assert status == 200
    frames, height = 0, 0
    with av.open(io.BytesIO(data), "r") as container:
        for frame in container.decode(video=0):
            frames += 1
            height = frame.height
    return frames, height


def live_frames(server: ServerHandle, stream_id: str, rung: str) -> tuple[int, int]:
    """Every segment of a live playlist decoded as a player would: (frames, discontinuities)."""
    playlist = parse_media(fetch_text(server, f"/hls/{stream_id}/{rung}.m3u8"))
    assert not playlist.ended and playlist.media_sequence == 0
    inits: dict[str, bytes] = {}
    total = 0
    for uri, _, map_uri in playlist.segments:
        if map_uri not in inits:
            inits[map_uri] = server.get(f"/hls/{stream_id}/{map_uri}")[2]
        status, _, data = server.get(f"/hls/{stream_id}/{uri}")
        assert status == 200
        decoded = decode_segment(inits[map_uri], data)
        assert decoded.height == 180
        total += decoded.frames
    return total, playlist.discontinuities


def test_the_worker_box_does_the_ladder_and_the_origin_keeps_the_media(tmp_path: Path, box: WorkerBox) -> None:
    data = tmp_path / "data"
    server = run_server(remote_config(data, box, reconnect_window=60.0))
    try:
        stream = server.create_stream()
        stream_id = stream["id"]
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=6.0, fps=FPS)
        wait_for(lambda: stream_status(server, stream_id)["status"] == "LIVE", 30, "LIVE")

        # The transcoding runs under the box, none under the server (this test process is the server).
        box_workers = wait_for(lambda: transcode_workers(box.process.pid), 10, "the box's worker process")
        assert len(box_workers) == 1
        job = TranscodeJob.from_json(box_workers[0][3])
        assert job.stream_id == stream_id and job.store_root.startswith(str(box.scratch))
        assert transcode_workers(os.getpid()) == []
        assert f"stream {stream_id}" in box.log()
        wait_for(lambda: segment_count(server, stream_id) >= 4, 20, "segments")
        assert transcode_workers(os.getpid()) == []
        # The box keeps no media: the origin does.
        assert not [p for p in box.scratch.rglob("*") if p.is_file()]

        publisher.join(40)
        assert publisher.error is None
        sent = publisher.frames
        wait_for(lambda: stream_status(server, stream_id)["status"] == "ENDING", 20, "ENDING")
        # The live HLS, read back as a player does: every frame published, within one GOP (1 s).
        frames, discontinuities = live_frames(server, stream_id, "180p")
        assert abs(frames - sent) <= FPS, (frames, sent)
        assert discontinuities == 0

        # The recording index the origin wrote names segments the origin stores, at the size the box reported.
        indexes = list(data.rglob("index-*.jsonl"))
        assert len(indexes) == 1
        events = [json.loads(line) for line in indexes[0].read_bytes().splitlines()]
        segments = [e for e in events if e["event"] == "segment"]
        assert {e["event"] for e in events} == {"rendition", "segment"} and len(segments) >= 8
        for event in events:
            path = data / (event["key"] if event["event"] == "segment" else event["init"])
            assert path.stat().st_size == event["bytes"], event

        status, _ = server.api("POST", f"/api/streams/{stream_id}/end")
        assert status == 200
        body = wait_recording(server, stream_id)
        frames, height = mp4_frames(server, body["recording"]["mp4_url"])
        assert height == 180 and abs(frames - sent) <= FPS, (frames, sent)
        # The job ended: its scratch folder is gone.
        wait_for(lambda: "worker exited with 0" in box.log(), 10, "the box's job to end")
        assert list(box.scratch.iterdir()) == []
    finally:
        server.stop()


def test_a_wrong_secret_is_refused_and_the_stream_goes_live_locally(tmp_path: Path, box: WorkerBox,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not-the-secret-of-this-worker-box\n")
    server = run_server(remote_config(tmp_path / "data", box, secret_file=wrong))
    try:
        stream = server.create_stream()
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=3.0, fps=FPS)
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "LIVE", 30, "LIVE")
        # A local worker did it; the box ran nothing and logged the refusal.
        assert len(transcode_workers(os.getpid())) == 1
        assert transcode_workers(box.process.pid) == []
        assert "authentication failed" in box.log()
        assert any("refused: authentication failed" in r.getMessage() for r in caplog.records)
        publisher.join(30)
        assert publisher.error is None
    finally:
        server.stop()


def test_killing_the_worker_box_mid_broadcast_falls_back_to_a_local_worker(tmp_path: Path, box: WorkerBox) -> None:
    server = run_server(remote_config(tmp_path / "data", box, reconnect_window=30.0))
    try:
        stream = server.create_stream()
        stream_id = stream["id"]
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=10.0, fps=FPS)
        wait_for(lambda: segment_count(server, stream_id) >= 6, 30, "segments from the box")
        assert transcode_workers(os.getpid()) == []
        box.kill()
        # The stream goes on: a local worker takes over, segments keep coming, the stream stays LIVE.
        wait_for(lambda: transcode_workers(os.getpid()), 15, "a local worker")
        before = segment_count(server, stream_id)
        wait_for(lambda: segment_count(server, stream_id) >= before + 4, 20, "segments after the box died")
        assert stream_status(server, stream_id)["status"] == "LIVE"
        publisher.join(40)
        assert publisher.error is None
        sent = publisher.frames

        wait_for(lambda: stream_status(server, stream_id)["status"] == "ENDING", 20, "ENDING")
        frames, discontinuities = live_frames(server, stream_id, "180p")
        assert discontinuities == 1  # the switch to the local worker, as a worker restart
        status, _ = server.api("POST", f"/api/streams/{stream_id}/end")
        assert status == 200
        body = wait_recording(server, stream_id)
        recorded, _ = mp4_frames(server, body["recording"]["mp4_url"])
        # Lost at most what the box held when it died (the segment it was making, 1 s) and the wait for the
        # encoder's next keyframe (one GOP, 1 s): no gap beyond the reconnect.
        assert sent - 2 * FPS - 5 <= recorded <= sent, (recorded, sent)
        assert abs(frames - recorded) <= FPS, (frames, recorded)
    finally:
        server.stop()


def test_the_box_refuses_jobs_beyond_max_jobs_and_unknown_secrets(tmp_path: Path) -> None:
    box = WorkerBox(tmp_path / "box", max_jobs=1)
    try:
        async def scenario() -> tuple[str, str, int]:
            events: list[WorkerEvent] = []

            async def on_event(event: WorkerEvent) -> None:
                events.append(event)

            def job(name: str) -> TranscodeJob:
                return TranscodeJob(name, str(tmp_path / name), f"media/{name}/b",
                                    [RenditionSpec("180p", 180, 300_000)], preset="ultrafast")

            pool = RemotePool([box.address], read_secret(box.secret_file))
            first = RemoteWorkerProcess(job("first"), on_event, box.address, pool)
            await first.start()
            second = RemoteWorkerProcess(job("second"), on_event, box.address, pool)
            with pytest.raises(RemoteUnavailable) as busy:
                await second.start()
            stranger = RemotePool([box.address], b"a-secret-nobody-shares-with-it")
            with pytest.raises(RemoteUnavailable) as refused:
                await RemoteWorkerProcess(job("third"), on_event, box.address, stranger).start()
            code = await first.finish(timeout=30)  # no media: the worker ends cleanly at once
            return str(busy.value), str(refused.value), code

        busy, refused, code = asyncio.run(scenario())
        assert "busy" in busy and "--max-jobs 1" in busy
        assert "authentication failed" in refused
        assert code == 0
        assert "authentication failed" in box.log()
    finally:
        box.stop()


def test_the_box_will_not_start_without_a_secret(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mediaserver.cli", "transcode-worker", "--listen", "127.0.0.1:0",
         "--secret-file", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "shared secret" in result.stderr
    short = tmp_path / "short"
    short.write_text("abc\n")
    result = subprocess.run(
        [sys.executable, "-m", "mediaserver.cli", "transcode-worker", "--listen", "127.0.0.1:0",
         "--secret-file", str(short)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "at least 16 bytes" in result.stderr


def test_without_fallback_an_unreachable_box_refuses_the_publish(tmp_path: Path) -> None:
    box = WorkerBox(tmp_path / "box")
    box.stop()  # its port is closed now
    config = remote_config(tmp_path / "data", box)
    config.transcode.remote_fallback_local = False
    server = run_server(config)
    try:
        stream = server.create_stream()
        with pytest.raises(PublishError):
            publish(server.rtmp_url(stream["stream_key"]), seconds=2.0, fps=FPS)
        assert transcode_workers(os.getpid()) == []
        assert stream_status(server, stream["id"])["status"] not in ("LIVE", "STARTING")
    finally:
        server.stop()


def test_garbage_on_the_box_port_is_logged_and_harms_nothing(tmp_path: Path) -> None:
    box = WorkerBox(tmp_path / "box")
    try:
        host, port = box.address.split(":")
        for payload in (b"garbage\n", b"{" * (3 << 20), b"[1, 2]\n", os.urandom(4096) + b"\n"):
            with socket.create_connection((host, int(port)), timeout=15) as s:
                assert json.loads(s.makefile("rb").readline())["protocol"] == "mediaserver-transcode/1"
                try:
                    s.sendall(payload)
                    assert s.recv(100) == b""  # closed without an answer
                except ConnectionResetError:
                    pass
        wait_for(lambda: box.log().count("WARNING") >= 4, 10, "four warnings")
        assert "not a JSON line" in box.log() and "LimitOverrunError" in box.log()

        async def a_job_still_runs() -> int:
            async def on_event(event: WorkerEvent) -> None:
                pass
            job = TranscodeJob("after", str(tmp_path / "after"), "media/after/b", [RenditionSpec("180p", 180, 300_000)])
            worker = RemoteWorkerProcess(job, on_event, box.address, RemotePool([box.address], read_secret(box.secret_file)))
            await worker.start()
            return await worker.finish(timeout=30)

        assert asyncio.run(a_job_still_runs()) == 0
        assert box.process.poll() is None
    finally:
        box.stop()
