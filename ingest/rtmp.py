"""RTMP publish ingest (OBS, hardware encoders, ffmpeg): a thin wrapper around pyrtmp.

pyrtmp does the handshake, chunk reassembly and AMF0; this module adds timeouts, limits, stream-key checks
through `authorize`, one clean close per connection, and hands every media message on as the protocol-neutral
items of ingest/media.py (ingest/flv.py's FlvUnpacker: AVC/AAC and enhanced RTMP's HEVC/AV1/VP9).
Connections without an accepted key are bounded per address and in total by closing the oldest, so a flood
of idle sockets never keeps a real encoder out; publishers have their own limit.
"""
from __future__ import annotations

import asyncio
import ssl
import ipaddress
import logging
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, TypeVar

from bitstring import BitStream

from ingest.flv import (
    TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO, FlvError, FlvReader, FlvTag, FlvUnpacker, UnsupportedCodec, flv_header,
)
from ingest.media import Publisher, PublishRefused

# pyrtmp.rtmp calls logging.basicConfig(DEBUG) at import and its modules set their loggers to DEBUG:
# note the root logger's state before importing it, and put it back after.
_root_handlers_before = list(logging.getLogger().handlers)
_root_level_before = logging.getLogger().level
from pyrtmp import StreamClosedException, random_byte_array  # noqa: E402
from pyrtmp.amf.serializers import AMF0Deserializer, AMF0Serializer  # noqa: E402
from pyrtmp.messages import Chunk, RawChunk  # noqa: E402
from pyrtmp.messages.command import NCConnect, NCCreateStream, NSPublish  # noqa: E402
from pyrtmp.messages.handshake import C0, C1, C2  # noqa: E402
from pyrtmp.messages.protocol_control import (  # noqa: E402
    Acknowledgement,
    SetChunkSize,
    SetPeerBandwidth,
    WindowAcknowledgementSize,
)
from pyrtmp.messages.user_control import StreamBegin  # noqa: E402
from pyrtmp.rtmp import BaseRTMPController  # noqa: E402
from pyrtmp.session_manager import SessionManager  # noqa: E402


def _undo_pyrtmp_logging() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler not in _root_handlers_before:
            root.removeHandler(handler)
    root.setLevel(_root_level_before)
    for name in list(logging.root.manager.loggerDict):
        if name == "pyrtmp" or name.startswith("pyrtmp."):
            logging.getLogger(name).setLevel(logging.WARNING)


_undo_pyrtmp_logging()

log = logging.getLogger(__name__)

# RTMP message type ids (RTMP 1.0 spec, section 5.4 and 7.1).
MSG_SET_CHUNK_SIZE, MSG_ABORT, MSG_ACK, MSG_USER_CONTROL, MSG_WINDOW_ACK_SIZE, MSG_PEER_BANDWIDTH = 1, 2, 3, 4, 5, 6
MSG_AUDIO, MSG_VIDEO = 8, 9
MSG_DATA_AMF3, MSG_SHARED_OBJECT_AMF3, MSG_COMMAND_AMF3 = 0x0F, 0x10, 0x11
MSG_DATA_AMF0, MSG_SHARED_OBJECT_AMF0, MSG_COMMAND_AMF0 = 0x12, 0x13, 0x14
MSG_AGGREGATE = 0x16
# Harmless for a publish-only server; Abort is rare enough that a later header mismatch closes instead.
_IGNORED_TYPES = (MSG_ABORT, MSG_ACK, MSG_USER_CONTROL, MSG_PEER_BANDWIDTH,
                  MSG_SHARED_OBJECT_AMF3, MSG_SHARED_OBJECT_AMF0)

OUR_CHUNK_SIZE = 4096
ACK_WINDOW = 2_500_000
_EXTENDED = 0xFFFFFF
_PUBLISH_STREAM_ID = 1  # pyrtmp's createStream reply always hands out stream 1


# authorize(app, key, peer): the session's Publisher for an accepted key, or PublishRefused with the reason.
Authorize = Callable[[str, str, str], Awaitable[Publisher]]


class ProtocolViolation(Exception):
    """The peer sent something an RTMP publisher must not; the connection is closed."""


class _SinkEnded(Exception):
    """The sink raised from on_tag: the server side ended the publish."""


@dataclass
class _ChunkStream:
    """What a chunk stream's later, compressed headers inherit (RTMP spec 5.3.1)."""

    timestamp: int = 0       # absolute timestamp of the current (or last) message
    delta: int = 0           # what a type-3 header that starts a new message adds to it
    extended: bool = False   # the last type 0/1/2 header used an extended timestamp
    msg_length: int = 0
    msg_type_id: int = 0
    msg_stream_id: int = 0
    received: int = 0        # bytes of the current message so far; 0 between messages


class _RtmpSession(SessionManager):  # type: ignore[misc]
    """pyrtmp's session with two readers corrected; pyrtmp still reassembles messages and writes chunks.

    pyrtmp's chunk-header reader gives a type-3 header that starts a new message the previous message's
    timestamp (RTMP adds the previous delta again; FFmpeg sends such headers all the time), decides on an
    extended timestamp from the sum rather than the field, never reads the extended timestamp repeated in
    type-3 headers (FFmpeg streams desynchronise after 4 h 39 min), reads 3-byte chunk ids big-endian,
    and trusts any C0 byte.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader=reader, writer=writer)
        self.streams: dict[int, _ChunkStream] = {}
        self.byte_budget: int | None = None  # set while the peer has not published yet
        self.progressed: Callable[[int], None] = lambda stage: None  # told each handshake stage reached

    @property
    def bytes_read(self) -> int:
        return int(self.total_read_bytes) // 8  # pyrtmp counts bits

    async def handshake(self) -> None:
        c0 = await C0.from_stream(self.fifo_reader)
        version = int(c0.protocol_version)
        if version != 3:
            hint = " (encrypted RTMPE is not supported)" if version in (6, 8) else ""
            if 0x41 <= version <= 0x5A:
                hint = f" ({chr(version)!r}: an HTTP or other text request?)"
            raise ProtocolViolation(f"not an RTMP handshake: version byte 0x{version:02x}{hint}")
        c1 = await C1.from_stream(self.fifo_reader)
        self.progressed(STAGE_HELLO)
        s1 = C1(time=0, zero=0, random=random_byte_array(1528))
        s2 = C2(time1=c1.time, time2=c1.time, random=c1.random)
        self.writer.write(C0(protocol_version=3).to_bytes() + s1.to_bytes() + s2.to_bytes())
        await self.writer.drain()
        await C2.from_stream(self.fifo_reader)
        self.progressed(STAGE_HANDSHAKE)

    async def read_raw_chunk(self) -> RawChunk:
        read = self.fifo_reader.read
        first = int(await read("uint:8"))
        fmt, cs_id = first >> 6, first & 0x3F
        if cs_id == 0:
            cs_id = 64 + int(await read("uint:8"))
        elif cs_id == 1:
            cs_id = 64 + int(await read("uintle:16"))
        state = self.streams.get(cs_id)
        if state is None:
            if fmt != 0:
                raise ProtocolViolation(f"chunk stream {cs_id} starts with a type-{fmt} header, not type 0")
            state = self.streams[cs_id] = _ChunkStream()
        starts_message = state.received == 0
        if fmt != 3 and not starts_message:
            raise ProtocolViolation(f"new message on chunk stream {cs_id} before the previous one was complete")

        field = 0
        if fmt < 3:
            header = bytes(await read(f"bytes:{(11, 7, 3)[fmt]}"))
            field = int.from_bytes(header[0:3], "big")
            if fmt < 2:
                state.msg_length = int.from_bytes(header[3:6], "big")
                state.msg_type_id = header[6]
            if fmt == 0:
                state.msg_stream_id = int.from_bytes(header[7:11], "little")
            state.extended = field == _EXTENDED
        if state.extended:
            # Type-3 headers repeat the extended field; for a continuation its value is the message's own.
            extended_field = int(await read("uint:32"))
            if fmt < 3 or starts_message:
                field = extended_field
        elif fmt == 3:
            field = state.delta

        if fmt == 0:
            state.timestamp = state.delta = field  # a type 3 after a type 0 adds the same again (as FFmpeg reads it)
        elif fmt in (1, 2) or starts_message:
            state.delta = field
            state.timestamp = (state.timestamp + field) & 0xFFFFFFFF

        size = min(int(self.reader_chunk_size), state.msg_length - state.received)
        if self.byte_budget is not None and self.bytes_read + size > self.byte_budget:
            raise ProtocolViolation(f"over {self.byte_budget} bytes sent without publishing")
        payload = bytes(await read(f"bytes:{size}")) if size else b""
        state.received += size
        if state.received >= state.msg_length:
            state.received = 0
        return RawChunk(chunk_type=fmt, chunk_id=cs_id, timestamp=state.timestamp, msg_length=state.msg_length,
                        msg_type_id=state.msg_type_id, msg_stream_id=state.msg_stream_id, payload=payload,
                        is_eof=state.received == 0)


def _amf0_values(payload: bytes, count: int) -> list[Any]:
    """Up to `count` leading AMF0 values of a command; fewer if the payload ends or holds a type pyrtmp lacks."""
    data = BitStream(payload)
    values: list[Any] = []
    try:
        while len(values) < count and data.pos < data.len:
            values.append(AMF0Deserializer.from_stream(data))
    except Exception:  # pyrtmp raises NotImplementedError, AssertionError and bitstring errors here
        pass
    return values


def _command(name: str, transaction_id: float, info: Any, stream_id: int) -> Chunk:
    data = BitStream()
    for value in (name, transaction_id, None, info):
        AMF0Serializer.create_object(data, value)
    return Chunk(chunk_type=0, chunk_id=3, timestamp=0, msg_length=len(data.bytes),
                 msg_type_id=MSG_COMMAND_AMF0, msg_stream_id=stream_id, payload=data.bytes)


def _status(level: str, code: str, description: str, stream_id: int) -> Chunk:
    # pyrtmp writes an AMF0 string's length in characters, not bytes: keep what we send ASCII.
    text = description.encode("ascii", "replace").decode("ascii")
    return _command("onStatus", 0, {"level": level, "code": code, "description": text}, stream_id)


def _stream_begin(stream_id: int) -> Chunk:
    message = StreamBegin(stream_id=stream_id)
    message.msg_stream_id = 0  # user control messages travel on stream 0; pyrtmp puts them on stream_id
    return message


def _u32(payload: bytes, what: str) -> int:
    if len(payload) < 4:
        raise ProtocolViolation(f"{what} message of {len(payload)} bytes is too short")
    return int.from_bytes(payload[:4], "big")


class _PublishController(BaseRTMPController):  # type: ignore[misc]
    """One TCP client from handshake to close: pyrtmp's controller hooks, driven by our own loop so that
    every read has a deadline and media passes through without pyrtmp parsing it."""

    def __init__(self, server: RtmpServer) -> None:
        self.server = server
        self.session: _RtmpSession | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.peer = "?"
        self.address = "?"  # what the pending-per-address limit counts by
        self.closing = False
        self.app: str | None = None
        self.key: str | None = None
        self.sink: Publisher | None = None
        self._unpacker = FlvUnpacker()  # a new one per publish (set when the key is accepted)
        self.acked_bytes = 0
        self.peer_ack_window = ACK_WINDOW
        self._guard: asyncio.Timeout | None = None
        self._deadline = 0.0  # when a client that is not publishing gets closed

    # -- the connection loop ------------------------------------------------------------------------

    async def client_callback(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = self.session = _RtmpSession(reader, writer)
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer = f"{peer[0]}:{peer[1]}"
        self.address = _address_group(str(peer[0]))
        self.server._admit(self)
        reason = "connection closed by the encoder"
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.server.handshake_timeout
        session.byte_budget = self.server.max_prepublish_bytes
        try:
            # Until it publishes, a client gets handshake_timeout in all and a byte budget; then idle_timeout per read.
            async with asyncio.timeout_at(self._deadline) as self._guard:
                await self.on_handshake(session)
                async for chunk in session.read_chunks_from_stream():
                    if not await self._dispatch(session, chunk):
                        reason = "encoder stopped publishing"
                        break
                    self._guard.reschedule(loop.time() + self.server.idle_timeout if self.sink else self._deadline)
        except StreamClosedException:
            await self.on_stream_closed(session, StreamClosedException())
        except TimeoutError:
            stage = "idle while publishing" if self.sink else "no publish within the handshake timeout"
            reason = f"timed out ({stage})"
            log.warning("rtmp %s: closing: %s", self.peer, reason)
        except PublishRefused as exc:
            reason = f"refused: {exc}"  # logged where it was refused
        except ProtocolViolation as exc:
            reason = f"protocol error: {exc}"
            log.warning("rtmp %s: closing: %s", self.peer, exc)
        except _SinkEnded as exc:
            reason = f"ended by the server: {exc}"
            log.warning("rtmp %s: publish of %s ended by the server: %s", self.peer, self._key_hint(), exc)
        except ConnectionError as exc:
            reason = f"connection lost: {exc}"
            log.log(logging.INFO if self.sink else logging.DEBUG, "rtmp %s: %s", self.peer, reason)
        except asyncio.CancelledError:
            reason = "server stopping"
            raise
        except Exception as exc:  # pyrtmp asserts, raises NotImplementedError and bitstring errors on bad input
            reason = f"malformed RTMP: {type(exc).__name__}: {exc}"
            log.warning("rtmp %s: closing after malformed input: %s", self.peer, reason)
        finally:
            self.closing = True
            try:
                writer.close()
            except Exception:  # already torn down by the peer
                pass
            await self._end_publish(reason)
            self.server._slots.remove(self)
            await self.cleanup(session)

    def evict(self, why: str) -> None:
        """Closes this pending connection at once (no flush) to make room for a newer one."""
        log.warning("rtmp %s: closing to make room for a new connection: %s", self.peer, why)
        if self.writer is not None:
            self.writer.transport.abort()  # the reads of client_callback end with EOF

    async def _dispatch(self, session: _RtmpSession, chunk: Chunk) -> bool:
        """Handles one complete message; False when the client is done with this connection."""
        await self._acknowledge(session)
        kind = int(chunk.msg_type_id)
        payload = bytes(chunk.payload)
        if kind == MSG_VIDEO:
            await self._forward(FlvTag(TAG_VIDEO, int(chunk.timestamp), payload))
        elif kind == MSG_AUDIO:
            await self._forward(FlvTag(TAG_AUDIO, int(chunk.timestamp), payload))
        elif kind in (MSG_DATA_AMF0, MSG_DATA_AMF3):
            await self._forward(FlvTag(TAG_SCRIPT, int(chunk.timestamp), self._amf0_body(kind, payload)))
        elif kind == MSG_AGGREGATE:
            await self._on_aggregate(int(chunk.timestamp), payload)
        elif kind in (MSG_COMMAND_AMF0, MSG_COMMAND_AMF3):
            chunk.payload = self._amf0_body(kind, payload)
            return await self._on_command(session, chunk)
        elif kind == MSG_SET_CHUNK_SIZE:
            size = _u32(payload, "set chunk size")
            if not 1 <= size <= 0x7FFFFFFF:
                raise ProtocolViolation(f"chunk size {size} is invalid")
            await self.on_set_chunk_size(session, SetChunkSize(chunk_size=size))
        elif kind == MSG_WINDOW_ACK_SIZE:
            await self.on_window_acknowledgement_size(
                session, WindowAcknowledgementSize(ack_window_size=_u32(payload, "window acknowledgement size")))
        elif kind not in _IGNORED_TYPES:
            raise ProtocolViolation(f"unknown RTMP message type 0x{kind:02x}")
        return True

    @staticmethod
    def _amf0_body(kind: int, payload: bytes) -> bytes:
        if kind in (MSG_DATA_AMF0, MSG_COMMAND_AMF0):
            return payload
        # The AMF3 variants start with a format byte; 0 means the rest is plain AMF0, as every encoder sends it.
        if not payload or payload[0] != 0:
            raise ProtocolViolation(f"AMF3-encoded message (type 0x{kind:02x}) is not supported")
        return payload[1:]

    async def _forward(self, tag: FlvTag) -> None:
        if self.sink is None:
            return  # media outside a publish: ignored, as other servers do
        assert self._guard is not None
        self._guard.reschedule(None)  # a slow sink is backpressure, not an idle encoder
        try:
            items = self._unpacker.feed(tag)
        except UnsupportedCodec as exc:
            try:
                await self.sink.reject_source(str(exc))
            except Exception as ended:
                raise _SinkEnded(str(ended) or str(exc)) from exc
            raise _SinkEnded(str(exc)) from exc
        except FlvError as exc:
            log.warning("rtmp %s: skipping a bad tag at %d ms: %s", self.peer, tag.timestamp_ms, exc)
            return
        try:
            for item in items:
                await self.sink.on_media(item)
        except Exception as exc:
            raise _SinkEnded(str(exc) or type(exc).__name__) from exc

    async def _on_aggregate(self, timestamp: int, payload: bytes) -> None:
        # An aggregate message is a run of FLV tags whose timestamps are relative to the message's.
        try:
            tags = FlvReader().feed(flv_header() + payload)
        except FlvError as exc:
            raise ProtocolViolation(f"bad aggregate message: {exc}") from None
        if tags:
            offset = timestamp - tags[0].timestamp_ms
            for tag in tags:
                await self._forward(FlvTag(tag.kind, (tag.timestamp_ms + offset) & 0xFFFFFFFF, tag.body))

    async def _on_command(self, session: _RtmpSession, chunk: Chunk) -> bool:
        try:
            name, tid, _, *args = _amf0_values(chunk.payload, 5) + [None] * 5
            if name == "connect":
                message = NCConnect.from_chunk(chunk)
            elif name == "createStream":
                message = NCCreateStream.from_chunk(chunk)
            elif name == "publish":  # parsed here: pyrtmp insists on the optional publishing type
                message = NSPublish(command_name=name, transaction_id=tid, command_object=None,
                                    publishing_name=args[0], publishing_type=args[1], **chunk.__dict__)
        except Exception as exc:
            raise ProtocolViolation(f"unreadable command message: {type(exc).__name__}: {exc}") from None
        tid = tid if isinstance(tid, (int, float)) else 0
        if name == "connect":
            await self.on_nc_connect(session, message)
        elif name == "createStream":
            await self.on_nc_create_stream(session, message)
        elif name == "publish":
            await self.on_ns_publish(session, message)
        elif name in ("releaseStream", "FCPublish"):
            await self._send(session, _command("_result", tid, None, 0))  # courtesy calls from OBS and FFmpeg
        elif name in ("FCUnpublish", "closeStream"):
            await self._end_publish("encoder stopped publishing")
        elif name == "deleteStream":
            return False
        elif name in ("play", "play2"):
            await self._send(session, _status("error", "NetStream.Play.Failed",
                                              "this server only takes publishes", int(chunk.msg_stream_id)))
            raise ProtocolViolation("the client tried to play; only publishing is supported")
        else:
            log.debug("rtmp %s: ignoring command %r", self.peer, name)
        return True

    async def _send(self, session: _RtmpSession, *messages: Chunk) -> None:
        for message in messages:
            session.previous_chunk_for_writing = None  # pyrtmp compresses headers across chunk streams: don't
            session.write_chunk_to_stream(message)
        await session.drain()

    async def _acknowledge(self, session: _RtmpSession) -> None:
        received = session.bytes_read
        if received - self.acked_bytes >= self.peer_ack_window:
            self.acked_bytes = received
            await self._send(session, Acknowledgement(seq_number=received & 0xFFFFFFFF))

    async def _end_publish(self, reason: str) -> None:
        sink, self.sink = self.sink, None  # cleared first, so on_close runs once whatever happens next
        if sink is None:
            return
        self.server._slots.release_publisher(self)
        if not self.closing:
            self.server._admit(self)  # a connection that stopped publishing is pending again, as a new one
        log.info("rtmp %s: publish of %s ended: %s", self.peer, self._key_hint(), reason)
        # Once a publish ends, the client gets what a new one gets to delete its stream or publish again.
        self._deadline = asyncio.get_running_loop().time() + self.server.handshake_timeout
        if self.session is not None:
            self.session.byte_budget = self.session.bytes_read + self.server.max_prepublish_bytes
        try:
            await sink.on_close(reason)
        except Exception:
            log.exception("rtmp %s: the sink failed while closing", self.peer)

    def _key_hint(self) -> str:
        return f"key {self.key[:6]}..." if self.key else "no key"

    # -- pyrtmp's controller hooks ------------------------------------------------------------------

    async def on_handshake(self, session: _RtmpSession) -> None:
        session.progressed = lambda stage: self.server._slots.advance(self, stage)
        await session.handshake()

    async def on_nc_connect(self, session: _RtmpSession, message: NCConnect) -> None:
        command = message.command_object if isinstance(message.command_object, dict) else {}
        self.app = str(command.get("app", "")).split("?", 1)[0].strip("/")
        await self._send(session, WindowAcknowledgementSize(ack_window_size=ACK_WINDOW),
                         SetPeerBandwidth(ack_window_size=ACK_WINDOW, limit_type=2), _stream_begin(0),
                         SetChunkSize(chunk_size=OUR_CHUNK_SIZE))
        session.writer_chunk_size = OUR_CHUNK_SIZE  # only after SetChunkSize went out at the old size
        await self._send(session, message.create_response())
        self.server._slots.advance(self, STAGE_CONNECTED)

    async def on_window_acknowledgement_size(self, session: _RtmpSession, message: WindowAcknowledgementSize) -> None:
        self.peer_ack_window = max(1, int(message.ack_window_size))

    async def on_nc_create_stream(self, session: _RtmpSession, message: NCCreateStream) -> None:
        await self._send(session, message.create_response())

    async def on_set_chunk_size(self, session: _RtmpSession, message: SetChunkSize) -> None:
        session.reader_chunk_size = int(message.chunk_size)

    async def on_ns_publish(self, session: _RtmpSession, message: NSPublish) -> None:
        key = str(message.publishing_name or "").split("?", 1)[0]
        app = self.app or ""
        stream_id = int(message.msg_stream_id) or _PUBLISH_STREAM_ID
        try:
            if self.sink is not None:
                raise PublishRefused("this connection is already publishing")
            self.key = key
            if app != self.server.app:
                raise PublishRefused(f"unknown application {app!r}; publish to /{self.server.app}")
            if not self.key:
                raise PublishRefused("no stream key given")
            # From here the connection holds a publisher slot and can't be evicted: authorize() starts a broadcast.
            slots = self.server._slots
            if not slots.claim_publisher(self):
                raise PublishRefused(f"{len(slots.publishers)} publishing connections already open "
                                     f"(max_connections = {slots.max_publishers})")
            try:
                self._unpacker = FlvUnpacker()
                self.sink = await self.server.authorize(app, self.key, self.peer)
            except PublishRefused:
                raise
            except Exception as exc:
                log.error("rtmp %s: authorize failed", self.peer, exc_info=True)
                raise PublishRefused(f"server error ({type(exc).__name__})") from exc
            finally:
                if self.sink is None:
                    slots.release_publisher(self)
        except PublishRefused as exc:
            log.warning("rtmp %s: publish refused (%s): %s", self.peer, self._key_hint(), exc)
            try:
                await self._send(session, _status("error", "NetStream.Publish.BadName", str(exc), stream_id))
            except ConnectionError:
                pass
            raise
        session.byte_budget = None
        log.info("rtmp %s: publishing to /%s with %s", self.peer, app, self._key_hint())
        await self._send(session, _stream_begin(stream_id), message.create_response())

    async def on_stream_closed(self, session: _RtmpSession, exception: StreamClosedException) -> None:
        if self.sink is None and self.key is None:
            log.debug("rtmp %s: closed before publishing", self.peer)

    async def cleanup(self, session: _RtmpSession) -> None:
        self.session = None


def _address_group(host: str) -> str:
    """What a client's pending connections count against: its IPv4 address, or its IPv6 /64 (one site's LAN)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


C = TypeVar("C", bound=Hashable)
# How far a pending connection got: the least advanced are closed first when the pending slots are full.
STAGE_HELLO = 1      # sent a whole C0+C1 (a real RTMP client, not an idle socket)
STAGE_HANDSHAKE = 2  # handshake done
STAGE_CONNECTED = 3  # its connect command answered
# Pending connections may briefly exceed their limits (for RtmpServer.settle_time), up to this many times over.
HARD_FACTOR = 8


class ConnectionSlots(Generic[C]):
    """Who may stay connected. Publishers (a key accepted, or being checked by authorize) up to max_publishers;
    every other connection is pending, bounded per address and in total by closing the oldest of the full
    group, so a newcomer always gets in: an encoder needs milliseconds to publish, a flood has to keep
    every slot busy and still loses the oldest. Sans-IO: the caller closes what add_pending returns."""

    def __init__(self, max_publishers: int, max_pending: int, max_pending_per_address: int) -> None:
        for name, value in [("max_publishers", max_publishers), ("max_pending", max_pending),
                            ("max_pending_per_address", max_pending_per_address)]:
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.max_publishers = max_publishers
        self.max_pending = max_pending
        self.max_pending_per_address = max_pending_per_address
        self.publishers: set[C] = set()
        self._pending: dict[C, str] = {}                 # oldest first (insertion order), to its address
        self._by_address: dict[str, dict[C, None]] = {}  # an address's pending connections, oldest first
        self._stage: dict[C, int] = {}                   # how far each pending connection got (see advance)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def addresses(self) -> int:
        """Addresses with pending connections; an address is forgotten with its last one."""
        return len(self._by_address)

    def add_pending(self, conn: C, address: str, *, enforce: bool = True) -> list[tuple[C, str]]:
        """Adds conn as the newest pending connection; returns those displaced to make room (to close), each
        with why. enforce=False defers that to enforce(), so connections accepted together all get a chance to
        send their first bytes before anyone is judged (see RtmpServer.settle_time)."""
        self._pending[conn] = address
        self._stage[conn] = 0
        self._by_address.setdefault(address, {})[conn] = None
        return self.enforce(address) if enforce else []

    def enforce(self, address: str | None = None) -> list[tuple[C, str]]:
        """Closes the least advanced (oldest among equals) of every group over its limit: one address's, or all."""
        displaced: list[tuple[C, str]] = []
        for addr in [address] if address is not None else list(self._by_address):
            group = self._by_address.get(addr)
            while group and len(group) > self.max_pending_per_address:
                victim = self._least_advanced(group)
                displaced.append((victim, f"least advanced of {len(group)} pending connections from {addr}, "
                                          f"over max_pending_per_address = {self.max_pending_per_address}"))
                self._forget_pending(victim)
                group = self._by_address.get(addr)
        while len(self._pending) > self.max_pending:
            victim = self._least_advanced(self._pending)
            displaced.append((victim, f"least advanced of {len(self._pending)} pending connections, "
                                      f"over max_pending_connections = {self.max_pending}"))
            self._forget_pending(victim)
        return displaced

    def over(self, factor: int) -> bool:
        """More pending than `factor` times a limit (in all, or for one address): too many to wait any longer."""
        return len(self._pending) > factor * self.max_pending or any(
            len(group) > factor * self.max_pending_per_address for group in self._by_address.values())

    def advance(self, conn: C, stage: int) -> None:
        """conn got further towards publishing (STAGE_HELLO, STAGE_HANDSHAKE, STAGE_CONNECTED)."""
        if conn in self._stage:
            self._stage[conn] = max(self._stage[conn], stage)

    def _least_advanced(self, group: Iterable[C]) -> C:
        """The connection to close: the least advanced, the oldest among equals (groups are oldest first).
        A real encoder sends its C0+C1 at once and is through its handshake within milliseconds, so a flood
        of idle sockets from its own address (a church NAT) displaces the flood's own sockets first."""
        return min(group, key=lambda c: self._stage.get(c, 0))

    def claim_publisher(self, conn: C) -> bool:
        """Moves conn from pending to publishers; False (conn stays pending) when max_publishers are taken."""
        if conn not in self.publishers and len(self.publishers) >= self.max_publishers:
            return False
        self._forget_pending(conn)
        self.publishers.add(conn)
        return True

    def release_publisher(self, conn: C) -> None:
        self.publishers.discard(conn)

    def remove(self, conn: C) -> None:
        """conn is closed: it holds no slot any more."""
        self._forget_pending(conn)
        self.publishers.discard(conn)

    def _forget_pending(self, conn: C) -> None:
        address = self._pending.pop(conn, None)
        self._stage.pop(conn, None)
        if address is None:
            return
        group = self._by_address[address]
        del group[conn]
        if not group:
            del self._by_address[address]


class RtmpServer:
    """Listens for RTMP publishers; each accepted publish streams its tags into the sink authorize() returns.

    max_connections bounds publishers (connections whose key authorize() accepted, or is checking); the
    connections before that are bounded by max_pending_connections and max_pending_per_address, and when
    one of those is full the oldest pending connection of that group is closed to admit the new one.
    """

    def __init__(self, authorize: Authorize, *, host: str = "0.0.0.0", port: int = 1935, app: str = "live",
                 handshake_timeout: float = 10.0, idle_timeout: float = 30.0, max_connections: int = 100,
                 max_pending_connections: int = 64, max_pending_per_address: int = 8,
                 max_prepublish_bytes: int = 256 * 1024, backlog: int = 511, settle_time: float = 0.05) -> None:
        self.authorize = authorize
        self.host = host
        self.requested_port = port
        self.app = app
        self.handshake_timeout = handshake_timeout  # connect to publish, in all
        self.idle_timeout = idle_timeout            # between two messages of a publish
        self.max_prepublish_bytes = max_prepublish_bytes  # an encoder sends about 1 KiB before publishing
        self.backlog = backlog  # connections the kernel queues until we accept them (nginx's default 511)
        self._slots: ConnectionSlots[_PublishController] = ConnectionSlots(
            max_connections, max_pending_connections, max_pending_per_address)
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None  # RTMPS: the same publishers' path, over TLS
        self._tasks: set[asyncio.Task[None]] = set()
        self.settle_time = settle_time  # seconds new connections get to send their first bytes before the limits bite
        self._enforce_handle: asyncio.TimerHandle | None = None

    @property
    def pending_connections(self) -> int:
        """Connections without an accepted key: handshaking, connecting, or done publishing and not yet gone."""
        return self._slots.pending

    @property
    def pending_addresses(self) -> int:
        return self._slots.addresses

    @property
    def publishing_connections(self) -> int:
        return len(self._slots.publishers)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.requested_port, backlog=self.backlog)

    async def start_tls(self, port: int, context: ssl.SSLContext) -> None:
        """RTMPS: RTMP inside TLS on its own port. Connections share the limits and the publish path of plain
        RTMP; a TLS handshake gets the RTMP handshake timeout."""
        self._tls_server = await asyncio.start_server(self._accept, self.host, port, backlog=self.backlog,
                                                      ssl=context, ssl_handshake_timeout=self.handshake_timeout)

    @property
    def tls_port(self) -> int | None:
        if self._tls_server is None or not self._tls_server.sockets:
            return None
        return int(self._tls_server.sockets[0].getsockname()[1])

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("RtmpServer is not started")
        return int(self._server.sockets[0].getsockname()[1])

    def _admit(self, controller: _PublishController) -> None:
        # Judged a moment later, not on arrival: an encoder accepted in the same batch as a flood has sent its
        # C0+C1 by then and is no longer among the least advanced. Past HARD_FACTOR times a limit, at once.
        self._slots.add_pending(controller, controller.address, enforce=False)
        if self._slots.over(HARD_FACTOR):
            self._enforce()
        elif self._enforce_handle is None:
            self._enforce_handle = asyncio.get_running_loop().call_later(self.settle_time, self._enforce)

    def _enforce(self) -> None:
        if self._enforce_handle is not None:
            self._enforce_handle.cancel()
            self._enforce_handle = None
        for victim, why in self._slots.enforce():
            victim.evict(why)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await _PublishController(self).client_callback(reader, writer)
        finally:
            self._tasks.discard(task)

    async def stop(self) -> None:
        if self._enforce_handle is not None:
            self._enforce_handle.cancel()
            self._enforce_handle = None
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in (self._server, self._tls_server):
            if server is not None:
                await server.wait_closed()
