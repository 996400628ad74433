"""A real mediaserver running in a background thread on free loopback ports, for end-to-end tests."""
from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediaserver.config import Config, Rendition
from mediaserver.server import RunningServer, start_server

ADMIN_TOKEN = "test-admin-token"


def small_config(data_dir: Path, **overrides: Any) -> Config:
    """A config for 320x180 test sources: 1 s segments, a three-rung ladder (one taller than the source)."""
    config = Config()
    config.server.host = "127.0.0.1"
    config.server.http_port = 0
    config.server.rtmp_port = 0
    config.server.data_dir = str(data_dir)
    config.server.admin_token = ADMIN_TOKEN
    config.hls.segment_duration = 1.0
    config.hls.dvr_window = overrides.pop("dvr_window", 3600.0)
    config.stream.reconnect_window = overrides.pop("reconnect_window", 2.0)
    config.rtmp.handshake_timeout = overrides.pop("handshake_timeout", 3.0)
    config.storage.reserve_mb = overrides.pop("reserve_mb", 0.0)
    config.transcode.preset = "ultrafast"
    # A cloud recording's copy (mediaserver/cloud_recordings.py) retries soon: most stand-ins serve no media.
    config.backends.copy_retry_seconds = 0.2
    # SRT listeners (ffmpeg processes on fixed UDP ports) only where a test asks: srt=(first_port, ports).
    srt = overrides.pop("srt", None)
    config.srt.enabled = srt is not None
    if srt is not None:
        config.srt.port, config.srt.ports = srt
    config.transcode.renditions = overrides.pop(
        "renditions",
        [Rendition("360p", 360, 800_000), Rendition("180p", 180, 300_000), Rendition("144p", 144, 200_000)],
    )
    assert not overrides, overrides
    config.validate()
    return config


@dataclass
class ServerHandle:
    server: RunningServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    checker: Any = None  # every /api answer is checked against the server's OpenAPI document

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    @property
    def rtmp_port(self) -> int:
        return self.server.rtmp_port

    def rtmp_url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{key}"

    def api(self, method: str, path: str, body: Any = None, token: str | None = ADMIN_TOKEN) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.http + path, data=data, method=method)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, body = response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            status, body = exc.code, json.loads(exc.read() or b"null")
        if self.checker is None:
            from tests.openapi_check import OpenApiChecker

            with urllib.request.urlopen(self.http + "/api/openapi.json", timeout=10) as response:
                self.checker = OpenApiChecker(json.loads(response.read()))
        self.checker.check(method, path, status, body)
        return status, body

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        url = path if path.startswith("http") else self.http + path
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def create_stream(self, title: str = "Sunday Service") -> dict[str, Any]:
        status, body = self.api("POST", "/api/streams", {"title": title})
        assert status == 201, body
        return body

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.server.stop(), timeout=120)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def run_server(config: Config) -> ServerHandle:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    thread = threading.Thread(target=lambda: (asyncio.set_event_loop(loop), started.set(), loop.run_forever()), daemon=True)
    thread.start()
    started.wait()
    server = asyncio.run_coroutine_threadsafe(start_server(config), loop).result(30)
    return ServerHandle(server, loop, thread)


def free_udp_ports(count: int) -> int:
    """The first of `count` consecutive UDP ports free on loopback."""
    for _ in range(200):
        first = random.randrange(20000, 60000)
        sockets = []
        try:
            for port in range(first, first + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise AssertionError("no free UDP ports")
