"""The application a web worker runs (`mediaserver serve --workers N`): the chat rooms' sockets and server-sent
events are answered here, beside the origin, so the fan-out to thousands of viewers spreads over the cores;
everything else goes to the origin (web/origin_proxy.py), which alone runs media, schedules and webhooks.

Access is decided by the same code as on the origin (web/guard.py over the shared database), and the rooms are
the cluster's (mediaserver/cluster/), so a viewer's seat is the same whichever process the kernel gave them.
A worker on another host (build_remote_worker_app) has no database: it asks the origin who may enter
(web/chat_admission.py RemoteAdmission) and forwards the rest over TCP with the shared worker secret.
"""
from __future__ import annotations

from aiohttp import web

from mediaserver.chat.hub import ChatHub
from mediaserver.config import Config
from mediaserver.db import Database
from web import chat_ws, errors, guard
from web.access_setup import install_access
from web.chat_admission import ADMISSION, LocalAdmission, RemoteAdmission
from web.keys import CHAT, CONFIG
from web.origin_proxy import OriginProxy

PROXY = web.AppKey("origin_proxy", OriginProxy)


def build_worker_app(config: Config, db: Database, admin_token: str, chat: ChatHub,
                     origin_socket: str) -> web.Application:
    app = web.Application(middlewares=[errors.json_errors], client_max_size=1024 ** 3)
    install_access(app, config, db, admin_token, chat)
    app[PROXY] = OriginProxy(origin_socket)
    app[ADMISSION] = LocalAdmission()

    async def close(app: web.Application) -> None:
        await app[PROXY].close()

    app.on_cleanup.append(close)
    chat_ws.add_routes(app)  # first: these routes win over the catch-all below

    async def forward(request: web.Request) -> web.StreamResponse:
        return await request.app[PROXY].handle(request, guard.client_address(request))

    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def build_remote_worker_app(config: Config, chat: ChatHub, origin_url: str, secret: str) -> web.Application:
    """A worker on another host: chat sockets and events here, admission and everything else from the origin."""
    app = web.Application(middlewares=[errors.json_errors], client_max_size=1024 ** 3)
    app[CONFIG] = config
    app[CHAT] = chat
    app[guard.TRUSTED_PROXIES] = guard.parse_networks(config.server.trusted_proxies)
    admission = RemoteAdmission(origin_url, secret)
    app[ADMISSION] = admission
    app[PROXY] = OriginProxy(url=origin_url, secret=secret)

    async def close(app: web.Application) -> None:
        await admission.close()
        await app[PROXY].close()

    app.on_cleanup.append(close)
    chat_ws.add_routes(app)

    async def forward(request: web.Request) -> web.StreamResponse:
        return await request.app[PROXY].handle(request, guard.client_address(request))

    app.router.add_route("*", "/{tail:.*}", forward)
    return app
