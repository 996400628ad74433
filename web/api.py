"""The first slice of the admin REST API: create, list, read and end streams.

Every route needs `Authorization: Bearer <admin token>`; errors are JSON {"error", "details"}.
"""
from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from aiohttp import web

from web.keys import ADMIN_TOKEN, CONFIG, DB, MANAGER

MAX_TITLE = 200


def error(status: int, message: str, details: Any = None) -> web.Response:
    return web.json_response({"error": message, "details": details}, status=status)


@web.middleware
async def require_admin(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        expected = request.app[ADMIN_TOKEN]
        if not token or not hmac.compare_digest(token.encode(), expected.encode()):
            response = error(401, "a valid admin token is required", "send Authorization: Bearer <token>")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
    return await handler(request)


def public_host(request: web.Request) -> str:
    configured = request.app[CONFIG].server.public_host
    if configured:
        return configured
    return request.url.host or "127.0.0.1"


def stream_view(request: web.Request, row: dict[str, Any], recording: dict[str, Any] | None) -> dict[str, Any]:
    config = request.app[CONFIG]
    base = f"{request.scheme}://{request.host}"
    rtmp_port = config.server.rtmp_port
    host = public_host(request)
    view: dict[str, Any] = {
        "id": row["id"],
        "title": row["title"],
        "status": row["status"],
        "created_at": row["created_at"],
        "actual_start": row["actual_start"],
        "actual_end": row["actual_end"],
        "error": row["error"],
        "rtmp_url": f"rtmp://{host}{'' if rtmp_port == 1935 else f':{rtmp_port}'}/{config.rtmp.app}",
        "playback_url": f"{base}/hls/{row['id']}/master.m3u8",
        "watch_url": f"{base}/watch/{row['id']}",
        "recording": None,
    }
    if recording is not None:
        prefix = f"{base}/hls/{row['id']}/{recording['broadcast_id']}"
        view["recording"] = {
            "id": recording["id"],
            "status": recording["status"],
            "playback_url": f"{prefix}/master.m3u8",
            "mp4_url": f"{prefix}/recording.mp4" if recording["mp4_key"] else None,
            "duration": recording["duration"],
            "size": recording["mp4_size"] if recording["mp4_size"] is not None else recording["size"],
            "hls_size": recording["size"],
            "error": recording["error"],
        }
    return view


async def create_stream(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return error(400, "request body must be JSON", None)
    if not isinstance(body, dict):
        return error(400, "request body must be a JSON object", None)
    unknown = sorted(set(body) - {"title"})
    if unknown:
        return error(400, "unknown fields", {f: "not allowed" for f in unknown})
    title = body.get("title")
    if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE:
        return error(400, "invalid fields", {"title": f"a non-empty string of at most {MAX_TITLE} characters"})
    row, key = await asyncio.to_thread(request.app[DB].create_stream, title.strip())
    view = stream_view(request, row, None)
    view["stream_key"] = key  # shown once: only its hash is stored
    return web.json_response(view, status=201)


async def list_streams(request: web.Request) -> web.Response:
    db = request.app[DB]
    rows = await asyncio.to_thread(db.streams)
    views = []
    for row in rows:
        recording = await asyncio.to_thread(db.latest_recording, row["id"])
        views.append(stream_view(request, row, recording))
    return web.json_response({"streams": views})


async def get_stream(request: web.Request) -> web.Response:
    db = request.app[DB]
    row = await asyncio.to_thread(db.stream, request.match_info["stream_id"])
    if row is None:
        return error(404, "stream not found", None)
    recording = await asyncio.to_thread(db.latest_recording, row["id"])
    return web.json_response(stream_view(request, row, recording))


async def end_stream(request: web.Request) -> web.Response:
    db = request.app[DB]
    stream_id = request.match_info["stream_id"]
    row = await asyncio.to_thread(db.stream, stream_id)
    if row is None:
        return error(404, "stream not found", None)
    ended = await request.app[MANAGER].end(stream_id)
    if not ended:
        return error(409, "the stream has no broadcast to end", {"status": row["status"]})
    row = await asyncio.to_thread(db.stream, stream_id)
    assert row is not None
    return web.json_response(stream_view(request, row, None))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/streams", create_stream)
    app.router.add_get("/api/streams", list_streams)
    app.router.add_get("/api/streams/{stream_id}", get_stream)
    app.router.add_post("/api/streams/{stream_id}/end", end_stream)
