"""CMAF fragmented-MP4 boxes (ISO/IEC 14496-12, 23000-19): the init segment (ftyp + moov) and
media segments (styp + moof + mdat) for H.264 video and AAC audio.

Sans-IO: frozen dataclasses in, bytes out, no state between calls. media_segment can be called
several times per HLS segment, so Low-Latency HLS partial segments are more moof+mdat pairs.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from packager.h264 import sps_dimensions

_UINT32_MAX = 0xFFFFFFFF
_UINT64_MAX = 0xFFFFFFFFFFFFFFFF
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
# Unity transformation matrix (16.16 and 2.30 fixed point), shared by mvhd and tkhd.
_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
_LANGUAGE_UND = 0x55C4  # ISO 639-2 'und' packed as three 5-bit letters

# Sample flags (14496-12 8.8.3.1): depends_on in bits 24-25, is_non_sync in bit 16.
SYNC_SAMPLE_FLAGS = 0x02000000  # sample_depends_on = 2: an I-frame, decodable alone
NON_SYNC_SAMPLE_FLAGS = 0x01010000  # sample_depends_on = 1 and sample_is_non_sync_sample = 1

_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
_TRUN_DATA_OFFSET = 0x000001
_TRUN_SAMPLE_DURATION = 0x000100
_TRUN_SAMPLE_SIZE = 0x000200
_TRUN_SAMPLE_FLAGS = 0x000400
_TRUN_SAMPLE_CTS_OFFSET = 0x000800
_TRUN_FLAGS = (_TRUN_DATA_OFFSET | _TRUN_SAMPLE_DURATION | _TRUN_SAMPLE_SIZE
               | _TRUN_SAMPLE_FLAGS | _TRUN_SAMPLE_CTS_OFFSET)


@dataclass(frozen=True, slots=True)
class VideoTrack:
    """An H.264 track; avcc is its AVCDecoderConfigurationRecord (see h264.avcc_record)."""

    track_id: int
    timescale: int
    width: int
    height: int
    avcc: bytes


@dataclass(frozen=True, slots=True)
class AudioTrack:
    """An AAC track; asc is its AudioSpecificConfig (the encoder's extradata)."""

    track_id: int
    timescale: int
    sample_rate: int
    channels: int
    asc: bytes


Track = VideoTrack | AudioTrack


@dataclass(frozen=True, slots=True)
class Sample:
    """One access unit. Times are in the track's timescale; cts_offset = pts - dts (may be negative).
    Video data must already be 4-byte length-prefixed (h264.to_avcc_sample)."""

    data: bytes
    duration: int
    keyframe: bool
    cts_offset: int = 0


@dataclass(frozen=True, slots=True)
class TrackFragment:
    """A run of consecutive samples of one track, the first decoding at base_decode_time."""

    track_id: int
    base_decode_time: int
    samples: Sequence[Sample]


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def _full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def _check_range(what: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{what} = {value} is outside {low}..{high}")


# -- init segment ----------------------------------------------------------------------------
def _ftyp() -> bytes:
    return _box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6", b"cmfc", b"isom", b"mp41")


def _mvhd(next_track_id: int) -> bytes:
    # Durations are 0 (fragmented, length unknown), so version 0 suffices.
    return _full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, 1000, 0),  # creation, modification, timescale, duration
        struct.pack(">IH", 0x00010000, 0x0100), bytes(10),  # rate 1.0, volume 1.0, reserved
        _MATRIX, bytes(24),  # matrix, pre_defined
        struct.pack(">I", next_track_id),
    )


def _tkhd(track: Track) -> bytes:
    if isinstance(track, AudioTrack):
        volume, width, height = 0x0100, 0, 0
    else:
        volume, width, height = 0, track.width << 16, track.height << 16  # 16.16 fixed point
    return _full_box(
        b"tkhd", 0, 0x000003,  # track_enabled | track_in_movie
        struct.pack(">IIIII", 0, 0, track.track_id, 0, 0), bytes(8),  # times, id, reserved, duration
        struct.pack(">hhhH", 0, 0, volume, 0), _MATRIX,  # layer, alternate_group, volume
        struct.pack(">II", width, height),
    )


def _mdhd(timescale: int) -> bytes:
    return _full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, _LANGUAGE_UND, 0))


def _hdlr(handler: bytes, name: bytes) -> bytes:
    return _full_box(b"hdlr", 0, 0, struct.pack(">I", 0), handler, bytes(12), name + b"\x00")


def _dinf() -> bytes:
    # One 'url ' entry with flag 1: the media data is in this same file.
    return _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))


def _avc1(track: VideoTrack) -> bytes:
    return _box(
        b"avc1",
        bytes(6), struct.pack(">H", 1),  # reserved, data_reference_index
        bytes(16),  # pre_defined, reserved, pre_defined[3]
        struct.pack(">HH", track.width, track.height),
        struct.pack(">II", 0x00480000, 0x00480000), bytes(4),  # 72 dpi, reserved
        struct.pack(">H", 1), bytes(32),  # frame_count, compressorname
        struct.pack(">Hh", 0x0018, -1),  # depth, pre_defined
        _box(b"avcC", track.avcc),
    )


def _descriptor(tag: int, payload: bytes) -> bytes:
    """An MPEG-4 descriptor (14496-1 8.3.3) with the four-byte size form most muxers write."""
    size = len(payload)
    if size >= 1 << 28:
        raise ValueError(f"descriptor payload of {size} bytes is too large")
    length = bytes([0x80 | (size >> 21) & 0x7F, 0x80 | (size >> 14) & 0x7F, 0x80 | (size >> 7) & 0x7F, size & 0x7F])
    return bytes([tag]) + length + payload


def _esds(track: AudioTrack) -> bytes:
    decoder_specific_info = _descriptor(0x05, track.asc)
    decoder_config = _descriptor(
        0x04,
        bytes([0x40, 0x15])  # objectTypeIndication: MPEG-4 Audio; streamType 5 (audio) << 2 | reserved 1
        + bytes(3) + struct.pack(">II", 0, 0)  # bufferSizeDB, maxBitrate, avgBitrate: unknown
        + decoder_specific_info,
    )
    sl_config = _descriptor(0x06, b"\x02")  # predefined: reserved for MP4 files
    es = _descriptor(0x03, struct.pack(">HB", track.track_id & 0xFFFF, 0) + decoder_config + sl_config)
    return _full_box(b"esds", 0, 0, es)


def _mp4a(track: AudioTrack) -> bytes:
    # The 16.16 samplerate field can't hold rates above 65535 Hz; decoders take the rate from the ASC.
    rate = track.sample_rate << 16 if track.sample_rate <= 0xFFFF else 0
    return _box(
        b"mp4a",
        bytes(6), struct.pack(">H", 1),  # reserved, data_reference_index
        bytes(8),  # reserved
        struct.pack(">HHHH", track.channels, 16, 0, 0),  # channelcount, samplesize, pre_defined, reserved
        struct.pack(">I", rate),
        _esds(track),
    )


def _stbl(track: Track) -> bytes:
    entry = _mp4a(track) if isinstance(track, AudioTrack) else _avc1(track)
    # The sample tables stay empty: every sample is described by the moofs.
    return _box(
        b"stbl",
        _full_box(b"stsd", 0, 0, struct.pack(">I", 1), entry),
        _full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        _full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        _full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        _full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )


def _trak(track: Track) -> bytes:
    if isinstance(track, AudioTrack):
        media_header = _full_box(b"smhd", 0, 0, struct.pack(">hH", 0, 0))  # balance, reserved
        handler = _hdlr(b"soun", b"SoundHandler")
    else:
        media_header = _full_box(b"vmhd", 0, 1, bytes(8))  # graphicsmode, opcolor; flag 1 is required
        handler = _hdlr(b"vide", b"VideoHandler")
    minf = _box(b"minf", media_header, _dinf(), _stbl(track))
    return _box(b"trak", _tkhd(track), _box(b"mdia", _mdhd(track.timescale), handler, minf))


def _check_track(track: Track) -> None:
    _check_range("track_id", track.track_id, 1, _UINT32_MAX - 1)
    _check_range(f"track {track.track_id} timescale", track.timescale, 1, _UINT32_MAX)
    if isinstance(track, VideoTrack):
        _check_range(f"track {track.track_id} width", track.width, 1, 0xFFFF)
        _check_range(f"track {track.track_id} height", track.height, 1, 0xFFFF)
        sps_dimensions(track.avcc)  # a broken record fails here (H264Error), not in a player
    elif isinstance(track, AudioTrack):
        _check_range(f"track {track.track_id} sample_rate", track.sample_rate, 1, _UINT32_MAX)
        _check_range(f"track {track.track_id} channels", track.channels, 1, 0xFFFF)
        if len(track.asc) < 2:
            raise ValueError(f"track {track.track_id}: AudioSpecificConfig {track.asc.hex()!r} is too short")
    else:
        raise TypeError(f"not a track: {track!r}")


def init_segment(tracks: Sequence[Track]) -> bytes:
    """ftyp + moov describing the tracks, with an mvex so that media comes in movie fragments."""
    if not tracks:
        raise ValueError("an init segment needs at least one track")
    for track in tracks:
        _check_track(track)
    ids = [t.track_id for t in tracks]
    if len(set(ids)) != len(ids):
        raise ValueError(f"track ids must be unique: {ids}")
    # trex defaults are never used: every trun and tfhd spells out its values.
    trex = [_full_box(b"trex", 0, 0, struct.pack(">IIIII", t.track_id, 1, 0, 0, 0)) for t in tracks]
    moov = _box(b"moov", _mvhd(max(ids) + 1), *[_trak(t) for t in tracks], _box(b"mvex", *trex))
    return _ftyp() + moov


# -- media segments --------------------------------------------------------------------------
def _styp() -> bytes:
    # 'msdh': a media segment of moof+mdat pairs; 'cmfs': a CMAF segment. No 'msix' (that needs a sidx).
    return _box(b"styp", b"msdh", struct.pack(">I", 0), b"msdh", b"cmfs")


def _traf(fragment: TrackFragment, data_offset: int) -> bytes:
    rows = b"".join(
        struct.pack(">IIIi", s.duration, len(s.data),
                    SYNC_SAMPLE_FLAGS if s.keyframe else NON_SYNC_SAMPLE_FLAGS, s.cts_offset)
        for s in fragment.samples
    )
    return _box(
        b"traf",
        _full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, struct.pack(">I", fragment.track_id)),
        _full_box(b"tfdt", 1, 0, struct.pack(">Q", fragment.base_decode_time)),
        # Version 1: composition offsets are signed, so B-frames need no positive shift.
        _full_box(b"trun", 1, _TRUN_FLAGS, struct.pack(">Ii", len(fragment.samples), data_offset), rows),
    )


def _moof(sequence_number: int, fragments: Sequence[TrackFragment], data_offsets: Sequence[int]) -> bytes:
    return _box(
        b"moof",
        _full_box(b"mfhd", 0, 0, struct.pack(">I", sequence_number)),
        *[_traf(f, offset) for f, offset in zip(fragments, data_offsets)],
    )


def _check_fragment(fragment: TrackFragment) -> None:
    track = fragment.track_id
    _check_range("track_id", track, 1, _UINT32_MAX - 1)
    _check_range(f"track {track} base_decode_time", fragment.base_decode_time, 0, _UINT64_MAX)
    for i, s in enumerate(fragment.samples):
        _check_range(f"track {track} sample {i} duration", s.duration, 0, _UINT32_MAX)
        _check_range(f"track {track} sample {i} cts_offset", s.cts_offset, _INT32_MIN, _INT32_MAX)
        if not s.data:
            raise ValueError(f"track {track} sample {i} is empty")


def media_segment(sequence_number: int, fragments: Sequence[TrackFragment], *, styp: bool = True) -> bytes:
    """Optional styp + one moof (a traf per fragment) + one mdat holding every fragment's samples in order.

    sequence_number goes into mfhd as given; it should start at 1 and grow with every call (every
    moof), so LL-HLS parts of one segment each need their own number. Fragments without samples
    are left out.
    """
    _check_range("sequence_number", sequence_number, 0, _UINT32_MAX)
    fragments = [f for f in fragments if f.samples]
    if not fragments:
        raise ValueError("a media segment needs at least one sample")
    for fragment in fragments:
        _check_fragment(fragment)
    ids = [f.track_id for f in fragments]
    if len(set(ids)) != len(ids):
        raise ValueError(f"one fragment per track in a moof, got track ids {ids}")
    # Offsets only change values in the moof, never its size, so lay it out once to learn the size.
    moof_size = len(_moof(sequence_number, fragments, [0] * len(fragments)))
    data_offsets: list[int] = []
    position = moof_size + 8  # data starts after the 8-byte mdat header
    for fragment in fragments:
        data_offsets.append(position)
        position += sum(len(s.data) for s in fragment.samples)
    if position > _INT32_MAX:
        raise ValueError(f"{position} bytes of samples is too much for one moof's 32-bit offsets")
    moof = _moof(sequence_number, fragments, data_offsets)
    mdat = _box(b"mdat", *[s.data for f in fragments for s in f.samples])
    return (_styp() if styp else b"") + moof + mdat
