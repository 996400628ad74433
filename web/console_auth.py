"""The console's session cookie as an API caller: one function every route asks (the API middleware in
web/auth.py, and web/guard.py for media, pages, the chat room and events).

A cookie is honoured only when the request comes from our own pages: a cross-site Origin voids it (the
cookie is SameSite=Strict as well), and a request that changes something must also carry the session's
CSRF token (X-CSRF-Token, or a form's csrf field for the sign-out form).
"""
from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from mediaserver.access import ADMIN, Caller, Role
from mediaserver.console_sessions import ConsoleSession, ConsoleSessions
from web.keys import CONFIG

COOKIE = "ms_console"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CONSOLE_SESSIONS = web.AppKey("console_sessions", ConsoleSessions)
SESSION: web.RequestKey[ConsoleSession] = web.RequestKey("console_session", ConsoleSession)


def same_origin(request: web.Request) -> bool:
    """No Origin (a plain navigation, an old client) or one naming this server (directly or its public URL)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    host = urlsplit(origin).netloc.lower()
    public = urlsplit(request.app[CONFIG].server.public_url).netloc.lower()
    return bool(host) and host in {request.host.lower(), public}


async def console_session(request: web.Request) -> ConsoleSession | None:
    """The live console session behind the request's cookie, if any (cached per request)."""
    if SESSION in request:
        return request[SESSION]
    session_id = request.cookies.get(COOKIE)
    if not session_id or len(session_id) > 100 or not same_origin(request):
        return None
    sessions = request.app[CONSOLE_SESSIONS]
    known, session = sessions.cached(session_id)
    if not known:
        session = await asyncio.to_thread(sessions.load, session_id)
    if session is None:
        return None
    if sessions.needs_write(session):
        await asyncio.to_thread(sessions.flush_touch, session)
    request[SESSION] = session
    return session


def session_caller(session: ConsoleSession) -> Caller:
    return ADMIN if session.role == "admin" else Caller(Role.STAFF, org_id=session.org_id)


async def console_caller(request: web.Request) -> Caller | None:
    session = await console_session(request)
    return None if session is None else session_caller(session)


def csrf_problem(request: web.Request, session: ConsoleSession, form: dict[str, Any] | None = None) -> str | None:
    """Why a change request under a console session must be refused, or None."""
    if request.method in SAFE_METHODS:
        return None
    presented = request.headers.get(CSRF_HEADER) or (str(form.get("csrf", "")) if form else None)
    if not session.csrf_matches(presented):
        return f"missing or wrong CSRF token: send the console's {CSRF_HEADER} header"
    return None
