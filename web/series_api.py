"""Recurring services under /api/series, and each organization's public iCalendar feed.

Occurrences are computed from the RRULE in the series' own time zone (see mediaserver/schedule.py) and
materialized as streams by the scheduler; editing or cancelling one occurrence is done on its stream.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from mediaserver.backends.base import BackendError, Unsupported
from mediaserver.db import DEFAULT_ORG, hash_key, new_stream_key
from mediaserver.ical import CalendarEvent, render_calendar
from mediaserver.schedule import ScheduleError, SeriesRule, occurrences, split_series
from mediaserver.scheduler import materialize, rule_of
from mediaserver.simulated_live import airable_problem
from web.api import iso, parse_date, parse_time, public_base, read_json, stream_fields
from web.auth import SCOPE, error, manages
from web.backends_api import (backend_name, capability_problems, create_series_remote, delete_remote, is_cloud,
                              platform_error, remote_of)
from web.guard import ACCESS
from web.keys import CONFIG, DB, MANAGER, STORE

log = logging.getLogger(__name__)

# The calendar gives a service without an end one hour, but never past the last instant a datetime holds.
LAST_INSTANT = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()
TEMPLATE_FIELDS = ("description", "visibility", "chat_enabled", "reactions_enabled", "giving_enabled",
                   "dvr_enabled", "low_latency", "recording_enabled", "auto_publish", "simulated_recording_id")


def series_view(row: dict[str, Any]) -> dict[str, Any]:
    view = {
        "id": row["id"], "org_id": row["org_id"], "title": row["title"], "rrule": row["rrule"],
        "start_time": row["start_time"], "duration": row["duration"], "timezone": row["timezone"],
        "dtstart": row["dtstart_date"], "until": row["until_date"],
        "template": json.loads(row["template"] or "{}"), "created_at": iso(row["created_at"]),
        "backend": backend_name(row),
    }
    if is_cloud(row) and row.get("backend_ref"):  # where the encoder sends, for every occurrence (key apart)
        ingest = remote_of(row).extra.get("ingest") or {}
        view.update(rtmp_url=ingest.get("rtmp_url"), rtmps_url=ingest.get("rtmps_url"), srt_url=ingest.get("srt_url"))
    return view


def checked_rule(fields: dict[str, Any]) -> SeriesRule | dict[str, str]:
    try:
        rule = SeriesRule(
            rrule=fields["rrule"], start_time=fields["start_time"], duration_minutes=int(fields["duration"]),
            timezone=fields["timezone"], dtstart_date=parse_date(fields["dtstart_date"]),
        )
        rule.validate()
    except ScheduleError as exc:
        field = str(exc).split(":", 1)[0].strip()
        return {field if field in ("rrule", "start_time", "timezone", "duration") else "rrule": str(exc)}
    except ValueError as exc:
        return {"dtstart": str(exc)}
    return rule


async def find_series(request: web.Request) -> dict[str, Any]:
    row = await asyncio.to_thread(request.app[DB].series, request.match_info["series_id"])
    if row is None or not manages(request, row["org_id"]):
        raise web.HTTPNotFound(text=json.dumps({"error": "series not found", "details": None}), content_type="application/json")
    return row


async def create_series(request: web.Request) -> web.Response:
    body = await read_json(request, "SeriesCreate")
    today = datetime.now(ZoneInfo(body["timezone"])).date() if _known_zone(body["timezone"]) else date.today()
    fields = {"rrule": body["rrule"], "start_time": body["start_time"], "duration": body["duration"],
              "timezone": body["timezone"], "dtstart_date": body.get("dtstart", today.isoformat())}
    rule = checked_rule(fields)
    if isinstance(rule, dict):
        return error(400, "invalid fields", rule)
    template_body = {k: v for k, v in body.items() if k in TEMPLATE_FIELDS}
    template, problems = stream_fields(template_body)
    if template.get("simulated_recording_id") is not None:  # each occurrence re-airs it (mediaserver/simulated_live.py)
        problem = await asyncio.to_thread(airable_problem, request.app[DB], request.app[STORE],
                                          request[SCOPE] or DEFAULT_ORG, template["simulated_recording_id"])
        if problem:
            problems["simulated_recording_id"] = problem
    db = request.app[DB]
    org_id = request[SCOPE] or DEFAULT_ORG
    org = await asyncio.to_thread(db.org, org_id)
    # The video platform: the body's, else the organization's default (settings.backend), else our own engine.
    backend = body.get("backend") or json.loads((org or {}).get("settings") or "{}").get("backend") or "builtin"
    if backend != "builtin":
        problems.update(capability_problems(request, backend, template))
    if problems:
        return error(400, "invalid fields", problems)
    key = new_stream_key()
    row = await asyncio.to_thread(
        db.create_series, org_id=org_id, title=body["title"].strip(), key_hash=hash_key(key),
        template=json.dumps(template), backend=backend, backend_ref=None, **fields,
    )
    extras: dict[str, Any] = {"stream_key": key}
    if backend != "builtin":  # one live stream at the platform, shared by every occurrence (as the key is)
        try:
            ref, extras = await create_series_remote(request, backend, row["id"], row["title"], template)
        except BackendError as exc:  # nothing half-made stays behind
            await asyncio.to_thread(db.delete_series, row["id"])
            return platform_error(exc)
        await asyncio.to_thread(db.update_series, row["id"], backend_ref=ref)
        row["backend_ref"] = ref
    await materialize_now(request, row)
    return web.json_response({**series_view(row), **extras}, status=201)


async def materialize_now(request: web.Request, row: dict[str, Any]) -> None:
    """The series' coming services, made now and announced as the scheduler announces the ones it makes
    (stream.created: webhooks out, and the organization's default simulcast targets)."""
    created = await asyncio.to_thread(materialize, request.app[DB], row, time.time(),
                                      request.app[CONFIG].schedule.materialize_weeks)
    for stream_id in created:
        request.app[MANAGER].bus_publish("stream.created", stream_id, {"series_id": row["id"]})


def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
        return True
    except (KeyError, ValueError):
        return False


async def list_series(request: web.Request) -> web.Response:
    rows = await asyncio.to_thread(request.app[DB].all_series, request[SCOPE])
    return web.json_response({"series": [series_view(r) for r in rows]})


async def get_series(request: web.Request) -> web.Response:
    return web.json_response(series_view(await find_series(request)))


async def series_occurrences(request: web.Request) -> web.Response:
    row = await find_series(request)
    problems: dict[str, str] = {}
    bounds: dict[str, datetime] = {}
    for name in ("from", "to"):
        value = request.query.get(name)
        if value is None:
            problems[name] = "required (a date like 2026-03-01 or an ISO 8601 date-time)"
            continue
        try:
            if len(value) == 10:
                local = datetime.combine(parse_date(value), datetime.min.time(), tzinfo=ZoneInfo(row["timezone"]))
                bounds[name] = local.astimezone(timezone.utc)
            else:
                bounds[name] = datetime.fromtimestamp(parse_time(value), tz=timezone.utc)
        except ValueError as exc:
            problems[name] = str(exc)
    if not problems and bounds["to"] - bounds["from"] > timedelta(days=3 * 366):
        problems["to"] = "at most three years after from"
    if problems:
        return error(400, "invalid query", problems)
    occ = occurrences(rule_of(row), bounds["from"], bounds["to"])
    if row["until_date"]:
        until = date.fromisoformat(row["until_date"])
        occ = [o for o in occ if o.local_start.date() < until]
    streams = await asyncio.to_thread(
        request.app[DB].query_streams, "series_id = ?", [row["id"]], "occurrence_index", 100_000, 0)
    by_index = {s["occurrence_index"]: s for s in streams}
    items = []
    for o in occ:
        stream = by_index.get(o.index)
        items.append({
            "index": o.index, "start": iso(o.start.timestamp()), "end": iso(o.end.timestamp()),
            "local_start": o.local_start.isoformat(), "local_time": o.local_start.strftime("%H:%M"),
            "stream_id": stream["id"] if stream else None, "status": stream["status"] if stream else "UNSCHEDULED",
            "title": stream["title"] if stream else row["title"],
        })
    return web.json_response({"series_id": row["id"], "timezone": row["timezone"], "occurrences": items})


async def update_series(request: web.Request) -> web.Response:
    """Change the series from a date on: the old rule ends the day before, a new series carries on."""
    row = await find_series(request)
    body = await read_json(request, "SeriesUpdate")
    try:
        from_date = parse_date(body["from"])
    except ValueError as exc:
        return error(400, "invalid fields", {"from": str(exc)})
    if from_date < date.fromisoformat(row["dtstart_date"]):
        return error(400, "invalid fields", {"from": "before the series begins"})
    rrule_text, dtstart = body.get("rrule"), from_date
    if rrule_text is None:
        # The same rule carried on: split it, so every-other-week rules and COUNTs keep their rhythm.
        try:
            _old, carried = split_series(rule_of(row), from_date)
        except ScheduleError as exc:
            return error(400, "invalid fields", {"from": str(exc)})
        rrule_text, dtstart = carried.rrule, carried.dtstart_date
    fields = {"rrule": rrule_text, "start_time": body.get("start_time", row["start_time"]),
              "duration": body.get("duration", row["duration"]), "timezone": body.get("timezone", row["timezone"]),
              "dtstart_date": dtstart.isoformat()}
    rule = checked_rule(fields)
    if isinstance(rule, dict):
        return error(400, "invalid fields", rule)
    db = request.app[DB]
    await asyncio.to_thread(db.update_series, row["id"], until_date=from_date.isoformat())
    await asyncio.to_thread(_drop_future_occurrences, db, row, from_date)
    new = await asyncio.to_thread(
        db.create_series, org_id=row["org_id"], title=body.get("title", row["title"]), key_hash=row["key_hash"],
        template=row["template"], backend=row.get("backend"), backend_ref=row.get("backend_ref"), **fields,
    )
    await materialize_now(request, new)
    return web.json_response(series_view(new))


def _drop_future_occurrences(db: Any, row: dict[str, Any], from_date: date) -> int:
    """Scheduled occurrences on or after from_date (local) are removed; ones that ran are history."""
    zone = ZoneInfo(row["timezone"])
    cutoff = datetime.combine(from_date, datetime.min.time(), tzinfo=zone).timestamp()
    rows = db.query_streams("series_id = ? and status = 'SCHEDULED' and scheduled_start >= ?", [row["id"], cutoff],
                            "scheduled_start", 100_000, 0)
    for stream in rows:
        db.delete_stream(stream["id"])
    return len(rows)


async def delete_series(request: web.Request) -> web.Response:
    """Cancel the series from a date on (?from=YYYY-MM-DD), or entirely (its past streams stay)."""
    row = await find_series(request)
    db = request.app[DB]
    value = request.query.get("from")
    try:
        # An empty ?from= is a mistake, not "from the beginning": only a missing one means that.
        from_date = date.fromisoformat(row["dtstart_date"]) if value is None else parse_date(value)
    except ValueError as exc:
        return error(400, "invalid query", {"from": str(exc)})
    await asyncio.to_thread(db.update_series, row["id"], until_date=from_date.isoformat())
    await asyncio.to_thread(_drop_future_occurrences, db, row, from_date)
    if is_cloud(row):  # the platform's live stream goes once nothing is left to air on it
        try:
            await delete_remote(request, {**row, "until_date": from_date.isoformat()})
        except (BackendError, Unsupported) as exc:
            log.warning("series %s: its %s live stream was not removed: %s", row["id"], backend_name(row), exc)
    return web.Response(status=204)


async def calendar_feed(request: web.Request) -> web.Response:
    """Public: the organization's upcoming PUBLIC services, for Google/Apple Calendar subscriptions."""
    db = request.app[DB]
    org = await asyncio.to_thread(db.org, request.match_info["org"])
    if org is None:
        return error(404, "organization not found", {"org": request.match_info["org"]})
    now = time.time()
    rows = await asyncio.to_thread(
        db.query_streams,
        "org_id = ? and scheduled_start is not null and scheduled_start > ? "
        "and status in ('SCHEDULED', 'STARTING', 'LIVE', 'CANCELLED')",
        [org["id"], now - 86400], "scheduled_start", 1000, 0,
    )
    base = public_base(request)
    events = [
        CalendarEvent(
            uid=f"{r['id']}@mediaserver", title=r["title"],
            start=datetime.fromtimestamp(r["scheduled_start"], tz=timezone.utc),
            end=datetime.fromtimestamp(r["scheduled_end"] or min(r["scheduled_start"] + 3600, LAST_INSTANT), tz=timezone.utc),
            description=(r["description"] or "") + f"\nWatch: {base}/watch/{r['id']}",
            url=f"{base}/watch/{r['id']}", status="CANCELLED" if r["status"] == "CANCELLED" else "CONFIRMED",
        )
        for r in rows
        if request.app[ACCESS].listed(r)  # public services only: the access policy decides what is listed
    ]
    text = render_calendar(org["name"], events)
    response = web.Response(text=text, content_type="text/calendar", charset="utf-8")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/series", create_series)
    app.router.add_get("/api/series", list_series)
    app.router.add_get("/api/series/{series_id}", get_series)
    app.router.add_patch("/api/series/{series_id}", update_series)
    app.router.add_delete("/api/series/{series_id}", delete_series)
    app.router.add_get("/api/series/{series_id}/occurrences", series_occurrences)
    app.router.add_get("/api/orgs/{org}/calendar.ics", calendar_feed)
