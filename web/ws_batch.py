"""Cheaper chat fan-out: server-to-client WebSocket text frames, encoded once per event, written in bursts.

The Room (mediaserver/chat/room.py) serializes an event once and offers the same bytes object to every viewer.
A chat socket's Viewer has a SocketSink: offering a frame is a list append; a process-wide Flusher writes each
socket's frames of the last FLUSH_SECONDS in ONE transport write. No task wakes per viewer per message, and a
busy room costs a fraction of the syscalls. The frame (header + payload) is encoded once per event for the
whole process: a small cache keyed by the payload's identity, so the 999 other viewers of a 1000-viewer room
write the bytes the first one encoded.

`pump_frames` is the queue-based sender (one task per socket, each wake-up writes what is queued), kept for
viewers without a sink.

Sans-IO: `frame_header`, `encode_text_frame`, `FrameCache`, `take_burst`. IO: `pump_frames`, `SocketSink`.
"""
from __future__ import annotations

import asyncio
import struct
import weakref
from typing import Callable

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


# A viewer whose socket holds more than this, unsent (the kernel's buffer full and this much waiting in
# asyncio's), can't keep up with the room: it is dropped ("too slow"), as a full send queue drops it.
SLOW_VIEWER_BYTES = 512 * 1024
# Frames wait at most this long to be written, so a socket gets the messages of that span in one write (one
# syscall): a busy room costs a fraction of the syscalls, for at most 20 ms of latency (see bench/chat.py).
FLUSH_SECONDS = 0.02


class Flusher:
    """Writes every socket's pending frames every FLUSH_SECONDS: a room's broadcast costs each socket one list
    append, then each socket one transport.write per tick, with no task to wake per viewer."""

    def __init__(self, interval: float = FLUSH_SECONDS) -> None:
        self.interval = interval
        self._due: list["SocketSink"] = []
        self._scheduled = False

    def due(self, sink: "SocketSink") -> None:
        self._due.append(sink)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        due, self._due = self._due, []
        for sink in due:
            sink.flush()


# One flusher per event loop (a process normally has one; tests run several servers, each on its own loop, and
# a flush pending on a loop that was closed must not hold up the next one).
_FLUSHERS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Flusher]" = weakref.WeakKeyDictionary()


def flusher() -> Flusher:
    """This event loop's flusher."""
    loop = asyncio.get_running_loop()
    found = _FLUSHERS.get(loop)
    if found is None:
        found = _FLUSHERS[loop] = Flusher()
    return found


class SocketSink:
    """A viewer's frames straight to its WebSocket's transport (Viewer.sink): gathered per flush tick, written in
    one call. aiohttp has no public call for several frames at once, so whole unmasked text frames go to
    `request.transport` (public); see pump_frames for why that is safe beside aiohttp's own writes."""

    def __init__(self, request: web.Request, on_slow: Callable[[], None], *, limit: int = SLOW_VIEWER_BYTES,
                 cache: FrameCache = FRAMES) -> None:
        self.request, self.on_slow, self.limit = request, on_slow, limit
        self.cache, self.flusher = cache, flusher()
        self._pending: list[bytes] = []

    def __call__(self, payload: bytes) -> None:
        if not self._pending:
            self.flusher.due(self)
        self._pending.append(payload)

    def flush(self) -> None:
        frames, self._pending = self._pending, []
        transport = self.request.transport
        if not frames or transport is None or transport.is_closing():
            return  # nothing to say, or the socket is going (its reader ends the viewer's session)
        if transport.get_write_buffer_size() > self.limit:
            self.on_slow()
            return
        if len(frames) == 1:
            transport.write(self.cache.encoded(frames[0]))
        else:
            transport.write(b"".join([self.cache.encoded(payload) for payload in frames]))
