"""Reads a rendition's CMAF output (the init segment, then media segments, as the transcode worker reports them)
back into MediaItems, so a simulcast push can send an already-encoded ladder rung without encoding it again.

Sans-IO and narrow: H.264 (avc1/avcC) and AAC (mp4a/esds) tracks in movie fragments whose data offsets count from
their moof (packager/fmp4.py writes exactly that). Anything else raises Fmp4Error with what it met."""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ingest.media import AccessUnit, TrackInfo


class Fmp4Error(ValueError):
    """The bytes are not a fragmented MP4 this reader understands; the message says what was wrong."""


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of each box between start and end."""
    end = len(data) if end is None else end
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, position)
        header = 8
        if size == 1:
            if position + 16 > end:
                raise Fmp4Error(f"truncated large box {kind!r}")
            size, header = struct.unpack_from(">Q", data, position + 8)[0], 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            raise Fmp4Error(f"box {kind!r} of {size} bytes at {position} overruns its container ({end})")
        yield kind, position + header, position + size
        position += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int]:
    for found, payload, box_end in boxes(data, start, end):
        if found == kind:
            return payload, box_end
    raise Fmp4Error(f"no {kind.decode(errors='replace')} box")


def _path(data: bytes, start: int, end: int, *kinds: bytes) -> tuple[int, int]:
    for kind in kinds:
        start, end = _child(data, start, end, kind)
    return start, end


def _esds_asc(data: bytes, start: int, end: int) -> bytes:
    """The AudioSpecificConfig (DecoderSpecificInfo, tag 5) inside an esds box's descriptors."""
    position = start + 4  # version and flags
    while position < end:
        tag = data[position]
        size, position = 0, position + 1
        for _ in range(4):
            byte = data[position]
            position += 1
            size = size << 7 | byte & 0x7F
            if not byte & 0x80:
                break
        if tag == 0x05:
            return data[position:position + size]
        if tag == 0x03:
            flags = data[position + 2]
            position += 3 + (2 if flags & 0x80 else 0) + (2 if flags & 0x20 else 0)
            if flags & 0x40:
                position += 1 + data[position]
        elif tag == 0x04:
            position += 13
        else:
            position += size
    raise Fmp4Error("esds without an AudioSpecificConfig")


@dataclass(frozen=True, slots=True)
class Fmp4Track:
    track_id: int
    timescale: int
    info: TrackInfo


def read_init(data: bytes) -> list[Fmp4Track]:
    """The H.264 and AAC tracks an init segment (ftyp + moov) declares."""
    moov, moov_end = _child(data, 0, len(data), b"moov")
    tracks: list[Fmp4Track] = []
    for kind, trak, trak_end in boxes(data, moov, moov_end):
        if kind != b"trak":
            continue
        tkhd, _ = _child(data, trak, trak_end, b"tkhd")
        track_id = struct.unpack_from(">I", data, tkhd + (20 if data[tkhd] == 1 else 12))[0]
        mdia, mdia_end = _child(data, trak, trak_end, b"mdia")
        mdhd, _ = _child(data, mdia, mdia_end, b"mdhd")
        timescale = struct.unpack_from(">I", data, mdhd + (20 if data[mdhd] == 1 else 12))[0]
        stsd, stsd_end = _path(data, mdia, mdia_end, b"minf", b"stbl", b"stsd")
        for entry, body, entry_end in boxes(data, stsd + 8, stsd_end):
            if entry == b"avc1":
                width, height = struct.unpack_from(">HH", data, body + 24)
                avcc, avcc_end = _child(data, body + 78, entry_end, b"avcC")
                info = TrackInfo("video", "h264", data[avcc:avcc_end], width=width, height=height)
            elif entry == b"mp4a":
                channels, _, _, _, rate = struct.unpack_from(">HHHHI", data, body + 16)
                esds, esds_end = _child(data, body + 28, entry_end, b"esds")
                info = TrackInfo("audio", "aac", _esds_asc(data, esds, esds_end), sample_rate=rate >> 16,
                                 channels=channels)
            else:
                raise Fmp4Error(f"track {track_id}: sample entry {entry!r} is neither avc1 nor mp4a")
            if timescale <= 0:
                raise Fmp4Error(f"track {track_id}: timescale {timescale}")
            tracks.append(Fmp4Track(track_id, timescale, info))
    if not tracks:
        raise Fmp4Error("an init segment without tracks")
    return tracks


def read_segment(data: bytes, tracks: list[Fmp4Track]) -> list[AccessUnit]:
    """Every sample of a media segment (one or more moof + mdat pairs) as access units in decode order, with
    times in milliseconds on the broadcast's timeline."""
    by_id = {t.track_id: t for t in tracks}
    units: list[tuple[float, AccessUnit]] = []
    for kind, moof, moof_end in boxes(data):
        if kind != b"moof":
            continue
        moof_start = moof - 8
        for traf_kind, traf, traf_end in boxes(data, moof, moof_end):
            if traf_kind != b"traf":
                continue
            units.extend(_read_traf(data, traf, traf_end, moof_start, by_id))
    units.sort(key=lambda pair: pair[0])
    return [unit for _, unit in units]


def _read_traf(data: bytes, traf: int, traf_end: int, moof_start: int,
               by_id: dict[int, Fmp4Track]) -> list[tuple[float, AccessUnit]]:
    tfhd, _ = _child(data, traf, traf_end, b"tfhd")
    flags = int.from_bytes(data[tfhd + 1:tfhd + 4], "big")
    track_id = struct.unpack_from(">I", data, tfhd + 4)[0]
    track = by_id.get(track_id)
    if track is None:
        raise Fmp4Error(f"a fragment of track {track_id}, which the init segment doesn't declare")
    position = tfhd + 8
    base = moof_start
    if flags & 0x1:
        base = struct.unpack_from(">Q", data, position)[0]
        position += 8
    if flags & 0x2:
        position += 4
    default_duration = default_size = default_flags = 0
    if flags & 0x8:
        default_duration = struct.unpack_from(">I", data, position)[0]
        position += 4
    if flags & 0x10:
        default_size = struct.unpack_from(">I", data, position)[0]
        position += 4
    if flags & 0x20:
        default_flags = struct.unpack_from(">I", data, position)[0]
    tfdt, _ = _child(data, traf, traf_end, b"tfdt")
    decode_time = struct.unpack_from(">Q" if data[tfdt] == 1 else ">I", data, tfdt + 4)[0]
    out: list[tuple[float, AccessUnit]] = []
    for kind, trun, _ in boxes(data, traf, traf_end):
        if kind != b"trun":
            continue
        version, run_flags = data[trun], int.from_bytes(data[trun + 1:trun + 4], "big")
        count = struct.unpack_from(">I", data, trun + 4)[0]
        position = trun + 8
        offset = base
        if run_flags & 0x1:
            offset = base + struct.unpack_from(">i", data, position)[0]
            position += 4
        first_flags = None
        if run_flags & 0x4:
            first_flags = struct.unpack_from(">I", data, position)[0]
            position += 4
        for i in range(count):
            duration, size, sample_flags, cts = default_duration, default_size, default_flags, 0
            if run_flags & 0x100:
                duration, position = struct.unpack_from(">I", data, position)[0], position + 4
            if run_flags & 0x200:
                size, position = struct.unpack_from(">I", data, position)[0], position + 4
            if run_flags & 0x400:
                sample_flags, position = struct.unpack_from(">I", data, position)[0], position + 4
            elif i == 0 and first_flags is not None:
                sample_flags = first_flags
            if run_flags & 0x800:
                cts = struct.unpack_from(">i" if version == 1 else ">I", data, position)[0]
                position += 4
            if offset + size > len(data):
                raise Fmp4Error(f"track {track_id}: sample {i} lies beyond the segment's end")
            scale = 1000 / track.timescale
            dts_ms = round(decode_time * scale)
            keyframe = track.info.kind == "audio" or not sample_flags & 0x10000
            out.append((decode_time / track.timescale, AccessUnit(
                track.info.kind, dts_ms, round((decode_time + cts) * scale) - dts_ms, keyframe,
                data[offset:offset + size])))
            offset += size
            decode_time += duration
    return out
