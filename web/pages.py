"""The viewer pages: the built-in player at /watch/{id} and a small home page listing streams."""
from __future__ import annotations

import asyncio
import html
import json
from pathlib import Path

from aiohttp import web

from typing import Any
from urllib.parse import quote

from mediaserver.branding import Branding, frame_ancestors, resolve
from mediaserver.access import VIEWER_COOKIE, VIEWER_ID_TTL, AccessPolicy
from mediaserver.passwords import TooManyAttempts
from mediaserver.retention import plays_as_mp4
from mediaserver.sessions import dvr_window_for
from web.backends_api import is_cloud, page_playback
from web.guard import ACCESS, client_address, stream_row, watch_access
from web.keys import CONFIG, DB, MANAGER, PASSWORDS, SIGNER
from web.orgs_api import page_branding


STATIC_DIR = Path(__file__).parent / "static"


# Pages other sites must not frame (clickjacking); the server's own pages (a console) still may.
NO_FOREIGN_FRAMES = {"Content-Security-Policy": "frame-ancestors 'self'", "X-Frame-Options": "SAMEORIGIN"}


async def watch(request: web.Request) -> web.Response:
    response, _ = await player_page(request, "watch.html", chat=True)
    response.headers.update(NO_FOREIGN_FRAMES)
    return response


async def embed(request: web.Request) -> web.Response:
    """The player alone for a church's website: fills its iframe; chat only with ?chat=1. The only page other
    sites may frame, and only those in the organization's embed_origins (default: any)."""
    response, org = await player_page(request, "embed.html", chat=request.query.get("chat") == "1")
    response.headers["Content-Security-Policy"] = frame_ancestors(resolve(org).embed_origins)
    return response


async def player_page(request: web.Request, template_name: str, *, chat: bool) -> tuple[web.Response, Any]:
    """The watch page or the embed page (same player, same access decision): the response and the stream's org."""
    stream_id = request.match_info["stream_id"]
    row = await stream_row(request, stream_id)
    if row is None:
        raise web.HTTPNotFound(text="No such stream.\n")
    template = await asyncio.to_thread((STATIC_DIR / template_name).read_text)
    caller, decision = await watch_access(request, row)
    playback_url = f"/hls/{row['id']}/master.m3u8"
    if caller.playback_token:
        playback_url += f"?token={quote(caller.playback_token, safe='')}"
    mp4 = False
    recording = None
    if decision.allowed and row["status"] in ("ENDED", "FAILED") and not request.app[MANAGER].has_broadcast(row["id"]):
        recording = await asyncio.to_thread(request.app[DB].latest_recording, row["id"])
        if recording is not None and plays_as_mp4(recording):
            # Retention kept only the MP4: the player plays that file, with the same token.
            mp4 = True
            playback_url = f"/hls/{row['id']}/{recording['broadcast_id']}/recording.mp4" + \
                (f"?token={quote(caller.playback_token, safe='')}" if caller.playback_token else "")
    cloud = is_cloud(row)
    if decision.allowed and cloud:
        # Mux or IVS carries the video: play the platform's URL (signed there for private streams).
        playback_url, mp4, recording = await page_playback(request, row), False, None
    org = await asyncio.to_thread(request.app[DB].org, row["org_id"])
    config: dict[str, Any]
    if decision.allowed:
        config = {
            "stream_id": row["id"],
            "title": row["title"],
            "playback_url": playback_url,
            "locked": False,
            "has_password": bool(row["password_hash"]),
            "chat_enabled": chat and bool(row["chat_enabled"]),
            "reactions_enabled": bool(row["reactions_enabled"]),
            "giving_enabled": bool(row["giving_enabled"]),
            "giving_url": row["giving_url"],
            "giving_message": row["giving_message"],
            "dvr_window_seconds": 0 if cloud else dvr_window_for(request.app[CONFIG], row, org),
            "branding": page_branding(org),
            "segment_duration": request.app[CONFIG].hls.segment_duration,
            # LL-HLS (parts): the player needs fewer segments before it starts; hls.js reads the rest
            # (PART-HOLD-BACK) from the playlist.
            "low_latency": bool(row.get("low_latency")),
            "status": row["status"],
            "mp4": mp4,
        }
        if recording is not None and not request.app[MANAGER].previewing(row["id"], recording["broadcast_id"]):
            config.update(recording_extras(row["id"], recording, caller.playback_token))
        mux = request.app[CONFIG].mux
        if cloud and row.get("backend") == "mux" and mux.env("data_env_key"):
            # web/static/mux_data.js: mux-embed reports this player to Mux Data (platform viewer counts).
            config["mux_data"] = {"env_key": mux.env("data_env_key"), "beacon_domain": mux.data_beacon_domain}
    else:
        # Nothing about a private stream but that it exists and whether a password opens it.
        config = {
            "stream_id": row["id"], "title": "Private stream", "playback_url": "", "locked": True,
            "has_password": bool(row["password_hash"]), "chat_enabled": False, "reactions_enabled": False,
            "giving_enabled": False, "giving_url": None, "giving_message": None,
            "dvr_window_seconds": 0, "segment_duration": request.app[CONFIG].hls.segment_duration, "status": "",
            "branding": page_branding(org),
        }
    # '<' escaped so a title can never close the <script> element it sits in.
    payload = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    brand = resolve(org)
    page = (template.replace("__PLAYER_CONFIG__", payload)
            .replace("__GOLIVE_URL__", f"/golive/{quote(row['id'], safe='')}")
            .replace("<!--BRAND_STYLE-->", brand.style_element(), 1)
            # The org's poster before playback: in the markup, so it shows before any script has run.
            .replace(' poster=""', f' poster="{html.escape(brand.poster_url or config.get("poster_url") or "", quote=True)}"'
                     if brand.poster_url or config.get("poster_url") else "", 1))
    response = web.Response(text=page, content_type="text/html", status=200)
    response.headers["Cache-Control"] = "private, no-cache" if not access_policy(request).listed(row) else "no-cache"
    response.headers["Referrer-Policy"] = "no-referrer"  # a token in this page's URL must not leak to links
    ensure_viewer_cookie(request, response)
    return response, org


def recording_extras(stream_id: str, recording: dict[str, Any], token: str | None) -> dict[str, str]:
    """What the player and the room need to play a recording with its pictures (packager/thumbnails.py: poster,
    storyboard previews) and its chat replay (web/replay_api.py); a private stream's token rides along."""
    query = f"?token={quote(token, safe='')}" if token else ""
    prefix = f"/hls/{quote(stream_id, safe='')}/{quote(recording['broadcast_id'], safe='')}"
    return {"poster_url": f"{prefix}/poster.jpg{query}", "storyboard_url": f"{prefix}/storyboard.vtt{query}",
            "chat_replay_url": f"/api/streams/{quote(stream_id, safe='')}/recordings/"
                               f"{quote(recording['id'], safe='')}/chat-replay{query}"}


async def golive(request: web.Request) -> web.Response:
    """The "Go live from this browser" page for staff: it asks for the stream key itself (never in the URL)."""
    row = await stream_row(request, request.match_info["stream_id"])
    if row is None:
        raise web.HTTPNotFound(text="No such stream.\n")
    template = await asyncio.to_thread((STATIC_DIR / "golive.html").read_text)
    config = {"stream_id": row["id"], "whip_url": f"/whip/{quote(row['id'], safe='')}",
              "title": row["title"] if access_policy(request).listed(row) else ""}
    payload = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    org = await asyncio.to_thread(request.app[DB].org, row["org_id"])
    page = brand_golive(template.replace("__GOLIVE_CONFIG__", payload), resolve(org))
    response = web.Response(text=page, content_type="text/html")
    response.headers.update(NO_FOREIGN_FRAMES)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Permissions-Policy"] = "camera=(self), microphone=(self)"
    return response


def brand_golive(page: str, brand: Branding) -> str:
    """The go-live page in the organization's colours, with its logo and name over the title."""
    church = ""
    if brand.name or brand.logo_url:
        logo = (f'<img class="church-logo" src="{html.escape(brand.logo_url, quote=True)}" alt="">'
                if brand.logo_url else "")
        church = f'<p class="church">{logo}{html.escape(brand.name or "")}</p>'
    return (page.replace("</head>", brand.style_element() + "</head>", 1)
            .replace('<header class="watch-header">', '<header class="watch-header">' + church, 1))


def access_policy(request: web.Request) -> AccessPolicy:
    return request.app[ACCESS]


def ensure_viewer_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Give a browser its signed per-browser viewer id (the chat knows a guest by it, not by address)."""
    if access_policy(request).viewer_id(request.cookies.get(VIEWER_COOKIE)) is None:
        token, _ = access_policy(request).new_viewer_token()
        response.set_cookie(VIEWER_COOKIE, token, max_age=int(VIEWER_ID_TTL), httponly=True, samesite="Lax",
                            path="/", secure=request.secure)


async def home(request: web.Request) -> web.Response:
    """Public streams only, grouped by organization."""
    db = request.app[DB]
    rows, orgs = await asyncio.gather(asyncio.to_thread(db.streams), asyncio.to_thread(db.orgs))
    names = {org["id"]: org["name"] for org in orgs}
    by_org: dict[str, list[str]] = {}
    for r in rows:
        if r["status"] in ("LIVE", "ENDING", "ENDED", "STARTING") and access_policy(request).listed(r):
            by_org.setdefault(r["org_id"], []).append(
                f'<li><a href="/watch/{html.escape(r["id"])}">{html.escape(r["title"])}</a> '
                f'<small>{html.escape(r["status"])}</small></li>')
    sections = "".join(
        f"<section><h2>{html.escape(names.get(org_id, org_id))}</h2><ul>{''.join(items)}</ul></section>"
        for org_id, items in by_org.items())
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'><title>Streams</title>"
        "<link rel=stylesheet href=/static/player.css></head><body><main class=home><h1>Streams</h1>"
        f"{sections or '<p>No broadcasts yet.</p>'}</main></body></html>"
    )
    return web.Response(text=body, content_type="text/html", headers=NO_FOREIGN_FRAMES)


async def unlock(request: web.Request) -> web.Response:
    """A viewer trades a password-protected stream's password for a playback token."""
    from web.api import iso

    row = await stream_row(request, request.match_info["stream_id"])
    if row is None:
        raise web.HTTPNotFound(text="No such stream.\n")
    try:
        body = await request.json()
        password = body["password"]
        if not isinstance(password, str) or len(password) > 200:
            raise TypeError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return web.json_response({"error": "send {\"password\": \"...\"}", "details": None}, status=400)
    if not row["password_hash"]:
        return web.json_response({"error": "wrong password", "details": None}, status=403)
    try:
        ok = await request.app[PASSWORDS].check(client_address(request), password, row["password_hash"])
    except TooManyAttempts as exc:
        response = web.json_response({"error": str(exc), "details": None}, status=429)
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response
    if not ok:
        return web.json_response({"error": "wrong password", "details": None}, status=403)
    token, expires = request.app[SIGNER].issue(row["id"], 12 * 3600)
    return web.json_response({"token": token, "expires_at": iso(expires)})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/watch/{stream_id}/unlock", unlock)
    app.router.add_get("/", home)
    app.router.add_get("/watch/{stream_id}", watch)
    app.router.add_get("/embed/{stream_id}", embed)
    app.router.add_get("/golive/{stream_id}", golive)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
