"""Viewer analytics: the HLS viewer tracker and the report arithmetic on their own, then a real server with a
real RTMP publish, two watch-page viewers (chat socket + HLS with the viewer cookie) and one other player
(HLS only), all from 127.0.0.1, checked against what the test itself did and timed."""
from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urljoin
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from mediaserver.access import VIEWER_COOKIE, AccessPolicy
from mediaserver.analytics import org_csv, org_report, stream_csv, stream_report, thin
from mediaserver.analytics_store import StreamData
from mediaserver.config import ConfigError
from mediaserver.hls_viewers import HlsViewerTracker, viewer_key
from mediaserver.playback_tokens import PlaybackSigner
from tests.chat_client import connect, guest_session
from tests.media_source import start_publisher
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config
from tests.test_broadcast import stream_status, wait_for

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/126.0.0.0 Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.5 Mobile/15E148 Safari/604.1")
SMART_TV = "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/4.0 TV"


# -- the tracker, sans-IO --------------------------------------------------------------------------------------
def test_hls_session_closes_after_idle_seconds() -> None:
    tracker = HlsViewerTracker(idle_seconds=30)
    for t in (100.0, 105.0, 110.0):
        tracker.seen("s1", "hls:a", CHROME, 1000, now=t)
    assert tracker.active("s1", now=110.0) == 1
    assert tracker.sweep(now=139.0) == []  # 29 s idle: still watching
    assert tracker.active("s1", now=139.0) == 1
    rows = tracker.sweep(now=140.5)
    assert tracker.active("s1", now=140.5) == 0 and len(tracker) == 0
    assert rows == [{"stream_id": "s1", "viewer": "hls:a", "joined_at": 100.0, "left_at": 110.0, "watch_seconds": 10.0,
                     "device": "desktop", "browser": "Chrome", "bytes": 3000, "source": "hls"}]
    # Back after the idle limit, before any sweep: the first session ends where it ended, a second begins.
    tracker.seen("s1", "hls:a", CHROME, now=200.0)
    tracker.seen("s1", "hls:a", CHROME, now=260.0)
    tracker.seen("s1", "hls:a", CHROME, now=270.0)
    assert [(r["joined_at"], r["left_at"]) for r in tracker.sweep(now=400.0)] == [(200.0, 200.0), (260.0, 270.0)]


def test_shared_address_with_different_user_agents_is_different_viewers() -> None:
    church_wifi = "203.0.113.7"
    phone = viewer_key(address=church_wifi, user_agent=IPHONE)
    tv = viewer_key(address=church_wifi, user_agent=SMART_TV)
    assert phone != tv
    assert viewer_key(address=church_wifi, user_agent=IPHONE) == phone  # the same player, request after request
    assert viewer_key(address=church_wifi, user_agent=IPHONE, token="tok-1") != phone  # another playback token
    tracker = HlsViewerTracker(idle_seconds=30)
    for key, ua in ((phone, IPHONE), (tv, SMART_TV), (phone, IPHONE)):
        tracker.seen("s1", key, ua, now=10.0)
    assert tracker.active("s1", now=11.0) == 2
    assert tracker.active("other-stream", now=11.0) == 0


def test_cookie_viewer_matches_the_chat_identity(tmp_path: Path) -> None:
    policy = AccessPolicy(PlaybackSigner.from_data_dir(tmp_path), "admin", lambda token: None)
    cookie, viewer_id = policy.new_viewer_token()
    # The room knows a guest as guest:<viewer id> (web/chat_ws.py Connection.seat); HLS requests with the cookie too.
    key = viewer_key(viewer_id=policy.viewer_id(cookie), address="127.0.0.1", user_agent=CHROME)
    assert key == f"guest:{viewer_id}"
    assert viewer_key(viewer_id=policy.viewer_id(cookie[:-2] + "xx"), address="127.0.0.1", user_agent=CHROME) \
        .startswith("hls:")  # a forged cookie is no identity
    assert viewer_key(member="member:default:Ruth", viewer_id=viewer_id) == "member:default:Ruth"
    # One viewer in the room and on HLS at once, counted once, watch time their union.
    data = StreamData({"id": "s1", "title": "t", "status": "ENDED"},
                      chat_sessions=[{"id": "c1", "viewer": key, "role": "guest", "joined_at": 100.0, "left_at": 160.0,
                                      "device": "desktop", "browser": "Chrome"}],
                      hls_sessions=[{"viewer": key, "joined_at": 102.0, "left_at": 170.0, "device": "desktop",
                                     "browser": "Chrome"}])
    report = stream_report(data, now=1000.0)
    assert report["unique_viewers"] == 1 and report["players"] == {"built_in": 1, "other": 0}
    assert report["total_watch_seconds"] == 70.0


def test_tracker_memory_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    tracker = HlsViewerTracker(idle_seconds=30, max_sessions=2)
    with caplog.at_level(logging.WARNING, "mediaserver.hls_viewers"):
        for i in range(5):
            tracker.seen("s1", f"hls:{i}", now=1.0)
    assert len(tracker) == 2 and tracker.refused == 3
    assert sum("full" in r.getMessage() for r in caplog.records) == 1  # said once, not per request
    assert len(tracker.sweep(now=100.0)) == 2
    tracker.seen("s1", "hls:9", now=101.0)
    assert tracker.active("s1", now=101.0) == 1


# -- reports, sans-IO --------------------------------------------------------------------------------------------
def test_stream_report_counts_viewers_not_staff_and_joins_spans() -> None:
    t0 = 1_800_000_000.0  # on a minute boundary
    data = StreamData(
        {"id": "s1", "title": "Easter", "status": "ENDED", "peak_viewers": 9},
        chat_sessions=[
            {"id": "1", "viewer": "guest:a", "role": "guest", "joined_at": t0, "left_at": t0 + 60, "device": "mobile",
             "browser": "Safari"},
            {"id": "2", "viewer": "guest:a", "role": "guest", "joined_at": t0 + 30, "left_at": t0 + 90,
             "device": "mobile", "browser": "Safari"},  # a second tab, overlapping
            {"id": "3", "viewer": "moderator:default:pastor", "role": "moderator", "joined_at": t0, "left_at": t0 + 500,
             "device": "desktop", "browser": "Firefox"},
            {"id": "4", "viewer": "conn:x", "role": "listener", "joined_at": t0, "left_at": t0 + 500,
             "device": "unknown", "browser": "unknown"},
            {"id": "5", "viewer": None, "role": "guest", "joined_at": t0, "left_at": t0 + 10, "device": "desktop",
             "browser": "Edge"},  # saved before identities were: one viewer
        ],
        hls_sessions=[{"viewer": "hls:tv", "joined_at": t0 + 5, "left_at": t0 + 125, "device": "tv", "browser": "other"}],
        samples=[(t0, 1), (t0 + 15, 3), (t0 + 30, 2), (t0 + 75, 0)],
        messages=[(t0 + 1, "MESSAGE"), (t0 + 2, "PRAYER_REQUEST"), (t0 + 61, "QUESTION")],
        reactions=[(t0, "LIKE", 4), (t0 + 120, "AMEN", 2)],
        reaction_totals={"LIKE": 4, "AMEN": 2})
    report = stream_report(data, now=t0 + 1000)
    assert report["unique_viewers"] == 3
    assert report["total_watch_seconds"] == 90 + 10 + 120
    assert report["average_watch_seconds"] == pytest.approx(220 / 3, abs=0.001)
    assert report["devices"] == {"mobile": 1, "desktop": 1, "tv": 1}
    assert report["browsers"] == {"Safari": 1, "Edge": 1, "other": 1}
    assert report["players"] == {"built_in": 2, "other": 1}
    assert report["peak_viewers"] == 3 and report["current_viewers"] == 0  # from the samples, not the room's 9
    assert [p["count"] for p in report["viewers"]] == [1, 3, 2, 0]
    assert report["chat"] == [{"at": "2027-01-15T08:00:00.000Z", "messages": 2, "reactions": 4},
                              {"at": "2027-01-15T08:01:00.000Z", "messages": 1, "reactions": 0},
                              {"at": "2027-01-15T08:02:00.000Z", "messages": 0, "reactions": 2}]
    assert (report["messages_total"], report["prayer_requests"], report["questions"]) == (3, 1, 1)
    rows = list(csv.reader(io.StringIO(stream_csv(data))))
    assert rows == [["time", "viewers", "messages", "reactions"], ["2027-01-15T08:00:00.000Z", "3", "2", "4"],
                    ["2027-01-15T08:01:00.000Z", "0", "1", "0"], ["2027-01-15T08:02:00.000Z", "0", "0", "2"]]
    # Before samples were kept, the room's own peak stands; while live, "now" ends the series.
    live = stream_report(StreamData({"id": "s2", "status": "LIVE", "peak_viewers": 7}), now=t0, current_viewers=2)
    assert live["peak_viewers"] == 2 and live["viewers"] == [{"at": "2027-01-15T08:00:00.000Z", "count": 2}]
    assert stream_report(StreamData({"id": "s3", "status": "ENDED", "peak_viewers": 7}), now=t0)["peak_viewers"] == 7


def test_thinning_keeps_the_peak() -> None:
    points = [(float(i), 1) for i in range(5000)]
    points[3333] = (3333.0, 40)
    thinned = thin(points, 100)
    assert len(thinned) <= 100 and max(c for _, c in thinned) == 40


def test_org_report_days_follow_the_church_time_zone() -> None:
    chicago = ZoneInfo("America/Chicago")
    now = datetime(2027, 3, 10, 12, 0, tzinfo=chicago).timestamp()
    sunday_late = datetime(2027, 3, 7, 23, 30, tzinfo=chicago).timestamp()  # Monday 05:30 in UTC
    data = StreamData({"id": "s1", "title": "=cmd()", "status": "ENDED", "actual_start": sunday_late},
                      chat_sessions=[{"id": "1", "viewer": "guest:a", "role": "guest", "joined_at": sunday_late,
                                      "left_at": sunday_late + 600, "device": "desktop", "browser": "Chrome"}],
                      hls_sessions=[{"viewer": "hls:b", "joined_at": sunday_late, "left_at": sunday_late + 300,
                                     "device": "tv", "browser": "other"}],
                      messages=[(sunday_late + 5, "PRAYER_REQUEST")])
    report = org_report("default", 7, now=now, zone=chicago, streams=[(data, stream_report(data, now=now))])
    assert [d["date"] for d in report["daily"]] == [f"2027-03-{d:02d}" for d in range(4, 11)]
    sunday = next(d for d in report["daily"] if d["date"] == "2027-03-07")
    assert sunday == {"date": "2027-03-07", "unique_viewers": 2, "watch_seconds": 900.0, "messages": 1}
    assert sum(d["unique_viewers"] for d in report["daily"]) == 2
    assert report["from"] == "2027-03-04T06:00:00.000Z"  # local midnight, CST
    assert (report["unique_viewers"], report["prayer_requests"], report["streams_count"]) == (2, 1, 1)
    rows = list(csv.reader(io.StringIO(org_csv(report))))
    assert rows[1][:2] == ["s1", "'=cmd()"]  # a spreadsheet would run a title starting with "="


def test_analytics_config_is_checked() -> None:
    config = small_config(Path("/nonexistent"))
    config.analytics.sample_seconds = 0
    with pytest.raises(ConfigError, match="analytics.sample_seconds"):
        config.validate()


# -- end to end ----------------------------------------------------------------------------------------------
def _get(server: ServerHandle, path: str, token: str | None = ADMIN_TOKEN) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(server.http + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Player:
    """Fetches the live playlists and newest segment over and over, as a player does; records its span."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base
        self.first: float | None = None
        self.last = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _fetch(self, url: str) -> str:
        async with self.session.get(url) as response:
            assert response.status == 200, (url, response.status)
            body = await response.read()
        return body.decode(errors="replace")

    async def _run(self) -> None:
        while True:
            started = time.time()
            master = await self._fetch(self.base + "master.m3u8")
            variant = urljoin(self.base, [ln for ln in master.splitlines() if ln and not ln.startswith("#")][-1])
            media = await self._fetch(variant)
            segment = [ln for ln in media.splitlines() if ln and not ln.startswith("#")][-1]
            await self._fetch(urljoin(variant, segment))
            self.first = started if self.first is None else self.first
            self.last = time.time()
            await asyncio.sleep(0.3)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> float:
        """Stop; the seconds from its first request to the end of its last."""
        assert self._task is not None
        self._task.cancel()
        failed = (await asyncio.gather(self._task, return_exceptions=True))[0]
        if isinstance(failed, Exception):
            raise failed
        assert self.first is not None
        return self.last - self.first


@pytest.mark.media
def test_analytics_of_a_live_service(tmp_path: Path) -> None:
    config = small_config(tmp_path / "data")
    config.analytics.sample_seconds = 0.5
    config.analytics.hls_idle_seconds = 3.0
    server = run_server(config)
    try:
        stream = server.create_stream("Analytics Service")
        sid = stream["id"]
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=60, gop_seconds=1.0)
        wait_for(lambda: stream_status(server, sid)["status"] == "LIVE", 30, "LIVE")

        def report() -> dict[str, Any]:
            status, body = server.api("GET", f"/api/streams/{sid}/analytics")
            assert status == 200, body
            return body

        # A sample of the empty stream first (the series starts at 0); "now" is the last point while live.
        wait_for(lambda: len(report()["viewers"]) >= 2, 20, "a first sample")
        measured = asyncio.run(asyncio.wait_for(_watch(server, sid, report), 120))
        # Everyone gone: the room at once, the HLS players after the idle limit.
        wait_for(lambda: (r := report())["current_viewers"] == 0 and _stored(r)[-1] == 0, 20,
                 "everyone to leave, sampled")
        assert server.api("POST", f"/api/streams/{sid}/end")[0] == 200
        publisher.kill()
        wait_for(lambda: stream_status(server, sid)["status"] == "ENDED", 30, "ENDED")
        # Reactions reach the store every half second; wait for the last of them.
        final = wait_for(lambda: (r := report())["reactions_total"] == {"LIKE": 3, "PRAY": 2} and r, 10, "reactions")

        assert final["unique_viewers"] == 3
        assert final["players"] == {"built_in": 2, "other": 1}
        assert final["devices"] == {"desktop": 1, "mobile": 1, "tv": 1}
        assert final["browsers"]["Chrome"] == 1 and final["browsers"]["Safari"] == 1
        assert min(measured.values()) > 1.0, measured  # long enough for the comparison to mean something
        assert final["total_watch_seconds"] == pytest.approx(sum(measured.values()), abs=1.0)
        assert final["average_watch_seconds"] == pytest.approx(sum(measured.values()) / 3, abs=0.35)
        # The samples rise from nobody through one viewer to three, and fall through two back to nobody.
        counts = [p["count"] for p in final["viewers"]]
        steps = [c for i, c in enumerate(counts) if i == 0 or c != counts[i - 1]]
        top = steps.index(3)
        assert steps[0] == 0 and 1 in steps[:top] and steps[:top + 1] == sorted(steps[:top + 1]), counts
        assert steps[-1] == 0 and 2 in steps[top:] and steps[top:] == sorted(steps[top:], reverse=True), counts
        assert final["peak_viewers"] == 3
        assert final["messages_total"] == 4 and final["prayer_requests"] == 1 and final["questions"] == 1
        assert sum(m["messages"] for m in final["chat"]) == 4 and sum(m["reactions"] for m in final["chat"]) == 5
        assert final["status"] == "ENDED" and final["current_viewers"] == 0

        # The CSV says the same, minute by minute.
        status, headers, body = _get(server, f"/api/streams/{sid}/analytics?format=csv")
        assert status == 200 and headers["Content-Type"] == "text/csv; charset=utf-8"
        assert headers["Content-Disposition"].startswith("attachment;") and ".csv" in headers["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(body.decode("utf-8"))))
        chat = {m["at"]: m for m in final["chat"]}
        peaks: dict[str, int] = {}
        for point in final["viewers"]:
            minute = point["at"][:17] + "00.000Z"
            peaks[minute] = max(peaks.get(minute, 0), point["count"])
        assert {r["time"] for r in rows} == set(chat) | set(peaks)
        for r in rows:
            assert int(r["viewers"]) == peaks.get(r["time"], 0)
            assert int(r["messages"]) == chat.get(r["time"], {}).get("messages", 0)
            assert int(r["reactions"]) == chat.get(r["time"], {}).get("reactions", 0)

        # The organization's week includes the service; today's row has the viewers and messages.
        status, org = server.api("GET", "/api/orgs/default/analytics?days=7")
        assert status == 200, org
        assert org["days"] == 7 and len(org["daily"]) == 7 and org["streams_count"] >= 1
        row = next(s for s in org["streams"] if s["stream_id"] == sid)
        assert (row["unique_viewers"], row["peak_viewers"], row["messages_total"]) == (3, final["peak_viewers"], 4)
        assert row["total_watch_seconds"] == final["total_watch_seconds"]
        today = datetime.now(timezone.utc).date().isoformat()
        assert org["daily"][-1]["date"] == today and org["daily"][-1]["unique_viewers"] == 3
        assert org["daily"][-1]["messages"] == 4
        status, headers, body = _get(server, "/api/orgs/default/analytics?days=7&format=csv")
        assert status == 200 and headers["Content-Type"].startswith("text/csv")
        org_rows = list(csv.DictReader(io.StringIO(body.decode())))
        assert {r["stream_id"]: int(r["unique_viewers"]) for r in org_rows}[sid] == 3
        assert server.api("GET", "/api/orgs/default/analytics?days=8")[0] == 400
        assert server.api("GET", f"/api/streams/{sid}/analytics?format=xml")[0] == 400

        # Access: the church's own token reads it; another organization's gets 404; no token, 401.
        db = server.server.db
        own = db.create_token("default", "analytics")[1]
        other_org = db.create_org("elsewhere", "Elsewhere")
        other = db.create_token(other_org["id"], "analytics")[1]
        assert server.api("GET", f"/api/streams/{sid}/analytics", token=own)[0] == 200
        assert server.api("GET", f"/api/streams/{sid}/analytics", token=other)[0] == 404
        assert server.api("GET", "/api/orgs/default/analytics", token=other)[0] == 404
        assert _get(server, f"/api/streams/{sid}/analytics?format=csv", token=other)[0] == 404
        assert server.api("GET", f"/api/streams/{sid}/analytics", token=None)[0] == 401
        assert server.api("GET", "/api/orgs/default/analytics", token=None)[0] == 401
    finally:
        server.stop()


def _stored(report: dict[str, Any]) -> list[int]:
    """The sampled counts (while on air the last point is "now", not a sample)."""
    points = report["viewers"][:-1] if report["status"] in ("LIVE", "ENDING") else report["viewers"]
    return [p["count"] for p in points]


async def _watch(server: ServerHandle, sid: str, report: Any) -> dict[str, float]:
    """Chrome on a desktop joins, then an iPhone and a smart TV; the TV leaves first, then the browsers.
    Returns each one's watch time as the test measured it."""
    base = f"{server.http}/hls/{sid}/"
    measured: dict[str, float] = {}
    loop = asyncio.get_running_loop()

    async def until(check: Any, what: str) -> None:
        await loop.run_in_executor(None, wait_for, check, 30, what)

    def sampled(count: int, times: int = 1) -> Any:
        return lambda: _stored(report()).count(count) >= times

    async with guest_session() as chrome, guest_session() as iphone, \
            aiohttp.ClientSession(headers={"User-Agent": SMART_TV}) as tv:
        chrome.headers["User-Agent"] = CHROME
        iphone.headers["User-Agent"] = IPHONE
        watchers = []
        for name, session in (("chrome", chrome), ("iphone", iphone)):
            began = time.time()
            async with session.get(f"{server.http}/watch/{sid}") as page:  # the page gives the viewer cookie
                assert page.status == 200
            assert any(c.key == VIEWER_COOKIE for c in session.cookie_jar)
            client = await connect(session, server, sid)
            player = Player(session, base)
            player.start()
            watchers.append((name, began, client, player))
            if name == "chrome":  # the count rises one viewer at a time
                await until(sampled(1), "a sample of one viewer")
        other = Player(tv, base)
        other.start()
        await until(lambda: report()["current_viewers"] == 3, "3 viewers")
        chrome_client, iphone_client = watchers[0][2], watchers[1][2]
        for text, kind in (("Good morning!", "MESSAGE"), ("Praying for the Smith family", "PRAYER_REQUEST"),
                           ("Happy to be here", "MESSAGE")):
            await chrome_client.send("chat:message", {"text": text, "type": kind})
            await chrome_client.expect("chat:message", lambda d, t=text: d["text"] == t)
        await iphone_client.send("chat:message", {"text": "Where is the bulletin?", "type": "QUESTION"})
        await iphone_client.expect("chat:message", lambda d: d["type"] == "QUESTION")
        for client, kind, n in ((chrome_client, "LIKE", 3), (iphone_client, "PRAY", 2)):
            for _ in range(n):
                await client.send("stream:reaction", {"type": kind})
        # All three watch for a few samples; the TV stops first (gone once idle), then the browsers leave.
        await until(sampled(3, times=4), "samples of all three")
        measured["tv"] = await other.stop()
        await until(sampled(2), "a sample of two after the TV left")
        for name, began, client, player in reversed(watchers):
            await player.stop()
            await client.ws.close()
            measured[name] = time.time() - began
    return measured
