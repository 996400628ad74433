"""Recurring services across daylight-saving changes, the scheduler, the calendar feed, and signed
webhooks delivered to a real local receiver — through the running server."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiohttp import web

from mediaserver.config import Config
from mediaserver.webhooks import verify
from tests.media_source import publish
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_broadcast import wait_for

SECRET = "a-long-webhook-secret-123"


def loopback_webhooks(config: Config) -> Config:
    """The receivers here listen on 127.0.0.1, which webhooks may reach only when private networks are allowed."""
    config.webhooks.allow_private_networks = True
    return config


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerHandle]:
    handle = run_server(loopback_webhooks(small_config(tmp_path / "data", reconnect_window=0.5)))
    yield handle
    handle.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """A real HTTP endpoint in its own thread that records (verified) webhook deliveries."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.events: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(SECRET, request.headers.get("Webhook-Signature", ""), body):
            self.bad_signatures += 1
            return web.Response(status=400)
        self.events.append(json.loads(body))
        return web.Response(status=204)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start(self) -> "Receiver":
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def types(self, stream_id: str) -> list[str]:
        return [e["type"] for e in self.events if e["data"].get("stream_id") == stream_id]


def test_weekly_service_keeps_local_time_across_dst(server: ServerHandle) -> None:
    status, series = server.api("POST", "/api/series", {
        "title": "Sunday Worship", "rrule": "FREQ=WEEKLY;BYDAY=SU", "start_time": "10:30", "duration": 90,
        "timezone": "America/Chicago", "dtstart": "2026-01-04",
    })
    assert status == 201 and series["stream_key"]
    sid = series["id"]
    status, march = server.api("GET", f"/api/series/{sid}/occurrences?from=2026-03-01&to=2026-03-16")
    assert status == 200
    assert [o["local_time"] for o in march["occurrences"]] == ["10:30", "10:30", "10:30"]
    assert [o["start"] for o in march["occurrences"]] == [
        "2026-03-01T16:30:00.000Z", "2026-03-08T15:30:00.000Z", "2026-03-15T15:30:00.000Z"]
    _, november = server.api("GET", f"/api/series/{sid}/occurrences?from=2026-10-25&to=2026-11-09")
    assert [o["start"] for o in november["occurrences"]] == [
        "2026-10-25T15:30:00.000Z", "2026-11-01T16:30:00.000Z", "2026-11-08T16:30:00.000Z"]

    # Materialized ahead as streams, each keeping 10:30 local; the series' key publishes to them.
    _, upcoming = server.api("GET", "/api/streams?state=upcoming&limit=100")
    mine = [s for s in upcoming["streams"] if s["series_id"] == sid]
    assert len(mine) >= 7
    first = mine[0]

    # Edit one occurrence and cancel another: the scheduler leaves both alone.
    assert server.api("PATCH", f"/api/streams/{first['id']}", {"title": "Advent Carols"})[0] == 200
    assert server.api("POST", f"/api/streams/{mine[1]['id']}/cancel")[0] == 200
    server.call(server.server.scheduler.tick())
    _, page = server.api("GET", "/api/streams?state=upcoming&limit=100")
    again = [s for s in page["streams"] if s["series_id"] == sid]
    assert again[0]["title"] == "Advent Carols" and mine[1]["id"] not in [s["id"] for s in again]
    assert len(again) == len(mine) - 1

    # Change the whole series from a date on: later services at 09:00, earlier ones unchanged.
    change = mine[3]["scheduled_start"][:10]
    status, new = server.api("PATCH", f"/api/series/{sid}", {"from": change, "start_time": "09:00"})
    assert status == 200 and new["start_time"] == "09:00"
    _, old_occ = server.api("GET", f"/api/series/{sid}/occurrences?from=2026-11-01&to=2027-06-01")
    _, new_occ = server.api("GET", f"/api/series/{new['id']}/occurrences?from=2026-11-01&to=2027-06-01")
    assert all(o["local_start"][:10] < change for o in old_occ["occurrences"])
    assert new_occ["occurrences"][0]["local_start"][:10] >= change
    assert {o["local_time"] for o in new_occ["occurrences"]} == {"09:00"}

    # Bad series input names the field.
    for bad, field in [({"rrule": "FREQ=HOURLY"}, "rrule"), ({"timezone": "Mars/Base"}, "timezone"),
                       ({"start_time": "25:00"}, "start_time")]:
        body = {"title": "x", "rrule": "FREQ=WEEKLY;BYDAY=SU", "start_time": "10:30", "duration": 60,
                "timezone": "America/Chicago", **bad}
        status, err = server.api("POST", "/api/series", body)
        assert status == 400 and field in err["details"], (bad, err)


def test_calendar_feed_is_public_and_valid(server: ServerHandle) -> None:
    server.api("POST", "/api/series", {"title": "Evening Prayer, Vespers", "rrule": "FREQ=DAILY", "start_time": "18:00",
                                        "duration": 30, "timezone": "Europe/London"})
    status, headers, body = server.get("/api/orgs/default/calendar.ics")
    assert status == 200 and headers["Content-Type"].startswith("text/calendar")
    text = body.decode()
    assert text.startswith("BEGIN:VCALENDAR\r\n") and text.rstrip().endswith("END:VCALENDAR")
    assert text.count("BEGIN:VEVENT") >= 7 and "SUMMARY:Evening Prayer\\, Vespers" in text
    assert all(len(line.encode()) <= 75 for line in text.split("\r\n"))
    assert server.get("/api/orgs/nope/calendar.ics")[0] == 404


def test_scheduler_announces_and_cancels(server: ServerHandle) -> None:
    now = time.time()
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
    _, soon = server.api("POST", "/api/streams", {"title": "Soon", "scheduled_start": iso(now + 300)})
    _, late = server.api("POST", "/api/streams", {"title": "Forgotten", "scheduled_start": iso(now - 31 * 60)})
    server.call(server.server.scheduler.tick())
    history = server.server.manager.bus.history
    assert any(e.name == "stream.starting_soon" and e.stream_id == soon["id"] for e in history)
    assert server.api("GET", f"/api/streams/{late['id']}")[1]["status"] == "CANCELLED"
    assert server.api("GET", f"/api/streams/{soon['id']}")[1]["status"] == "SCHEDULED"
    server.call(server.server.scheduler.tick())  # announced once only
    assert sum(e.name == "stream.starting_soon" and e.stream_id == soon["id"] for e in history) == 1


@pytest.mark.media
def test_signed_webhooks_follow_a_broadcast(server: ServerHandle) -> None:
    receiver = Receiver(free_port()).start()
    try:
        status, hook = server.api("POST", "/api/webhooks", {"url": f"http://127.0.0.1:{receiver.port}/hook",
                                                            "secret": SECRET, "events": ["*"]})
        assert status == 201
        _, stream = server.api("POST", "/api/streams", {"title": "Webhook Sunday"})
        publish(server.rtmp_url(stream["stream_key"]), seconds=3.0)
        expected = ["stream.created", "stream.connected", "stream.live", "stream.disconnected", "stream.ended",
                    "recording.ready"]
        wait_for(lambda: receiver.types(stream["id"]) == expected, 40, f"webhooks {expected}")
        assert receiver.bad_signatures == 0
        status, log = server.api("GET", f"/api/webhooks/{hook['id']}/deliveries")
        assert status == 200 and len(log["deliveries"]) >= len(expected)
        assert server.api("POST", "/api/webhooks", {"url": "ftp://x", "secret": SECRET, "events": ["*"]})[0] == 400
    finally:
        receiver.stop()


def test_webhooks_survive_a_down_receiver_and_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    server = run_server(loopback_webhooks(small_config(data)))
    status, _ = server.api("POST", "/api/webhooks", {"url": f"http://127.0.0.1:{port}/hook", "secret": SECRET,
                                                     "events": ["stream.created", "stream.cancelled"]})
    assert status == 201
    ids = []
    for n in range(3):
        _, stream = server.api("POST", "/api/streams", {"title": f"Service {n}"})
        server.api("POST", f"/api/streams/{stream['id']}/cancel")
        ids.append(stream["id"])
    time.sleep(1.0)  # the receiver is down: first attempts fail
    server.stop()
    receiver = Receiver(port).start()
    restarted = run_server(loopback_webhooks(small_config(data)))
    try:
        wanted = [(i, t) for i in ids for t in ("stream.created", "stream.cancelled")]
        wait_for(lambda: [(e["data"]["stream_id"], e["type"]) for e in receiver.events] == wanted, 60,
                 "every event, in order, after the restart")
    finally:
        restarted.stop()
        receiver.stop()
