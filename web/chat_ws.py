"""The live room over WebSockets (/ws/streams/{id}) and server-sent events (/sse/streams/{id}).

Thin: identify the viewer, pump frames between the socket and the Room; the Room decides everything.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp_sse import sse_response

from mediaserver.chat_room import MAX_FRAME, Room, Viewer
from mediaserver.chat_store import ChatStore
from mediaserver.events import Event, LocalEventBus
from mediaserver.moderation import BlockedWords, ModerationPolicy
from mediaserver.playback_tokens import TokenError
from web.keys import ADMIN_TOKEN, DB, SIGNER

log = logging.getLogger(__name__)
RESERVED_NAMES = re.compile(r"\b(mod|moderator|admin|administrator|pastor|host|staff|system)\b", re.IGNORECASE)


class ChatHub:
    """Rooms by stream id, created on first join with the organization's moderation settings."""

    def __init__(self, store: ChatStore, bus: LocalEventBus) -> None:
        self.store = store
        self.rooms: dict[str, Room] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        bus.subscribe(self._on_event)

    async def room(self, stream_id: str, org_settings: dict[str, Any]) -> Room:
        lock = self._locks.setdefault(stream_id, asyncio.Lock())
        async with lock:
            room = self.rooms.get(stream_id)
            if room is None:
                chat = org_settings.get("chat", {})
                policy = ModerationPolicy(
                    blocked=BlockedWords(chat.get("blocked_words", [])),
                    link_filter=chat.get("link_filter", True),
                    slow_mode_seconds=float(chat.get("slow_mode_seconds", 0)),
                    hold_for_review=bool(chat.get("hold_for_review", False)),
                )
                room = Room(stream_id, self.store, policy)
                await room.start()
                self.rooms[stream_id] = room
            return room

    async def _on_event(self, event: Event) -> None:
        room = self.rooms.get(event.stream_id)
        if room is None:
            return
        if event.name == "stream.live":
            room.broadcast("stream:live", {"stream_id": event.stream_id})
            room.system_message("The service is live. Welcome!")
        elif event.name in ("stream.ended", "stream.failed"):
            room.broadcast("stream:ended", {"stream_id": event.stream_id})
            room.system_message("The service has ended. Thank you for worshipping with us.")

    async def stop(self) -> None:
        for room in self.rooms.values():
            for viewer in list(room.viewers.values()):
                if not viewer.queue.full():
                    viewer.queue.put_nowait(None)  # ends the socket's sender
            await room.stop()
        await self.store.stop()


CHAT = web.AppKey("chat_hub", ChatHub)


async def identify(request: web.Request, stream: dict[str, Any]) -> tuple[str, str]:
    """(name, role): staff by API token; guests by a display name that can't pose as staff."""
    token = request.query.get("token") or request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if token:
        if hmac.compare_digest(token.encode(), request.app[ADMIN_TOKEN].encode()):
            return request.query.get("name", "Admin")[:40] or "Admin", "admin"
        try:
            grant = request.app[SIGNER].check(token, member_scope(stream["org_id"]))
            return str(grant.viewer_id or "Member")[:40], "member"  # the name is the one the church issued
        except TokenError:
            pass
        org_id = await asyncio.to_thread(request.app[DB].token_org, token)
        if org_id is not None and org_id == stream["org_id"]:
            return request.query.get("name", "Moderator")[:40] or "Moderator", "moderator"
    name = " ".join(request.query.get("name", "").split())[:40]
    if not name or RESERVED_NAMES.search(name):
        name = f"Guest {abs(hash(request.remote)) % 10000:04d}"
    return name, "guest"


def member_scope(org_id: str) -> str:
    """What a member token is signed for: membership of one organization (not one stream)."""
    return f"member:{org_id}"


async def websocket(request: web.Request) -> web.StreamResponse:
    stream = await asyncio.to_thread(request.app[DB].stream, request.match_info["stream_id"])
    if stream is None:
        raise web.HTTPNotFound(text="No such stream.\n")
    org = await asyncio.to_thread(request.app[DB].org, stream["org_id"])
    settings = json.loads(org["settings"] or "{}") if org else {}
    room = await request.app[CHAT].room(stream["id"], settings)
    # Frames over our limit must reach the room (which answers chat:error), so aiohttp's own cap is higher.
    # No per-message deflate: it would compress every frame once per viewer, the opposite of fan-out.
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_FRAME * 16, compress=False)
    await ws.prepare(request)
    name, role = await identify(request, stream)
    viewer = Viewer(name, role, request.remote or "?", request.headers.get("User-Agent", ""))

    async def pump() -> None:
        # Frames arrive already encoded, once per event for the whole room.
        while True:
            payload = await viewer.queue.get()
            if payload is None:
                break
            await ws.send_frame(payload, WSMsgType.TEXT)
        await ws.close(code=1008 if viewer.dropped else 1000, message=b"too slow" if viewer.dropped else b"")

    sender = asyncio.get_running_loop().create_task(pump())
    room.join(viewer)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                room.handle(viewer, msg.data)
            elif msg.type == WSMsgType.BINARY:
                room.error(viewer, "bad_frame", "send text frames of JSON")
            if viewer.dropped:
                break
    finally:
        room.leave(viewer)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await ws.close()
    return ws


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events for viewers who only need state, viewer count and reactions."""
    stream = await asyncio.to_thread(request.app[DB].stream, request.match_info["stream_id"])
    if stream is None:
        raise web.HTTPNotFound(text="No such stream.\n")
    org = await asyncio.to_thread(request.app[DB].org, stream["org_id"])
    room = await request.app[CHAT].room(stream["id"], json.loads(org["settings"] or "{}") if org else {})
    viewer = Viewer("sse", "listener", request.remote or "?", queue_size=64)
    async with sse_response(request) as sse:
        await sse.send(json.dumps({"status": stream["status"]}), event="stream:state")
        room.join(viewer)
        try:
            while True:
                text = await viewer.queue.get()
                if text is None:
                    break
                message = json.loads(text)  # SSE listeners are few; parsing here keeps the room simple
                if message["event"] in ("stream:viewers", "stream:reactions", "stream:live", "stream:ended"):
                    await sse.send(json.dumps(message["data"]), event=message["event"])
        finally:
            room.leave(viewer)
    return sse


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ws/streams/{stream_id}", websocket)
    app.router.add_get("/sse/streams/{stream_id}", events)
