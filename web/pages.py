"""The viewer pages: the built-in player at /watch/{id} and a small home page listing streams."""
from __future__ import annotations

import asyncio
import html
import json
from pathlib import Path

from aiohttp import web

from mediaserver.playback_tokens import TokenError
from web.keys import CONFIG, DB, SIGNER

STATIC_DIR = Path(__file__).parent / "static"


async def watch(request: web.Request) -> web.Response:
    stream_id = request.match_info["stream_id"]
    row = await asyncio.to_thread(request.app[DB].stream, stream_id)
    if row is None:
        raise web.HTTPNotFound(text="No such stream.\n")
    template = await asyncio.to_thread((STATIC_DIR / "watch.html").read_text)
    playback_url = f"/hls/{row['id']}/master.m3u8"
    private = (row["visibility"] or "PUBLIC") != "PUBLIC"
    token = request.query.get("token", "")
    if private and token:
        try:
            request.app[SIGNER].check(token, row["id"])
            playback_url += f"?token={token}"
        except TokenError:
            token = ""
    config = {
        "stream_id": row["id"],
        "title": row["title"],
        "playback_url": playback_url,
        "locked": private and not token,
        "has_password": bool(row["password_hash"]),
        "chat_enabled": bool(row["chat_enabled"]),
        "reactions_enabled": bool(row["reactions_enabled"]),
        "giving_enabled": bool(row["giving_enabled"]),
        "giving_url": row["giving_url"],
        "giving_message": row["giving_message"],
        "dvr_window_seconds": request.app[CONFIG].hls.dvr_window,
        "segment_duration": request.app[CONFIG].hls.segment_duration,
        "status": row["status"],
    }
    # '<' escaped so a title can never close the <script> element it sits in.
    payload = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    page = template.replace("__PLAYER_CONFIG__", payload)
    response = web.Response(text=page, content_type="text/html")
    response.headers["Cache-Control"] = "no-cache"
    return response


async def home(request: web.Request) -> web.Response:
    rows = await asyncio.to_thread(request.app[DB].streams)
    items = "".join(
        f'<li><a href="/watch/{html.escape(r["id"])}">{html.escape(r["title"])}</a> '
        f'<small>{html.escape(r["status"])}</small></li>'
        for r in rows
        if r["status"] in ("LIVE", "ENDING", "ENDED", "STARTING")
    )
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'><title>Streams</title>"
        "<link rel=stylesheet href=/static/player.css></head><body><main class=home><h1>Streams</h1>"
        f"<ul>{items or '<li>No broadcasts yet.</li>'}</ul></main></body></html>"
    )
    return web.Response(text=body, content_type="text/html")


async def unlock(request: web.Request) -> web.Response:
    """A viewer trades a password-protected stream's password for a playback token."""
    from web.api import check_password, iso

    row = await asyncio.to_thread(request.app[DB].stream, request.match_info["stream_id"])
    if row is None:
        raise web.HTTPNotFound(text="No such stream.\n")
    try:
        body = await request.json()
        password = body["password"]
        if not isinstance(password, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": "send {\"password\": \"...\"}", "details": None}, status=400)
    if not row["password_hash"] or not await asyncio.to_thread(check_password, password, row["password_hash"]):
        await asyncio.sleep(0.5)  # slows guessing
        return web.json_response({"error": "wrong password", "details": None}, status=403)
    token, expires = request.app[SIGNER].issue(row["id"], 12 * 3600)
    return web.json_response({"token": token, "expires_at": iso(expires)})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/watch/{stream_id}/unlock", unlock)
    app.router.add_get("/", home)
    app.router.add_get("/watch/{stream_id}", watch)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
