"""Runs the whole server in one event loop: HTTP (aiohttp), RTMP ingest and the stream manager."""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ingest.rtmp import RtmpServer
from mediaserver.config import Config
from mediaserver.db import Database
from mediaserver.chat.store import ChatStore
from mediaserver.events import LocalEventBus
from mediaserver.scheduler import Scheduler
from mediaserver.webhook_bridge import WebhookBridge
from mediaserver.webhooks import WebhookSender, WebhookStore
from mediaserver.sessions import StreamManager
from storage.local import LocalStore
from web.app import build_app
from mediaserver.chat.hub import ChatHub
from mediaserver.chat.protocol import ChatLimits

log = logging.getLogger(__name__)


def database_path(config: Config) -> Path:
    return config.data_path / "mediaserver.db"


def admin_token(config: Config) -> str:
    """The configured token, or one generated once and kept in data/admin_token (mode 600)."""
    if config.admin_token:
        return config.admin_token
    path = config.data_path / "admin_token"
    if path.exists():
        return path.read_text().strip()
    config.data_path.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


@dataclass
class RunningServer:
    config: Config
    db: Database
    manager: StreamManager
    runner: web.AppRunner
    rtmp: RtmpServer
    http_port: int
    scheduler: Scheduler
    chat: ChatHub
    webhook_sender: WebhookSender
    webhook_bridge: WebhookBridge

    @property
    def rtmp_port(self) -> int:
        return self.rtmp.port

    async def stop(self) -> None:
        await self.scheduler.stop()
        await self.chat.stop()
        await self.rtmp.stop()
        await self.manager.shutdown()
        await self.webhook_bridge.stop()
        await self.webhook_sender.stop()
        await self.runner.cleanup()


async def start_server(config: Config) -> RunningServer:
    config.data_path.mkdir(parents=True, exist_ok=True)
    db = Database(database_path(config))
    store = LocalStore(config.data_path, int(config.storage.reserve_mb * 1024 * 1024))
    bus = LocalEventBus()
    # Webhooks first, so events from recovering an interrupted broadcast are delivered too.
    webhook_store = WebhookStore(database_path(config), allow_private_networks=config.webhooks.allow_private_networks)
    webhook_sender = WebhookSender(webhook_store, allow_private_networks=config.webhooks.allow_private_networks)
    webhook_bridge = WebhookBridge(db, webhook_store, webhook_sender, bus)
    await webhook_sender.start()
    await webhook_bridge.start()
    manager = StreamManager(config, db, store, bus)
    await manager.recover()
    token = admin_token(config)
    chat_store = ChatStore(database_path(config))
    await chat_store.start()
    await asyncio.to_thread(db.compact)  # every store has created its tables by now
    chat = ChatHub(chat_store, bus, ChatLimits(
        messages_per_identity=(config.chat.messages_per_viewer, 10.0),
        messages_per_address=(config.chat.messages_per_address, 10.0),
        reactions_per_identity=(config.chat.reactions_per_viewer, 5.0)))
    app = build_app(config, db, store, manager, token, webhook_store, chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.http_port)
    await site.start()
    http_port = runner.addresses[0][1] if runner.addresses else config.server.http_port
    rtmp = RtmpServer(
        manager.authorize,
        host=config.server.host,
        port=config.server.rtmp_port,
        app=config.rtmp.app,
        handshake_timeout=config.rtmp.handshake_timeout,
        idle_timeout=config.rtmp.idle_timeout,
        max_connections=config.rtmp.max_connections,
        max_pending_connections=config.rtmp.max_pending_connections,
        max_pending_per_address=config.rtmp.max_pending_per_address,
    )
    await rtmp.start()
    # Ports asked as 0 (tests) are known now; URLs built from the config must show the real ones.
    config.server.http_port, config.server.rtmp_port = http_port, rtmp.port
    log.info("HTTP on %s:%d, RTMP on %s:%d, data in %s", config.server.host, http_port,
             config.server.host, rtmp.port, config.data_path.resolve())
    scheduler = Scheduler(config.schedule, db, bus)
    await scheduler.start()
    return RunningServer(config, db, manager, runner, rtmp, http_port, scheduler, chat, webhook_sender, webhook_bridge)


async def serve_forever(config: Config) -> None:
    server = await start_server(config)
    # Tell the operator where to point OBS and where people watch.
    host = config.server.public_host or socket.gethostname()
    print(f"mediaserver is running.\n  Watch & admin: http://{host}:{server.http_port}/\n"
          f"  OBS server:    rtmp://{host}:{server.rtmp_port}/{config.rtmp.app}\n"
          f"  Data:          {config.data_path.resolve()}\n"
          f"  Admin token:   in {config.data_path / 'admin_token'} or $MEDIASERVER_ADMIN_TOKEN", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:
            pass
    await stop.wait()
    log.info("shutting down: ending live broadcasts and saving recordings")
    await server.stop()
