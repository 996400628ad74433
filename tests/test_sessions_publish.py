"""Publishing edge cases of the session lifecycle, with real RTMP publishes: a publish right after a clean
stop, two publishes with one key at once, and a reconnect at another picture size."""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

from ingest.rtmp import PublishRefused
from mediaserver.sessions import PublishConnection
from tests.hls_reader import parse_master, parse_media
from tests.media_source import publish, publish_here, start_publisher
from tests.server_fixture import run_server, small_config
from tests.test_broadcast import fetch_text, stream_status, wait_for

pytestmark = pytest.mark.media


def _publish_on_signal(go: Any, url: str, seconds: float, result: Any) -> None:
    """A publisher process that is started (PyAV imported) ahead and publishes the moment `go` is set."""
    go.wait(60)
    try:
        result.put((publish_here(url, seconds=seconds, width=640, height=360), None))
    except BaseException as exc:
        result.put((0, f"{type(exc).__name__}: {exc}"))


def test_publish_right_after_a_clean_stop_continues_the_broadcast(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=8.0))
    try:
        stream = server.create_stream()
        url = server.rtmp_url(stream["stream_key"])
        ctx = multiprocessing.get_context("spawn")
        go, result = ctx.Event(), ctx.Queue()
        second = ctx.Process(target=_publish_on_signal, args=(go, url, 3.0, result), daemon=True)
        second.start()  # ready before the first ends, so it connects ~0.1 s after the clean stop
        # Sent faster than real time: the worker still has frames to transcode when the encoder stops.
        frames = publish(url, seconds=6.0, width=640, height=360, realtime=False)
        time.sleep(0.1)  # the old connection's worker is still flushing its last segments
        go.set()
        more, error = result.get(timeout=40)
        second.join(10)
        assert error is None, error  # was "this stream already has a live encoder"
        assert frames + more == 270
        def recorded() -> dict[str, Any] | None:
            body = stream_status(server, stream["id"])
            return body if body["status"] == "ENDED" and body["recording"] else None

        body = wait_for(recorded, 40, "the recording")
        base = body["recording"]["playback_url"].rsplit("/", 1)[0]
        playlist = parse_media(fetch_text(server, f"{base}/180p.m3u8"))
        assert playlist.discontinuities == 1  # one broadcast, continued after the quick reconnect
        assert abs(playlist.duration - 9.0) <= 1.2, playlist.duration
        assert len(os.listdir(tmp_path / "data" / "media" / stream["id"])) == 1
    finally:
        server.stop()


def test_two_publishes_at_once_start_one_broadcast(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=0.0))
    try:
        stream = server.create_stream()
        manager = server.server.manager

        async def both() -> list[Any]:
            return await asyncio.gather(
                manager.authorize("live", stream["stream_key"], "127.0.0.1:1"),
                manager.authorize("live", stream["stream_key"], "127.0.0.1:2"),
                return_exceptions=True)

        results = server.call(both())
        won = [r for r in results if isinstance(r, PublishConnection)]
        refused = [r for r in results if isinstance(r, PublishRefused)]
        assert len(won) == 1 and len(refused) == 1, results
        assert str(refused[0]) == "this stream already has a live encoder"
        rows = list(server.server.db.db.query("select id from broadcasts where stream_id = ?", [stream["id"]]))
        assert len(rows) == 1 and manager.broadcasts[stream["id"]].connection is won[0]
        server.call(won[0].on_close("test over"))
    finally:
        server.stop()


def test_reconnect_at_another_size_lists_only_the_rungs_made_now(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=10.0))
    try:
        stream = server.create_stream()
        sid = stream["id"]
        url = server.rtmp_url(stream["stream_key"])
        publish(url, seconds=3.0)  # 320x180: rungs 180p (320x180) and 144p (256x144)
        wait_for(lambda: stream_status(server, sid)["status"] == "ENDING", 10, "ENDING")
        smaller = start_publisher(url, seconds=6.0, width=160, height=90)  # every rung is taller: 144p at 160x90

        def master_now() -> list[tuple[str, str]] | None:
            status, _, text = server.get(f"/hls/{sid}/master.m3u8")
            if status != 200:
                return None
            variants = [(attrs["RESOLUTION"], uri) for attrs, uri in parse_master(text.decode())]
            return variants if variants == [("160x90", "144p.m3u8")] else None

        # Before: 180p stayed listed (stalled) and 144p claimed 160x90 for the whole broadcast.
        wait_for(master_now, 20, "the master playlist to list only 144p at 160x90")
        smaller.join(30)
        assert smaller.error is None
        status, body = server.api("POST", f"/api/streams/{sid}/end")
        assert status in (200, 409)

        def saved() -> dict[str, Any] | None:
            b = stream_status(server, sid)
            return b if b["status"] == "ENDED" and b["recording"] and b["recording"]["error"] else None

        body = wait_for(saved, 40, "the recording")
        recording = body["recording"]
        assert recording["mp4_url"] is None and "picture size changed" in recording["error"]
        vod = parse_master(fetch_text(server, recording["playback_url"]))
        # The recording lists the rung made throughout, at the largest size it had.
        assert [(a["RESOLUTION"], uri) for a, uri in vod] == [("256x144", "144p.m3u8")]
        base = recording["playback_url"].rsplit("/", 1)[0]
        full = parse_media(fetch_text(server, f"{base}/144p.m3u8"))
        assert full.discontinuities == 1 and abs(full.duration - 9.0) <= 1.5, full.duration
        # The rung made in the first connection only keeps its own playlist (documented), ended.
        part = parse_media(fetch_text(server, f"{base}/180p.m3u8"))
        assert part.ended and abs(part.duration - 3.0) <= 1.2
        assert abs(recording["duration"] - full.duration) < 0.01
    finally:
        server.stop()


def test_publish_while_the_last_connection_is_closing_gets_in(tmp_path: Path) -> None:
    """The same as a clean stop, made deterministic: the new publish arrives while the old connection's
    worker is still exiting (the real timing above depends on the machine)."""
    server = run_server(small_config(tmp_path / "data", reconnect_window=5.0))
    try:
        stream = server.create_stream()
        manager = server.server.manager

        async def stop_then_publish() -> tuple[PublishConnection, PublishConnection]:
            first = await manager.authorize("live", stream["stream_key"], "127.0.0.1:1")
            closing = asyncio.get_running_loop().create_task(first.on_close("encoder stopped"))
            await asyncio.sleep(0)  # on_close is running: its worker is exiting
            assert not first.closed.is_set()
            second = await manager.authorize("live", stream["stream_key"], "127.0.0.1:2")
            await closing
            return first, second

        _first, second = server.call(stop_then_publish())  # was PublishRefused("this stream already has a live encoder")
        assert manager.broadcasts[stream["id"]].connection is second
        server.call(second.on_close("test over"))
    finally:
        server.stop()
