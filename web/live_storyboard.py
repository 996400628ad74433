"""Serves a live broadcast's storyboard (packager/live_storyboard.py): `/hls/{stream}/storyboard.vtt` and its
tiles `/hls/{stream}/{broadcast}/live-storyboard/{sequence}.jpg`, with the stream's media access rules
(web/media.py access(): a private stream needs its token, and the token rides on every tile URI).

The VTT changes as tiles come and leave the DVR window: short-cached. A tile never changes once made.
"""
from __future__ import annotations

import re
from urllib.parse import quote

from aiohttp import web

from packager.live_storyboard import TileUri
from web.keys import MANAGER
from web.media import NAME_RE, access, cors, not_found

STORYBOARD_CACHE = "public, max-age=2"
TILE_CACHE = "public, max-age=600"
SEQUENCE_RE = re.compile(r"^\d{1,12}$")


def _cache(value: str, token: str | None) -> str:
    return value.replace("public", "private") if token else value  # a viewer's token: never shared by a CDN


async def storyboard(request: web.Request) -> web.StreamResponse:
    stream_id = request.match_info["stream_id"]
    if not NAME_RE.match(stream_id):
        return not_found("storyboard")
    granted = await access(request, stream_id)
    if isinstance(granted, web.Response):
        return granted
    token = granted[1].playback_token
    broadcast = request.app[MANAGER].live_broadcast(stream_id)  # not a held preview
    if broadcast is None or broadcast.ended or broadcast.tiler is None:
        return not_found("live storyboard")
    query = f"?token={quote(token, safe='')}" if token else ""
    text = broadcast.tiler.storyboard.render(TileUri(broadcast.id, query))
    response = web.Response(text=text, content_type="text/vtt", charset="utf-8")
    response.headers["Cache-Control"] = _cache(STORYBOARD_CACHE, token)
    return cors(response)


async def tile(request: web.Request) -> web.StreamResponse:
    stream_id, broadcast_id = request.match_info["stream_id"], request.match_info["broadcast_id"]
    sequence = request.match_info["sequence"]
    if not NAME_RE.match(stream_id) or not NAME_RE.match(broadcast_id) or not SEQUENCE_RE.match(sequence):
        return not_found("tile")
    granted = await access(request, stream_id)
    if isinstance(granted, web.Response):
        return granted
    broadcast = request.app[MANAGER].live_broadcast(stream_id)
    if broadcast is None or broadcast.id != broadcast_id or broadcast.tiler is None:
        return not_found("tile")
    data = broadcast.tiler.storyboard.tile(int(sequence))
    if data is None:
        return not_found("tile")  # never made, or out of the DVR window now
    return cors(web.Response(body=data, headers={
        "Content-Type": "image/jpeg", "Cache-Control": _cache(TILE_CACHE, granted[1].playback_token)}))


def add_routes(app: web.Application) -> None:
    """Before web/media.py's routes: its catch-all under /hls/{stream}/{broadcast}/ would take the tiles."""
    app.router.add_get("/hls/{stream_id}/storyboard.vtt", storyboard)
    app.router.add_get("/hls/{stream_id}/{broadcast_id}/live-storyboard/{sequence}.jpg", tile)
