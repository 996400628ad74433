"""CMAF fragmented-MP4 boxes: the init segment (ftyp + moov) and media segments (styp + moof + mdat).

Sans-IO: dataclasses in, bytes out. media_segment can be called several times per HLS segment, so
Low-Latency HLS partial segments are more moof+mdat pairs, not a rewrite.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

from packager.h264 import sps_dimensions

_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
SYNC_SAMPLE_FLAGS = 0x02000000          # sample_depends_on = 2 (independent)
NON_SYNC_SAMPLE_FLAGS = 0x01010000      # depends_on = 1, sample_is_non_sync_sample = 1


@dataclass(frozen=True, slots=True)
class VideoTrack:
    track_id: int
    timescale: int
    width: int
    height: int
    avcc: bytes  # AVCDecoderConfigurationRecord


@dataclass(frozen=True, slots=True)
class AudioTrack:
    track_id: int
    timescale: int
    sample_rate: int
    channels: int
    asc: bytes  # AudioSpecificConfig


Track = VideoTrack | AudioTrack


@dataclass(frozen=True, slots=True)
class Sample:
    data: bytes
    duration: int
    keyframe: bool
    cts_offset: int = 0


@dataclass(frozen=True, slots=True)
class TrackFragment:
    track_id: int
    base_decode_time: int
    samples: Sequence[Sample]


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


# -- init segment ----------------------------------------------------------------------------
def _ftyp() -> bytes:
    return box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6", b"cmfc", b"isom", b"mp41", b"avc1")


def _mvhd(next_track_id: int) -> bytes:
    return full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, 1000, 0),
        struct.pack(">IH", 0x00010000, 0x0100), bytes(10), _MATRIX, bytes(24),
        struct.pack(">I", next_track_id),
    )


def _tkhd(track: Track) -> bytes:
    is_audio = isinstance(track, AudioTrack)
    width = 0 if is_audio else track.width << 16  # type: ignore[union-attr]
    height = 0 if is_audio else track.height << 16  # type: ignore[union-attr]
    return full_box(
        b"tkhd", 0, 0x3,
        struct.pack(">IIIII", 0, 0, track.track_id, 0, 0), bytes(8),
        struct.pack(">hhhH", 0, 0, 0x0100 if is_audio else 0, 0), _MATRIX,
        struct.pack(">II", width, height),
    )


def _mdhd(timescale: int) -> bytes:
    language = 0x55C4  # 'und'
    return full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, language, 0))


def _hdlr(handler: bytes, name: bytes) -> bytes:
    return full_box(b"hdlr", 0, 0, struct.pack(">I", 0), handler, bytes(12), name + b"\x00")


def _dinf() -> bytes:
    return box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))


def _avc1(track: VideoTrack) -> bytes:
    return box(
        b"avc1",
        bytes(6), struct.pack(">H", 1),           # reserved, data_reference_index
        bytes(16),                                # pre_defined, reserved, pre_defined[3]
        struct.pack(">HH", track.width, track.height),
        struct.pack(">II", 0x00480000, 0x00480000), bytes(4),
        struct.pack(">H", 1), bytes(32),          # frame_count, compressorname
        struct.pack(">Hh", 0x0018, -1),
        box(b"avcC", track.avcc),
    )


def _descriptor(tag: int, payload: bytes) -> bytes:
    size = len(payload)
    # Four-byte size form, as most muxers write it; valid for any size below 2^28.
    encoded = bytes([0x80 | ((size >> 21) & 0x7F), 0x80 | ((size >> 14) & 0x7F), 0x80 | ((size >> 7) & 0x7F), size & 0x7F])
    return bytes([tag]) + encoded + payload


def _mp4a(track: AudioTrack) -> bytes:
    decoder_specific = _descriptor(0x05, track.asc)
    decoder_config = _descriptor(
        0x04, bytes([0x40, 0x15]) + (0).to_bytes(3, "big") + struct.pack(">II", 0, 0) + decoder_specific
    )
    es = _descriptor(0x03, struct.pack(">HB", track.track_id, 0) + decoder_config + _descriptor(0x06, b"\x02"))
    return box(
        b"mp4a",
        bytes(6), struct.pack(">H", 1), bytes(8),
        struct.pack(">HHHH", track.channels, 16, 0, 0),
        struct.pack(">I", (track.sample_rate & 0xFFFF) << 16),
        full_box(b"esds", 0, 0, es),
    )


def _stbl(track: Track) -> bytes:
    entry = _mp4a(track) if isinstance(track, AudioTrack) else _avc1(track)
    return box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), entry),
        full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )


def _trak(track: Track) -> bytes:
    if isinstance(track, AudioTrack):
        media_header = full_box(b"smhd", 0, 0, struct.pack(">hH", 0, 0))
        handler = _hdlr(b"soun", b"SoundHandler")
    else:
        media_header = full_box(b"vmhd", 0, 1, struct.pack(">HHHH", 0, 0, 0, 0))
        handler = _hdlr(b"vide", b"VideoHandler")
    minf = box(b"minf", media_header, _dinf(), _stbl(track))
    return box(b"trak", _tkhd(track), box(b"mdia", _mdhd(track.timescale), handler, minf))


def init_segment(tracks: Sequence[Track]) -> bytes:
    if not tracks:
        raise ValueError("an init segment needs at least one track")
    for track in tracks:
        if isinstance(track, VideoTrack):
            sps_dimensions(track.avcc)  # fails early on a broken configuration
    trex = [full_box(b"trex", 0, 0, struct.pack(">IIIII", t.track_id, 1, 0, 0, 0)) for t in tracks]
    moov = box(
        b"moov",
        _mvhd(max(t.track_id for t in tracks) + 1),
        *[_trak(t) for t in tracks],
        box(b"mvex", *trex),
    )
    return _ftyp() + moov


# -- media segments --------------------------------------------------------------------------
def _traf(fragment: TrackFragment, data_offset: int) -> bytes:
    flags = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800
    rows = b"".join(
        struct.pack(
            ">IIIi", s.duration, len(s.data), SYNC_SAMPLE_FLAGS if s.keyframe else NON_SYNC_SAMPLE_FLAGS, s.cts_offset
        )
        for s in fragment.samples
    )
    return box(
        b"traf",
        full_box(b"tfhd", 0, 0x020000, struct.pack(">I", fragment.track_id)),  # default-base-is-moof
        full_box(b"tfdt", 1, 0, struct.pack(">Q", fragment.base_decode_time)),
        full_box(b"trun", 1, flags, struct.pack(">Ii", len(fragment.samples), data_offset), rows),
    )


def _moof(sequence_number: int, fragments: Sequence[TrackFragment], offsets: Sequence[int]) -> bytes:
    return box(
        b"moof",
        full_box(b"mfhd", 0, 0, struct.pack(">I", sequence_number)),
        *[_traf(f, o) for f, o in zip(fragments, offsets)],
    )


def media_segment(sequence_number: int, fragments: Sequence[TrackFragment], *, styp: bool = True) -> bytes:
    """styp (optional) + one moof + one mdat holding the samples of every fragment, in order."""
    fragments = [f for f in fragments if f.samples]
    if not fragments:
        raise ValueError("a media segment needs at least one sample")
    for f in fragments:
        if f.base_decode_time < 0:
            raise ValueError(f"track {f.track_id}: negative decode time {f.base_decode_time}")
    sizes = [sum(len(s.data) for s in f.samples) for f in fragments]
    # The moof's size doesn't depend on the offset values, so lay it out once with zeros to learn it.
    moof_size = len(_moof(sequence_number + 1, fragments, [0] * len(fragments)))
    offsets, position = [], moof_size + 8
    for size in sizes:
        offsets.append(position)
        position += size
    moof = _moof(sequence_number + 1, fragments, offsets)
    mdat_payload = b"".join(s.data for f in fragments for s in f.samples)
    header = box(b"styp", b"msdh", struct.pack(">I", 0), b"msdh", b"msix") if styp else b""
    return header + moof + box(b"mdat", mdat_payload)
