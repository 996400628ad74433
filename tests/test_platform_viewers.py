"""Analytics of Mux and IVS streams count the platform's viewers (mediaserver/platform_viewers.py).

A real server with both cloud back-ends on local stand-ins: IVS is moto in server mode, whose CloudWatch the test
feeds with `ConcurrentViews` for the channel (put_metric_data, as IVS itself would); Mux is tests/mux_standin.py
plus a Mux Data Monitoring route (GET /data/v1/monitoring/metrics/current-concurrent-viewers/breakdown, body
shaped as in Mux's API reference) whose figure the test sets. Streams are created through the API and go live
by the platforms' signed notifications. The figures the test put in must show up in the stream's analytics
report (peak and current viewers, and platform_viewers) while they are larger than the room's count; the room's
count (real chat clients) wins when it is larger; a failing platform leaves our own count and a log line.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import aiohttp
import boto3
import pytest
from aiohttp import web

from tests.browser import module_browser
from tests.chat_client import Client, connect, guest_session
from tests.ivs_fixture import ACCESS, IvsStandIn, ivs_client, post_event, stream_state
from tests.mux_standin import MuxStandIn
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.waiting import until

MUX_TOKEN_ID, MUX_TOKEN_SECRET = "standin-token-id", "standin-token-secret-77aa"
MUX_WEBHOOK_SECRET = "standin-webhook-secret-5d6e"
SAMPLE_SECONDS = 0.2
MUX_DATA_ENV_KEY = "standinenvkey42"


def run_async(coro: Any) -> Any:
    """Run coro to its end on a loop of its own thread (Playwright's sync API keeps a loop in this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(coro, 60)).result()


class MuxData:
    """Mux Data's Monitoring breakdown on the stand-in: answers the figure set per filter (`name:value`), or
    an error while `failing` is set. Keeps the filters it was asked with."""

    def __init__(self) -> None:
        self.viewers: dict[str, int] = {}
        self.failing = False
        self.asked: list[tuple[str, str | None, list[str]]] = []
        self.beacons: list[str] = []    # mux-embed's beacon bodies, as a collection domain receives them

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/data/v1/monitoring/metrics/{metric}/breakdown", self.breakdown)
        app.router.add_get("/data/v1/monitoring/dimensions", self.dimensions)
        app.router.add_post("/", self.beacon)   # mux-embed posts to the collection domain's root

    async def beacon(self, request: web.Request) -> web.Response:
        self.beacons.append(await request.text())
        return web.json_response({}, headers={"Access-Control-Allow-Origin": "*"})

    @staticmethod
    def refusal(request: web.Request) -> web.Response | None:
        expected = "Basic " + base64.b64encode(f"{MUX_TOKEN_ID}:{MUX_TOKEN_SECRET}".encode()).decode()
        if not hmac.compare_digest(request.headers.get("Authorization", ""), expected):
            return web.json_response({"error": {"type": "unauthorized", "messages": ["Unauthorized request"]}},
                                     status=401)
        return None

    async def dimensions(self, request: web.Request) -> web.Response:
        """"List Monitoring Dimensions" (what `mediaserver backends check` asks)."""
        refused = self.refusal(request)
        if refused is not None:
            return refused
        if self.failing:
            return web.json_response({"error": {"type": "internal_error", "messages": ["Monitoring is down"]}},
                                     status=503)
        return web.json_response({"data": [{"name": "video_series", "display_name": "Video Series"}],
                                  "total_row_count": 1, "timeframe": [int(time.time()), int(time.time())]})

    async def breakdown(self, request: web.Request) -> web.Response:
        refused = self.refusal(request)
        if refused is not None:
            return refused
        filters = request.query.getall("filters[]", [])
        self.asked.append((request.match_info["metric"], request.query.get("dimension"), filters))
        if self.failing:
            return web.json_response({"error": {"type": "internal_error", "messages": ["Monitoring is down"]}},
                                     status=503)
        rows = []
        for item in filters:
            if item in self.viewers:
                value = item.partition(":")[2]
                # The shape of "Get Monitoring Breakdown" in Mux's API reference (one row per value).
                rows.append({"value": value, "display_value": value, "concurrent_viewers": self.viewers[item],
                             "starting_up_viewers": 0, "metric_value": float(self.viewers[item]),
                             "negative_impact": 1})
        now = int(time.time())
        return web.json_response({"data": rows, "total_row_count": len(rows), "timeframe": [now, now]})


class Env:
    def __init__(self, server: ServerHandle, standin: MuxStandIn, data: MuxData, ivs: IvsStandIn) -> None:
        self.server, self.standin, self.data, self.ivs = server, standin, data, ivs
        self.cloudwatch = boto3.client("cloudwatch", endpoint_url=ivs.endpoint, **ACCESS)
        self.ivs_api = ivs_client(ivs.endpoint)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data = MuxData()
    standin = MuxStandIn(MUX_TOKEN_ID, MUX_TOKEN_SECRET, MUX_WEBHOOK_SECRET, extra_routes=data.routes).start()
    ivs = IvsStandIn(tmp_path_factory.mktemp("ivs")).start()
    config = small_config(tmp_path_factory.mktemp("platform-viewers"))
    config.analytics.sample_seconds = SAMPLE_SECONDS
    config.mux.token_id, config.mux.token_secret = MUX_TOKEN_ID, MUX_TOKEN_SECRET
    config.mux.webhook_secret, config.mux.base_url = MUX_WEBHOOK_SECRET, standin.url
    config.ivs = ivs.config()
    config.mux.data_env_key = MUX_DATA_ENV_KEY
    config.mux.data_beacon_domain = f"localhost:{standin.port}"   # mux-embed: http for localhost
    server = run_server(config)
    try:
        yield Env(server, standin, data, ivs)
    finally:
        server.stop()
        standin.stop()
        ivs.stop()


# -- helpers ---------------------------------------------------------------------------------------------
def report(env: Env, stream_id: str) -> dict[str, Any]:
    status, body = env.server.api("GET", f"/api/streams/{stream_id}/analytics")
    assert status == 200, body
    return dict(body)


def wait_report(env: Env, stream_id: str, check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def ok() -> bool:
        found[:] = [report(env, stream_id)]
        return check(found[0])
    try:
        until(ok, 30, what)
    except AssertionError:
        raise AssertionError(f"{what}: last report {found[0] if found else None}") from None
    return found[0]


def mux_live(env: Env, title: str) -> tuple[str, str]:
    """A Mux stream made through our API and live by Mux's signed webhooks: (our id, Mux's live stream id)."""
    status, created = env.server.api("POST", "/api/streams", {"title": title, "backend": "mux"})
    assert status == 201, created
    remote = [sid for sid, s in env.standin.streams.items() if s.data.get("passthrough") == created["id"]]
    assert len(remote) == 1
    env.standin.encoder_connects(remote[0])
    for kind in ("video.live_stream.connected", "video.live_stream.active"):
        status, _ = env.standin.send(f"{env.server.http}/hooks/mux",
                                     env.standin.event(kind, env.standin.streams[remote[0]].data))
        assert status == 200
    assert env.server.api("GET", f"/api/streams/{created['id']}")[1]["status"] == "LIVE"
    return str(created["id"]), remote[0]


def ivs_live(env: Env, title: str) -> tuple[str, str]:
    """An IVS stream made through our API and live by IVS's EventBridge events: (our id, the channel's id)."""
    status, created = env.server.api("POST", "/api/streams", {"title": title, "backend": "ivs"})
    assert status == 201, created
    channels = [c for c in env.ivs_api.list_channels()["channels"] if c["name"] == f"mediaserver-{created['id']}"]
    assert len(channels) == 1
    arn = channels[0]["arn"]
    for name in ("Session Created", "Stream Start"):
        status, answer = post_event(f"{env.server.http}/hooks/ivs", stream_state(arn, name),
                                    env.ivs.config().notification_secret)
        assert status == 200, answer
    assert env.server.api("GET", f"/api/streams/{created['id']}")[1]["status"] == "LIVE"
    return str(created["id"]), arn.rsplit("/", 1)[1]


def put_concurrent_views(env: Env, channel: str, views: int) -> None:
    """What IVS publishes for a channel: AWS/IVS ConcurrentViews, dimension Channel (the ARN's resource id)."""
    env.cloudwatch.put_metric_data(Namespace="AWS/IVS", MetricData=[{
        "MetricName": "ConcurrentViews", "Dimensions": [{"Name": "Channel", "Value": channel}],
        "Value": float(views), "Unit": "Count", "Timestamp": datetime.now(timezone.utc)}])


async def join(env: Env, stream_id: str, viewers: int) -> tuple[list[aiohttp.ClientSession], list[Client]]:
    """viewers distinct browsers in the stream's room (each its own cookie: its own viewer id)."""
    sessions = [guest_session() for _ in range(viewers)]
    clients = [await connect(s, env.server, stream_id) for s in sessions]
    return sessions, clients


async def leave(sessions: list[aiohttp.ClientSession]) -> None:
    for session in sessions:
        await session.close()


def sampled(body: dict[str, Any]) -> list[int]:
    """The stored samples of a live report (its last point is "now", computed at the request)."""
    return [point["count"] for point in body["viewers"][:-1]]


# -- the tests -------------------------------------------------------------------------------------------
def test_ivs_concurrent_views_count_while_larger_than_the_room(env: Env) -> None:
    stream_id, channel = ivs_live(env, "Sunday on IVS")

    async def scenario() -> dict[str, Any]:
        sessions, _clients = await join(env, stream_id, 1)  # one viewer on our watch page
        try:
            await asyncio.to_thread(put_concurrent_views, env, channel, 37)
            return await asyncio.to_thread(
                wait_report, env, stream_id,
                lambda r: r["platform_viewers"] == 37 and 37 in sampled(r), "IVS's 37 viewers sampled")
        finally:
            await leave(sessions)

    body = run_async(scenario())
    assert body["peak_viewers"] == 37 and body["current_viewers"] == 37
    assert set(sampled(body)) <= {0, 1, 37}   # before CloudWatch had a figure: the room's own count

    # Ended: the platform's figure is not asked any more; what was sampled stays.
    assert env.server.api("POST", f"/api/streams/{stream_id}/end")[0] == 200
    ended = report(env, stream_id)
    assert ended["status"] == "ENDED" and ended["platform_viewers"] is None and ended["current_viewers"] == 0
    assert ended["peak_viewers"] == 37


def test_ivs_room_count_wins_when_larger(env: Env) -> None:
    stream_id, channel = ivs_live(env, "Small IVS audience")
    put_concurrent_views(env, channel, 1)

    async def scenario() -> dict[str, Any]:
        sessions, _clients = await join(env, stream_id, 3)
        try:
            return await asyncio.to_thread(
                wait_report, env, stream_id,
                lambda r: r["platform_viewers"] == 1 and 3 in sampled(r), "the room's 3 viewers sampled")
        finally:
            await leave(sessions)

    body = run_async(scenario())
    assert body["current_viewers"] == 3 and body["peak_viewers"] == 3
    assert set(sampled(body)) <= {0, 1, 2, 3}   # never the sum (4): IVS's viewer is one of ours


def test_mux_data_viewers_then_the_room_when_larger(env: Env) -> None:
    stream_id, _live_stream_id = mux_live(env, "Sunday on Mux")
    wanted = f"video_series:{stream_id}"   # the default filter: our stream id, as our player reports it
    env.data.viewers[wanted] = 25

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        first = await asyncio.to_thread(
            wait_report, env, stream_id, lambda r: r["platform_viewers"] == 25 and 25 in sampled(r),
            "Mux Data's 25 viewers sampled")
        sessions, _clients = await join(env, stream_id, 2)
        try:
            env.data.viewers[wanted] = 1
            second = await asyncio.to_thread(
                wait_report, env, stream_id, lambda r: r["platform_viewers"] == 1 and sampled(r)[-1:] == [2],
                "the room's 2 viewers sampled once Mux Data says 1")
        finally:
            await leave(sessions)
        return first, second

    first, second = run_async(scenario())
    assert first["current_viewers"] == 25 and first["peak_viewers"] == 25
    assert second["current_viewers"] == 2 and second["peak_viewers"] == 25
    asked = [a for a in env.data.asked if wanted in a[2]]
    assert asked and all(a[0] == "current-concurrent-viewers" and a[1] == "video_series" for a in asked)


def test_mux_data_failure_keeps_our_count_and_is_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    stream_id, _live_stream_id = mux_live(env, "Mux Data down")
    env.data.viewers[f"video_series:{stream_id}"] = 40
    env.data.failing = True
    try:
        with caplog.at_level(logging.WARNING, logger="mediaserver.platform_viewers"):
            async def scenario() -> dict[str, Any]:
                sessions, _clients = await join(env, stream_id, 2)
                try:
                    return await asyncio.to_thread(
                        wait_report, env, stream_id, lambda r: 2 in sampled(r), "the room's 2 viewers sampled")
                finally:
                    await leave(sessions)

            body = run_async(scenario())
            until(lambda: any(stream_id in r.getMessage() for r in caplog.records), 10, "the failure logged")
    finally:
        env.data.failing = False
    assert body["platform_viewers"] is None and body["current_viewers"] == 2 and body["peak_viewers"] == 2
    lines = [r.getMessage() for r in caplog.records if stream_id in r.getMessage()]
    assert len(lines) == 1, lines    # said once, not every sample
    assert "503" in lines[0] and "Monitoring is down" in lines[0]
    # Mux Data back: its figure counts again.
    wait_report(env, stream_id, lambda r: r["platform_viewers"] == 40 and 40 in sampled(r), "Mux Data back")


# -- the pieces on their own ---------------------------------------------------------------------------------
def test_asks_each_platform_at_most_once_per_interval(env: Env) -> None:
    """PlatformViewers with the real Mux Data client on the stand-in and a clock the test moves."""
    from mediaserver.config import MuxConfig
    from mediaserver.platform_viewers import MuxViewers, PlatformViewers

    mux = MuxConfig(token_id=MUX_TOKEN_ID, token_secret=MUX_TOKEN_SECRET, base_url=env.standin.url,
                    data_filter="live_stream_id")   # Mux's own id of the live stream
    clock = [1000.0]
    platform = PlatformViewers({"mux": MuxViewers(mux)}, 15.0, clock=lambda: clock[0])
    row = {"id": "st_cached", "backend": "mux", "backend_ref": json.dumps({"remote_id": "LiveCached"})}
    env.data.viewers["live_stream_id:LiveCached"] = 9

    def asks() -> int:
        return sum("live_stream_id:LiveCached" in a[2] for a in env.data.asked)

    async def scenario() -> list[int | None]:
        seen = [await platform.poll(row)]
        env.data.viewers["live_stream_id:LiveCached"] = 11
        clock[0] += 14.9
        seen.append(await platform.poll(row))    # within the interval: the figure already known
        clock[0] += 0.1
        seen.append(await platform.poll(row))
        seen.append(await platform.poll({"id": "st_builtin", "backend": "builtin"}))   # not a platform's
        return seen

    assert run_async(scenario()) == [9, 9, 11, None]
    assert asks() == 2 and platform.latest("st_cached") == 11
    platform.forget_except(set())
    assert platform.latest("st_cached") is None


def test_reading_answers() -> None:
    from mediaserver.backends.base import RemoteStream
    from mediaserver.platform_viewers import channel_id, ivs_newest, ivs_query, mux_filter

    arn = "arn:aws:ivs:us-east-1:123456789012:channel/AbCdEf123456"
    assert channel_id(arn) == "AbCdEf123456"
    query = ivs_query(arn, 1_800_000_000.0)["MetricDataQueries"][0]["MetricStat"]
    assert query["Metric"] == {"Namespace": "AWS/IVS", "MetricName": "ConcurrentViews",
                               "Dimensions": [{"Name": "Channel", "Value": "AbCdEf123456"}]}
    t = [datetime(2026, 12, 6, 10, m, tzinfo=timezone.utc) for m in range(3)]
    # Whatever order CloudWatch lists them in, the newest datapoint is "now".
    assert ivs_newest({"MetricDataResults": [{"Timestamps": [t[1], t[2], t[0]], "Values": [5.0, 7.0, 3.0]}]}) == 7
    assert ivs_newest({"MetricDataResults": [{"Timestamps": [], "Values": []}]}) is None
    remote = RemoteStream("mux", "LiveId", "PlayId")
    assert mux_filter("live_stream_id", "st_1", remote) == "live_stream_id:LiveId"
    assert mux_filter("playback_id", "st_1", remote) == "playback_id:PlayId"
    assert mux_filter("video_series", "st_1", remote) == "video_series:st_1"


# -- the player reports to Mux Data -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from module_browser()


def test_mux_watch_page_reports_to_mux_data(env: Env, browser: Any, tmp_path: Path) -> None:
    stream_id, _live_stream_id = mux_live(env, "Watched through Mux Data")
    status, builtin = env.server.api("POST", "/api/streams", {"title": "On our own engine"})
    assert status == 201
    scripts: list[str] = []
    page = browser.new_page()
    page.on("request", lambda r: scripts.append(r.url) if r.resource_type == "script" else None)
    try:
        page.goto(f"{env.server.http}/watch/{builtin['id']}")   # not on Mux: no mux-embed at all
        page.wait_for_load_state("load")
        assert [u for u in scripts if u.endswith("/static/mux_data.js")]
        assert not [u for u in scripts if "mux-embed" in u]
        before = len(env.data.beacons)
        page.goto(f"{env.server.http}/watch/{stream_id}")
        page.wait_for_load_state("load")
        assert [u for u in scripts if u.endswith("/static/vendor/mux-embed.min.js")]
        until(lambda: [b for b in env.data.beacons[before:] if stream_id in b], 40, "a mux-embed beacon")
        page.screenshot(path=str(tmp_path / "mux-watch.png"))
    finally:
        page.close()
    values: set[str] = set()
    for body in env.data.beacons[before:]:
        values |= strings(json.loads(body))
    # Fields of their own (not only inside the page's URL): our stream id as the video, for our environment.
    assert stream_id in values and MUX_DATA_ENV_KEY in values and "mediaserver" in values


def strings(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(strings(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(strings(v) for v in value)) if value else set()
    return set()


def test_backends_check_says_whether_viewer_counts_can_be_read(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """`mediaserver backends check` also asks Mux Data and CloudWatch, so a church learns before Sunday that the
    token can't read viewer counts; turning the counts off ([mux] data_viewers) takes the question away."""
    import argparse
    import dataclasses

    from mediaserver.cli import cmd_backends

    def check(config: Any) -> int:  # in a thread of its own: Playwright's sync API may hold a loop in this one
        with ThreadPoolExecutor(1) as pool:
            return int(pool.submit(cmd_backends, argparse.Namespace(), config).result())

    config = env.server.server.config  # (no signing key here: the check names that too, whatever else)
    check(config)
    out = capsys.readouterr().out
    assert "viewer counts" not in out and "ivs: ok" in out  # CloudWatch and Mux Data both readable
    env.data.failing = True
    try:
        assert check(config) == 1
        assert "viewer counts: Mux Data answered 503: Monitoring is down" in capsys.readouterr().out
        off = dataclasses.replace(config, mux=dataclasses.replace(config.mux, data_viewers=False))
        check(off)
        assert "viewer counts" not in capsys.readouterr().out
    finally:
        env.data.failing = False


def test_the_switches_decide_which_platforms_are_asked(env: Env) -> None:
    """[mux] data_viewers and [ivs] viewers_from_cloudwatch each take their platform out of the question (and the
    sampler then records our own count alone for that platform's streams)."""
    import dataclasses

    from mediaserver.platform_viewers import build_platform_viewers

    config = env.server.server.config
    both = build_platform_viewers(config)
    assert both is not None and sorted(both.sources) == ["ivs", "mux"]
    no_ivs = build_platform_viewers(dataclasses.replace(
        config, ivs=dataclasses.replace(config.ivs, viewers_from_cloudwatch=False)))
    assert no_ivs is not None and sorted(no_ivs.sources) == ["mux"]
    neither = dataclasses.replace(config, ivs=dataclasses.replace(config.ivs, viewers_from_cloudwatch=False),
                                  mux=dataclasses.replace(config.mux, data_viewers=False))
    assert build_platform_viewers(neither) is None
