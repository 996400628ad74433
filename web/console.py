"""The volunteers' console at /admin: sign-in (an organization token or the admin token, traded once for
an HttpOnly session cookie), sign-out, and the console page itself, a small app over the REST API.

The page carries its session's CSRF token; every change the console makes goes through /api with that
token in X-CSRF-Token (checked in web/auth.py), so another site can neither read nor forge one.
"""
from __future__ import annotations

import asyncio
import html
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from mediaserver.access import Role
from web.auth import THROTTLE
from web.console_auth import COOKIE, CONSOLE_SESSIONS, console_session, csrf_problem, same_origin
from web.guard import ACCESS, client_address
from web.keys import DB

log = logging.getLogger(__name__)
ADMIN_DIR = Path(__file__).parent / "static" / "admin"
MAX_FORM = 4096

_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # same-origin, not no-referrer: with no-referrer Chromium posts the sign-in form with "Origin: null".
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def _json_for_script(value: Any) -> str:
    # '<', '>' and '&' escaped so nothing in a value can close the <script> element it sits in.
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


async def sign_in_page(request: web.Request, message: str = "", status: int = 200) -> web.Response:
    template = await asyncio.to_thread((ADMIN_DIR / "signin.html").read_text)
    notice = f'<p class="notice" role="alert">{html.escape(message)}</p>' if message else ""
    if not message and request.query.get("ended"):
        notice = '<p class="notice" role="status">Your session has ended. Sign in again.</p>'
    return web.Response(text=template.replace("__NOTICE__", notice), content_type="text/html", status=status,
                        headers=_PAGE_HEADERS)


async def sign_in_form(request: web.Request) -> web.Response:
    if await console_session(request) is not None:
        raise web.HTTPSeeOther("/admin")
    return await sign_in_page(request)


async def sign_in(request: web.Request) -> web.Response:
    if not same_origin(request):
        # A page elsewhere can't sign a browser into a session it chose (login CSRF).
        return await sign_in_page(request, "Sign-in must come from this server's own page.", 403)
    if request.content_length is not None and request.content_length > MAX_FORM:
        return await sign_in_page(request, "That is not a token.", 400)
    form = await request.post()
    token = str(form.get("token", "")).strip()
    address = client_address(request)
    throttle = request.app[THROTTLE]
    if throttle.blocked(address):
        return await sign_in_page(request, "Too many wrong tokens from this address; try again later.", 429)
    policy = request.app[ACCESS]
    caller = policy.admin_caller(token) if token else None
    if caller is None and token:
        caller = await asyncio.to_thread(policy.api_caller, token)
    if caller is None or caller.role not in (Role.ADMIN, Role.STAFF):
        if token:
            delay = throttle.failed(address)
            if delay:
                await asyncio.sleep(delay)
            log.warning("console: a wrong token from %s", address)
        return await sign_in_page(request, "That token is not valid. Use your organization's API token.", 401)
    session_id, session = await asyncio.to_thread(
        request.app[CONSOLE_SESSIONS].create, "admin" if caller.role is Role.ADMIN else "staff", caller.org_id,
        request.headers.get("User-Agent", ""), address)
    log.info("console: %s signed in from %s", caller.org_id or "the server admin", address)
    response = web.HTTPSeeOther("/admin")
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="Strict", path="/", secure=request.secure,
                        max_age=int(request.app[CONSOLE_SESSIONS].lifetime))
    raise response


async def sign_out(request: web.Request) -> web.Response:
    session = await console_session(request)
    if session is not None:
        form = await request.post() if request.content_type == "application/x-www-form-urlencoded" else {}
        if (problem := csrf_problem(request, session, dict(form))) is not None:
            return web.Response(status=403, text=problem + "\n")
        await asyncio.to_thread(request.app[CONSOLE_SESSIONS].delete, request.cookies[COOKIE])
    response = web.HTTPSeeOther("/admin/sign-in")
    response.del_cookie(COOKIE, path="/")
    raise response


async def _who(request: web.Request) -> dict[str, Any] | None:
    session = await console_session(request)
    if session is None:
        return None
    db = request.app[DB]
    orgs = await asyncio.to_thread(db.orgs)
    if session.role != "admin":
        orgs = [org for org in orgs if org["id"] == session.org_id]
    return {**request.app[CONSOLE_SESSIONS].view(session),
            "orgs": [{"id": org["id"], "slug": org["slug"], "name": org["name"], "timezone": org["timezone"]}
                     for org in orgs]}


async def console_page(request: web.Request) -> web.Response:
    who = await _who(request)
    if who is None:
        ended = "?ended=1" if request.cookies.get(COOKIE) else ""
        raise web.HTTPSeeOther("/admin/sign-in" + ended)
    template = await asyncio.to_thread((ADMIN_DIR / "index.html").read_text)
    page = template.replace("__CONSOLE_SESSION__", _json_for_script(who)).replace(
        "__CSRF__", html.escape(who["csrf_token"]))
    return web.Response(text=page, content_type="text/html", headers=_PAGE_HEADERS)


async def session_info(request: web.Request) -> web.Response:
    who = await _who(request)
    if who is None:
        return web.json_response({"error": "not signed in", "details": "sign in at /admin"}, status=401)
    return web.json_response(who, headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin", console_page)
    app.router.add_get("/admin/", console_page)
    app.router.add_get("/admin/sign-in", sign_in_form)
    app.router.add_post("/admin/sign-in", sign_in)
    app.router.add_post("/admin/sign-out", sign_out)
    app.router.add_get("/admin/session", session_info)
