"""GET /api/backends: the video platforms this server can put a stream on (builtin always; Mux and AWS IVS when
configured), what each can and can't do in plain words, and the caller's organization default. The console
builds its "Video platform" choices from it. No credentials or endpoints are in it: only capabilities."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from mediaserver.backends.base import Capabilities
from mediaserver.db import DEFAULT_ORG
from web.auth import SCOPE, error, manages
from web.backends_api import BACKENDS
from web.keys import DB

LABELS = {"builtin": "This server", "mux": "Mux", "ivs": "AWS IVS"}
SIGNING = {"token": "this server's playback tokens", "jwt": "Mux signed playback (JWT)",
           "ivs-token": "IVS playback authorization (key pair)"}


def lacks(caps: Capabilities) -> list[str]:
    """What a platform can't do of what a church may expect, shortest words first (the console's option text)."""
    missing = []
    if not caps.dvr_window:
        missing.append("no DVR window")
    if "realtime" not in caps.latency_modes:
        missing.append("no real-time mode")
    if not caps.recording:
        missing.append("no recordings")
    if not caps.simulcast:
        missing.append("no simulcast")
    if not caps.srt_ingest:
        missing.append("no SRT ingest")
    if not caps.rtmps_ingest:
        missing.append("no RTMPS ingest")
    return missing


def describe(name: str, caps: Capabilities) -> dict[str, Any]:
    """One platform as the API answers it. `summary` leaves out "no real-time mode" when no platform here has one
    (saying it of every option tells a volunteer nothing); the full list is in `lacks`."""
    label = LABELS.get(name, name)
    missing = lacks(caps)
    shown = [m for m in missing if m != "no real-time mode"]
    return {
        "name": name, "label": label,
        "summary": f"{label} — {', '.join(shown)}" if shown else label,
        "latency_modes": list(caps.latency_modes), "dvr_window": caps.dvr_window, "recording": caps.recording,
        "srt_ingest": caps.srt_ingest, "rtmps_ingest": caps.rtmps_ingest, "simulcast": caps.simulcast,
        "signed_playback": SIGNING.get(caps.signed_playback, caps.signed_playback),
        "lacks": missing, "notes": list(caps.notes),
    }


async def list_backends(request: web.Request) -> web.Response:
    """The configured platforms and the default of the caller's organization (an admin may name one: ?org=)."""
    wanted = request.query.get("org") or request[SCOPE] or DEFAULT_ORG
    org = await asyncio.to_thread(request.app[DB].org, wanted)
    if org is None or not manages(request, org["id"]):
        return error(404, "organization not found", None)
    registry = request.app[BACKENDS]
    names = registry.names()
    stored = json.loads(org["settings"] or "{}").get("backend") or "builtin"
    return web.json_response({
        "backends": [describe(name, registry.get(name).capabilities) for name in names],
        "org_id": org["id"],
        "default": stored,
        # A default whose platform was taken out of config.toml: new streams would be refused until it is changed.
        "default_available": stored in names,
    })


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/backends", list_backends)
