"""Who is calling the admin API: the server's admin token (every organization) or an organization's token
(decided by mediaserver/access.py).

Repeated bad tokens from one address are answered ever more slowly, then refused for a while; requests
without a token and requests with a correct one are never counted or refused by that throttle.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from typing import Any

from aiohttp import web

from mediaserver.access import Caller, Role
from web.console_auth import COOKIE, console_session, csrf_problem, session_caller
from web.guard import ACCESS, bearer_token, client_address

# The caller's reach: None = every organization (the server admin), else one organization id.
SCOPE: web.RequestKey[str | None] = web.RequestKey("org_scope", object)  # type: ignore[arg-type]
ALL_ORGS = None
CALLER: web.RequestKey[Caller] = web.RequestKey("api_caller", Caller)


def manages(request: web.Request, org_id: str) -> bool:
    """Whether the API caller may read and change this organization's objects (the access policy decides)."""
    return request.app[ACCESS].manages_org(request[CALLER], org_id)


class BadTokenThrottle:
    """Counts failed token checks per address over a sliding window."""

    def __init__(self, window: float = 600.0, free_failures: int = 5, block_after: int = 30, max_delay: float = 5.0) -> None:
        self.window, self.free_failures, self.block_after, self.max_delay = window, free_failures, block_after, max_delay
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, address: str) -> deque[float]:
        q = self._failures[address]
        cutoff = time.monotonic() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def blocked(self, address: str) -> bool:
        return len(self._recent(address)) >= self.block_after

    def failed(self, address: str) -> float:
        """Record a failure; returns how long to wait before answering."""
        q = self._recent(address)
        q.append(time.monotonic())
        if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
            for key in list(self._failures)[:5000]:
                del self._failures[key]
        extra = len(q) - self.free_failures
        return 0.0 if extra <= 0 else min(self.max_delay, 0.1 * 2 ** extra)


THROTTLE = web.AppKey("bad_token_throttle", BadTokenThrottle)


def error(status: int, message: str, details: Any = None) -> web.Response:
    return web.json_response({"error": message, "details": details}, status=status)


def unauthorized(message: str) -> web.Response:
    response = error(401, message, "send Authorization: Bearer <token>")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


@web.middleware
async def require_token(request: web.Request, handler: Any) -> web.StreamResponse:
    # The API description and calendar feeds (subscribed to by calendar apps) are public.
    if not request.path.startswith("/api/") or request.path == "/api/openapi.json" or request.path.endswith("/calendar.ics"):
        return await handler(request)
    # A recording's chat replay is as public as the recording: web/replay_api.py asks the access policy itself.
    if request.method in ("GET", "HEAD") and request.path.endswith("/chat-replay"):
        return await handler(request)
    token = bearer_token(request)
    if not token:
        # The console signs in once and then calls the API with its session cookie (and CSRF header).
        session = await console_session(request)
        if session is not None:
            if (problem := csrf_problem(request, session)) is not None:
                return error(403, problem, None)
            signed_in = session_caller(session)
            request[CALLER] = signed_in
            request[SCOPE] = ALL_ORGS if signed_in.role is Role.ADMIN else signed_in.org_id
            return await handler(request)
        # Nothing was guessed: no failure to count (behind a church's NAT, that would lock the staff out).
        if request.cookies.get(COOKIE):
            return unauthorized("your console session has ended; sign in again at /admin")
        return unauthorized("a valid API token is required")
    policy = request.app[ACCESS]
    caller = policy.admin_caller(token)  # the server's admin token needs no database: decided on the loop
    if caller is None:
        caller = await asyncio.to_thread(policy.api_caller, token)
    if caller.role is Role.ANONYMOUS:
        # Only wrong tokens count, per client address; a correct token is never refused.
        throttle, address = request.app[THROTTLE], client_address(request)
        if throttle.blocked(address):
            return error(429, "too many bad tokens from this address; try again later", None)
        delay = throttle.failed(address)
        if delay:
            await asyncio.sleep(delay)
        return unauthorized("a valid API token is required")
    request[CALLER] = caller
    request[SCOPE] = ALL_ORGS if caller.role is Role.ADMIN else caller.org_id
    return await handler(request)
