"""Cheaper chat fan-out: server-to-client WebSocket text frames, encoded once per event, written in bursts.

The Room (mediaserver/chat/room.py) serializes an event once and offers the same bytes object to every
viewer's queue. Here each socket's sender, per wake-up, drains everything queued for it and writes all of
it in ONE transport write: one syscall and one await per burst instead of one header build, one write and
one await per frame. The frame (header + payload) is encoded once per event for the whole process: a small
cache keyed by the payload's identity, so the 999 other viewers of a 1000-viewer room write the bytes the
first one encoded. A single-frame wake-up (the usual case) writes that cached object as it is, with no copy.

Sans-IO: `frame_header`, `encode_text_frame`, `FrameCache`, `take_burst`. IO: `pump_frames`.
"""
from __future__ import annotations

import asyncio
import struct

from aiohttp import web

__all__ = ["FrameCache", "encode_text_frame", "frame_header", "pump_frames", "take_burst"]

FIN_TEXT = 0x81  # FIN set, RSV 0, opcode 1 (text); a server never masks (RFC 6455 section 5.1)
_SHORT_HEADERS = tuple(bytes((FIN_TEXT, n)) for n in range(126))


def frame_header(length: int) -> bytes:
    """The header of an unmasked final text frame whose payload is `length` bytes (RFC 6455 section 5.2)."""
    if length < 0:
        raise ValueError("negative payload length")
    if length < 126:
        return _SHORT_HEADERS[length]
    if length < 1 << 16:
        return struct.pack("!BBH", FIN_TEXT, 126, length)
    if length < 1 << 63:
        return struct.pack("!BBQ", FIN_TEXT, 127, length)
    raise ValueError("payload too large for one frame")


def encode_text_frame(payload: bytes) -> bytes:
    return frame_header(len(payload)) + payload


class FrameCache:
    """Encoded frames of recent payloads, found by the payload object's identity (not its value: equal
    texts from different events are simply encoded twice). An entry holds its payload, so the id can't be
    reused by another object while the entry lives. First in, first out; bounded in entries and bytes."""

    def __init__(self, entries: int = 1024, max_bytes: int = 8 << 20, max_payload: int = 64 << 10) -> None:
        self.entries, self.max_bytes, self.max_payload = entries, max_bytes, max_payload
        self._frames: dict[int, tuple[bytes, bytes]] = {}
        self._bytes = 0
        self.hits = self.misses = 0

    def encoded(self, payload: bytes) -> bytes:
        hit = self._frames.get(id(payload))
        if hit is not None and hit[0] is payload:
            self.hits += 1
            return hit[1]
        self.misses += 1
        encoded = encode_text_frame(payload)
        if len(payload) <= self.max_payload:  # a one-off big frame (chat:history) isn't worth keeping
            self._keep(payload, encoded)
        return encoded

    def _keep(self, payload: bytes, encoded: bytes) -> None:
        old = self._frames.pop(id(payload), None)  # defensive: an entry holds its payload, so this is None
        if old is not None:
            self._bytes -= len(old[1])
        self._frames[id(payload)] = (payload, encoded)
        self._bytes += len(encoded)
        while len(self._frames) > self.entries or self._bytes > self.max_bytes:
            _, dropped = self._frames.pop(next(iter(self._frames)))  # the oldest
            self._bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._frames)


# One per process: the room's fan-out hands every local viewer the same bytes object.
FRAMES = FrameCache()


def take_burst(first: bytes | None, queue: asyncio.Queue[bytes | None]) -> tuple[list[bytes], bool]:
    """`first` and whatever else is queued now: (frames in order, whether the close signal came after them)."""
    frames: list[bytes] = []
    item = first
    while True:
        if item is None:
            return frames, True
        frames.append(item)
        if queue.empty():
            return frames, False
        item = queue.get_nowait()


async def pump_frames(ws: web.WebSocketResponse, request: web.Request, queue: asyncio.Queue[bytes | None],
                      cache: FrameCache = FRAMES) -> None:
    """Write what the room queues for one viewer until the close signal (None); the caller then closes.

    aiohttp (>=3.9 as pinned; checked with 3.14.5) has no public call to write several frames at once:
    `WebSocketResponse.send_frame` writes one frame per call. So this writes complete, unmasked, uncompressed
    text frames to `request.transport` (public) itself, and waits on `request.writer.drain()` (public), which
    blocks while asyncio has paused the protocol because the transport's buffer is above its high-water mark.
    That is safe beside aiohttp's own writes (pings, close) because each of ours is one synchronous
    transport.write of whole frames, and the socket is made with compress=False (no deflate state to share).
    A viewer that can't keep up is still dropped by the room's queue-full rule while we wait here.
    """
    while True:
        frames, done = take_burst(await queue.get(), queue)
        if frames:
            transport = request.transport
            if ws.closed or transport is None or transport.is_closing():
                # As send_frame does: the socket went away under us; the caller's finally tidies up.
                raise ConnectionResetError("Cannot write to closing transport")
            if len(frames) == 1:
                transport.write(cache.encoded(frames[0]))
            else:
                transport.write(b"".join([cache.encoded(payload) for payload in frames]))
            await request.writer.drain()
        if done:
            return
