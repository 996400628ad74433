"""Builds the aiohttp application: thin routing over the session manager, database and store."""
from __future__ import annotations

from aiohttp import web

from mediaserver.config import Config
from mediaserver.db import Database
from mediaserver.sessions import StreamManager
from storage.local import LocalStore
from mediaserver.webhooks import WebhookStore
from mediaserver.chat.hub import ChatHub
from web import analytics_api
from web import recordings_api
from web import simulcast_api
from web import library_api, library_pages
from web import clips_api
from web import branding
from web import moderation_api
from web import simulated_api
from web import replay_api
from web import live_storyboard
from web import api, chat_ws, console, errors, media, metrics, orgs_api, pages, series_api, webhooks_api, whip
from web.auth import require_token
from web.origin_proxy import forwarded_by_worker
from web.access_setup import install_access
from web import internal_api
from web import backends_api
from web import platforms_api
from mediaserver.backends.registry import build_registry
from web.keys import MANAGER, SIGNER, STORE

# JSON bodies of the admin API are small; anything bigger is refused before it is read.
MAX_REQUEST_BODY = 64 * 1024


def build_app(config: Config, db: Database, store: LocalStore, manager: StreamManager, admin_token: str,
              webhooks: WebhookStore, chat: ChatHub) -> web.Application:
    app = web.Application(middlewares=[forwarded_by_worker, metrics.count_requests, errors.json_errors, require_token],
                          client_max_size=MAX_REQUEST_BODY)
    install_access(app, config, db, admin_token, chat)
    app[STORE] = store
    app[MANAGER] = manager
    app[webhooks_api.WEBHOOKS] = webhooks
    api.add_routes(app)
    series_api.add_routes(app)
    orgs_api.add_routes(app)
    webhooks_api.add_routes(app)
    backends_api.install(app, build_registry(config, app[SIGNER]))  # Mux/IVS streams and their webhooks in
    platforms_api.add_routes(app)  # GET /api/backends: the platforms configured here, for the console
    chat_ws.add_routes(app)
    internal_api.install(app, config.cluster.worker_secret_file)  # remote web workers' admission calls
    live_storyboard.add_routes(app)  # before media's catch-all under /hls/{stream}/{broadcast}/
    media.add_routes(app)
    pages.add_routes(app)
    branding.add_routes(app)
    whip.add_routes(app)
    metrics.add_routes(app)
    analytics_api.add_routes(app)
    moderation_api.add_routes(app)
    recordings_api.add_routes(app)
    simulcast_api.add_routes(app)
    library_api.add_routes(app)
    library_pages.add_routes(app)
    clips_api.add_routes(app)
    replay_api.add_routes(app)
    simulated_api.add_routes(app)
    console.add_routes(app)
    return app
