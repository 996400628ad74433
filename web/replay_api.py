"""Chat replay of a recording (GET, the recording's own access decision: public for a public stream) and the
moderators' hide/unhide from the replay (staff of the stream's organization; audit-logged). Thin: the timeline
and the filtering are mediaserver/chat_replay.py's."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from mediaserver.chat_replay import ReplayStore, read_replay
from web.api import find_stream, iso
from web.auth import CALLER, error
from web.guard import ACCESS
from web.keys import CHAT, CONFIG, DB, MANAGER, STORE
from web.media import access

REPLAY = web.AppKey("chat_replay_store", ReplayStore)


async def _recording(request: web.Request, stream_id: str) -> dict[str, Any] | None:
    return await asyncio.to_thread(request.app[DB].recording, stream_id, request.match_info["recording_id"])


def _prefix(recording: dict[str, Any]) -> str:
    return str(recording["playlist_key"]).rsplit("/", 1)[0]


async def chat_replay(request: web.Request) -> web.Response:
    stream_id = request.match_info["stream_id"]
    granted = await access(request, stream_id)  # as for the recording's playlists and segments
    if isinstance(granted, web.Response):
        # The media routes answer in plain text; this is the API: the same refusal, as JSON.
        refusal = error(granted.status, (granted.text or "").strip() or "not allowed", None)
        for header in ("WWW-Authenticate", "Retry-After"):
            if header in granted.headers:
                refusal.headers[header] = granted.headers[header]
        return refusal
    stream, caller = granted
    recording = await _recording(request, stream_id)
    if recording is None or (request.app[MANAGER].previewing(stream_id, recording["broadcast_id"])
                             and not request.app[ACCESS].may_see_preview(caller, stream)):
        return error(404, "recording not found", None)
    staff = request.app[ACCESS].manages_org(caller, stream["org_id"])
    await request.app[CHAT].store.flush()  # what the rooms queued is on disk before it is read
    timeline, items = await asyncio.to_thread(read_replay, request.app[REPLAY], request.app[STORE], stream_id,
                                              _prefix(recording), staff)
    response = web.json_response({
        "stream_id": stream_id, "recording_id": recording["id"], "duration": round(timeline.duration, 3),
        "started_at": iso(timeline.wall[0]) if timeline.wall else None, "items": items})
    response.headers["Cache-Control"] = "private, no-cache" if staff or caller.playback_token else "public, max-age=10"
    return response


async def _set_hidden(request: web.Request, hide: bool) -> web.Response:
    stream = await find_stream(request)  # staff of the stream's organization; others get 404
    recording = await _recording(request, stream["id"])
    if recording is None:
        return error(404, "recording not found", None)
    message_id = request.match_info["message_id"]
    replay = request.app[REPLAY]
    await request.app[CHAT].store.flush()
    message = await asyncio.to_thread(replay.message, stream["id"], message_id)
    if message is None:
        return error(404, "message not found", None)
    caller = request[CALLER]
    moderator = caller.name or caller.role.value
    await asyncio.to_thread(replay.set_hidden, stream["id"], message_id, hide, moderator)
    request.app[CHAT].store.audit(stream["id"], time.time(), moderator, "replay_hide" if hide else "replay_unhide",
                                  message_id, {"recording": recording["id"]})
    return web.json_response({"id": message_id, "hidden": hide})


async def hide(request: web.Request) -> web.Response:
    return await _set_hidden(request, True)


async def unhide(request: web.Request) -> web.Response:
    return await _set_hidden(request, False)


def add_routes(app: web.Application) -> None:
    app[REPLAY] = ReplayStore(app[CONFIG].data_path / "mediaserver.db")

    async def close(app: web.Application) -> None:
        app[REPLAY].db.conn.close()
    app.on_cleanup.append(close)
    base = "/api/streams/{stream_id}/recordings/{recording_id}/chat-replay"
    app.router.add_get(base, chat_replay)
    app.router.add_post(base + "/{message_id}/hide", hide)
    app.router.add_post(base + "/{message_id}/unhide", unhide)
