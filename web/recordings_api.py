"""The recordings library under /api/recordings: every saved service of the caller's organization(s), with play
and download URLs and the storage they use, and renaming one (PATCH). Deleting is web/api.py's route."""
from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from mediaserver.retention import plays_as_mp4
from web.api import find_stream, iso, public_base, query_int, read_json
from web.auth import SCOPE, error, manages
from web.keys import DB

MAX_LIMIT = 500


def recording_view(base: str, recording: dict[str, Any], stream: dict[str, Any]) -> dict[str, Any]:
    """One library entry. `title` is the recording's own name, else its stream's title."""
    prefix = f"{base}/hls/{stream['id']}/{recording['broadcast_id']}"
    mp4_url = f"{prefix}/recording.mp4" if recording.get("mp4_key") else None
    mp4_only = plays_as_mp4(recording)
    return {
        "id": recording["id"], "stream_id": stream["id"], "org_id": stream["org_id"],
        "stream_title": stream["title"], "title": recording.get("title") or stream["title"],
        "renamed": bool(recording.get("title")),
        "created_at": iso(recording["created_at"]), "status": recording["status"],
        "duration": recording["duration"], "size": recording["size"] or 0, "mp4_size": recording["mp4_size"],
        "playback_url": mp4_url if mp4_only else f"{prefix}/master.m3u8",
        "playback_type": "mp4" if mp4_only else "hls",
        # ?download makes the server send it as an attachment (a file name, not a page in the browser).
        "download_url": f"{mp4_url}?download=1" if mp4_url else None,
        "error": recording["error"],
    }


def _bytes(recording: dict[str, Any]) -> int:
    # As db.storage_bytes counts them: the HLS segments and the MP4.
    return int(recording["size"] or 0) + int(recording["mp4_size"] or 0)


async def _org_filter(request: web.Request) -> str | None | web.Response:
    """The organization to list: ?org=ID or slug (404 outside the caller's reach), else the caller's scope."""
    wanted = request.query.get("org")
    if wanted is None:
        return request[SCOPE]
    row = await asyncio.to_thread(request.app[DB].org, wanted)
    if row is None or not manages(request, row["id"]):
        return error(404, "organization not found", None)
    return str(row["id"])


async def list_recordings(request: web.Request) -> web.Response:
    problems: dict[str, str] = {}
    limit = query_int(request.query.get("limit", "100"), 1, MAX_LIMIT)
    if limit is None:
        problems["limit"] = f"an integer from 1 to {MAX_LIMIT}"
    offset = query_int(request.query.get("offset", "0"), 0, 10**9)
    if offset is None:
        problems["offset"] = "an integer from 0 to 1000000000"
    for name in set(request.query) - {"org", "limit", "offset"}:
        problems[name] = "unknown parameter"
    if problems or limit is None or offset is None:
        return error(400, "invalid query", problems)
    org_id = await _org_filter(request)
    if isinstance(org_id, web.Response):
        return org_id
    db = request.app[DB]
    where, params = ("1 = 1", []) if org_id is None else (
        "stream_id in (select id from streams where org_id = ?)", [org_id])
    rows = await asyncio.to_thread(db.recordings_where, where, params)
    rows.sort(key=lambda r: (r["created_at"] or 0, r["id"]), reverse=True)
    page = rows[offset:offset + limit]
    stream_ids = sorted({r["stream_id"] for r in page})
    streams = {}
    if stream_ids:
        found = await asyncio.to_thread(db.query_streams, f"id in ({','.join('?' * len(stream_ids))})",
                                        stream_ids, "created_at", len(stream_ids), 0)
        streams = {s["id"]: s for s in found}
    base = public_base(request)
    items = [recording_view(base, r, streams[r["stream_id"]]) for r in page if r["stream_id"] in streams]
    total = len(rows)
    return web.json_response({
        "recordings": items, "total": total, "limit": limit, "offset": offset,
        "next_offset": offset + limit if offset + limit < total else None,
        "storage_bytes": sum(_bytes(r) for r in rows),
    })


async def rename_recording(request: web.Request) -> web.Response:
    stream = await find_stream(request)
    db = request.app[DB]
    found = await asyncio.to_thread(db.recording, stream["id"], request.match_info["recording_id"])
    if found is None:
        return error(404, "recording not found", None)
    body = await read_json(request, "RecordingUpdate")
    title = body["title"].strip() if isinstance(body["title"], str) else None
    await asyncio.to_thread(db.update_recording, found["id"], title=title or None)
    updated = await asyncio.to_thread(db.recording, stream["id"], found["id"])
    if updated is None:  # deleted meanwhile
        return error(404, "recording not found", None)
    return web.json_response(recording_view(public_base(request), updated, stream))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/recordings", list_recordings)
    app.router.add_patch("/api/streams/{stream_id}/recordings/{recording_id}", rename_recording)

