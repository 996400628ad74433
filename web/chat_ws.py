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

from mediaserver.access import VIEWER_COOKIE, VIEWER_ID_TTL, AccessPolicy, Caller, Decision, Role
from mediaserver.chat.protocol import CLOSE_AUTH_REQUIRED, CLOSE_FORBIDDEN
from mediaserver.chat.names import MAX_NAME, name_key
from mediaserver.chat.room import FrameError, Viewer, frame, parse_frame
from mediaserver.cluster.chat_relay import ChatRoom
from mediaserver.chat.moderation import RateLimit
from web.auth import THROTTLE, error
from web.guard import ACCESS, bearer_token, client_address, stream_row, watch_access
from web.keys import CHAT, DB

__all__ = ["add_routes"]

log = logging.getLogger(__name__)



def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class Connection:
    """One socket's standing: who the credentials say it is, and which browser it is."""

    def __init__(self, request: web.Request, stream: dict[str, Any], caller: Caller) -> None:
        self.request, self.stream, self.caller = request, stream, caller
        self.policy: AccessPolicy = request.app[ACCESS]
        self.address = client_address(request)
        self.asked = request.query.get("name", "")[:MAX_NAME * 4]
        cookie = request.cookies.get(VIEWER_COOKIE)
        self.viewer_token, self.viewer_id = self._viewer(request.query.get("viewer"), cookie)
        self.set_cookie = self.policy.viewer_id(cookie) != self.viewer_id

    def _viewer(self, *offered: str | None) -> tuple[str, str]:
        for candidate in offered:
            viewer_id = self.policy.viewer_id(candidate)
            if viewer_id and candidate:
                return candidate, viewer_id
        return self.policy.new_viewer_token()

    def offer_viewer(self, token: str | None) -> None:
        """A viewer token from the auth frame (for clients that can't keep the cookie)."""
        viewer_id = self.policy.viewer_id(token)
        if viewer_id and token:
            self.viewer_token, self.viewer_id = token, viewer_id

    def seat(self) -> tuple[str, str, str]:
        """(role, name asked for, identity) in the room."""
        caller = self.caller
        if self.policy.may_manage(caller, self.stream):
            role = "admin" if caller.role is Role.ADMIN else "moderator"
            name = self.asked or role.capitalize()
            return role, name, f"{role}:{caller.org_id or '*'}:{name_key(name)}"
        if caller.role is Role.MEMBER:
            name = caller.name or "Member"  # the name the church issued the token under
            return "member", name, f"member:{caller.org_id}:{name}"
        return "guest", self.asked, f"guest:{self.viewer_id}"

    def viewer(self, queue_size: int) -> Viewer:
        role, name, identity = self.seat()
        return Viewer(name, role, self.address, self.request.headers.get("User-Agent", ""), queue_size=queue_size,
                      caller=self.caller, identity=identity, viewer_token=self.viewer_token if role == "guest" else None)

    async def check(self, token: str | None) -> Decision:
        """Adopt what `token` proves; a bad one is refused (and counted against the address)."""
        throttle = self.request.app[THROTTLE]
        if token and throttle.blocked(self.address):
            return Decision(False, 403, "too many bad tokens from this address; try again later")
        caller, decision = await watch_access(self.request, self.stream, token=token, token_may_be_api=True)
        if caller.problem is not None:
            throttle.failed(self.address)
            return Decision(False, 403, caller.problem)
        if decision.allowed:
            self.caller = caller
        return decision


async def _refuse(ws: web.WebSocketResponse, decision: Decision | None, message: str) -> web.WebSocketResponse:
    """chat:error, then close: 4401 without credentials, 4403 with ones that don't reach the stream."""
    forbidden = decision is not None and decision.status == 403
    await ws.send_frame(frame("chat:error", {"code": "forbidden" if forbidden else "auth_required",
                                             "message": message}), WSMsgType.TEXT)
    await ws.close(code=CLOSE_FORBIDDEN if forbidden else CLOSE_AUTH_REQUIRED,
                   message=b"forbidden" if forbidden else b"auth required")
    return ws


async def _first_auth(ws: web.WebSocketResponse, conn: Connection, room: ChatRoom) -> bool:
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
    decision = await conn.check(_text(data.get("token")))
    if not decision.allowed:
        await _refuse(ws, decision, decision.reason)
        return False
    conn.offer_viewer(_text(data.get("viewer")))
    conn.asked = (_text(data.get("name")) or conn.asked)[:MAX_NAME * 4]
    return True


async def _reauth(conn: Connection, room: ChatRoom, viewer: Viewer, data: dict[str, Any], limit: RateLimit) -> None:
    """The auth frame on a joined viewer: a token may raise the role; a viewer token sets the identity."""
    if not limit.allow():
        return room.error(viewer, "rate_limited", "too many auth frames")
    token, offered, name = data.get("token"), data.get("viewer"), data.get("name")
    if any(v is not None and not isinstance(v, str) for v in (token, offered, name)):
        return room.error(viewer, "bad_request", "token, viewer and name must be strings")
    if token:
        decision = await conn.check(token)
        if not decision.allowed:
            return room.error(viewer, "auth_failed", decision.reason)
    conn.offer_viewer(_text(offered))
    if name:
        conn.asked = name[:MAX_NAME * 4]
    role, asked, identity = conn.seat()
    viewer.caller = conn.caller
    room.reidentify(viewer, role=role, name=asked, identity=identity,
                    viewer_token=conn.viewer_token if role == "guest" else None)


async def websocket(request: web.Request) -> web.StreamResponse:
    stream = await stream_row(request, request.match_info["stream_id"])
    if stream is None:
        raise web.HTTPNotFound(text="No such stream.\n")
    url_token = request.query.get("token") or None
    presented = url_token is not None or bearer_token(request) is not None
    if presented and request.app[THROTTLE].blocked(client_address(request)):
        return error(429, "too many bad tokens from this address; try again later")
    caller, decision = await watch_access(request, stream, token=url_token, token_may_be_api=True)
    conn = Connection(request, stream, caller)
    if caller.problem is not None:
        request.app[THROTTLE].failed(conn.address)
    if presented and not decision.allowed:
        return error(decision.status, decision.reason)  # before the upgrade: nothing of the room is sent
    org = await asyncio.to_thread(request.app[DB].org, stream["org_id"])
    settings = json.loads(org["settings"] or "{}") if org else {}
    room = await request.app[CHAT].room(stream["id"], settings, stream["org_id"])
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

    async def pump() -> None:
        # Frames arrive already encoded, once per event for the whole room; each wake-up writes all that is
        # queued in one transport write (web/ws_batch.py), then the close signal closes as the room asked.
        from web.ws_batch import pump_frames
        await pump_frames(ws, request, viewer.queue)
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
    stream = await stream_row(request, request.match_info["stream_id"])
    if stream is None:
        raise web.HTTPNotFound(text="No such stream.\n")
    caller, decision = await watch_access(request, stream, token=request.query.get("token") or None,
                                          token_may_be_api=True)
    if not decision.allowed:
        if caller.problem is not None:
            request.app[THROTTLE].failed(client_address(request))
        return error(decision.status, decision.reason)
    org = await asyncio.to_thread(request.app[DB].org, stream["org_id"])
    room = await request.app[CHAT].room(stream["id"], json.loads(org["settings"] or "{}") if org else {},
                                        stream["org_id"])
    viewer = Viewer("sse", "listener", client_address(request), queue_size=64, caller=caller)
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
