"""A web worker's way to the origin: every request it doesn't answer itself (everything but the chat sockets and
server-sent events) is forwarded to the origin process over the origin's Unix socket (same host) or over TCP with
the shared worker secret (a worker on another host, web/worker_secret.py) and streamed back.

Why forward rather than answer: live playlists, LL-HLS blocking reloads, ingest health and go-live controls live in
the origin's memory, and the origin is the one place that decides them. The worker adds the client's address
(X-Forwarded-For) so the origin's rate limits, throttles and analytics see the real viewer.
"""
from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from web.worker_secret import HEADER as SECRET_HEADER

log = logging.getLogger(__name__)

# Headers that describe one hop, not the message (RFC 9110 section 7.6.1), plus the ones aiohttp sets itself.
HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding",
    "Upgrade", "Host", "Content-Length"))
# An LL-HLS blocking playlist request may wait a few target durations; a long VOD download streams for long.
READ_TIMEOUT = 120.0


class OriginProxy:
    """Forwards requests to the origin listening on `socket_path`, or at `url` (http://host:port) with `secret`."""

    def __init__(self, socket_path: str | None = None, *, url: str | None = None, secret: str | None = None) -> None:
        if (socket_path is None) == (url is None):
            raise ValueError("OriginProxy needs either a socket path or a URL")
        if url is not None and not secret:
            raise ValueError("forwarding over TCP needs the worker secret")
        self.socket_path, self.secret = socket_path, secret
        self.base = "http://origin" if url is None else url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector: aiohttp.BaseConnector = (aiohttp.UnixConnector(path=self.socket_path, limit=0)
                                                if self.socket_path is not None else aiohttp.TCPConnector(limit=0))
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=READ_TIMEOUT))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.Request, client_address: str) -> web.StreamResponse:
        if request.path.startswith("/internal/"):
            raise web.HTTPNotFound()  # the origin's endpoints for workers: never on a client's behalf
        # A client's copy of the secret header never passes (a guess at it would otherwise reach the origin).
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in HOP_BY_HOP and k.lower() != SECRET_HEADER.lower()}
        if self.secret is not None:
            headers[SECRET_HEADER] = self.secret
        # The origin trusts its own socket's X-Forwarded-For, and only the entry its worker adds (the last one);
        # earlier entries are kept so the origin knows a proxy stood in front (/metrics refuses proxied requests).
        prior = [h.strip() for value in request.headers.getall("X-Forwarded-For", []) for h in value.split(",")]
        headers["X-Forwarded-For"] = ", ".join([*(h for h in prior if h), client_address])
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-Host"] = request.host
        body = request.content if request.body_exists else None
        try:
            upstream = await self.session().request(
                request.method, f"{self.base}{request.rel_url}", headers=headers, data=body,
                allow_redirects=False)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning("origin unreachable for %s %s: %s", request.method, request.rel_url.path, exc)
            return web.json_response({"error": "origin_unavailable",
                                      "message": "the server's main process is not answering; try again shortly"},
                                     status=502)
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    response.headers.add(name, value)
            if upstream.headers.get("Content-Length") is not None and request.method != "HEAD":
                response.content_length = int(upstream.headers["Content-Length"])
            await response.prepare(request)
            if request.method != "HEAD":
                async for chunk in upstream.content.iter_chunked(64 * 1024):
                    await response.write(chunk)
            await response.write_eof()
            return response


@web.middleware
async def forwarded_by_worker(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On the origin: a request a web worker forwarded keeps the scheme and host the client used, so links,
    redirects and Secure cookies are what they'd be had the client reached the origin directly."""
    from web.guard import from_web_worker  # web.guard imports the app's keys; keep this module light

    if from_web_worker(request):
        scheme = request.headers.get("X-Forwarded-Proto")
        host = request.headers.get("X-Forwarded-Host")
        request = request.clone(scheme=scheme if scheme in ("http", "https") else request.scheme,
                                host=host or request.host)
    elif SECRET_HEADER in request.headers:
        # A wrong secret: the request is a client's like any other, and no handler sees what it guessed.
        headers = request.headers.copy()
        del headers[SECRET_HEADER]
        request = request.clone(headers=headers)
    return await handler(request)
