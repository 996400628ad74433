"""The live room over WebSockets (/ws/streams/{id}) and server-sent events (/sse/streams/{id}).

Thin: ask web/guard.py who may enter, give the viewer an identity (the signed per-browser viewer token
of the ms_viewer cookie, or a member or staff token), then pump frames between the socket and the Room.
The Room decides everything else.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp_sse import sse_response

from mediaserver.access import VIEWER_COOKIE, VIEWER_ID_TTL, Decision
from mediaserver.chat.protocol import CLOSE_AUTH_REQUIRED, CLOSE_FORBIDDEN
from mediaserver.chat.room import FrameError, Viewer, frame, parse_frame
from mediaserver.cluster.chat_relay import ChatRoom
from mediaserver.chat.moderation import RateLimit
from web.auth import error
from web.chat_admission import ADMISSION, Admission, LocalAdmission, Standing
from web.guard import client_address
from web.keys import CHAT
from web.ws_batch import SocketSink

__all__ = ["add_routes"]

log = logging.getLogger(__name__)



def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _admission(request: web.Request) -> Admission:
    """Decided here (the origin, and web workers on its host), or asked of the origin (a worker elsewhere)."""
    return request.app.get(ADMISSION) or _LOCAL


_LOCAL = LocalAdmission()


async def _refuse(ws: web.WebSocketResponse, decision: Decision | None, message: str) -> web.WebSocketResponse:
    """chat:error, then close: 4401 without credentials, 4403 with ones that don't reach the stream."""
    forbidden = decision is not None and decision.status == 403
    await ws.send_frame(frame("chat:error", {"code": "forbidden" if forbidden else "auth_required",
                                             "message": message}), WSMsgType.TEXT)
    await ws.close(code=CLOSE_FORBIDDEN if forbidden else CLOSE_AUTH_REQUIRED,
                   message=b"forbidden" if forbidden else b"auth required")
    return ws


async def _first_auth(ws: web.WebSocketResponse, conn: Standing, room: ChatRoom) -> bool:
    """A private room without credentials in the URL: wait for the auth frame; nothing is sent before it."""
    hint = 'this room is private: send {"event": "auth", "data": {"token": "..."}} first'
    try:
        msg = await ws.receive(timeout=room.limits.auth_timeout)
    except asyncio.TimeoutError:
        await _refuse(ws, None, hint)
        return False
    if msg.type != WSMsgType.TEXT:
        if msg.type not in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            await _refuse(ws, None, hint)
        return False
    try:
        event, data = parse_frame(msg.data, room.limits)
    except FrameError as exc:
        await _refuse(ws, None, f"{exc}; {hint}")
        return False
    if event != "auth":
        await _refuse(ws, None, hint)
        return False
    decision = await conn.auth_frame(_text(data.get("token")), _text(data.get("viewer")), _text(data.get("name")),
                                     first=True)
    if not decision.allowed:
        await _refuse(ws, decision, decision.reason)
        return False
    return True


async def _reauth(conn: Standing, room: ChatRoom, viewer: Viewer, data: dict[str, Any], limit: RateLimit) -> None:
    """The auth frame on a joined viewer: a token may raise the role; a viewer token sets the identity."""
    if not limit.allow():
        return room.error(viewer, "rate_limited", "too many auth frames")
    token, offered, name = data.get("token"), data.get("viewer"), data.get("name")
    if any(v is not None and not isinstance(v, str) for v in (token, offered, name)):
        return room.error(viewer, "bad_request", "token, viewer and name must be strings")
    decision = await conn.auth_frame(token or None, _text(offered), name or None, first=False)
    if not decision.allowed:
        return room.error(viewer, "auth_failed", decision.reason)
    role, asked, identity = conn.seat()
    viewer.caller = conn.caller
    room.reidentify(viewer, role=role, name=asked, identity=identity,
                    viewer_token=conn.viewer_token if role == "guest" else None)


async def websocket(request: web.Request) -> web.StreamResponse:
    opening = await _admission(request).open(request, request.match_info["stream_id"], client_address(request),
                                             gate=True)
    if opening is None:
        raise web.HTTPNotFound(text="No such stream.\n")
    stream, decision, presented, conn = opening.stream, opening.decision, opening.presented, opening.conn
    if conn is None or (presented and not decision.allowed):
        return error(decision.status, decision.reason)  # before the upgrade: nothing of the room is sent
    caller = conn.caller
    room = await request.app[CHAT].room(stream["id"], opening.settings or {}, stream["org_id"])
    room.apply_stream(stream)
    # aiohttp's own cap is the hard one (1 MiB): below it, oversized frames reach the room, which answers
    # chat:error (and closes past 64 KiB). No per-message deflate: it would compress every frame once per
    # viewer, the opposite of fan-out.
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=room.limits.hard_frame_bytes, compress=False)
    if conn.set_cookie:
        ws.set_cookie(VIEWER_COOKIE, conn.viewer_token, max_age=int(VIEWER_ID_TTL), httponly=True, samesite="Lax",
                      path="/", secure=request.secure)
    await ws.prepare(request)
    if not decision.allowed and not await _first_auth(ws, conn, room):
        request.app[CHAT].release(stream["id"])
        return ws
    viewer = conn.viewer(room.limits.send_queue)
    # Frames go straight to the socket, written once per loop turn (web/ws_batch.py); the queue then carries
    # only the close signal.
    sink = SocketSink(request, on_slow=viewer.drop_too_slow)
    viewer.sink = sink

    async def pump() -> None:
        await viewer.queue.get()  # the close signal
        if not viewer.dropped:
            sink.flush()  # what the room said before closing (e.g. why) goes first
        await ws.close(code=viewer.close_code, message=viewer.close_reason.encode())

    sender = asyncio.get_running_loop().create_task(pump())
    room.join(viewer)
    if presented and caller.problem is not None:  # a public room: in as a guest, but told why
        room.error(viewer, "auth_failed", caller.problem)
    auth_frames = RateLimit(*room.limits.auth_frames)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                auth = room.handle(viewer, msg.data)
                if auth is not None:
                    await _reauth(conn, room, viewer, auth, auth_frames)
            elif msg.type == WSMsgType.BINARY:
                room.error(viewer, "bad_frame", "send text frames of JSON")
            if viewer.closing:
                break
    finally:
        room.leave(viewer)
        request.app[CHAT].release(stream["id"])
        if viewer.closing and not sender.done():
            # Let the sender deliver what explains the close (chat:error too_large) before closing.
            await asyncio.wait([sender], timeout=5)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await ws.close()
    return ws


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events for viewers who only need state, viewer count and reactions."""
    opening = await _admission(request).open(request, request.match_info["stream_id"], client_address(request),
                                             gate=False)
    if opening is None:
        raise web.HTTPNotFound(text="No such stream.\n")
    stream, decision = opening.stream, opening.decision
    if not decision.allowed or opening.conn is None:
        return error(decision.status, decision.reason)
    room = await request.app[CHAT].room(stream["id"], opening.settings or {}, stream["org_id"])
    viewer = Viewer("sse", "listener", opening.conn.address, queue_size=64, caller=opening.conn.caller)
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
            request.app[CHAT].release(stream["id"])
    return sse


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ws/streams/{stream_id}", websocket)
    app.router.add_get("/sse/streams/{stream_id}", events)
