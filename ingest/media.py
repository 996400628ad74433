"""The protocol-neutral publisher interface: what every ingest protocol hands a session, and how it
crosses the pipe to the transcode worker.

A protocol (RTMP, SRT, WHIP) turns its wire format into three kinds of item:
- TrackInfo: a track's codec and parameters (sent before its first access unit and whenever they change);
- AccessUnit: one compressed frame with its decode time and composition offset, in milliseconds;
- SourceMetadata: what the encoder declared about itself (RTMP's onMetaData: frame rate, tracks).

Codec names are FFmpeg decoder names ("h264", "hevc", "av1", "vp9", "vp8", "aac", "opus", "mp3"), so the
worker opens a PyAV decoder from them without knowing which protocol spoke. H.264 and HEVC data are
length-prefixed NAL units when the extradata is an avcC/hvcC record, Annex B (start codes) otherwise.

The wire format (sans-IO: `encode_item` and `ItemReader`) frames each item as
    kind (1 byte: T, U or M) | body length (4 bytes, big-endian) | body
- U body: track (1 byte: 0 video, 1 audio) | flags (1 byte: bit 0 keyframe) | dts_ms (int64) | cts_ms (int32) | data
- T and M bodies: JSON header length (2 bytes) | JSON header | extradata (T only)
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Literal, Protocol, Union

TrackKind = Literal["video", "audio"]

_KIND_CODES: dict[str, int] = {"video": 0, "audio": 1}
_CODE_KINDS: dict[int, TrackKind] = {0: "video", 1: "audio"}
_FRAME_HEADER = struct.Struct(">cI")
_UNIT_HEADER = struct.Struct(">BBqi")
_MAX_BODY = 64 * 1024 * 1024


class MediaWireError(ValueError):
    """The item stream is malformed (a bug or a torn pipe, never an encoder's fault)."""


@dataclass(frozen=True, slots=True)
class TrackInfo:
    kind: TrackKind
    codec: str  # an FFmpeg decoder name
    extradata: bytes = b""  # avcC / hvcC / av1C / AudioSpecificConfig / OpusHead; empty when in-band
    width: int = 0  # declared parameters; 0 when unknown
    height: int = 0
    sample_rate: int = 0
    channels: int = 0


@dataclass(frozen=True, slots=True)
class AccessUnit:
    kind: TrackKind
    dts_ms: int  # decode time on the protocol's own clock (RTMP's wraps at 2**32; SRT/WHIP start anywhere)
    cts_ms: int  # presentation time minus decode time (B-frames), 0 when there are none
    keyframe: bool  # video: a random access point; audio: always True
    data: bytes


@dataclass(frozen=True, slots=True)
class SourceMetadata:
    values: dict[str, object] = field(default_factory=dict)  # e.g. framerate, videocodecid, audiocodecid


MediaItem = Union[TrackInfo, AccessUnit, SourceMetadata]

# A SourceMetadata with only this key is not the encoder's: the session's wall-clock time (unix seconds) when the
# next access unit arrived, so the worker dates segments from arrival rather than from when it got to them.
ARRIVAL_CLOCK = "_arrival_clock"


def arrival_clock(item: MediaItem) -> float | None:
    if isinstance(item, SourceMetadata) and ARRIVAL_CLOCK in item.values:
        value = item.values[ARRIVAL_CLOCK]
        return float(value) if isinstance(value, (int, float)) else None
    return None


class Publisher(Protocol):
    """What the session gives an ingest connection whose stream key was accepted (mediaserver/sessions.py).

    on_media raises when the server ended the publish (an admin ended it, the worker failed): the protocol
    then closes its connection. reject_source fails the broadcast with a message the operator sees (an
    undecodable codec), and raises too."""

    async def on_media(self, item: MediaItem) -> None: ...

    async def reject_source(self, message: str) -> None: ...

    async def on_close(self, reason: str) -> None: ...


class PublishRefused(Exception):
    """The session refuses a publish (unknown key, stream disabled, already live); the text says why."""


class UnknownKey(PublishRefused):
    """No stream has this key (WHIP: 401)."""


class StreamBusy(PublishRefused):
    """The stream already has an encoder, or its last one is still closing (WHIP: 409)."""


class StreamUnavailable(PublishRefused):
    """The stream can't take a publish: disabled or cancelled (WHIP: 403)."""


class Authorizer(Protocol):
    """StreamManager.authorize_publish: checks a stream key and claims the stream for one publisher."""

    async def __call__(self, key: str, peer: str, protocol: str) -> Publisher: ...


def encode_item(item: MediaItem) -> bytes:
    if isinstance(item, AccessUnit):
        body = _UNIT_HEADER.pack(_KIND_CODES[item.kind], 1 if item.keyframe else 0, item.dts_ms, item.cts_ms) + item.data
        return _FRAME_HEADER.pack(b"U", len(body)) + body
    if isinstance(item, TrackInfo):
        header = json.dumps({"kind": item.kind, "codec": item.codec, "width": item.width, "height": item.height,
                             "sample_rate": item.sample_rate, "channels": item.channels}).encode()
        body = struct.pack(">H", len(header)) + header + item.extradata
        return _FRAME_HEADER.pack(b"T", len(body)) + body
    header = json.dumps(item.values, default=str).encode()
    body = struct.pack(">H", len(header)) + header
    return _FRAME_HEADER.pack(b"M", len(body)) + body


def _json_header(body: bytes) -> tuple[dict[str, object], bytes]:
    if len(body) < 2:
        raise MediaWireError("item header is truncated")
    size = struct.unpack_from(">H", body)[0]
    if len(body) < 2 + size:
        raise MediaWireError("item header runs past its body")
    try:
        header = json.loads(body[2 : 2 + size])
    except ValueError as exc:
        raise MediaWireError(f"item header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise MediaWireError("item header is not an object")
    return header, body[2 + size :]


def _decode_body(kind: bytes, body: bytes) -> MediaItem:
    if kind == b"U":
        if len(body) < _UNIT_HEADER.size:
            raise MediaWireError("access unit header is truncated")
        track, flags, dts, cts = _UNIT_HEADER.unpack_from(body)
        if track not in _CODE_KINDS:
            raise MediaWireError(f"unknown track {track}")
        return AccessUnit(_CODE_KINDS[track], dts, cts, bool(flags & 1), body[_UNIT_HEADER.size :])
    if kind == b"T":
        header, extradata = _json_header(body)
        track_kind = header.get("kind")
        if track_kind not in _KIND_CODES:
            raise MediaWireError(f"unknown track kind {track_kind!r}")
        return TrackInfo(track_kind, str(header.get("codec", "")), extradata,  # type: ignore[arg-type]
                         int(header.get("width") or 0), int(header.get("height") or 0),  # type: ignore[call-overload]
                         int(header.get("sample_rate") or 0), int(header.get("channels") or 0))  # type: ignore[call-overload]
    if kind == b"M":
        header, _ = _json_header(body)
        return SourceMetadata(header)
    raise MediaWireError(f"unknown item kind {kind!r}")


class ItemReader:
    """Incremental parser of the item stream: bytes in, MediaItems out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[MediaItem]:
        self._buffer += data
        buf = self._buffer
        items: list[MediaItem] = []
        pos = 0
        while len(buf) - pos >= _FRAME_HEADER.size:
            kind, size = _FRAME_HEADER.unpack_from(buf, pos)
            if size > _MAX_BODY:
                raise MediaWireError(f"item of {size} bytes exceeds the {_MAX_BODY} byte limit")
            end = pos + _FRAME_HEADER.size + size
            if len(buf) < end:
                break
            items.append(_decode_body(kind, bytes(buf[pos + _FRAME_HEADER.size : end])))
            pos = end
        del buf[:pos]
        return items

    @property
    def pending(self) -> int:
        """Bytes of an incomplete item still buffered."""
        return len(self._buffer)
