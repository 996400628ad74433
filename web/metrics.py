"""Prometheus metrics at /metrics, in the text format prometheus_client writes.

Who may read them: with [server] metrics_token set, a request bearing it; without one, only a client on this
machine that came straight to the socket (a loopback peer and no X-Forwarded-For / Forwarded header: behind a
reverse proxy on the same box every public request has a loopback peer, but the proxy adds the header).
Everything is read at scrape time: the database through its own read-only connection (off the event loop),
the live state from the stream manager and the chat hub, HTTP counts from this module's middleware.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mediaserver.analytics_sampler import current_viewers
from web.guard import bearer_token, from_web_worker
from web.viewer_counting import HLS_VIEWERS
from web.keys import CHAT, CONFIG, MANAGER, STORE

HTTP_COUNTS = web.AppKey("http_counts", Counter)  # (method, status class) -> requests; ("bytes", "") -> bytes


@web.middleware
async def count_requests(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Requests by method and status class, and the bytes of bodies whose size is known (playlists, segments
    from memory, files once prepared)."""
    counts = request.app[HTTP_COUNTS]
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        counts[(request.method, f"{exc.status // 100}xx")] += 1
        raise
    counts[(request.method, f"{response.status // 100}xx")] += 1
    counts[("bytes", "")] += response.content_length or 0
    return response


def _database_counts(path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        def count(sql: str) -> list[tuple[Any, ...]]:
            try:
                return list(conn.execute(sql))
            except sqlite3.OperationalError:  # a table not made yet
                return []

        return {
            "streams": count("SELECT status, COUNT(*) FROM streams GROUP BY status"),
            "webhooks_pending": (count("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'PENDING'")
                                 or [(0,)])[0][0],
            "chat_messages": (count("SELECT COUNT(*) FROM chat_messages") or [(0,)])[0][0],
        }
    finally:
        conn.close()


class _Snapshot(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _families(app: web.Application, db: dict[str, Any], disk_free: int) -> list[Metric]:
    streams = GaugeMetricFamily("mediaserver_streams", "Streams by state", labels=["state"])
    for status, count in db["streams"]:
        streams.add_metric([str(status)], count)
    viewers = GaugeMetricFamily("mediaserver_viewers",
                                "Viewers now: the watch page's room (staff left out) and other HLS players",
                                labels=["stream"])
    now = time.time()
    tracker = app[HLS_VIEWERS]
    for stream_id in sorted(set(app[CHAT].rooms) | set(tracker.streams())):
        viewers.add_metric([stream_id], current_viewers(app[CHAT], tracker, stream_id, now))
    bitrate = GaugeMetricFamily("mediaserver_ingest_bitrate_bits_per_second",
                                "What the encoder sends, over the last 5 s", labels=["stream", "track"])
    frame_rate = GaugeMetricFamily("mediaserver_ingest_frame_rate", "Frames per second the encoder sends",
                                   labels=["stream"])
    keyframes = GaugeMetricFamily("mediaserver_ingest_keyframe_interval_seconds",
                                  "The encoder's keyframe interval", labels=["stream"])
    behind = GaugeMetricFamily("mediaserver_ingest_behind_real_time_seconds",
                               "How late the encoder's media arrives, above its best", labels=["stream"])
    speed = GaugeMetricFamily("mediaserver_transcode_speed", "Each encoded rung's transcode speed, × real time "
                              "over the last 5 s: below 1 it falls behind", labels=["stream", "rendition"])
    delay = GaugeMetricFamily("mediaserver_segment_delay_seconds", "How long after its last frame came in the "
                              "rung's latest segment was published", labels=["stream", "rendition"])
    level = GaugeMetricFamily("mediaserver_audio_level_dbfs", "RMS of the source audio over the last second "
                              "(-Inf: digital silence)", labels=["stream"])
    manager = app[MANAGER]
    for stream_id in list(manager.broadcasts):
        health = manager.ingest_health(stream_id)
        if health is None:
            continue
        for track in ("video", "audio"):
            if health[track]["bitrate"] is not None:
                bitrate.add_metric([stream_id, track], health[track]["bitrate"])
        if health["video"]["frame_rate"] is not None:
            frame_rate.add_metric([stream_id], health["video"]["frame_rate"])
        if health["video"]["keyframe_interval"] is not None:
            keyframes.add_metric([stream_id], health["video"]["keyframe_interval"])
        behind.add_metric([stream_id], health["behind_real_time"])
        for rung in health["transcode"]:
            if rung["speed"] is not None:
                speed.add_metric([stream_id, rung["rendition"]], rung["speed"])
            if rung["segment_delay_seconds"] is not None:
                delay.add_metric([stream_id, rung["rendition"]], rung["segment_delay_seconds"])
        audio = health["audio"]
        if audio["level_dbfs"] is not None:
            level.add_metric([stream_id], audio["level_dbfs"])
        elif audio["silent"]:
            level.add_metric([stream_id], float("-inf"))
    counts = app[HTTP_COUNTS]
    requests = CounterMetricFamily("mediaserver_http_requests", "HTTP requests answered",
                                   labels=["method", "status"])
    for (method, status), count in sorted(counts.items()):
        if method != "bytes":
            requests.add_metric([method, status], count)
    sent = CounterMetricFamily("mediaserver_http_response_bytes", "Bytes of HTTP response bodies of known size")
    sent.add_metric([], counts[("bytes", "")])
    chat = CounterMetricFamily("mediaserver_chat_messages", "Chat messages kept")
    chat.add_metric([], db["chat_messages"])
    webhooks = GaugeMetricFamily("mediaserver_webhook_queue_depth", "Webhook deliveries waiting to be sent")
    webhooks.add_metric([], db["webhooks_pending"])
    disk = GaugeMetricFamily("mediaserver_disk_free_bytes", "Free space where the media is stored")
    disk.add_metric([], disk_free)
    return [streams, viewers, bitrate, frame_rate, keyframes, behind, speed, delay, level, requests, sent, chat,
            webhooks, disk]


def _allowed(request: web.Request) -> bool:
    token = request.app[CONFIG].server.metrics_token
    if token:
        given = bearer_token(request) or ""
        return hmac.compare_digest(given.encode(), token.encode())
    if from_web_worker(request):
        # Through one of our web workers: allowed if the worker's client is this machine, with no proxy before it.
        hops = [h.strip() for value in request.headers.getall("X-Forwarded-For", []) for h in value.split(",")]
        if len(hops) != 1 or "Forwarded" in request.headers:
            return False
        try:
            return ipaddress.ip_address(hops[0].split("%", 1)[0]).is_loopback
        except ValueError:
            return False
    if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
        return False
    try:
        return ipaddress.ip_address((request.remote or "").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


async def metrics(request: web.Request) -> web.Response:
    if not _allowed(request):
        raise web.HTTPForbidden(text="metrics are for this machine, or set [server] metrics_token and send it "
                                     "as a bearer token\n")
    app = request.app
    database = app[CONFIG].data_path / "mediaserver.db"
    db = await asyncio.to_thread(_database_counts, database)
    disk_free = (await asyncio.to_thread(shutil.disk_usage, app[STORE].root)).free
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(_families(app, db, disk_free)))
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8",
                                            "Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app[HTTP_COUNTS] = Counter()
    app.router.add_get("/metrics", metrics)
