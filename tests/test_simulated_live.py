"""Simulated live end to end: a real RTMP broadcast (frame numbers drawn into the picture) is recorded,
then re-aired at a time as a live service: LIVE at the air time, playlists growing in real time, the
newest segment's frames those of the moment, chat live, and it ends on its own with webhooks and chat events.
A stored re-air survives a restart (joined in progress when its time passed meanwhile); a series template or a
PATCH arms one, also with another stream's recording of the same organization; a series occurrence airs at its
own start through the real scheduler; a server SIGKILLed mid-air resumes the re-air where the wall clock says;
a recording deleted or missing on disk is refused, or fails the stream clearly at the air time; Chromium plays
one as live."""
from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import os
import shutil
import signal
import time
import urllib.error
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import av
import pytest

from bench import frame_code
from mediaserver.config import Config, Rendition
from mediaserver.server import start_server
from mediaserver.simulated_live import SimulatedLive, aired_count, rebased
from packager.playlist import SegmentEntry
from tests.browser import module_browser
from tests.chat_client import connect, run
from tests.media_source import publish_numbered
from tests.server_fixture import ServerHandle, run_server, small_config
from web.simulated_api import SIMULATED
from tests.test_series_webhooks import SECRET, Receiver, free_port, loopback_webhooks

FPS = 30
SECONDS = 10.0


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
    live_seen = wait_status(server, campus, "LIVE", 40)  # generous: a loaded CI box once took over 15 s
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
    wait_status(server, soon, "LIVE", 40)
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

def serve_in_child(config: Config) -> None:
    """A whole server in this (child) process until it is killed: the crash test SIGKILLs it."""
    async def main() -> None:
        await start_server(config)
        await asyncio.Event().wait()

    asyncio.run(main())


def wait_answering(client: ServerHandle, timeout: float) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            if client.get("/api/openapi.json")[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        assert time.time() < deadline, "the server never answered"
        time.sleep(0.1)


def wait_hooks(receiver: Receiver, stream_id: str, kind: str, count: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while receiver.types(stream_id).count(kind) < count:
        assert time.time() < deadline, (kind, receiver.types(stream_id))
        time.sleep(0.1)


def check_late_joiner(server: ServerHandle, stream_id: str, air_at: float) -> tuple[list[tuple[float, float, str]], int]:
    """The live playlist now: dated from `air_at`, and its newest segment holds the frames of the time elapsed
    since `air_at` by this clock (within one segment), read from the pictures. (listing, newest frame number)"""
    before = time.time()
    status, _, body = server.get(f"/hls/{stream_id}/180p.m3u8")
    after = time.time()
    assert status == 200
    text = body.decode()
    listed = parse_playlist(text)
    assert listed and "#EXT-X-ENDLIST" not in text
    assert abs(listed[0][0] - air_at) < 0.01  # the broadcast's timeline is the air time's
    numbers = frame_numbers(server, stream_id, text, listed[-1][2])
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    end_of_newest = (numbers[-1] + 1) / FPS  # recording seconds at the end of the newest listed segment
    longest = max(d for _, d, _ in listed)
    # Published once complete: it ends no later than now, and less than a segment before now.
    assert before - air_at - longest - 0.1 <= end_of_newest <= after - air_at + 0.05, (end_of_newest, before - air_at)
    return listed, numbers[-1]


@pytest.mark.media
def test_a_series_occurrence_airs_at_its_own_start(env: Env) -> None:
    """No PATCH of the start: the series' rule puts an occurrence a few seconds ahead (on a minute, as
    start_time has minutes), and the running server airs it then, ends it, and keeps the next one armed."""
    server, receiver, rid = env.server, env.receiver, env.recording["id"]
    db = server.server.db
    start = math.ceil((time.time() + 8) / 60) * 60
    at = datetime.fromtimestamp(start, tz=timezone.utc)
    status, series = server.api("POST", "/api/series", {
        "title": "Daily re-air", "rrule": "FREQ=DAILY", "start_time": at.strftime("%H:%M"), "duration": 5,
        "timezone": "UTC", "dtstart": at.date().isoformat(), "simulated_recording_id": rid})
    assert status == 201, series
    rows = db.query_streams("series_id = ?", [series["id"]], "scheduled_start", 100, 0)
    assert [r["scheduled_start"] for r in rows[:2]] == [start, start + 86400]
    first, second = rows[0]["id"], rows[1]["id"]
    assert server.api("GET", f"/api/streams/{first}")[1]["status"] == "SCHEDULED"

    live_seen = wait_status(server, first, "LIVE", start - time.time() + 20)
    assert live_seen >= start
    view = server.api("GET", f"/api/streams/{first}")[1]
    assert datetime.fromisoformat(view["scheduled_start"].replace("Z", "+00:00")).timestamp() == start
    # A viewer joining 3 s in sees the frames of 3 s in.
    time.sleep(max(0.0, start + 3.2 - time.time()))
    _, newest = check_late_joiner(server, first, start)
    assert newest >= 2 * FPS
    wait_hooks(receiver, first, "stream.live", 1, 15)
    live = [e for e in receiver.events if e["type"] == "stream.live" and e["data"].get("stream_id") == first]
    assert live[0]["data"]["simulated"] is True and live[0]["data"]["recording"] == rid

    ended_seen = wait_status(server, first, "ENDED", 30)
    assert ended_seen >= start + env.recording["duration"] - 0.05
    wait_hooks(receiver, first, "stream.ended", 1, 15)
    # The series goes on as a live one: the next occurrence stays upcoming, armed for its own start with the
    # same recording; and a scheduler pass now (as every interval) materializes the day that the aired one let
    # into its window (materialize_weeks ahead), re-airing the same recording, nothing created twice.
    view = server.api("GET", f"/api/streams/{second}")[1]
    assert view["status"] == "SCHEDULED" and view["simulated_recording_id"] == rid
    airing = simulated(server).airing(second)
    assert airing is not None and airing.status == "SCHEDULED" and airing.air_at == start + 86400
    server.call(server.server.scheduler.tick())
    after = db.query_streams("series_id = ?", [series["id"]], "scheduled_start", 100, 0)
    assert [r["id"] for r in after[:len(rows)]] == [r["id"] for r in rows] and len(after) == len(rows) + 1
    created = after[-1]
    assert created["scheduled_start"] == start + 7 * 86400 * server.server.config.schedule.materialize_weeks
    assert created["status"] == "SCHEDULED" and created["simulated_recording_id"] == rid
    deadline = time.time() + 10
    while (armed := simulated(server).airing(created["id"])) is None or armed.air_at != created["scheduled_start"]:
        assert time.time() < deadline, "the new occurrence was not armed"
        time.sleep(0.05)
    types = receiver.types(first)
    assert types.count("stream.live") == 1 and types.count("stream.ended") == 1, types
    assert server.api("DELETE", f"/api/series/{series['id']}")[0] == 204


@pytest.mark.media
def test_a_re_air_resumes_after_the_server_is_killed(env: Env) -> None:
    """A real server process, SIGKILLed 2 s into a re-air; restarted on the same data, the re-air goes on as the
    same broadcast at the wall clock's place, and ends on its own, with stream.ended once."""
    receiver, rid = env.receiver, env.recording["id"]
    sid = env.server.create_stream("Killed mid-air")["id"]
    client = env.server  # stopped below; its address stays the config's ports, where the child listens
    env.server.stop()
    child = multiprocessing.get_context("spawn").Process(target=serve_in_child, args=(env.config,), daemon=True)
    child.start()
    try:
        wait_answering(client, 60)
        status, view = client.api("POST", f"/api/streams/{sid}/simulated-live",
                                  {"recording_id": rid, "air_at": stamp(time.time() + 1.5)})
        assert status == 200, view
        air_at = datetime.fromisoformat(view["scheduled_start"].replace("Z", "+00:00")).timestamp()
        wait_status(client, sid, "LIVE", 20)
        wait_hooks(receiver, sid, "stream.live", 1, 15)
        time.sleep(max(0.0, air_at + 2.0 - time.time()))  # early: a slow restart must still find it on air
        assert client.api("GET", f"/api/streams/{sid}")[1]["status"] == "LIVE"
    finally:
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)  # no clean shutdown: the row stays LIVE, nothing ends it
        child.join(10)
    assert child.exitcode == -signal.SIGKILL
    killed = time.time()

    env.server = server = run_server(env.config)
    deadline = time.time() + 20
    while server.get(f"/hls/{sid}/180p.m3u8")[0] != 200:
        assert time.time() < deadline, "the re-air did not come back"
        time.sleep(0.05)
    listed, newest = check_late_joiner(server, sid, air_at)
    assert newest / FPS >= killed - air_at - 1.1  # not started over from the beginning
    assert [u for _, _, u in listed] == [u for _, _, u in env.recorded_segments[:len(listed)]]
    view = server.api("GET", f"/api/streams/{sid}")[1]
    assert view["status"] == "LIVE"
    assert abs(datetime.fromisoformat(view["actual_start"].replace("Z", "+00:00")).timestamp() - air_at) < 0.01

    ended_seen = wait_status(server, sid, "ENDED", 30)
    assert ended_seen >= air_at + env.recording["duration"] - 0.05
    wait_hooks(receiver, sid, "stream.ended", 1, 15)
    time.sleep(1.0)  # room for a duplicate delivery to show up
    types = receiver.types(sid)
    assert types.count("stream.ended") == 1 and types.count("stream.live") == 1, types
    # The recording it re-aired is untouched, and the re-air made none of its own.
    assert len(server.server.db.recordings_where("stream_id = ?", [sid])) == 0
    _, _, recorded = server.get(f"/hls/{env.sid}/180p.m3u8")
    assert parse_playlist(recorded.decode()) == env.recorded_segments


@pytest.mark.media
def test_a_deleted_or_missing_recording_fails_clearly(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    server, receiver = env.server, env.receiver
    # A second short recording, to be lost: first its files, then its row.
    source = server.create_stream("To be lost")
    publisher = multiprocessing.get_context("spawn").Process(
        target=publish_numbered, args=(server.rtmp_url(source["stream_key"]), 2.0), daemon=True)
    publisher.start()
    publisher.join(60)
    assert publisher.exitcode == 0
    deadline = time.time() + 60
    while not ((lost := server.api("GET", f"/api/streams/{source['id']}")[1]["recording"]) and lost["status"] == "READY"):
        assert time.time() < deadline, "no recording"
        time.sleep(0.2)
    row = server.server.db.recording_by_id(lost["id"])
    assert row is not None
    x, y, z = (server.create_stream(f"Re-air {n}")["id"] for n in "XYZ")
    far = stamp(time.time() + 3600)
    for sid in (x, z):
        assert server.api("POST", f"/api/streams/{sid}/simulated-live", {"recording_id": lost["id"], "air_at": far})[0] == 200

    shutil.rmtree(Path(env.config.data_path) / row["playlist_key"].rsplit("/", 1)[0])
    status, body = server.api("POST", f"/api/streams/{y}/simulated-live", {"recording_id": lost["id"], "air_at": far})
    assert status == 409 and "missing on disk" in body["error"], body
    # Scheduled before the files went: at its air time the stream is FAILED with the reason, not a crash.
    assert server.api("PATCH", f"/api/streams/{x}", {"scheduled_start": stamp(time.time() + 1.0)})[0] == 200
    wait_status(server, x, "FAILED", 20)
    assert "missing on disk" in server.api("GET", f"/api/streams/{x}")[1]["error"]

    assert server.api("DELETE", f"/api/streams/{source['id']}/recordings/{lost['id']}")[0] == 204
    status, body = server.api("POST", f"/api/streams/{y}/simulated-live", {"recording_id": lost["id"], "air_at": far})
    assert status == 404 and "not found" in body["error"], body
    assert server.api("PATCH", f"/api/streams/{z}", {"scheduled_start": stamp(time.time() + 1.0)})[0] == 200
    wait_status(server, z, "FAILED", 20)
    assert "not found" in server.api("GET", f"/api/streams/{z}")[1]["error"]

    for sid in (x, z):
        wait_hooks(receiver, sid, "stream.failed", 1, 15)
        assert "stream.live" not in receiver.types(sid)
        assert any(sid in r.getMessage() and "FAILED" in r.getMessage() for r in caplog.records), sid
    assert any(y in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)
    assert server.api("GET", f"/api/streams/{y}")[1]["status"] == "SCHEDULED"
    # The server carries on: the other recording still re-airs.
    status, _ = server.api("POST", f"/api/streams/{y}/simulated-live",
                           {"recording_id": env.recording["id"], "air_at": stamp(time.time() + 0.5)})
    assert status == 200
    wait_status(server, y, "LIVE", 40)
    assert server.api("POST", f"/api/streams/{y}/end")[0] == 200


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from module_browser()


@pytest.mark.media
def test_chromium_plays_a_re_air_as_live_with_its_chat(env: Env, browser: Any, tmp_path: Path) -> None:
    server = env.server
    sid = server.create_stream("Evening re-air")["id"]
    assert server.api("POST", f"/api/streams/{sid}/simulated-live",
                      {"recording_id": env.recording["id"], "air_at": stamp(time.time() + 0.5)})[0] == 200
    wait_status(server, sid, "LIVE", 40)
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
