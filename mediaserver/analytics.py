"""Viewer analytics reports, computed from stored rows: one stream's (peak, unique viewers, watch time,
devices, players, chat and reactions over time) and one organization's over its last N days, plus their
CSV forms. Sans-IO: rows in, JSON-ready dicts and CSV text out.

A viewer is counted once however they watched: the room's sessions and the HLS sessions share keys
(`guest:<viewer id>`, `member:...`), and their watch time is the union of their sessions' spans.
"""
from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any, Iterable

from mediaserver.analytics_store import StreamData
from mediaserver.chat.protocol import STAFF
from mediaserver.hls_viewers import built_in

ORG_PERIODS = (7, 30, 90)
MAX_POINTS = 1440  # a viewers-over-time series longer than this is thinned (the highest count per bucket kept)


def iso(ts: float) -> str:
    """RFC 3339 UTC with milliseconds, as the rest of the API writes times."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return f"{dt.year:04d}-{dt:%m-%dT%H:%M:%S}.{dt.microsecond // 1000:03d}Z"


def minute_of(ts: float) -> float:
    return float(int(ts // 60) * 60)


def concurrent_viewers(room_identities: Iterable[str], hls_keys: Iterable[str]) -> int:
    """Viewers now: everyone in the room (staff left out by the caller) plus HLS viewers not in it."""
    room = set(room_identities)
    return len(room) + len(set(hls_keys) - room)


def counts_as_viewer(row: dict[str, Any]) -> bool:
    """A room session that is a viewer: not the church's staff, not an anonymous event-stream listener."""
    return row.get("role") not in (*STAFF, "listener")


def session_key(row: dict[str, Any]) -> str:
    # Room sessions saved before viewers had a stored identity count once each.
    return str(row.get("viewer") or f"session:{row.get('id')}")


@dataclass
class ViewerTime:
    spans: list[tuple[float, float]] = field(default_factory=list)
    device: str = "unknown"
    browser: str = "unknown"

    def add(self, row: dict[str, Any], prefer: bool) -> None:
        start = float(row["joined_at"])
        end = max(start, float(row.get("left_at") or start))
        self.spans.append((start, end))
        known = row.get("device") not in (None, "", "unknown")
        if known and (prefer or self.device == "unknown"):
            self.device, self.browser = str(row["device"]), str(row.get("browser") or "unknown")

    def merged(self) -> list[tuple[float, float]]:
        """The spans with overlaps joined: a built-in player's room and HLS sessions run side by side."""
        out: list[tuple[float, float]] = []
        for start, end in sorted(self.spans):
            if out and start <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], end))
            else:
                out.append((start, end))
        return out

    def seconds(self) -> float:
        return sum(end - start for start, end in self.merged())


def viewers_of(datas: Iterable[StreamData], open_chat: Iterable[dict[str, Any]] = (),
               open_hls: Iterable[dict[str, Any]] = ()) -> dict[str, ViewerTime]:
    """Each viewer's spans and device, from room sessions (whose device the page's own User-Agent gives,
    preferred) and HLS sessions; `open_*` are sessions still running, as rows ending now."""
    viewers: dict[str, ViewerTime] = {}
    for data in datas:
        for row in data.chat_sessions:
            if counts_as_viewer(row):
                viewers.setdefault(session_key(row), ViewerTime()).add(row, prefer=True)
        for row in data.hls_sessions:
            viewers.setdefault(str(row["viewer"]), ViewerTime()).add(row, prefer=False)
    for row in open_chat:
        if counts_as_viewer(row):
            viewers.setdefault(session_key(row), ViewerTime()).add(row, prefer=True)
    for row in open_hls:
        viewers.setdefault(str(row["viewer"]), ViewerTime()).add(row, prefer=False)
    return viewers


def thin(points: list[tuple[float, int]], max_points: int = MAX_POINTS) -> list[tuple[float, int]]:
    """At most max_points, keeping each bucket's highest count (a peak must not vanish from the chart)."""
    if len(points) <= max_points:
        return points
    first, last = points[0][0], points[-1][0]
    width = (last - first) / max_points or 1.0
    buckets: dict[int, tuple[float, int]] = {}
    for at, count in points:
        index = min(int((at - first) / width), max_points - 1)
        kept = buckets.get(index)
        if kept is None or count > kept[1]:
            buckets[index] = (at, count)
    return [buckets[i] for i in sorted(buckets)]


def _chat_minutes(data: StreamData) -> list[tuple[float, int, int]]:
    """(minute, messages, reactions) for every minute with either."""
    messages = Counter(minute_of(at) for at, _ in data.messages)
    reactions: Counter[float] = Counter()
    for minute, _, count in data.reactions:
        reactions[minute_of(minute)] += count
    return [(m, messages[m], reactions[m]) for m in sorted(set(messages) | set(reactions))]


def stream_report(data: StreamData, *, now: float, current_viewers: int = 0,
                  open_chat: Iterable[dict[str, Any]] = (), open_hls: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """GET /api/streams/{id}/analytics. current_viewers and the open sessions matter while it is on air."""
    stream = data.stream
    live = stream.get("status") in ("LIVE", "ENDING")
    viewers = viewers_of([data], open_chat, open_hls)
    total = sum(v.seconds() for v in viewers.values())
    points = list(data.samples)
    if live:
        points.append((now, current_viewers))
    peak = max((count for _, count in points), default=None)
    if peak is None:
        peak = int(stream.get("peak_viewers") or 0)  # before samples were kept: the room's own peak
    types = Counter(kind for _, kind in data.messages)
    return {
        "stream_id": stream["id"], "title": stream.get("title") or "", "status": stream.get("status") or "",
        "peak_viewers": peak, "current_viewers": current_viewers if live else 0,
        "unique_viewers": len(viewers), "total_watch_seconds": round(total, 3),
        "average_watch_seconds": round(total / len(viewers), 3) if viewers else 0.0,
        "viewers": [{"at": iso(at), "count": count} for at, count in thin(points)],
        "devices": dict(Counter(v.device for v in viewers.values())),
        "browsers": dict(Counter(v.browser for v in viewers.values())),
        "players": {"built_in": sum(1 for key in viewers if built_in(key)),
                    "other": sum(1 for key in viewers if not built_in(key))},
        "chat": [{"at": iso(m), "messages": n, "reactions": r} for m, n, r in _chat_minutes(data)],
        "messages_total": len(data.messages),
        "reactions_total": dict(data.reaction_totals),
        "prayer_requests": types["PRAYER_REQUEST"], "questions": types["QUESTION"],
    }


@dataclass
class _Day:
    viewers: set[str] = field(default_factory=set)
    watch: float = 0.0
    messages: int = 0


def org_period(days: int, now: float, zone: tzinfo) -> tuple[float, list[date]]:
    """(start, the days) of the last `days` days in the organization's zone, today included."""
    today = datetime.fromtimestamp(now, tz=zone).date()
    dates = [today - timedelta(days=days - 1 - i) for i in range(days)]
    start = datetime.combine(dates[0], datetime.min.time(), tzinfo=zone).timestamp()
    return start, dates


def org_report(org_id: str, days: int, *, now: float, zone: tzinfo,
               streams: list[tuple[StreamData, dict[str, Any]]],
               open_sessions: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] | None = None
               ) -> dict[str, Any]:
    """GET /api/orgs/{org}/analytics: `streams` are (data, its stream_report) for the streams that went on
    air in the period; open_sessions: stream id -> (open room rows, open HLS rows) of those on air."""
    start, dates = org_period(days, now, zone)
    open_sessions = open_sessions or {}
    viewers: dict[str, ViewerTime] = {}
    for data, _ in streams:
        chat, hls = open_sessions.get(data.stream["id"], ([], []))
        for key, seen in viewers_of([data], chat, hls).items():
            into = viewers.setdefault(key, ViewerTime())
            into.spans += seen.spans
            if into.device == "unknown":
                into.device, into.browser = seen.device, seen.browser
    total = sum(v.seconds() for v in viewers.values())
    daily = {d: _Day() for d in dates}

    def day(ts: float) -> date:
        return datetime.fromtimestamp(ts, tz=zone).date()

    for key, spans in viewers.items():
        for s, e in spans.merged():
            if (slot := daily.get(day(s))) is not None:
                slot.viewers.add(key)
                slot.watch += e - s
    for data, _ in streams:
        for at, _kind in data.messages:
            if (slot := daily.get(day(at))) is not None:
                slot.messages += 1
    reports = [report for _, report in streams]
    return {
        "org_id": org_id, "days": days, "from": iso(start), "to": iso(now), "streams_count": len(streams),
        "peak_viewers": max((r["peak_viewers"] for r in reports), default=0),
        "unique_viewers": len(viewers), "total_watch_seconds": round(total, 3),
        "average_watch_seconds": round(total / len(viewers), 3) if viewers else 0.0,
        "messages_total": sum(r["messages_total"] for r in reports),
        "prayer_requests": sum(r["prayer_requests"] for r in reports),
        "devices": dict(Counter(v.device for v in viewers.values())),
        "browsers": dict(Counter(v.browser for v in viewers.values())),
        "daily": [{"date": d.isoformat(), "unique_viewers": len(daily[d].viewers),
                   "watch_seconds": round(daily[d].watch, 3), "messages": daily[d].messages} for d in dates],
        "streams": [{"stream_id": data.stream["id"], "title": report["title"],
                     "started_at": iso(float(data.stream["actual_start"])) if data.stream.get("actual_start") else None,
                     "peak_viewers": report["peak_viewers"], "unique_viewers": report["unique_viewers"],
                     "total_watch_seconds": report["total_watch_seconds"], "messages_total": report["messages_total"]}
                    for data, report in streams],
    }


# -- CSV ------------------------------------------------------------------------------------------------------
def _csv(header: list[str], rows: Iterable[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        # A spreadsheet runs a cell starting with = + - @ as a formula: titles come from the church's staff,
        # but quote them anyway.
        writer.writerow([f"'{v}" if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v for v in row])
    return out.getvalue()


def stream_csv(data: StreamData) -> str:
    """One row per minute with samples or chat: time, viewers (the minute's highest sample), messages, reactions."""
    viewers: dict[float, int] = {}
    for at, count in data.samples:
        m = minute_of(at)
        viewers[m] = max(viewers.get(m, 0), count)
    chat = {m: (n, r) for m, n, r in _chat_minutes(data)}
    return _csv(["time", "viewers", "messages", "reactions"],
                ([iso(m), viewers.get(m, 0), *chat.get(m, (0, 0))] for m in sorted(set(viewers) | set(chat))))


def org_csv(report: dict[str, Any]) -> str:
    """One row per stream of the period."""
    return _csv(["stream_id", "title", "started_at", "peak_viewers", "unique_viewers", "total_watch_seconds",
                 "messages_total"],
                ([s["stream_id"], s["title"], s["started_at"] or "", s["peak_viewers"], s["unique_viewers"],
                  s["total_watch_seconds"], s["messages_total"]] for s in report["streams"]))
