"""The in-memory stream rows behind media access never outlive a change: after the API makes a stream private,
changes its password, rotates its key or deletes it, the very next playlist or segment request sees it.

Unit tests on StreamCache over a real Database, then a real server: the stream's media is a recorded broadcast
written into the store (the access decision is the same for live and recorded media, and needs no encoder).
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from mediaserver.db import Database
from mediaserver.stream_cache import MISS, StreamCache
from tests.server_fixture import ServerHandle, run_server, small_config
from web.guard import STREAMS


# -- the cache over a real database ----------------------------------------------------------------------
@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "cache.db")


def test_rows_are_served_from_memory_until_a_write_drops_them(db: Database) -> None:
    cache = StreamCache(db)
    row, _ = db.create_stream("Sunday")
    sid = row["id"]
    first = asyncio.run(cache.get(sid))
    assert first is not None and first["visibility"] == "PUBLIC"
    assert cache.peek(sid) is first and cache.misses == 1  # the second look is a hit, no query
    db.update_stream(sid, visibility="PRIVATE")
    assert cache.peek(sid) is MISS
    assert asyncio.run(cache.get(sid))["visibility"] == "PRIVATE"  # type: ignore[index]
    asyncio.run(cache.get(sid))
    db.update_stream(sid, password_hash="scrypt$new")
    assert asyncio.run(cache.get(sid))["password_hash"] == "scrypt$new"  # type: ignore[index]
    old_key = db.stream(sid)["key_hash"]  # type: ignore[index]
    asyncio.run(cache.get(sid))
    db.rotate_key(sid)
    assert asyncio.run(cache.get(sid))["key_hash"] != old_key  # type: ignore[index]
    asyncio.run(cache.get(sid))
    assert db.transition(sid, ("SCHEDULED",), "STARTING")
    assert asyncio.run(cache.get(sid))["status"] == "STARTING"  # type: ignore[index]
    asyncio.run(cache.get(sid))
    db.delete_stream(sid)
    assert asyncio.run(cache.get(sid)) is None


def test_an_unknown_id_is_held_as_none_until_the_stream_is_created(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = StreamCache(db)
    monkeypatch.setattr("mediaserver.db.new_id", lambda nbytes=8: "later")
    assert asyncio.run(cache.get("later")) is None
    assert cache.peek("later") is None  # held: a flood of made-up ids doesn't reach SQLite
    db.create_stream("Created after the miss")
    assert asyncio.run(cache.get("later")) is not None


def test_a_read_that_raced_a_write_is_not_kept(db: Database) -> None:
    cache = StreamCache(db)
    row, _ = db.create_stream("Sunday")
    sid = row["id"]
    read = db.stream

    def read_then_written(stream_id: str) -> dict[str, Any] | None:
        old = read(stream_id)  # the read sees the row as it was ...
        db.update_stream(stream_id, visibility="PRIVATE")  # ... and a write lands before it is kept
        return old

    db.stream = read_then_written  # type: ignore[method-assign]
    assert asyncio.run(cache.get(sid))["visibility"] == "PUBLIC"  # type: ignore[index]
    db.stream = read  # type: ignore[method-assign]
    assert cache.peek(sid) is MISS
    assert asyncio.run(cache.get(sid))["visibility"] == "PRIVATE"  # type: ignore[index]


def test_entries_expire_and_stay_bounded(db: Database) -> None:
    now = [1000.0]
    cache = StreamCache(db, ttl=1.0, max_entries=10, clock=lambda: now[0])
    row, _ = db.create_stream("Sunday")
    asyncio.run(cache.get(row["id"]))
    now[0] += 0.9
    assert cache.peek(row["id"]) is not MISS
    now[0] += 0.2
    assert cache.peek(row["id"]) is MISS  # a change made outside db.py is seen within ttl

    async def many() -> None:
        for n in range(50):
            await cache.get(f"nosuch{n}")

    asyncio.run(many())
    assert len(cache) <= 10


def test_a_closed_cache_stops_following_writes(db: Database) -> None:
    cache = StreamCache(db)
    cache.close()
    row, _ = db.create_stream("Sunday")
    db.update_stream(row["id"], visibility="PRIVATE")
    assert db._stream_listeners == []


# -- the real server, through the API --------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    handle = run_server(small_config(tmp_path_factory.mktemp("stream-cache") / "data"))
    yield handle
    handle.stop()


def get(server: ServerHandle, path: str, method: str = "GET", body: Any = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.http + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def recorded_stream(server: ServerHandle, **fields: Any) -> tuple[str, list[str]]:
    """A stream with a recorded broadcast in the store; returns its id and its media paths (master playlist,
    media playlist, init segment, media segment)."""
    status, stream = server.api("POST", "/api/streams", {"title": "Sunday Service", **fields})
    assert status == 201, stream
    sid, bid = stream["id"], "20260101T100000-abc"
    root = server.server.config.data_path / "media" / sid / bid
    (root / "360p").mkdir(parents=True)
    (root / "master.m3u8").write_text("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=900000\n360p.m3u8\n")
    (root / "360p.m3u8").write_text('#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MAP:URI="360p/init-0.mp4"\n'
                                    "#EXTINF:1.0,\n360p/seg-0.m4s\n#EXT-X-ENDLIST\n")
    (root / "360p" / "init-0.mp4").write_bytes(b"\0\0\0\x08ftyp")
    (root / "360p" / "seg-0.m4s").write_bytes(b"\0\0\0\x08moof" * 100)
    server.server.db.add_recording(stream_id=sid, broadcast_id=bid, playlist_key=f"media/{sid}/{bid}/master.m3u8",
                                   status="READY", duration=1.0, size=1000)
    return sid, [f"/hls/{sid}/master.m3u8", f"/hls/{sid}/360p.m3u8", f"/hls/{sid}/{bid}/360p/init-0.mp4",
                 f"/hls/{sid}/{bid}/360p/seg-0.m4s"]


def warm(server: ServerHandle, sid: str, paths: list[str]) -> None:
    """Every path answers 200, twice, and the second round came from memory."""
    cache = server.server.runner.app[STREAMS]
    for path in paths:
        assert get(server, path)[0] == 200, path
    hits = cache.hits
    for path in paths:
        assert get(server, path)[0] == 200, path
    assert cache.hits >= hits + len(paths)
    assert cache.peek(sid) is not MISS


@pytest.mark.parametrize("visibility", ["PRIVATE", "MEMBERS_ONLY"])
def test_a_stream_made_private_is_refused_on_the_very_next_request(server: ServerHandle, visibility: str) -> None:
    sid, paths = recorded_stream(server)
    for path in paths:
        warm(server, sid, paths)
        status, body = server.api("PATCH", f"/api/streams/{sid}", {"visibility": visibility})
        assert status == 200, body
        assert get(server, path)[0] == 401, path  # the first request after the change, on each kind of path
        assert all(get(server, p)[0] == 401 for p in paths)
        assert server.api("PATCH", f"/api/streams/{sid}", {"visibility": "PUBLIC"})[0] == 200
        assert get(server, path)[0] == 200, path  # and made public again, the next request plays


def test_a_changed_password_is_in_force_at_once(server: ServerHandle) -> None:
    sid, paths = recorded_stream(server, visibility="PRIVATE", password="first-password")
    assert get(server, f"/watch/{sid}/unlock", "POST", {"password": "first-password"})[0] == 200
    assert get(server, paths[0])[0] == 401
    assert server.api("PATCH", f"/api/streams/{sid}", {"password": "second-password"})[0] == 200
    assert get(server, f"/watch/{sid}/unlock", "POST", {"password": "first-password"})[0] == 403
    status, body = get(server, f"/watch/{sid}/unlock", "POST", {"password": "second-password"})
    assert status == 200
    token = json.loads(body)["token"]
    assert all(get(server, f"{p}?token={token}")[0] == 200 for p in paths)
    assert all(get(server, p)[0] == 401 for p in paths)  # without the token: still private


def test_a_rotated_key_leaves_no_stale_row(server: ServerHandle) -> None:
    sid, paths = recorded_stream(server)
    warm(server, sid, paths)
    status, body = server.api("POST", f"/api/streams/{sid}/rotate-key", {})
    assert status == 200, body
    cache = server.server.runner.app[STREAMS]
    assert cache.peek(sid) is MISS
    assert get(server, paths[0])[0] == 200
    assert cache.peek(sid)["key_hash"] == server.server.db.stream(sid)["key_hash"]  # type: ignore[index]


def test_a_deleted_stream_is_gone_on_the_very_next_request(server: ServerHandle) -> None:
    sid, paths = recorded_stream(server)
    warm(server, sid, paths)
    assert server.api("DELETE", f"/api/streams/{sid}")[0] == 204
    for path in paths:
        status, body = get(server, path)
        assert status == 404, path
    assert get(server, paths[0])[1] == b"stream not found\n"  # refused as unknown, not as an offline stream


def test_no_request_started_after_the_change_is_served(server: ServerHandle) -> None:
    """Viewers hammer the playlist and a segment while the admin makes the stream private."""
    sid, paths = recorded_stream(server)
    warm(server, sid, paths)
    results: list[tuple[float, int]] = []
    lock, stop = threading.Lock(), threading.Event()

    def viewer(path: str) -> None:
        while not stop.is_set():
            started = time.monotonic()
            status, _ = get(server, path)
            with lock:
                results.append((started, status))

    threads = [threading.Thread(target=viewer, args=(p,)) for p in (paths[0], paths[3], paths[1])]
    def count(started_after: float) -> int:
        with lock:
            return sum(1 for started, _ in results if started >= started_after)

    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while count(0.0) < 6 and time.monotonic() < deadline:  # the viewers are playing
        time.sleep(0.01)
    assert server.api("PATCH", f"/api/streams/{sid}", {"visibility": "PRIVATE"})[0] == 200
    changed = time.monotonic()
    while count(changed) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(10)
    before = [s for started, s in results if started < changed]
    after = [s for started, s in results if started >= changed]
    assert after and set(after) == {401}, after
    assert 200 in before
