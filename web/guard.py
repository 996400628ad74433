"""The web side of access: finds the credentials and the client's address in a request and asks the
one AccessPolicy (mediaserver/access.py). Every route that serves a stream's data goes through here.

Stream rows come from an in-memory cache kept current by the database's writes (mediaserver/stream_cache.py),
so a playlist or segment request without an API token is decided on the loop, with no thread hop.
"""
from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from aiohttp import web

from mediaserver.access import AccessPolicy, Caller, Decision
from mediaserver.stream_cache import StreamCache
from web.console_auth import console_caller
from web.keys import CONFIG, DB
from web.worker_secret import presented_secret_ok

ACCESS = web.AppKey("access_policy", AccessPolicy)
STREAMS = web.AppKey("stream_cache", StreamCache)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: list[str]) -> list[Network]:
    return [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip()]


def _trusted(address: str, networks: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def from_web_worker(request: web.Request) -> bool:
    """The request came from one of this server's web workers: over the origin's Unix socket, which only they
    can reach, or over TCP from a worker on another host carrying the shared worker secret."""
    transport = request.transport
    if transport is not None and isinstance(transport.get_extra_info("sockname"), str):
        return True
    return presented_secret_ok(request)


def client_address(request: web.Request) -> str:
    """The client's address: the peer, or, behind a configured trusted proxy, the X-Forwarded-For entry
    the nearest untrusted hop added (entries further left can be forged by the client)."""
    peer = request.remote or "?"
    if from_web_worker(request):
        # Our own web worker, over the origin's Unix socket: it names the client in the last entry it adds.
        hops = [h.strip() for value in request.headers.getall("X-Forwarded-For", []) for h in value.split(",")]
        try:
            return str(ipaddress.ip_address(hops[-1]))
        except (IndexError, ValueError):
            return peer
    networks = request.app.get(TRUSTED_PROXIES) or []
    if not networks or not _trusted(peer, networks):
        return peer
    hops = [h.strip() for value in request.headers.getall("X-Forwarded-For", []) for h in value.split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a garbled header from a trusted proxy: fall back to the proxy itself
    return peer


TRUSTED_PROXIES = web.AppKey("trusted_proxies", list)


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


async def stream_row(request: web.Request, stream_id: str) -> dict[str, Any] | None:
    """The stream's row (shared: don't change it), or None; from memory when held, else read off the loop."""
    return await request.app[STREAMS].get(stream_id)


async def caller_for(request: web.Request, stream: dict[str, Any], *, token: str | None = None,
                     token_may_be_api: bool = False) -> Caller:
    """Who is asking about this stream: Authorization header, else the token given (or ?token=)."""
    policy = request.app[ACCESS]
    api_token = bearer_token(request)
    if api_token is None:
        # The console's signed-in volunteers, by cookie.
        if (caller := await console_caller(request)) is not None:
            return caller
    token = token if token is not None else (request.query.get("token") or None)
    if api_token is None and token is not None and not token_may_be_api:
        # A signed token needs no database: check it on the loop; only API tokens need a lookup.
        return policy.stream_caller(stream, token=token)
    if api_token is None and token is None:
        return policy.stream_caller(stream)
    if api_token is not None and (admin := policy.admin_caller(api_token)) is not None:
        return admin  # the server's admin token needs no database either
    return await asyncio.to_thread(policy.stream_caller, stream, api_token=api_token, token=token,
                                   token_may_be_api=token_may_be_api)


async def watch_access(request: web.Request, stream: dict[str, Any], *, token: str | None = None,
                       token_may_be_api: bool = False) -> tuple[Caller, Decision]:
    caller = await caller_for(request, stream, token=token, token_may_be_api=token_may_be_api)
    return caller, request.app[ACCESS].may_watch(caller, stream)


def install(app: web.Application, policy: AccessPolicy) -> None:
    app[ACCESS] = policy
    app[TRUSTED_PROXIES] = parse_networks(app[CONFIG].server.trusted_proxies)
    app[STREAMS] = StreamCache(app[DB])

    async def close_stream_cache(app: web.Application) -> None:
        app[STREAMS].close()

    app.on_cleanup.append(close_stream_cache)
