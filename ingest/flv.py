"""Sans-IO FLV: the tag stream RTMP carries, its tag bodies (AVC/AAC and enhanced RTMP's HEVC/AV1/VP9),
and their translation into the protocol-neutral items of ingest/media.py.

No sockets here: bytes in, FlvTag objects (and MediaItems) out, FlvError on anything malformed.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from ingest.media import AccessUnit, MediaItem, SourceMetadata, TrackInfo
from packager.h264 import H264Error, avcc_record

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT = 18
_KNOWN_TAGS = (TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT)
_HEADER_SIZE = 9


class FlvError(ValueError):
    """Malformed FLV; the message names the offending value."""


class UnsupportedCodec(FlvError):
    """Well-formed FLV carrying a codec we don't take (we take H.264 and AAC).

    Retrying can't help: the encoder must be set to another codec."""


# Enhanced RTMP (veovera enhanced-rtmp v1/v2) video FourCCs: the decoder we open, and the codec's name.
_ENHANCED_CODECS = {b"hvc1": "hevc", b"av01": "av1", b"vp09": "vp9", b"avc1": "h264"}
_ENHANCED_VIDEO = {
    b"hvc1": "HEVC (H.265)",
    b"av01": "AV1",
    b"vp09": "VP9",
    b"avc1": "H.264 in the enhanced RTMP format",
    b"vp08": "VP8",
}


@dataclass(frozen=True, slots=True)
class FlvTag:
    kind: int
    timestamp_ms: int
    body: bytes


def flv_header(has_audio: bool = True, has_video: bool = True) -> bytes:
    flags = (4 if has_audio else 0) | (1 if has_video else 0)
    return b"FLV\x01" + bytes([flags]) + struct.pack(">I", _HEADER_SIZE) + b"\x00\x00\x00\x00"


def encode_tag(tag: FlvTag) -> bytes:
    if tag.kind not in _KNOWN_TAGS:
        raise FlvError(f"unknown FLV tag type {tag.kind}")
    size = len(tag.body)
    if size >= 1 << 24:
        raise FlvError(f"tag body of {size} bytes does not fit FLV's 24-bit size")
    ts = tag.timestamp_ms & 0xFFFFFFFF
    header = bytes([tag.kind]) + size.to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big") + bytes([ts >> 24]) + b"\x00\x00\x00"
    return header + tag.body + struct.pack(">I", 11 + size)


class FlvReader:
    """Incremental parser of an FLV byte stream (header first, then tags)."""

    def __init__(self, max_tag_size: int = 16 * 1024 * 1024) -> None:
        self.max_tag_size = max_tag_size
        self._buffer = bytearray()
        self._header_done = False

    def feed(self, data: bytes) -> list[FlvTag]:
        self._buffer += data
        tags: list[FlvTag] = []
        buf = self._buffer
        pos = 0
        if not self._header_done:
            if len(buf) < _HEADER_SIZE + 4:
                if buf[:3] != b"FLV"[: len(buf)]:
                    raise FlvError(f"not an FLV stream: starts with {bytes(buf[:3])!r}")
                return tags
            if buf[:3] != b"FLV":
                raise FlvError(f"not an FLV stream: starts with {bytes(buf[:3])!r}")
            offset = struct.unpack(">I", buf[5:9])[0]
            if offset < _HEADER_SIZE or offset > 1024:
                raise FlvError(f"FLV header size {offset} is invalid")
            if len(buf) < offset + 4:
                return tags
            pos = offset + 4
            self._header_done = True
        while len(buf) - pos >= 11:
            kind = buf[pos] & 0x1F
            if buf[pos] & 0x20:
                raise FlvError("encrypted FLV tags are not supported")
            if kind not in _KNOWN_TAGS:
                raise FlvError(f"unknown FLV tag type {kind}")
            size = int.from_bytes(buf[pos + 1 : pos + 4], "big")
            if size > self.max_tag_size:
                raise FlvError(f"FLV tag of {size} bytes exceeds the {self.max_tag_size} byte limit")
            total = 11 + size + 4
            if len(buf) - pos < total:
                break
            ts = int.from_bytes(buf[pos + 4 : pos + 7], "big") | (buf[pos + 7] << 24)
            tags.append(FlvTag(kind, ts, bytes(buf[pos + 11 : pos + 11 + size])))
            pos += total
        del buf[:pos]
        return tags


@dataclass(frozen=True, slots=True)
class VideoTagInfo:
    keyframe: bool
    codec_id: int          # 7 = AVC; 0 for enhanced RTMP (the FourCC names the codec)
    packet_type: int       # 0 sequence header, 1 coded frame, 2 end of sequence; -1 nothing to decode
    composition_time_ms: int
    data: bytes
    codec: str = "h264"    # the FFmpeg decoder name


# Enhanced RTMP packet types (veovera enhanced-rtmp v1/v2).
_EX_SEQUENCE_START, _EX_CODED_FRAMES, _EX_SEQUENCE_END, _EX_CODED_FRAMES_X = 0, 1, 2, 3
_EX_METADATA, _EX_MPEG2TS_SEQUENCE_START, _EX_MULTITRACK, _EX_MOD_EX = 4, 5, 6, 7
_FRAME_KEY, _FRAME_COMMAND = 1, 5


def _si24(data: bytes) -> int:
    value = int.from_bytes(data[:3], "big", signed=False)
    return value - (1 << 24) if value & 0x800000 else value


def _parse_enhanced_video(body: bytes) -> VideoTagInfo:
    """An enhanced RTMP video tag: IsExHeader | FrameType (3 bits) | PacketType (4 bits), FourCC, payload."""
    frame_type, packet_type = (body[0] >> 4) & 0x07, body[0] & 0x0F
    if len(body) < 5:
        raise FlvError(f"enhanced RTMP video tag of {len(body)} bytes is too short")
    fourcc = bytes(body[1:5])
    if packet_type in (_EX_MULTITRACK, _EX_MOD_EX):
        raise UnsupportedCodec("enhanced RTMP multitrack video is not supported; send one video track")
    codec = _ENHANCED_CODECS.get(fourcc)
    if codec is None:
        name = _ENHANCED_VIDEO.get(fourcc, f"video FourCC {fourcc!r}")
        raise UnsupportedCodec(f"{name} over enhanced RTMP is not supported; use H.264, HEVC, AV1 or VP9")
    payload = bytes(body[5:])
    if frame_type == _FRAME_COMMAND or packet_type == _EX_METADATA:
        return VideoTagInfo(False, 0, -1, 0, b"", codec)
    if packet_type == _EX_SEQUENCE_START:
        return VideoTagInfo(False, 0, 0, 0, payload, codec)
    if packet_type == _EX_MPEG2TS_SEQUENCE_START:
        return VideoTagInfo(False, 0, -1, 0, b"", codec)  # AV1's TS descriptor: the av1C start is what we use
    if packet_type == _EX_SEQUENCE_END:
        return VideoTagInfo(False, 0, 2, 0, b"", codec)
    if packet_type == _EX_CODED_FRAMES and fourcc in (b"hvc1", b"avc1"):
        if len(payload) < 3:
            raise FlvError("enhanced RTMP coded frame is too short for its composition time")
        return VideoTagInfo(frame_type == _FRAME_KEY, 0, 1, _si24(payload), payload[3:], codec)
    if packet_type in (_EX_CODED_FRAMES, _EX_CODED_FRAMES_X):
        return VideoTagInfo(frame_type == _FRAME_KEY, 0, 1, 0, payload, codec)
    raise FlvError(f"enhanced RTMP video packet type {packet_type} is unknown")


def parse_video_body(body: bytes) -> VideoTagInfo:
    if len(body) < 1:
        raise FlvError("empty video tag")
    if body[0] & 0x80:
        return _parse_enhanced_video(body)
    frame_type, codec_id = body[0] >> 4, body[0] & 0x0F
    if codec_id == 12:
        raise UnsupportedCodec("HEVC in the legacy FLV codec slot (id 12) is not supported; "
                               "use an encoder that sends enhanced RTMP (OBS 30+), or H.264")
    if codec_id != 7:
        raise UnsupportedCodec(f"video codec id {codec_id} is not H.264 (7); set the encoder to H.264")
    if len(body) < 5:
        raise FlvError(f"AVC video tag of {len(body)} bytes is too short")
    if frame_type == _FRAME_COMMAND:
        return VideoTagInfo(False, codec_id, -1, 0, b"")
    return VideoTagInfo(frame_type == _FRAME_KEY, codec_id, body[1], _si24(body[2:5]), bytes(body[5:]))


@dataclass(frozen=True, slots=True)
class AudioTagInfo:
    sound_format: int      # 10 = AAC
    packet_type: int       # 0 AudioSpecificConfig, 1 raw frame
    data: bytes


def parse_audio_body(body: bytes) -> AudioTagInfo:
    if len(body) < 1:
        raise FlvError("empty audio tag")
    sound_format = body[0] >> 4
    if sound_format == 9:
        raise UnsupportedCodec("enhanced RTMP audio (Opus, FLAC, AC-3 over RTMP) is not supported; "
                               "set the encoder's audio to AAC")
    if sound_format != 10:
        raise UnsupportedCodec(f"audio format {sound_format} is not AAC (10); set the encoder's audio to AAC")
    if len(body) < 2:
        raise FlvError("AAC audio tag is too short")
    return AudioTagInfo(sound_format, body[1], bytes(body[2:]))


class FlvUnpacker:
    """FLV tags (RTMP's messages) to the protocol-neutral MediaItems of ingest/media.py.

    Sans-IO and stateless but for one thing: a sequence header repeated unchanged (some encoders send one
    before every keyframe) is not passed on again. Raises UnsupportedCodec for codecs we can't take and
    FlvError for a malformed tag (which the caller may skip)."""

    def __init__(self) -> None:
        self._tracks: dict[str, TrackInfo] = {}

    def feed(self, tag: FlvTag) -> list[MediaItem]:
        if tag.kind == TAG_VIDEO:
            return self._video(tag)
        if tag.kind == TAG_AUDIO:
            return self._audio(tag)
        if tag.kind == TAG_SCRIPT:
            metadata = parse_metadata(tag.body)
            return [SourceMetadata(metadata)] if metadata is not None else []
        return []

    def _track(self, track: TrackInfo) -> list[MediaItem]:
        if self._tracks.get(track.kind) == track:
            return []
        self._tracks[track.kind] = track
        return [track]

    def _video(self, tag: FlvTag) -> list[MediaItem]:
        info = parse_video_body(tag.body)
        if info.packet_type == 0:
            extradata = info.data
            if info.codec == "h264":
                try:
                    extradata = avcc_record(info.data)
                except H264Error as exc:
                    raise FlvError(f"bad AVC sequence header: {exc}") from exc
            elif not extradata:
                raise FlvError(f"{info.codec} sequence start without a configuration record")
            return self._track(TrackInfo("video", info.codec, extradata))
        if info.packet_type != 1 or not info.data:
            return []
        if "video" not in self._tracks:
            return []  # frames before their sequence header can't be decoded
        return [AccessUnit("video", tag.timestamp_ms, info.composition_time_ms, info.keyframe, info.data)]

    def _audio(self, tag: FlvTag) -> list[MediaItem]:
        info = parse_audio_body(tag.body)
        if info.packet_type == 0:
            if not info.data:
                raise FlvError("AAC sequence header without an AudioSpecificConfig")
            return self._track(TrackInfo("audio", "aac", info.data))
        if not info.data or "audio" not in self._tracks:
            return []
        return [AccessUnit("audio", tag.timestamp_ms, 0, True, info.data)]


# -- script tags (onMetaData) ------------------------------------------------------------------
_AMF_MAX_DEPTH = 8


def _amf0_value(data: bytes, pos: int, depth: int = 0) -> tuple[object, int]:
    if depth > _AMF_MAX_DEPTH:
        raise FlvError("AMF0 value nested too deeply")
    if pos >= len(data):
        raise FlvError("AMF0 value runs past the end of the script tag")
    marker = data[pos]
    pos += 1
    if marker == 0x00:  # number
        if pos + 8 > len(data):
            raise FlvError("AMF0 number runs past the end of the script tag")
        return struct.unpack_from(">d", data, pos)[0], pos + 8
    if marker == 0x01:  # boolean
        if pos >= len(data):
            raise FlvError("AMF0 boolean runs past the end of the script tag")
        return bool(data[pos]), pos + 1
    if marker == 0x02:  # string
        return _amf0_string(data, pos)
    if marker in (0x03, 0x08):  # object, ECMA array (with a 4-byte count we don't need)
        if marker == 0x08:
            pos += 4
        obj: dict[str, object] = {}
        while True:
            if pos + 3 <= len(data) and data[pos : pos + 3] == b"\x00\x00\x09":
                return obj, pos + 3
            if pos >= len(data):
                return obj, pos  # some encoders leave out the end marker
            key, pos = _amf0_string(data, pos)
            obj[key], pos = _amf0_value(data, pos, depth + 1)
    if marker in (0x05, 0x06):  # null, undefined
        return None, pos
    if marker == 0x0A:  # strict array
        if pos + 4 > len(data):
            raise FlvError("AMF0 array runs past the end of the script tag")
        count = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        items: list[object] = []
        for _ in range(min(count, len(data))):
            item, pos = _amf0_value(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if marker == 0x0B:  # date
        return None, pos + 10
    raise FlvError(f"AMF0 type {marker:#04x} is not expected in a script tag")


def _amf0_string(data: bytes, pos: int) -> tuple[str, int]:
    if pos + 2 > len(data):
        raise FlvError("AMF0 string length runs past the end of the script tag")
    size = int.from_bytes(data[pos : pos + 2], "big")
    pos += 2
    if pos + size > len(data):
        raise FlvError(f"AMF0 string of {size} bytes runs past the end of the script tag")
    return data[pos : pos + size].decode("utf-8", "replace"), pos + size


def parse_metadata(body: bytes) -> dict[str, object] | None:
    """The onMetaData properties of a script tag body (RTMP's @setDataFrame prefix allowed), else None."""
    pos = 0
    name: object = None
    while pos < len(body):
        value, pos = _amf0_value(body, pos)
        if isinstance(value, str):
            name = value
            if name == "@setDataFrame":
                continue
            continue
        if isinstance(value, dict) and name == "onMetaData":
            return value
        return None
    return None
