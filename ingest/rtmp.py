"""RTMP publish ingest (OBS, hardware encoders, ffmpeg), a thin wrapper around pyrtmp.

pyrtmp does the handshake, chunk reassembly and AMF0. This module adds what it lacks for a public
server: timeouts, one clean close per bad connection, stream-key checks through `authorize`,
acknowledgements, and the type-3 chunk timestamps it gets wrong. Media leaves as FLV tags.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Protocol

from bitstring import BitStream

from ingest.flv import TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO, FlvTag

_root_handlers = list(logging.getLogger().handlers)
_root_level = logging.getLogger().level
from pyrtmp import StreamClosedException  # noqa: E402
from pyrtmp.amf.serializers import AMF0Serializer  # noqa: E402
from pyrtmp.messages import Chunk  # noqa: E402
from pyrtmp.messages.audio import AudioMessage  # noqa: E402
from pyrtmp.messages.command import NCConnect, NCCreateStream, NSCloseStream, NSDeleteStream, NSPublish  # noqa: E402
from pyrtmp.messages.command import CommandMessage  # noqa: E402
from pyrtmp.messages.data import DataMessage  # noqa: E402
from pyrtmp.messages.factory import MessageFactory  # noqa: E402
from pyrtmp.messages.protocol_control import (  # noqa: E402
    Acknowledgement,
    SetChunkSize,
    SetPeerBandwidth,
    WindowAcknowledgementSize,
)
from pyrtmp.messages.user_control import StreamBegin  # noqa: E402
from pyrtmp.messages.video import VideoMessage  # noqa: E402
from pyrtmp.session_manager import SessionManager  # noqa: E402

# pyrtmp calls logging.basicConfig(DEBUG) at import and sets its loggers to DEBUG: undo both.
_root = logging.getLogger()
for _handler in list(_root.handlers):
    if _handler not in _root_handlers:
        _root.removeHandler(_handler)
_root.setLevel(_root_level)
for _name in list(logging.root.manager.loggerDict):
    if _name.startswith("pyrtmp"):
        logging.getLogger(_name).setLevel(logging.ERROR)

log = logging.getLogger(__name__)

MSG_AUDIO, MSG_VIDEO, MSG_DATA_AMF0, MSG_COMMAND_AMF0 = 0x08, 0x09, 0x12, 0x14
OUR_CHUNK_SIZE = 4096
ACK_WINDOW = 2_500_000


class PublishRefused(Exception):
    """authorize() refuses a publish; the text is the reason the encoder and the log get."""


class PublishSink(Protocol):
    async def on_tag(self, tag: FlvTag) -> None: ...
    async def on_close(self, reason: str) -> None: ...


Authorize = Callable[[str, str, str], Awaitable[PublishSink]]


class ProtocolViolation(Exception):
    """The peer sent something an RTMP publisher must not; the connection is closed."""


class _TimestampFixer:
    """pyrtmp gives a type-3 chunk that starts a new message its predecessor's timestamp; RTMP (and
    FFmpeg, which sends such chunks when size and delta repeat) adds the previous delta again."""

    def __init__(self) -> None:
        self._raw_last: dict[int, int] = {}
        self._delta: dict[int, int] = {}
        self._fixed_last: dict[int, int] = {}

    def fix(self, chunk: Chunk) -> int:
        cid = chunk.chunk_id
        raw = int(chunk.timestamp)
        if chunk.chunk_type == 0:
            fixed = raw
            self._delta[cid] = raw
        elif chunk.chunk_type in (1, 2):
            delta = raw - self._raw_last.get(cid, raw)
            self._delta[cid] = delta
            fixed = self._fixed_last.get(cid, 0) + delta
        else:
            fixed = self._fixed_last.get(cid, raw) + self._delta.get(cid, 0)
        self._raw_last[cid] = raw
        self._fixed_last[cid] = fixed
        return fixed


def _command(name: str, transaction_id: float, info: Any, stream_id: int, chunk_id: int = 3) -> Chunk:
    data = BitStream()
    AMF0Serializer.create_object(data, name)
    AMF0Serializer.create_object(data, transaction_id)
    AMF0Serializer.create_object(data, None)
    AMF0Serializer.create_object(data, info)
    return Chunk(chunk_type=0, chunk_id=chunk_id, timestamp=0, msg_length=len(data.bytes),
                 msg_type_id=MSG_COMMAND_AMF0, msg_stream_id=stream_id, payload=data.bytes)


class _Connection:
    """One TCP client, from handshake to close."""

    def __init__(self, server: "RtmpServer", reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.session = SessionManager(reader=reader, writer=writer)
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer = f"{peer[0]}:{peer[1]}"
        self.writer = writer
        self.app: str | None = None
        self.sink: PublishSink | None = None
        self.key: str | None = None
        self.timestamps = _TimestampFixer()
        self.acked_bytes = 0
        self.peer_ack_window = ACK_WINDOW

    async def run(self) -> None:
        reason = "connection closed by the encoder"
        try:
            await asyncio.wait_for(self.session.handshake(), self.server.handshake_timeout)
            chunks = self.session.read_chunks_from_stream().__aiter__()
            while True:
                # Until media flows, the short handshake timeout applies; then the idle timeout.
                timeout = self.server.idle_timeout if self.sink else self.server.handshake_timeout
                chunk = await asyncio.wait_for(chunks.__anext__(), timeout)
                if not await self._handle(chunk):
                    reason = "encoder stopped publishing"
                    break
        except StreamClosedException:
            pass
        except asyncio.TimeoutError:
            reason = "timed out"
            log.warning("rtmp %s: timed out (%s)", self.peer, "idle" if self.sink else "no publish after connecting")
        except PublishRefused as exc:
            reason = f"refused: {exc}"
        except ProtocolViolation as exc:
            reason = f"protocol error: {exc}"
            log.warning("rtmp %s: %s", self.peer, exc)
        except ConnectionError as exc:
            reason = f"closed: {exc}"
            if self.sink is not None:
                log.info("rtmp %s: %s", self.peer, exc)
        except asyncio.CancelledError:
            reason = "server stopping"
            raise
        except Exception as exc:  # pyrtmp asserts and raises plain errors on malformed input
            reason = f"malformed RTMP: {type(exc).__name__}: {exc}"
            log.warning("rtmp %s: closing after malformed input: %s: %s", self.peer, type(exc).__name__, exc)
        finally:
            await self._close(reason)

    async def _close(self, reason: str) -> None:
        sink, self.sink = self.sink, None
        try:
            self.writer.close()
        except Exception:
            pass
        if sink is not None:
            log.info("rtmp %s: publish of %s ended: %s", self.peer, self._key_hint(), reason)
            try:
                await sink.on_close(reason)
            except Exception:
                log.exception("rtmp %s: closing the publish", self.peer)

    def _key_hint(self) -> str:
        return f"key {self.key[:6]}…" if self.key else "unknown key"

    async def _send(self, *chunks: Chunk) -> None:
        for chunk in chunks:
            self.session.write_chunk_to_stream(chunk)
        await self.session.drain()

    async def _acknowledge(self) -> None:
        received = self.session.total_read_bytes // 8  # pyrtmp counts bits
        if received - self.acked_bytes >= self.peer_ack_window:
            self.acked_bytes = received
            await self._send(Acknowledgement(seq_number=received & 0xFFFFFFFF))

    async def _handle(self, chunk: Chunk) -> bool:
        """Returns False when the publisher has finished."""
        await self._acknowledge()
        kind = chunk.msg_type_id
        if kind in (MSG_AUDIO, MSG_VIDEO):
            if self.sink is None:
                return True  # media before publish: ignore, as other servers do
            timestamp = self.timestamps.fix(chunk)
            await self.sink.on_tag(FlvTag(TAG_AUDIO if kind == MSG_AUDIO else TAG_VIDEO, timestamp, bytes(chunk.payload)))
            return True
        if kind == MSG_DATA_AMF0:
            if self.sink is not None:
                await self.sink.on_tag(FlvTag(TAG_SCRIPT, self.timestamps.fix(chunk), bytes(chunk.payload)))
            return True
        if kind in (0x11, 0x0F, 0x16, 0x10, 0x13):
            raise ProtocolViolation(f"unsupported RTMP message type 0x{kind:02x} (AMF3 / aggregate / shared object)")
        try:
            message = MessageFactory.from_chunk(chunk)
        except NotImplementedError:
            raise ProtocolViolation(f"unknown RTMP message type 0x{kind:02x}") from None
        if isinstance(message, SetChunkSize):
            if not 1 <= message.chunk_size <= 0x7FFFFFFF:
                raise ProtocolViolation(f"chunk size {message.chunk_size} is invalid")
            self.session.reader_chunk_size = message.chunk_size
        elif isinstance(message, WindowAcknowledgementSize):
            self.peer_ack_window = max(1, int(message.ack_window_size))
        elif isinstance(message, NCConnect):
            await self._on_connect(message)
        elif isinstance(message, NCCreateStream):
            await self._send(message.create_response())
        elif isinstance(message, NSPublish):
            await self._on_publish(message)
        elif isinstance(message, (NSDeleteStream, NSCloseStream)):
            return False
        elif isinstance(message, CommandMessage):
            name = getattr(message, "command_name", "")
            if name == "FCUnpublish":
                return False
            if name == "play":
                await self._send(_command("onStatus", 0, {"level": "error", "code": "NetStream.Play.Failed",
                                                          "description": "this server only takes publishes"}, 1))
                raise ProtocolViolation("a client tried to play; only publishing is supported")
            # releaseStream, FCPublish and other courtesy calls need no answer from a publish-only server.
        return True

    async def _on_connect(self, message: NCConnect) -> None:
        command = message.command_object if isinstance(message.command_object, dict) else {}
        app = str(command.get("app", "")).split("?", 1)[0].strip("/")
        self.app = app
        self.session.writer_chunk_size = OUR_CHUNK_SIZE
        await self._send(
            WindowAcknowledgementSize(ack_window_size=ACK_WINDOW),
            SetPeerBandwidth(ack_window_size=ACK_WINDOW, limit_type=2),
            StreamBegin(stream_id=0),
        )
        # SetChunkSize must go out at the old size before we start using the new one.
        self.session.writer_chunk_size = 128
        await self._send(SetChunkSize(chunk_size=OUR_CHUNK_SIZE))
        self.session.writer_chunk_size = OUR_CHUNK_SIZE
        await self._send(message.create_response())

    async def _on_publish(self, message: NSPublish) -> None:
        key = str(message.publishing_name or "").split("?", 1)[0]
        self.key = key
        app = self.app or ""
        stream_id = int(message.msg_stream_id)
        try:
            if self.sink is not None:
                raise PublishRefused("this connection is already publishing")
            if app != self.server.app:
                raise PublishRefused(f"unknown application {app!r}; publish to /{self.server.app}")
            if not key:
                raise PublishRefused("no stream key given")
            self.sink = await self.server.authorize(app, key, self.peer)
        except PublishRefused as exc:
            log.warning("rtmp %s: publish refused (%s): %s", self.peer, self._key_hint(), exc)
            try:
                await self._send(_command("onStatus", 0, {"level": "error", "code": "NetStream.Publish.BadName",
                                                          "description": str(exc)}, stream_id))
            except ConnectionError:
                pass
            raise
        log.info("rtmp %s: publishing on app %s with %s", self.peer, app, self._key_hint())
        await self._send(StreamBegin(stream_id=stream_id), message.create_response())


class RtmpServer:
    """Listens for RTMP publishers; each accepted publish streams its tags into the sink authorize() returns."""

    def __init__(self, authorize: Authorize, *, host: str = "0.0.0.0", port: int = 1935, app: str = "live",
                 handshake_timeout: float = 10.0, idle_timeout: float = 30.0, max_connections: int = 100) -> None:
        self.authorize = authorize
        self.host = host
        self.requested_port = port
        self.app = app
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.requested_port)

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._tasks) >= self.max_connections:
            log.warning("rtmp: refusing %s: %d connections open", writer.get_extra_info("peername"), len(self._tasks))
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await _Connection(self, reader, writer).run()
        finally:
            self._tasks.discard(task)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
