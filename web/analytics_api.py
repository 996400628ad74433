"""Viewer analytics under /api: one stream's report and an organization's over 7, 30 or 90 days, as JSON or
(?format=csv) a spreadsheet download. Thin: access via the stream's or organization's owner check (another
organization's token gets 404), rows read off the loop, reports computed by mediaserver/analytics.py."""
from __future__ import annotations

import asyncio
import time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from mediaserver.analytics import ORG_PERIODS, org_csv, org_period, org_report, stream_csv, stream_report
from mediaserver.analytics_sampler import ON_AIR, current_viewers, room_rows
from mediaserver.analytics_store import AnalyticsStore, StreamData
from mediaserver.hls_viewers import HlsViewerTracker
from mediaserver.platform_viewers import PlatformViewers
from web.api import find_stream
from web.auth import error
from web.keys import CHAT
from web.orgs_api import find_org
from web.viewer_counting import HLS_VIEWERS
from web.viewer_counting import install as install_counting

ANALYTICS = web.AppKey("analytics_store", AnalyticsStore)
PLATFORM_VIEWERS = web.AppKey("platform_viewers", PlatformViewers)
FORMATS = ("json", "csv")


def install(app: web.Application, store: AnalyticsStore, tracker: HlsViewerTracker,
            platform: PlatformViewers | None = None) -> None:
    """Before the app starts: where the reports read, the tracker web/media.py feeds, and (Mux/IVS streams)
    the platforms' own viewer counts the sampler keeps."""
    app[ANALYTICS] = store
    if platform is not None:
        app[PLATFORM_VIEWERS] = platform
    install_counting(app, tracker)


def _format(request: web.Request) -> str | None:
    value = request.query.get("format", "json")
    return value if value in FORMATS else None


def _csv(text: str, filename: str) -> web.Response:
    response = web.Response(text=text, content_type="text/csv", charset="utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


async def _fresh(request: web.Request) -> AnalyticsStore:
    """The store, with what is queued (sessions that just ended, samples) written first."""
    store = request.app[ANALYTICS]
    await asyncio.gather(store.flush(), request.app[CHAT].store.flush())
    return store


def _live(request: web.Request, stream: dict[str, Any], now: float) -> dict[str, Any]:
    """A stream on air: its viewers now, and the sessions still open (counted as ending now)."""
    tracker, chat = request.app[HLS_VIEWERS], request.app[CHAT]
    room = chat.rooms.get(stream["id"])
    live = stream.get("status") in ON_AIR
    own = current_viewers(chat, tracker, stream["id"], now) if live else 0
    return {"current_viewers": max(own, _platform_figure(request, stream) or 0),
            "open_chat": room_rows(room, now), "open_hls": tracker.open_rows(stream["id"])}


def _platform_figure(request: web.Request, stream: dict[str, Any]) -> int | None:
    """A cloud stream on air: its platform's latest viewer count, as the sampler last asked (None: unknown)."""
    platform = request.app.get(PLATFORM_VIEWERS)
    if platform is None or stream.get("status") not in ON_AIR or not platform.covers(stream):
        return None
    return platform.latest(stream["id"])


async def stream_analytics(request: web.Request) -> web.Response:
    stream = await find_stream(request)
    fmt = _format(request)
    if fmt is None:
        return error(400, "format must be json or csv", {"format": "must be json or csv"})
    store = await _fresh(request)
    data = await asyncio.to_thread(store.stream_data, stream)
    if fmt == "csv":
        return _csv(stream_csv(data), f"analytics-{stream['id']}.csv")
    now = time.time()
    report = stream_report(data, now=now, **_live(request, stream, now))
    report["platform_viewers"] = _platform_figure(request, stream)
    return web.json_response(report)


async def org_analytics(request: web.Request) -> web.Response:
    org = await find_org(request)
    days_text = request.query.get("days", "30")
    fmt = _format(request)
    if days_text not in {str(d) for d in ORG_PERIODS}:
        return error(400, "days must be 7, 30 or 90", {"days": "must be 7, 30 or 90"})
    if fmt is None:
        return error(400, "format must be json or csv", {"format": "must be json or csv"})
    days, now = int(days_text), time.time()
    try:
        zone: Any = ZoneInfo(org.get("timezone") or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    since, _ = org_period(days, now, zone)
    store = await _fresh(request)

    def load() -> list[StreamData]:
        return [store.stream_data(row) for row in store.org_streams(org["id"], since, now)]

    datas = await asyncio.to_thread(load)
    streams, open_sessions = [], {}
    for data in datas:
        live = _live(request, data.stream, now)
        open_sessions[data.stream["id"]] = (live["open_chat"], live["open_hls"])
        streams.append((data, stream_report(data, now=now, **live)))
    report = org_report(org["id"], days, now=now, zone=zone, streams=streams, open_sessions=open_sessions)
    if fmt == "csv":
        return _csv(org_csv(report), f"analytics-{org['id']}-{days}d.csv")
    return web.json_response(report)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/streams/{stream_id}/analytics", stream_analytics)
    app.router.add_get("/api/orgs/{org}/analytics", org_analytics)
