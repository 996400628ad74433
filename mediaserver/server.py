"""Runs the whole server in one event loop: HTTP (aiohttp), RTMP ingest and the stream manager."""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ingest.rtmp import RtmpServer
from mediaserver.config import Config, ConfigError
from mediaserver.db import Database
from mediaserver.chat.store import ChatStore
from mediaserver.events import LocalEventBus
from mediaserver.cluster.setup import Cluster
from mediaserver.retention import RetentionTask
from mediaserver.scheduler import Scheduler
from mediaserver.webhook_bridge import WebhookBridge
from mediaserver.webhooks import WebhookSender, WebhookStore
from mediaserver.workers import WorkerPool, origin_socket_path, worker_command
from mediaserver.sessions import StreamManager
from mediaserver.srt_routes import SrtRouting, start_srt
from storage.tiered import TieredStore
from mediaserver.recording_offload import RecordingOffloader, build_store
from mediaserver.cloud_recordings import CloudRecordingCopier
from web.app import build_app
from mediaserver.chat.hub import ChatHub
from mediaserver.chat.protocol import ChatLimits
from mediaserver.analytics_sampler import AnalyticsSampler
from mediaserver.analytics_store import AnalyticsStore
from mediaserver.platform_viewers import build_platform_viewers
from mediaserver.hls_viewers import HlsViewerTracker
from web import analytics_api, backends_api

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
    retention: RetentionTask | None = None
    https_port: int | None = None  # None: no certificate configured, HTTP only
    srt: SrtRouting | None = None  # None: SRT is off (config, or no libsrt in ffmpeg)
    analytics: AnalyticsSampler | None = None
    cluster: Cluster | None = None  # [cluster] redis_url set: chat and events shared over Redis
    offloader: RecordingOffloader | None = None  # storage.backend = "s3"
    copier: CloudRecordingCopier | None = None  # local copies of Mux/IVS recordings

    @property
    def rtmp_port(self) -> int:
        return self.rtmp.port

    @property
    def rtmps_port(self) -> int | None:
        """None when no certificate is configured (no RTMPS)."""
        return self.rtmp.tls_port

    async def stop(self) -> None:
        if self.retention is not None:
            await self.retention.stop()
        await self.scheduler.stop()
        if self.analytics is not None:
            await self.analytics.stop()
        await self.chat.stop()
        await self.rtmp.stop()
        if self.srt is not None:
            await self.srt.stop()
        await self.manager.shutdown()
        if self.copier is not None:
            await self.copier.stop()  # a copy under way resumes at the next start
        if self.offloader is not None:
            await self.offloader.stop()  # recordings the shutdown just finished go to S3 too
        await self.webhook_bridge.stop()
        await self.webhook_sender.stop()
        await self.runner.cleanup()
        if self.cluster is not None:
            await self.cluster.stop()


async def start_server(config: Config, *, origin_socket: str | None = None) -> RunningServer:
    """origin_socket: with web workers (`serve --workers N`), the Unix socket they forward requests to; the
    HTTP port is then shared with them (SO_REUSEPORT)."""
    tls = tls_context(config)  # a certificate that can't be loaded stops the start before anything listens
    config.data_path.mkdir(parents=True, exist_ok=True)
    db = Database(database_path(config))
    store = await build_store(config)  # backend "s3": the bucket must answer before anything starts
    cluster = await Cluster.connect(config.cluster) if config.cluster.redis_url else None
    bus = cluster.bus if cluster is not None else LocalEventBus()
    # Webhooks first, so events from recovering an interrupted broadcast are delivered too.
    webhook_store = WebhookStore(database_path(config), allow_private_networks=config.webhooks.allow_private_networks)
    webhook_sender = WebhookSender(webhook_store, allow_private_networks=config.webhooks.allow_private_networks)
    webhook_bridge = WebhookBridge(db, webhook_store, webhook_sender, bus)
    await webhook_sender.start()
    await webhook_bridge.start()
    offloader = RecordingOffloader(db, store, bus) if isinstance(store, TieredStore) else None
    if offloader is not None:
        await offloader.start_catch_up()  # recordings an earlier run could not move to S3
    manager = StreamManager(config, db, store, bus)
    await manager.recover()
    token = admin_token(config)
    chat_store = ChatStore(database_path(config))
    await chat_store.start()
    analytics_store = AnalyticsStore(database_path(config))
    await analytics_store.start()
    await asyncio.to_thread(db.compact)  # every store has created its tables by now
    chat = ChatHub(chat_store, bus, ChatLimits(
        messages_per_identity=(config.chat.messages_per_viewer, 10.0),
        messages_per_address=(config.chat.messages_per_address, 10.0),
        reactions_per_identity=(config.chat.reactions_per_viewer, 5.0)))
    if cluster is not None:
        # The origin takes the rooms its web workers ask it to (same host, or others with the worker secret).
        await cluster.share_chat(chat, preferred_owner=origin_socket is not None
                                 or bool(config.cluster.worker_secret_file))
    app = build_app(config, db, store, manager, token, webhook_store, chat)
    copier = CloudRecordingCopier(config, db, store, bus, app[backends_api.BACKENDS])
    await copier.start()  # copies an earlier run left unfinished go first
    hls_viewers = HlsViewerTracker(config.analytics.hls_idle_seconds)
    platform_viewers = build_platform_viewers(config)  # Mux/IVS: the platforms' own viewer counts
    analytics_api.install(app, analytics_store, hls_viewers, platform_viewers)
    analytics = AnalyticsSampler(analytics_store, hls_viewers, db, chat, config.analytics.sample_seconds,
                                 platform_viewers)
    await analytics.start()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.http_port, reuse_port=origin_socket is not None)
    await site.start()
    if origin_socket is not None:
        Path(origin_socket).unlink(missing_ok=True)
        await web.UnixSite(runner, origin_socket).start()
        os.chmod(origin_socket, 0o600)  # our workers only: the origin trusts what they say about the client
    http_port = runner.addresses[0][1] if runner.addresses else config.server.http_port
    https_port: int | None = None
    if tls is not None:
        before = len(runner.addresses)
        https_site = web.TCPSite(runner, config.server.host, config.server.https_port, ssl_context=tls)
        await https_site.start()
        added = runner.addresses[before:]
        https_port = added[0][1] if added else config.server.https_port
        config.server.https_port = https_port
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
    if tls is not None:
        await rtmp.start_tls(config.server.rtmps_port, tls)
        config.server.rtmps_port = rtmp.tls_port or config.server.rtmps_port
        log.info("RTMPS on %s:%d", config.server.host, config.server.rtmps_port)
    # Ports asked as 0 (tests) are known now; URLs built from the config must show the real ones.
    config.server.http_port, config.server.rtmp_port = http_port, rtmp.port
    log.info("HTTP on %s:%d, RTMP on %s:%d, data in %s", config.server.host, http_port,
             config.server.host, rtmp.port, config.data_path.resolve())
    if https_port is not None:
        log.info("HTTPS on %s:%d", config.server.host, https_port)
    console_host = "localhost" if config.server.host in ("0.0.0.0", "::", "") else config.server.host
    log.info("console: http://%s:%d/admin (sign in with an organization token or the admin token, "
             "kept in %s unless configured)", console_host, http_port, (config.data_path / "admin_token").resolve())
    srt = await start_srt(config, db, manager.authorize_publish)
    scheduler = Scheduler(config.schedule, db, bus)
    await scheduler.start()
    retention = RetentionTask(config.storage, db, store)
    await retention.start()
    return RunningServer(config, db, manager, runner, rtmp, http_port, scheduler, chat, webhook_sender, webhook_bridge,
                         retention, https_port, srt, analytics=analytics, offloader=offloader,
                         cluster=cluster, copier=copier)


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server-side TLS context for `[server] tls_cert`/`tls_key`, or None when no certificate is configured."""
    if not (config.server.tls_cert and config.server.tls_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.server.tls_cert, config.server.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"server.tls_cert/tls_key: cannot load {config.server.tls_cert}: {exc}") from exc
    return context


def lan_address() -> str:
    """This machine's address on its network (the one its default route leaves from; no packet is sent),
    else its host name."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
            address = str(probe.getsockname()[0])
        if address and not address.startswith("0."):
            return address
    except OSError:
        pass
    return socket.gethostname()


def banner(config: Config, server: RunningServer) -> str:
    """What `mediaserver serve` prints: where to point OBS and where people watch."""
    base = config.server.base_url()
    host = config.server.public_hostname() or lan_address()
    if base is None:
        base = f"https://{host}:{server.https_port}" if server.https_port else f"http://{host}:{server.http_port}"
    lines = [
        "mediaserver is running.",
        f"  Watch & admin: {base}/",
        f"  OBS server:    rtmp://{host}:{server.rtmp_port}/{config.rtmp.app}",
    ]
    if server.https_port:
        lines.append(f"  HTTPS:         port {server.https_port} (HTTP stays on {server.http_port})")
    if server.rtmps_port:
        lines.append(f"  OBS over TLS:  rtmps://{host}:{server.rtmps_port}/{config.rtmp.app}")
    if server.srt is not None:
        lines.append(f"  SRT:           srt://{host}:PORT (UDP {config.srt.port}-{config.srt.port + config.srt.ports - 1}, "
                     "one port per stream: see its srt_url)")
    lines += [
        f"  Data:          {config.data_path.resolve()}",
        f"  Admin token:   in {config.data_path / 'admin_token'} or $MEDIASERVER_ADMIN_TOKEN",
    ]
    if not config.server.base_url():
        lines.append("  (Set server.public_url in config.toml, e.g. \"https://stream.mychurch.org\", "
                     "so every URL uses the name people know.)")
    return "\n".join(lines)


async def serve_forever(config: Config, *, workers: int = 1, argv: list[str] | None = None) -> None:
    pool: WorkerPool | None = None
    origin_socket = origin_socket_path(config.data_path) if workers > 1 else None
    server = await start_server(config, origin_socket=origin_socket)
    if origin_socket is not None:
        http_port = config.server.http_port
        pool = WorkerPool([worker_command(argv or [], origin_socket, http_port, i) for i in range(1, workers)])
        await pool.start()
        log.info("%d web workers share port %d with this origin process", workers - 1, http_port)
    print(banner(config, server), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:
            pass
    await stop.wait()
    log.info("shutting down: ending live broadcasts and saving recordings")
    if pool is not None:
        await pool.stop()
    await server.stop()
