"""A WebSocket client of the live room for tests: send events, wait for the ones expected."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Callable

import aiohttp

from tests.server_fixture import ServerHandle

Match = Callable[[dict[str, Any]], Any] | None


class Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.history: dict[str, Any] = {}  # the chat:history connect() waited for

    async def send(self, event: str, data: dict[str, Any] | None = None) -> None:
        await self.ws.send_str(json.dumps({"event": event, "data": data or {}}))

    async def expect(self, event: str, match: Match = None, timeout: float = 5.0) -> dict[str, Any]:
        for f in self.frames:
            if f["event"] == event and (match is None or match(f["data"])):
                self.frames.remove(f)
                return f["data"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket closed while waiting for {event}: {msg.type}")
            f = json.loads(msg.data)
            if f["event"] == event and (match is None or match(f["data"])):
                return f["data"]
            self.frames.append(f)
        raise AssertionError(f"no {event} within {timeout} s; got {[f['event'] for f in self.frames]}")

    async def gather(self, seconds: float) -> list[dict[str, Any]]:
        """Every frame that arrives within `seconds` (plus any already buffered)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            self.frames.append(json.loads(msg.data))
        got, self.frames = self.frames, []
        return got

    async def closed(self, timeout: float = 15.0) -> tuple[int | None, list[dict[str, Any]]]:
        """(close code, frames received before the close)."""
        frames: list[dict[str, Any]] = list(self.frames)
        self.frames = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type == aiohttp.WSMsgType.TEXT:
                frames.append(json.loads(msg.data))
                continue
            return self.ws.close_code, frames
        raise AssertionError("the socket stayed open")

    def joined(self) -> dict[str, Any]:
        return next(f["data"] for f in self.frames if f["event"] == "stream:join")


def guest_session() -> aiohttp.ClientSession:
    """A browser of its own: keeps the ms_viewer cookie (the test server is on an IP address)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def connect(session: aiohttp.ClientSession, server: ServerHandle, stream_id: str,
                  headers: dict[str, str] | None = None, **query: str) -> Client:
    ws = await session.ws_connect(f"{server.http}/ws/streams/{stream_id}", params=query, headers=headers)
    client = Client(ws)
    client.history = await client.expect("chat:history")
    return client


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))
