"""The origin's endpoint for web workers on other hosts (no database there): POST /internal/chat/admit decides a
room entry or an auth frame with the origin's own code (web/chat_admission.py LocalAdmission) on what the client
presented to the worker. Only a request carrying the worker secret gets an answer; any other gets 404, as if the
route weren't there. Not part of the public API (not in OpenAPI).
"""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from mediaserver.cluster.messages import MessageError, caller_from_dict
from web.chat_admission import (ADMISSION, ADMIT_PATH, FORWARDED_HEADERS, FORWARDED_QUERY, LocalAdmission,
                                decision_to_dict, standing_to_dict)
from web.worker_secret import WORKER_SECRET, presented_secret_ok, read_secret

MAX_BODY = 64 * 1024


def _strings(value: Any, allowed: tuple[str, ...]) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if k in allowed and isinstance(v, str)}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _as_client(request: web.Request, body: dict[str, Any], stream_id: str) -> web.Request:
    """The request as the client made it to the worker: its credentials, cookies, origin and query."""
    headers = CIMultiDict(_strings(body.get("headers"), FORWARDED_HEADERS))
    query = _strings(body.get("query"), FORWARDED_QUERY)
    scheme = "https" if body.get("scheme") == "https" else "http"
    return request.clone(headers=headers, rel_url=URL.build(path=f"/ws/streams/{stream_id}", query=query),
                         method="GET", scheme=scheme, host=headers.get("Host", request.host))


async def admit(request: web.Request) -> web.Response:
    if not presented_secret_ok(request):
        raise web.HTTPNotFound(text="Not Found")
    if (request.content_length or 0) > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length or 0)
    # Read from the stream, not request.json(): aiohttp won't clone a request whose body it has read, and the
    # decision is made on a clone that looks like the client's request.
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=len(raw))
    try:
        body = json.loads(raw)
    except ValueError:
        raise web.HTTPBadRequest(text="a JSON body is required") from None
    stream_id, address = body.get("stream_id") if isinstance(body, dict) else None, body.get("address")
    if not isinstance(stream_id, str) or not stream_id or "/" in stream_id or not isinstance(address, str):
        raise web.HTTPBadRequest(text="stream_id and address are required")
    client = _as_client(request, body, stream_id)
    local = LocalAdmission()
    if body.get("op") == "open":
        opening = await local.open(client, stream_id, address, gate=bool(body.get("gate", True)))
        if opening is None:
            return web.json_response({"found": False})
        return web.json_response({
            "found": True, "stream": opening.stream, "settings": opening.settings, "presented": opening.presented,
            "decision": decision_to_dict(opening.decision),
            "state": None if opening.conn is None else standing_to_dict(opening.conn)}, dumps=_dumps)
    if body.get("op") == "auth":
        state, frame = body.get("state"), body.get("frame")
        if not isinstance(state, dict) or not isinstance(frame, dict):
            raise web.HTTPBadRequest(text="state and frame are required")
        try:
            caller = caller_from_dict(state.get("caller"))
        except MessageError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        if caller is None:
            raise web.HTTPBadRequest(text="state.caller is required")
        conn = await local.restore(client, stream_id, address, caller, str(state.get("asked") or ""),
                                   str(state.get("viewer_token") or ""))
        if conn is None:
            return web.json_response({"decision": {"allowed": False, "status": 404, "reason": "no such stream"}})
        decision = await conn.auth_frame(_text(frame.get("token")), _text(frame.get("viewer")),
                                         _text(frame.get("name")), first=bool(frame.get("first")))
        return web.json_response({"decision": decision_to_dict(decision), "state": standing_to_dict(conn)})
    raise web.HTTPBadRequest(text="op must be open or auth")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def install(app: web.Application, secret_file: str) -> None:
    """On the origin: decide room entries here, and answer remote workers when a secret is configured."""
    app[ADMISSION] = LocalAdmission()
    if secret_file:
        app[WORKER_SECRET] = read_secret(secret_file)
    app.router.add_post(ADMIT_PATH, admit)
