"""Organizations under /api/orgs: their time zone, the settings new streams start from, and the ones
(ladder, DVR window) every broadcast of their streams follows."""
from __future__ import annotations

import asyncio
import json
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from mediaserver.branding import IMAGE_KINDS, resolve
from mediaserver.podcast import owner_email, podcast_warnings
from web.api import public_base, read_json
from web.auth import error, manages
from mediaserver.config import Config
from web.keys import CHAT, CONFIG, DB


def org_view(request: web.Request, row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "slug": row["slug"], "name": row["name"], "timezone": row["timezone"],
            "settings": json.loads(row["settings"] or "{}"),
            "calendar_url": f"{public_base(request)}/api/orgs/{row['slug']}/calendar.ics",
            # Said on every read, so the console can say it: the podcast feed lacks what Apple requires.
            "warnings": podcast_warnings(json.loads(row["settings"] or "{}")),
            # What the settings fall back to (config.toml): the console suggests OBS settings from the ladder.
            "server_defaults": server_defaults(request.app[CONFIG])}


def server_defaults(config: Config) -> dict[str, Any]:
    return {"ladder": [{"name": r.name, "height": r.height, "video_bitrate": r.video_bitrate}
                       for r in config.transcode.renditions],
            "dvr_window": config.hls.dvr_window, "segment_duration": config.hls.segment_duration}


async def find_org(request: web.Request) -> dict[str, Any]:
    row = await asyncio.to_thread(request.app[DB].org, request.match_info["org"])
    if row is None or not manages(request, row["id"]):
        raise web.HTTPNotFound(text=json.dumps({"error": "organization not found", "details": None}),
                               content_type="application/json")
    return row


async def get_org(request: web.Request) -> web.Response:
    return web.json_response(org_view(request, await find_org(request)))


async def update_org(request: web.Request) -> web.Response:
    row = await find_org(request)
    body = await read_json(request, "OrgUpdate")
    fields: dict[str, Any] = {}
    if "timezone" in body:
        try:
            ZoneInfo(body["timezone"])
        except (KeyError, ValueError):
            return error(400, "invalid fields", {"timezone": f"unknown time zone {body['timezone']!r}"})
        fields["timezone"] = body["timezone"]
    if "name" in body:
        fields["name"] = body["name"].strip()
    if "settings" in body:
        stored = json.loads(row["settings"] or "{}")
        settings = {**stored, **body["settings"]}
        email = settings.get("contact_email")
        if email is not None and not owner_email(settings):  # the schema's pattern, strictly (no trailing newline)
            return error(400, "invalid fields", {"settings.contact_email": f"not an e-mail address: {email!r}"})
        if isinstance(settings.get("branding"), dict):  # uploaded images stay: only their own routes change them
            settings["branding"] = keep_uploaded_images(stored.get("branding"), settings["branding"])
        fields["settings"] = json.dumps(settings)
    await asyncio.to_thread(request.app[DB].update_org, row["id"], **fields)
    updated = await asyncio.to_thread(request.app[DB].org, row["id"])
    assert updated is not None
    if "settings" in fields:
        request.app[CHAT].apply_settings(row["id"], json.loads(fields["settings"]))  # open rooms follow at once
    return web.json_response(org_view(request, updated))


async def member_token(request: web.Request) -> web.Response:
    from web.api import iso
    from mediaserver.access import member_scope
    from web.keys import SIGNER

    row = await find_org(request)
    body = await read_json(request, "MemberTokenRequest")
    name = " ".join(body["name"].split())
    if not name:
        return error(400, "invalid fields", {"name": "must not be blank"})
    token, expires = request.app[SIGNER].issue(member_scope(row["id"]), float(body.get("ttl", 180 * 86400)), name)
    return web.json_response({"token": token, "name": name, "expires_at": iso(expires)}, status=201)


def stream_defaults(org: dict[str, Any] | None) -> dict[str, Any]:
    """Stream columns a new stream takes from its organization's settings."""
    if org is None:
        return {}
    settings = json.loads(org["settings"] or "{}")
    defaults: dict[str, Any] = {"timezone": org["timezone"]}
    for flag in ("dvr_enabled", "recording_enabled", "auto_publish"):
        if flag in settings:
            defaults[flag] = int(bool(settings[flag]))
    if settings.get("latency_mode") in ("LOW", "STANDARD"):
        defaults["low_latency"] = int(settings["latency_mode"] == "LOW")
    giving = settings.get("giving") or {}
    if "enabled" in giving:
        defaults["giving_enabled"] = int(bool(giving["enabled"]))
    for name in ("url", "message"):
        if giving.get(name):
            defaults[f"giving_{name}"] = giving[name]
    # default_ladder and dvr_window_minutes act per broadcast (mediaserver/sessions.py broadcast_settings),
    # so a change reaches every stream of the organization, old ones too.
    return defaults


def page_branding(org: dict[str, Any] | None) -> dict[str, Any]:
    """What the watch page's script shows of its organization (mediaserver/branding.py resolves the settings):
    the page config's "branding". Valid values only; None where unset."""
    if org is None:
        return {"church_name": None, "accent_color": None, "logo_url": None, "pre_stream_image": None}
    brand = resolve(org)
    return {"church_name": brand.name, "accent_color": brand.primary, "logo_url": brand.logo_url,
            "pre_stream_image": brand.poster_url}


def keep_uploaded_images(stored: Any, branding: dict[str, Any]) -> dict[str, Any]:
    """The new branding object with the stored logo and poster carried over (a PATCH can't set or drop them)."""
    kept = {kind: stored[kind] for kind in IMAGE_KINDS if isinstance(stored, dict) and stored.get(kind)}
    return {**{k: v for k, v in branding.items() if k not in IMAGE_KINDS}, **kept}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/orgs/{org}", get_org)
    app.router.add_patch("/api/orgs/{org}", update_org)
    app.router.add_post("/api/orgs/{org}/member-tokens", member_token)
