"""One web worker process of `mediaserver serve --workers N` (see mediaserver/workers.py): joins the cluster
(Redis), takes its share of the chat rooms, and answers on the shared HTTP port; the origin does the rest."""
from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from mediaserver.chat.hub import ChatHub
from mediaserver.chat.protocol import ChatLimits
from mediaserver.chat.store import ChatStore
from mediaserver.cluster.setup import Cluster
from mediaserver.config import Config, ConfigError
from mediaserver.db import Database
from mediaserver.server import admin_token, database_path
from web.worker_app import build_remote_worker_app, build_worker_app

log = logging.getLogger(__name__)

OWNER_WAIT = 2.0


async def serve_web_worker(config: Config, origin_socket: str, index: int) -> None:
    if not config.cluster.redis_url:
        raise ConfigError("a web worker needs [cluster] redis_url")
    config.cluster.process_id = config.cluster.process_id and f"{config.cluster.process_id}-w{index}"
    db = Database(database_path(config))
    cluster = await Cluster.connect(config.cluster)
    chat_store = ChatStore(database_path(config))
    await chat_store.start()
    chat = ChatHub(chat_store, cluster.bus, ChatLimits(
        messages_per_identity=(config.chat.messages_per_viewer, 10.0),
        messages_per_address=(config.chat.messages_per_address, 10.0),
        reactions_per_identity=(config.chat.reactions_per_viewer, 5.0)))
    # The origin owns the rooms while it runs (its analytics and metrics count every viewer); we own one only
    # if it doesn't answer within OWNER_WAIT.
    await cluster.share_chat(chat, defer_seconds=OWNER_WAIT)
    app = build_worker_app(config, db, admin_token(config), chat, origin_socket)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.server.host, config.server.http_port, reuse_port=True).start()
    log.info("web worker %d (cluster process %s) on port %d, forwarding to %s", index, cluster.process_id,
             config.server.http_port, origin_socket)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("web worker %d stopping", index)
    await chat.stop()
    await cluster.stop()
    await runner.cleanup()


async def serve_remote_web_worker(config: Config, origin_url: str, secret: str) -> None:
    """A web worker on another host (`mediaserver web-worker --origin-url`): no database here, so it never owns
    a room (their history and moderation live in the origin's SQLite) and asks the origin who may enter."""
    if not config.cluster.redis_url:
        raise ConfigError("a web worker needs [cluster] redis_url (the Redis its origin uses)")
    config.cluster.room_owner = False
    cluster = await Cluster.connect(config.cluster)
    # Rooms are never opened here (room_owner is off): the hub's store is an in-memory stand-in, no file.
    chat = ChatHub(ChatStore(":memory:"), cluster.bus, ChatLimits(
        messages_per_identity=(config.chat.messages_per_viewer, 10.0),
        messages_per_address=(config.chat.messages_per_address, 10.0),
        reactions_per_identity=(config.chat.reactions_per_viewer, 5.0)))
    await cluster.share_chat(chat, defer_seconds=OWNER_WAIT)  # asks the origin to own the rooms its viewers join
    app = build_remote_worker_app(config, chat, origin_url, secret)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.server.host, config.server.http_port).start()
    log.info("remote web worker (cluster process %s) on port %d, origin %s", cluster.process_id,
             config.server.http_port, origin_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("remote web worker stopping")
    await chat.stop()
    await cluster.stop()
    await runner.cleanup()
