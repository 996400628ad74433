"""The admin REST API under /api: streams (CRUD, lists, lifecycle actions, key rotation, playback tokens).

Bodies are checked against the OpenAPI schemas (web/openapi.py); errors are JSON {"error", "details"}.
Anything outside the caller's organization is a 404, never a 403, so ids don't leak.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import unicodedata
from datetime import date, datetime, timezone
from typing import Any, NoReturn

from aiohttp import web

from mediaserver.db import DEFAULT_ORG
from mediaserver.simulated_live import airable_problem
from mediaserver.srt_routes import assign_port
from mediaserver.branding import embed_code
from mediaserver.retention import SEGMENTS_DELETED, RecordingBusyError, delete_recording, delete_stream_media, plays_as_mp4
from web.auth import SCOPE, error, manages
from web import backends_api
from mediaserver.backends.base import BackendError, Unsupported
from web.keys import CHAT, CONFIG, DB, MANAGER, PASSWORDS, SIGNER, STORE
from web.openapi import DATE_PATTERN, DATE_TIME_PATTERN, DOCUMENT, FLAGS, MAX_OFFSET, body_errors

log = logging.getLogger(__name__)
LIVE_STATES = ("STARTING", "LIVE", "ENDING")
PAST_STATES = ("ENDED", "CANCELLED", "FAILED")
MAX_BODY = 64 * 1024
# Our bodies nest four levels at most; far deeper JSON is refused before it is parsed (the parser and the
# validator recurse, and 30,000 levels fit in 60 KB).
MAX_JSON_DEPTH = 32
FIRST_YEAR, LAST_YEAR = 1000, 9999
_DATE_RE = re.compile(DATE_PATTERN)
_DATE_TIME_RE = re.compile(DATE_TIME_PATTERN)
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


# -- helpers ---------------------------------------------------------------------------------------
def iso(ts: float | None) -> str | None:
    """A UTC timestamp as RFC 3339 with milliseconds, e.g. 2026-12-06T16:30:00.000Z (the year always 4 digits)."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return f"{dt.year:04d}-{dt:%m-%dT%H:%M:%S}.{dt.microsecond // 1000:03d}Z"


def parse_time(value: str) -> float:
    """An RFC 3339 date-time with its offset (2026-12-06T16:30:00Z) as a timestamp; ValueError saying why not.
    Years before 1000 are refused: they don't survive a round trip through ISO text."""
    if not isinstance(value, str) or not _DATE_TIME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a date-time like 2026-12-06T16:30:00Z (years {FIRST_YEAR} to {LAST_YEAR})")
    try:
        dt = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError as exc:  # 30 February
        raise ValueError(f"{value!r}: {exc}") from None
    try:
        utc = dt.astimezone(timezone.utc)
    except OverflowError:
        utc = None
    if utc is None or not FIRST_YEAR <= utc.year <= LAST_YEAR:
        raise ValueError(f"{value!r} is outside the years {FIRST_YEAR} to {LAST_YEAR} in UTC")
    return dt.timestamp()


def parse_date(value: str) -> date:
    """A calendar date like 2026-12-06 (years 1000 to 9999); ValueError saying why not."""
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a date like 2026-12-06 (years {FIRST_YEAR} to {LAST_YEAR})")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:  # 30 February
        raise ValueError(f"{value!r}: {exc}") from None


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text (brackets inside strings don't count)."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def slugify(title: str) -> str:
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:60]
    return slug or "stream"


async def hash_password_field(request: web.Request, fields: dict[str, Any]) -> None:
    """A stream's new password becomes its scrypt hash, on the password pool (never on the event loop)."""
    if "password" in fields:
        password = fields.pop("password")
        fields["password_hash"] = None if password is None else await request.app[PASSWORDS].hash(password)


async def read_json(request: web.Request, schema: str | None, *, optional: bool = False) -> Any:
    """The request's JSON body, validated; raises an HTTP 400 response on any problem."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPBadRequest(text=json.dumps({"error": "request body too large", "details": {"body": f"over {MAX_BODY} bytes"}}),
                                 content_type="application/json")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise web.HTTPBadRequest(text=json.dumps({"error": "request body too large", "details": {"body": f"over {MAX_BODY} bytes"}}),
                                 content_type="application/json")
    if not raw.strip() and optional:
        return {}
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and json_depth(raw) > MAX_JSON_DEPTH:
        raise web.HTTPBadRequest(text=json.dumps({"error": "request body nests too deeply",
                                                  "details": {"body": f"over {MAX_JSON_DEPTH} levels of arrays and objects"}}),
                                 content_type="application/json")
    try:
        body = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, NaN, 5,000-digit numbers
        raise web.HTTPBadRequest(text=json.dumps({"error": "request body must be JSON", "details": {"body": str(exc)}}),
                                 content_type="application/json")
    if schema is not None:
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text=json.dumps({"error": "request body must be a JSON object", "details": {"body": "not an object"}}),
                                     content_type="application/json")
        problems = body_errors(schema, body)
        if problems:
            raise web.HTTPBadRequest(text=json.dumps({"error": "invalid fields", "details": problems}),
                                     content_type="application/json")
    return body


def query_int(text: str, low: int, high: int) -> int | None:
    """A query parameter that must be a decimal integer in [low, high] (no "+", "_", spaces or non-ASCII digits)."""
    if not re.fullmatch(r"-?[0-9]{1,20}", text):
        return None
    value = int(text)
    return value if low <= value <= high else None


def stream_fields(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """API fields -> database columns, with the checks a schema can't express."""
    fields: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name, value in body.items():
        if name in ("scheduled_start", "scheduled_end"):
            try:
                fields[name] = None if value is None else parse_time(value)
            except ValueError as exc:
                problems[name] = str(exc)
        elif name == "password":
            fields["password"] = value  # hashed by hash_password_field, off the event loop
        elif name == "timezone" and value is not None:
            try:
                from zoneinfo import ZoneInfo

                ZoneInfo(value)
                fields[name] = value
            except (KeyError, ValueError):
                problems[name] = f"unknown time zone {value!r}"
        elif name in FLAGS:
            fields[name] = int(bool(value))
        else:
            fields[name] = value
    start, end = fields.get("scheduled_start"), fields.get("scheduled_end")
    if start is not None and end is not None and end <= start:
        problems["scheduled_end"] = "must be after scheduled_start"
    return fields, problems


def bad_fields(problems: dict[str, str]) -> web.Response:
    return error(400, "invalid fields", problems)


def public_base(request: web.Request) -> str:
    """Where URLs we hand out start: `server.public_url` (or the deprecated public_host), else this request's own
    scheme and Host."""
    return request.app[CONFIG].server.base_url() or f"{request.scheme}://{request.host}"


def stream_view(request: web.Request, row: dict[str, Any], recording: dict[str, Any] | None,
                storage_bytes: int = 0) -> dict[str, Any]:
    config = request.app[CONFIG]
    base = public_base(request)
    host = config.server.public_hostname() or request.url.host or "127.0.0.1"
    rtmp_port = config.server.rtmp_port
    view: dict[str, Any] = {
        "id": row["id"], "org_id": row["org_id"], "title": row["title"], "slug": row["slug"],
        "description": row["description"] or "", "thumbnail_url": row["thumbnail_url"],
        "scheduled_start": iso(row["scheduled_start"]), "scheduled_end": iso(row["scheduled_end"]),
        "timezone": row["timezone"], "visibility": row["visibility"] or "PUBLIC",
        "has_password": bool(row["password_hash"]),
        "peak_viewers": row["peak_viewers"] or 0,
        "giving_url": row["giving_url"], "giving_message": row["giving_message"],
        **{flag: bool(row[flag]) for flag in FLAGS},
        "status": row["status"],
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
        "actual_start": iso(row["actual_start"]), "actual_end": iso(row["actual_end"]),
        "error": row["error"], "series_id": row["series_id"],
        "simulated_recording_id": row.get("simulated_recording_id"),
        "rtmp_url": f"rtmp://{host}{'' if rtmp_port == 1935 else f':{rtmp_port}'}/{config.rtmp.app}",
        # RTMPS (RTMP over TLS, same key) when the server has a certificate: the listener runs only then.
        "rtmps_url": (f"rtmps://{host}{'' if config.server.rtmps_port == 443 else f':{config.server.rtmps_port}'}"
                      f"/{config.rtmp.app}") if config.server.tls_cert and config.server.tls_key else None,
        # SRT: this stream's own port (ffmpeg listens per stream key); the streamid carries the key.
        "srt_url": f"srt://{host}:{row['srt_port']}" if config.srt.enabled and row.get("srt_port") else None,
        "has_srt_passphrase": bool(row.get("srt_passphrase")),
        "playback_url": f"{base}/hls/{row['id']}/master.m3u8",
        "watch_url": f"{base}/watch/{row['id']}",
        "embed_code": embed_code(base, row["id"], row["title"]),
        "storage_bytes": storage_bytes,
        "recording": None,
        "renditions": request.app[MANAGER].live_renditions(row["id"]),
        "ingest": request.app[MANAGER].ingest_health(row["id"]),
    }
    if recording is not None:
        prefix = f"{base}/hls/{row['id']}/{recording['broadcast_id']}"
        mp4_url = f"{prefix}/recording.mp4" if recording["mp4_key"] else None
        mp4_only = plays_as_mp4(recording)
        view["recording"] = {
            "id": recording["id"], "status": recording["status"],
            "playback_url": mp4_url if mp4_only else f"{prefix}/master.m3u8",
            "playback_type": "mp4" if mp4_only else "hls",
            "mp4_url": mp4_url,
            "duration": recording["duration"],
            "size": recording["mp4_size"] if recording["mp4_size"] is not None else recording["size"],
            "hls_size": recording["size"], "error": recording["error"],
            "segments_deleted_at": iso(recording.get(SEGMENTS_DELETED)),
            # packager/thumbnails.py; served with the recording's access decision (404 until written)
            "poster_url": f"{prefix}/poster.jpg", "sprite_url": f"{prefix}/sprite.jpg",
            "storyboard_url": f"{prefix}/storyboard.vtt",
            "chat_replay_url": f"{base}/api/streams/{row['id']}/recordings/{recording['id']}/chat-replay",
        }
        # Off air, the stream plays its latest recording: once that is MP4 only, so does the stream.
        if mp4_only and mp4_url and row["status"] not in LIVE_STATES:
            view["playback_url"] = mp4_url
    view["backend"] = backends_api.backend_name(row)
    if backends_api.is_cloud(row):  # Mux/IVS: the platform's ingest and playback (web/backends_api.py)
        backends_api.cloud_view(request, row, view, recording)
    return view


async def find_stream(request: web.Request) -> dict[str, Any]:
    """The stream in the path, if the caller's organization owns it; else an HTTP 404."""
    row = await asyncio.to_thread(request.app[DB].stream, request.match_info["stream_id"])
    if row is None or not manages(request, row["org_id"]):
        raise web.HTTPNotFound(text=json.dumps({"error": "stream not found", "details": None}), content_type="application/json")
    return row


async def respond_stream(request: web.Request, stream_id: str, status: int = 200, **extra: Any) -> web.Response:
    db = request.app[DB]
    row = await asyncio.to_thread(db.stream, stream_id)
    assert row is not None
    recording = await asyncio.to_thread(db.latest_recording, stream_id)
    used = await asyncio.to_thread(db.storage_bytes, stream_id)
    view = stream_view(request, row, recording, used)
    if extra.get("stream_key") and view["srt_url"] and not backends_api.is_cloud(row):  # a URL ready to paste
        view["srt_url"] += f"?streamid=#!::r={request.app[CONFIG].rtmp.app}/{extra['stream_key']},m=publish"
    return web.json_response({**view, **extra}, status=status)


async def slug_taken(request: web.Request, org_id: str, slug: str, except_id: str | None = None) -> bool:
    rows = await asyncio.to_thread(request.app[DB].query_streams, "org_id = ? and slug = ?", [org_id, slug], "created_at", 2, 0)
    return any(r["id"] != except_id for r in rows)


# -- streams ---------------------------------------------------------------------------------------
async def create_stream(request: web.Request) -> web.Response:
    body = await read_json(request, "StreamCreate")
    fields, problems = stream_fields(body)
    if problems:
        return bad_fields(problems)
    org_id = request[SCOPE] or DEFAULT_ORG
    title = fields.pop("title").strip()
    if not title:
        return bad_fields({"title": "must not be blank"})
    slug = fields.get("slug") or slugify(title)
    if "slug" in fields and await slug_taken(request, org_id, slug):
        return bad_fields({"slug": f"{slug!r} is already used in this organization"})
    base, n = slug, 2
    while await slug_taken(request, org_id, slug):
        slug, n = f"{base}-{n}", n + 1
    fields["slug"] = slug
    await hash_password_field(request, fields)
    from web.orgs_api import stream_defaults

    org = await asyncio.to_thread(request.app[DB].org, org_id)
    fields = {**stream_defaults(org), **fields}
    # The video platform: the body's, else the organization's default (settings.backend), else our own engine.
    fields["backend"] = fields.get("backend") or json.loads((org or {}).get("settings") or "{}").get("backend") \
        or "builtin"
    problems = backends_api.capability_problems(request, fields["backend"], fields)
    if problems:
        return bad_fields(problems)
    row, key = await asyncio.to_thread(request.app[DB].create_stream, title, org_id, **fields)
    extras: dict[str, Any] = {"stream_key": key}
    if backends_api.is_cloud(row):
        try:
            extras = await backends_api.create_remote(request, row)
        except BackendError as exc:  # nothing half-made stays behind
            await asyncio.to_thread(request.app[DB].delete_stream, row["id"])
            return backends_api.platform_error(exc)
    elif request.app[CONFIG].srt.enabled:  # its SRT port now, so this answer's srt_url is complete
        await asyncio.to_thread(assign_port, request.app[DB], request.app[CONFIG].srt, row["id"])
    request.app[MANAGER].bus_publish("stream.created", row["id"], {"org_id": org_id, "title": title})
    return await respond_stream(request, row["id"], 201, **extras)


async def list_streams(request: web.Request) -> web.Response:
    query = request.query
    state = query.get("state", "all")
    problems: dict[str, str] = {}
    if state not in ("live", "upcoming", "past", "all"):
        problems["state"] = "one of live, upcoming, past, all"
    limit = query_int(query.get("limit", "20"), 1, 100)
    if limit is None:
        problems["limit"] = "an integer from 1 to 100"
    offset = query_int(query.get("offset", "0"), 0, MAX_OFFSET)
    if offset is None:
        problems["offset"] = f"an integer from 0 to {MAX_OFFSET}"
    unknown = set(query) - {"state", "limit", "offset"}
    for name in unknown:
        problems[name] = "unknown parameter"
    if problems or limit is None or offset is None:
        return bad_fields(problems)
    where, params = ("1 = 1", []) if request[SCOPE] is None else ("org_id = ?", [request[SCOPE]])
    order = "created_at desc"
    if state == "live":
        where += f" and status in ({','.join('?' * len(LIVE_STATES))})"
        params += list(LIVE_STATES)
    elif state == "upcoming":
        where += " and status = 'SCHEDULED'"
        order = "coalesce(scheduled_start, created_at) asc"
    elif state == "past":
        where += f" and status in ({','.join('?' * len(PAST_STATES))})"
        params += list(PAST_STATES)
        order = "coalesce(actual_end, scheduled_start, created_at) desc"
    db = request.app[DB]
    rows = await asyncio.to_thread(db.query_streams, where, params, order, limit, offset)
    total = await asyncio.to_thread(db.count_streams, where, params)
    views = []
    for row in rows:
        recording = await asyncio.to_thread(db.latest_recording, row["id"])
        used = await asyncio.to_thread(db.storage_bytes, row["id"])
        views.append(stream_view(request, row, recording, used))
    next_offset = offset + limit if offset + limit < total else None
    return web.json_response({"streams": views, "total": total, "limit": limit, "offset": offset, "next_offset": next_offset})


async def get_stream(request: web.Request) -> web.Response:
    row = await find_stream(request)
    return await respond_stream(request, row["id"])


async def update_stream(request: web.Request) -> web.Response:
    row = await find_stream(request)
    body = await read_json(request, "StreamUpdate")
    fields, problems = stream_fields(body)
    start = fields.get("scheduled_start", row["scheduled_start"])
    end = fields.get("scheduled_end", row["scheduled_end"])
    if start is not None and end is not None and end <= start:
        problems["scheduled_end"] = "must be after scheduled_start"
    if "slug" in fields and await slug_taken(request, row["org_id"], fields["slug"], row["id"]):
        problems["slug"] = f"{fields['slug']!r} is already used in this organization"
    if "title" in fields and not fields["title"].strip():
        problems["title"] = "must not be blank"
    if fields.get("simulated_recording_id") is not None:  # a re-air (mediaserver/simulated_live.py)
        problem = await asyncio.to_thread(
            airable_problem, request.app[DB], request.app[STORE], row["org_id"], fields["simulated_recording_id"])
        if problem:
            problems["simulated_recording_id"] = problem
    old_backend = backends_api.backend_name(row)
    switching = fields.get("backend", old_backend) != old_backend
    problems.update(backends_api.capability_problems(request, fields.get("backend", old_backend), fields, row))
    if problems:
        return bad_fields(problems)
    if switching and (row["status"] in LIVE_STATES or request.app[MANAGER].has_broadcast(row["id"])):
        return conflict(row, "change the back-end of", ("SCHEDULED", "ENDED", "CANCELLED", "FAILED"))
    if switching:
        fields["backend_ref"] = None
    elif backends_api.is_cloud(row):  # public <-> private: the platform's playback ids follow, first
        try:
            await backends_api.follow_privacy(request, row, fields)
        except Unsupported as exc:
            return bad_fields({"visibility" if "visibility" in fields else "password": str(exc)})
        except BackendError as exc:
            return backends_api.platform_error(exc)
    if "scheduled_start" in fields:
        fields["starting_soon_sent"] = 0
    await hash_password_field(request, fields)
    await asyncio.to_thread(request.app[DB].update_stream, row["id"], updated_at=time.time(), **fields)
    updated = await asyncio.to_thread(request.app[DB].stream, row["id"])
    extras: dict[str, Any] = {}
    if switching and updated is not None:  # a new live stream on the new platform, the old one removed
        try:
            extras = await backends_api.create_remote(request, updated) if backends_api.is_cloud(updated) else \
                {"stream_key": await asyncio.to_thread(request.app[DB].rotate_key, row["id"])}
        except BackendError as exc:
            await asyncio.to_thread(request.app[DB].update_stream, row["id"], backend=old_backend,
                                    backend_ref=row["backend_ref"])
            return backends_api.platform_error(exc)
        try:
            await backends_api.delete_remote(request, row)
        except BackendError as exc:
            log.warning("stream %s: the old %s live stream was not removed: %s", row["id"], old_backend, exc)
        request.app[MANAGER].bus_publish(backends_api.BACKEND_CHANGED, row["id"], {"from": old_backend})
    if updated is not None:
        request.app[CHAT].apply_stream(updated)  # an open room follows chat_enabled / reactions_enabled at once
    return await respond_stream(request, row["id"], **extras)


async def delete_stream(request: web.Request) -> web.Response:
    row = await find_stream(request)
    if request.app[MANAGER].has_broadcast(row["id"]):
        return error(409, "the stream is on air; end it first", {"status": row["status"]})
    latest = await asyncio.to_thread(request.app[DB].latest_recording, row["id"])
    if latest is not None and latest["status"] == "PROCESSING":
        return error(409, "the stream's recording is still being saved; try again in a moment", {"status": row["status"]})
    if backends_api.is_cloud(row):  # the platform's live stream goes first: a failure leaves ours to retry
        if row["status"] in LIVE_STATES:
            return error(409, "the stream is on air; end it first", {"status": row["status"]})
        try:
            await backends_api.delete_remote(request, row)
        except (BackendError, Unsupported) as exc:
            return backends_api.platform_error(exc)
    await asyncio.to_thread(request.app[DB].delete_stream, row["id"])
    # Its media goes with it: every broadcast's segments, playlists and MP4 under media/STREAM.
    await asyncio.to_thread(delete_stream_media, request.app[DB], request.app[STORE], row["id"])
    return web.Response(status=204)


async def delete_recording_route(request: web.Request) -> web.Response:
    """DELETE /api/streams/{stream_id}/recordings/{recording_id}: the recording's segments, playlists and MP4."""
    row = await find_stream(request)
    db = request.app[DB]
    found = await asyncio.to_thread(db.recording, row["id"], request.match_info["recording_id"])
    if found is None:
        return error(404, "recording not found", None)
    try:
        await asyncio.to_thread(delete_recording, db, request.app[STORE], found)
    except RecordingBusyError as exc:
        return error(409, str(exc), {"status": found["status"]})
    return web.Response(status=204)


# -- lifecycle actions -----------------------------------------------------------------------------
def conflict(row: dict[str, Any], action: str, allowed: tuple[str, ...]) -> web.Response:
    return error(409, f"cannot {action} a {row['status']} stream", {"status": row["status"], "allowed_from": list(allowed)})


async def start_stream(request: web.Request) -> web.Response:
    row = await find_stream(request)
    if not await asyncio.to_thread(request.app[DB].transition, row["id"], ("SCHEDULED",), "STARTING"):
        return conflict(row, "start", ("SCHEDULED",))
    return await respond_stream(request, row["id"])


async def go_live(request: web.Request) -> web.Response:
    row = await find_stream(request)
    if backends_api.is_cloud(row):
        return error(409, f"a {row['backend']} stream goes live when the encoder connects to {row['backend']}; "
                     "there is no preview to put live", {"status": row["status"]})
    if not await request.app[MANAGER].go_live(row["id"]):
        return error(409, "nothing to put live: the encoder has not sent a segment yet, or the stream is already live",
                     {"status": row["status"]})
    return await respond_stream(request, row["id"])


async def end_stream(request: web.Request) -> web.Response:
    row = await find_stream(request)
    if backends_api.is_cloud(row):
        if row["status"] not in LIVE_STATES:
            return conflict(row, "end", LIVE_STATES)
        try:
            await backends_api.end_remote(request, row)
        except (BackendError, Unsupported) as exc:
            return backends_api.platform_error(exc)
        return await respond_stream(request, row["id"])
    if await request.app[MANAGER].end(row["id"]):
        return await respond_stream(request, row["id"])
    # Started by hand but no encoder ever came: ending just closes it.
    if await asyncio.to_thread(request.app[DB].transition, row["id"], ("STARTING",), "ENDED", actual_end=time.time()):
        request.app[MANAGER].bus_publish("stream.ended", row["id"], {})
        return await respond_stream(request, row["id"])
    return conflict(row, "end", LIVE_STATES)


async def cancel_stream(request: web.Request) -> web.Response:
    row = await find_stream(request)
    if request.app[MANAGER].has_broadcast(row["id"]):
        return conflict(row, "cancel", ("SCHEDULED", "STARTING"))
    if not await asyncio.to_thread(request.app[DB].transition, row["id"], ("SCHEDULED", "STARTING"), "CANCELLED"):
        return conflict(row, "cancel", ("SCHEDULED", "STARTING"))
    request.app[MANAGER].bus_publish("stream.cancelled", row["id"], {})
    return await respond_stream(request, row["id"])


async def rotate_key(request: web.Request) -> web.Response:
    row = await find_stream(request)
    body = await read_json(request, "RotateKey", optional=True)
    if backends_api.is_cloud(row):  # the platform makes the new key (and drops the old one at once)
        try:
            return await respond_stream(request, row["id"], **await backends_api.rotate_remote_key(request, row))
        except (BackendError, Unsupported) as exc:
            return backends_api.platform_error(exc)
    key = await asyncio.to_thread(request.app[DB].rotate_key, row["id"])
    if body.get("disconnect"):
        await request.app[MANAGER].disconnect(row["id"], "stream key rotated")
    return await respond_stream(request, row["id"], stream_key=key)


async def playback_token(request: web.Request) -> web.Response:
    row = await find_stream(request)
    body = await read_json(request, "PlaybackTokenRequest", optional=True)
    if backends_api.is_cloud(row):  # signed with the platform's own scheme (Mux JWT, IVS playback token)
        ttl = int(body.get("ttl", 6 * 3600))
        try:
            url = backends_api.playback(request, row, ttl)
        except (BackendError, Unsupported) as exc:
            return backends_api.platform_error(exc)
        token = url.partition("?token=")[2]
        return web.json_response({"token": token, "expires_at": iso(time.time() + ttl), "playback_url": url},
                                 status=201)
    token, expires = request.app[SIGNER].issue(row["id"], float(body.get("ttl", 6 * 3600)), body.get("viewer_id"))
    url = f"{public_base(request)}/hls/{row['id']}/master.m3u8?token={token}"
    return web.json_response({"token": token, "expires_at": iso(expires), "playback_url": url}, status=201)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(backends_api.served_document(request, DOCUMENT))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_post("/api/streams", create_stream)
    app.router.add_get("/api/streams", list_streams)
    app.router.add_get("/api/streams/{stream_id}", get_stream)
    app.router.add_patch("/api/streams/{stream_id}", update_stream)
    app.router.add_delete("/api/streams/{stream_id}", delete_stream)
    app.router.add_delete("/api/streams/{stream_id}/recordings/{recording_id}", delete_recording_route)
    app.router.add_post("/api/streams/{stream_id}/start", start_stream)
    app.router.add_post("/api/streams/{stream_id}/go-live", go_live)
    app.router.add_post("/api/streams/{stream_id}/end", end_stream)
    app.router.add_post("/api/streams/{stream_id}/cancel", cancel_stream)
    app.router.add_post("/api/streams/{stream_id}/rotate-key", rotate_key)
    app.router.add_post("/api/streams/{stream_id}/playback-tokens", playback_token)
