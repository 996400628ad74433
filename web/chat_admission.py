"""Who may enter a stream's live room, and as whom. One decision (web/guard.py, then Connection.seat), made by
the process that has the database (LocalAdmission: the origin and web workers on its host), or asked of the
origin over its internal endpoint (RemoteAdmission: a web worker on another host; web/internal_api.py answers
with LocalAdmission, so both paths run the same code).
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from mediaserver.access import VIEWER_COOKIE, AccessPolicy, Caller, Decision, Role
from mediaserver.chat.names import MAX_NAME, name_key
from mediaserver.chat.room import Viewer
from mediaserver.cluster.messages import MessageError, caller_from_dict, caller_to_dict
from web.auth import THROTTLE
from web.guard import ACCESS, bearer_token, stream_row, watch_access
from web.keys import DB
from web.worker_secret import HEADER as SECRET_HEADER

log = logging.getLogger(__name__)

ADMIT_PATH = "/internal/chat/admit"
# What of the client's request the origin needs to decide as if the client stood before it.
FORWARDED_HEADERS = ("Authorization", "Cookie", "Origin", "Host", "User-Agent")
FORWARDED_QUERY = ("token", "name", "viewer")
ADMIT_TIMEOUT = 10.0


class Standing:
    """One socket's standing: who the credentials say it is, and which browser it is."""

    request: web.Request
    stream: dict[str, Any]
    caller: Caller
    address: str
    asked: str
    viewer_token: str
    set_cookie: bool

    def seat(self) -> tuple[str, str, str]:
        """(role, name asked for, identity) in the room."""
        raise NotImplementedError

    async def auth_frame(self, token: str | None, viewer: str | None, name: str | None, *,
                         first: bool) -> Decision:
        """An auth frame: `token` (checked even when absent on the `first` frame of a private room) may change
        the caller; then a valid viewer token sets the browser and `name` the name asked for."""
        raise NotImplementedError

    def viewer(self, queue_size: int) -> Viewer:
        role, name, identity = self.seat()
        return Viewer(name, role, self.address, self.request.headers.get("User-Agent", ""), queue_size=queue_size,
                      caller=self.caller, identity=identity,
                      viewer_token=self.viewer_token if role == "guest" else None)


class Connection(Standing):
    """The standing decided here, over this process's database."""

    def __init__(self, request: web.Request, stream: dict[str, Any], caller: Caller, address: str) -> None:
        self.request, self.stream, self.caller, self.address = request, stream, caller, address
        self.policy: AccessPolicy = request.app[ACCESS]
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
        caller = self.caller
        if self.policy.may_manage(caller, self.stream):
            role = "admin" if caller.role is Role.ADMIN else "moderator"
            name = self.asked or role.capitalize()
            return role, name, f"{role}:{caller.org_id or '*'}:{name_key(name)}"
        if caller.role is Role.MEMBER:
            name = caller.name or "Member"  # the name the church issued the token under
            return "member", name, f"member:{caller.org_id}:{name}"
        return "guest", self.asked, f"guest:{self.viewer_id}"

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

    async def auth_frame(self, token: str | None, viewer: str | None, name: str | None, *,
                         first: bool) -> Decision:
        decision = Decision(True)
        if first or token:
            decision = await self.check(token)
            if not decision.allowed:
                return decision
        self.offer_viewer(viewer)
        if name:
            self.asked = name[:MAX_NAME * 4]
        return decision


@dataclass
class Opening:
    """The answer to a socket (or event stream) asking to enter: `conn` is None when refused before any check
    (too many bad tokens); `settings` (the organization's) is there when the room will be entered."""
    stream: dict[str, Any]
    decision: Decision
    presented: bool
    conn: Standing | None
    settings: dict[str, Any] | None


class Admission:
    """Decides entries to rooms; `gate`: a socket's rules (refuse an address blocked for bad tokens before
    checking, count every bad token), else an event stream's (count a bad token only when it refuses)."""

    async def open(self, request: web.Request, stream_id: str, address: str, *, gate: bool) -> Opening | None:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class LocalAdmission(Admission):
    async def open(self, request: web.Request, stream_id: str, address: str, *, gate: bool) -> Opening | None:
        stream = await stream_row(request, stream_id)
        if stream is None:
            return None
        throttle = request.app[THROTTLE]
        url_token = request.query.get("token") or None
        presented = url_token is not None or bearer_token(request) is not None
        if gate and presented and throttle.blocked(address):
            return Opening(stream, Decision(False, 429, "too many bad tokens from this address; try again later"),
                           presented, None, None)
        caller, decision = await watch_access(request, stream, token=url_token, token_may_be_api=True)
        conn = Connection(request, stream, caller, address)
        if caller.problem is not None and (gate or not decision.allowed):
            throttle.failed(address)
        settings = None
        if decision.allowed or (gate and not presented):
            org = await asyncio.to_thread(request.app[DB].org, stream["org_id"])
            settings = json.loads(org["settings"] or "{}") if org else {}
        return Opening(stream, decision, presented, conn, settings)

    async def restore(self, request: web.Request, stream_id: str, address: str, caller: Caller, asked: str,
                      viewer_token: str) -> Connection | None:
        """A connection as a remote worker holds it (its caller, name and browser so far), to take an auth frame."""
        stream = await stream_row(request, stream_id)
        if stream is None:
            return None
        conn = Connection(request, stream, caller, address)
        conn.asked = asked[:MAX_NAME * 4]
        conn.offer_viewer(viewer_token)
        conn.set_cookie = False
        return conn


# -- over the wire: what a remote worker sends and the origin answers (plain data, no IO) ---------------------------

def decision_to_dict(decision: Decision) -> dict[str, Any]:
    return {"allowed": decision.allowed, "status": decision.status, "reason": decision.reason}


def decision_from_dict(data: Any) -> Decision:
    if not isinstance(data, dict) or not isinstance(data.get("allowed"), bool):
        raise MessageError(f"bad decision {data!r:.80}")
    return Decision(data["allowed"], int(data.get("status", 200)), str(data.get("reason", "")))


def standing_to_dict(conn: Standing) -> dict[str, Any]:
    return {"caller": caller_to_dict(conn.caller), "asked": conn.asked, "viewer_token": conn.viewer_token,
            "set_cookie": conn.set_cookie, "seat": list(conn.seat())}


def presented_by(request: web.Request, address: str) -> dict[str, Any]:
    """What the client presented to a remote worker, for the origin to decide on."""
    return {"address": address, "scheme": request.scheme,
            "query": {k: request.query[k] for k in FORWARDED_QUERY if k in request.query},
            "headers": {k: request.headers[k] for k in FORWARDED_HEADERS if k in request.headers}}


class RemoteConnection(Standing):
    """The standing the origin decided; auth frames go back to the origin with what we hold."""

    def __init__(self, admission: "RemoteAdmission", request: web.Request, stream: dict[str, Any], address: str,
                 state: dict[str, Any]) -> None:
        self.admission, self.request, self.stream, self.address = admission, request, stream, address
        self._adopt(state)

    def _adopt(self, state: dict[str, Any]) -> None:
        caller = caller_from_dict(state.get("caller"))
        seat = state.get("seat")
        if caller is None or not isinstance(seat, list) or len(seat) != 3 or not all(isinstance(v, str) for v in seat):
            raise MessageError(f"bad standing {state!r:.120}")
        self.caller, self._seat = caller, (seat[0], seat[1], seat[2])
        self.asked, self.viewer_token = str(state.get("asked", "")), str(state.get("viewer_token", ""))
        self.set_cookie = bool(state.get("set_cookie"))

    def seat(self) -> tuple[str, str, str]:
        return self._seat

    async def auth_frame(self, token: str | None, viewer: str | None, name: str | None, *,
                         first: bool) -> Decision:
        answer = await self.admission.ask({
            "op": "auth", "stream_id": self.stream["id"], **presented_by(self.request, self.address),
            "state": {"caller": caller_to_dict(self.caller), "asked": self.asked, "viewer_token": self.viewer_token},
            "frame": {"token": token, "viewer": viewer, "name": name, "first": first}})
        if answer is None:
            return Decision(False, 503, "the server's main process is not answering; try again shortly")
        try:
            decision = decision_from_dict(answer.get("decision"))
            if decision.allowed:
                set_cookie = self.set_cookie
                self._adopt(answer["state"])
                self.set_cookie = set_cookie
        except (MessageError, KeyError, TypeError, ValueError) as exc:
            log.warning("origin's auth answer unreadable: %s", exc)
            return Decision(False, 503, "the server's main process answered something unreadable")
        return decision


class RemoteAdmission(Admission):
    """Asks the origin at `origin_url` (http://host:port), proving itself with the shared `secret`."""

    def __init__(self, origin_url: str, secret: str) -> None:
        self.url = origin_url.rstrip("/") + ADMIT_PATH
        self.secret = secret
        self._session: aiohttp.ClientSession | None = None

    async def ask(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The origin's answer, or None when it can't be reached or answers an error."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ADMIT_TIMEOUT))
        try:
            async with self._session.post(self.url, json=body, headers={SECRET_HEADER: self.secret}) as response:
                if response.status != 200:
                    log.warning("origin refused an admission call: HTTP %d", response.status)
                    return None
                answer = await response.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            log.warning("origin unreachable for admission: %s", exc)
            return None
        return answer if isinstance(answer, dict) else None

    async def open(self, request: web.Request, stream_id: str, address: str, *, gate: bool) -> Opening | None:
        answer = await self.ask({"op": "open", "stream_id": stream_id, "gate": gate,
                                 **presented_by(request, address)})
        if answer is None:
            raise web.HTTPServiceUnavailable(
                text="The server's main process is not answering; try again shortly.\n")
        if not answer.get("found"):
            return None
        try:
            stream, settings, state = answer["stream"], answer.get("settings"), answer.get("state")
            if not isinstance(stream, dict) or not isinstance(stream.get("id"), str):
                raise MessageError("no stream row")
            conn = None if state is None else RemoteConnection(self, request, stream, address, state)
            return Opening(stream, decision_from_dict(answer.get("decision")), bool(answer.get("presented")), conn,
                           settings if isinstance(settings, dict) else None)
        except (MessageError, KeyError, TypeError, ValueError) as exc:
            log.warning("origin's admission answer unreadable: %s", exc)
            raise web.HTTPServiceUnavailable(text="The server's main process answered something unreadable.\n")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


ADMISSION = web.AppKey("chat_admission", Admission)
