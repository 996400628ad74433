"""A clip of a broadcast: the segments covering [start, end) of its timeline, a VOD playlist over them (no new
media), and an MP4 cut at the exact frames (the edge GOPs re-encoded, the GOPs between copied untouched).

Parameter sets: the MP4 keeps one avc1 sample description, the source's SPS/PPS. A re-encoded edge starts with
an IDR that carries its own SPS/PPS in band, and the first copied keyframe after it gets the source's SPS/PPS
put back in band; H.264 decoders (FFmpeg, the browsers' MSE decoders) take in-band parameter sets that replace
ones of the same id. This keeps every copied packet's slice data byte-identical to the source rung's.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from packager.h264 import to_avcc_sample, _record_parameter_sets
from packager.playlist import RenditionTrack, SegmentEntry, render_media
from packager.recording import ConcatReader

EDGE_CRF = "16"
X264_PROFILES = {66: "baseline", 77: "main", 100: "high"}  # avcC profile_idc -> x264 profile  # re-encoded edge frames: near-transparent next to the copied ones


class ClipError(ValueError):
    """A clip that cannot be made: an empty or inverted range, outside the media, across a reconnect."""


def covering(entries: list[SegmentEntry], start: float, end: float) -> list[SegmentEntry]:
    """The segments that overlap [start, end) of the broadcast timeline, in order."""
    if end <= start:
        raise ClipError(f"end {end} is not after start {start}")
    chosen = [e for e in entries if e.start < end and e.start + e.duration > start]
    if not chosen:
        raise ClipError(f"no media between {start:.3f} s and {end:.3f} s")
    return chosen


def clip_playlist(track: RenditionTrack, start: float, end: float, segment_duration: float) -> str:
    """A VOD media playlist over the existing segments covering [start, end): it starts and ends on segment
    boundaries (players cannot start mid-segment without a cut), so it may hold up to a segment more each side."""
    chosen = covering(track.entries, start, end)
    return render_media(chosen, all_entries=chosen, configured_target=segment_duration, ended=True, vod=True)


@dataclass
class _Packet:
    data: bytes
    pts: int
    dts: int
    key: bool
    time: float  # broadcast timeline seconds


def _length_prefixed(units: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(u)) + u for u in units)


def _starts_with_sps(data: bytes) -> bool:
    return len(data) > 4 and data[4] & 0x1F == 7


def cut_mp4(segment_paths: list[tuple[Path, list[Path], float]], start: float, end: float, out_path: Path) -> int:
    """Write the frames of [start, end) to out_path (fast-start MP4). segment_paths: one (init, segments,
    timeline seconds of the first segment's start) per period; the clip must lie in one period. Returns the
    number of video frames written."""
    if len(segment_paths) != 1:
        raise ClipError("a clip across an encoder reconnect is not supported; choose a range inside one connection")
    init, segments, first_start = segment_paths[0]
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with av.open(ConcatReader([init, *segments]), "r", format="mp4") as source:
        vin = source.streams.video[0]
        ain = source.streams.audio[0] if source.streams.audio else None
        tb = vin.time_base
        assert tb is not None
        video: list[_Packet] = []
        audio: list[av.Packet] = []
        base: int | None = None
        for packet in source.demux():
            if packet.dts is None or packet.pts is None:
                continue
            if packet.stream is vin:
                if base is None:
                    # The segment's start on the timeline is its first frame's decode time: with B-frames the
                    # keyframe shows a little after it, as it does in players (and on the encoded rungs).
                    base = packet.dts
                video.append(_Packet(bytes(packet), packet.pts, packet.dts, packet.is_keyframe,
                                     first_start + float((packet.pts - base) * tb)))
            elif ain is not None and packet.stream is ain:
                audio.append(packet)
        extradata = vin.codec_context.extradata or b""
        if not video or not video[0].key:
            raise ClipError("the clip's first segment does not start with a keyframe")
        wanted = [p for p in video if start <= p.time < end]
        if not wanted:
            raise ClipError(f"no video frame between {start:.3f} s and {end:.3f} s")
        first_pts = min(p.pts for p in wanted)
        gops: list[list[_Packet]] = []
        for p in video:
            if p.key or not gops:
                gops.append([])
            gops[-1].append(p)
        chosen = [(gop, [p for p in gop if start <= p.time < end]) for gop in gops]
        chosen = [(gop, inside) for gop, inside in chosen if inside]
        sps, pps = _record_parameter_sets(extradata) if extradata[:1] == b"\x01" else ([], [])
        source_params = _length_prefixed(sps + pps)

        out = av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"})
        try:
            vout = out.add_stream_from_template(vin)
            aout = out.add_stream_from_template(ain) if ain is not None else None
            written = 0
            last_dts: int | None = None  # of what is written so far, relative to the first frame
            last_pts: int | None = None
            restore_params = False
            for n, (gop, inside) in enumerate(chosen):
                if len(inside) == len(gop):
                    for i, p in enumerate(gop):
                        data = p.data
                        if i == 0 and restore_params and not _starts_with_sps(data):
                            data = source_params + data
                        restore_params = False
                        last_dts = _mux(out, vout, data, p.pts - first_pts, p.dts - first_pts, p.key, tb, last_dts)
                        shown = p.pts - first_pts
                        last_pts = shown if last_pts is None else max(last_pts, shown)
                        written += 1
                else:
                    following = chosen[n + 1][0][0] if n + 1 < len(chosen) else None
                    lead = _edge_lead(last_dts, last_pts, following)
                    for i, (data, pts) in enumerate(_reencode(gop, inside, vin, tb)):
                        last_dts = _mux(out, vout, data, pts - first_pts, pts - first_pts - lead, i == 0, tb, last_dts)
                        last_pts = pts - first_pts
                        written += 1
                    restore_params = True
            if ain is not None and aout is not None and ain.time_base is not None:
                a_tb = ain.time_base
                a_first = first_pts * tb / a_tb
                a_end = (max(p.pts for p in wanted) - first_pts + 1) * tb  # up to the last frame's end
                for packet in audio:
                    assert packet.pts is not None
                    offset = (packet.pts - a_first) * a_tb
                    if 0 <= offset < a_end:
                        packet.pts = packet.dts = int(packet.pts - a_first)
                        packet.stream = aout
                        out.mux(packet)
        except Exception:
            out.close()
            tmp.unlink(missing_ok=True)
            raise
        out.close()
    os.replace(tmp, out_path)
    return written


def _edge_lead(last_dts: int | None, last_pts: int | None, following: _Packet | None) -> int:
    """How long before it shows each frame of a re-encoded edge (no B-frames) decodes, so that DTS runs on in
    even steps from the copied frames before it, or into the copied keyframe after it (a source with B-frames
    decodes ahead of presentation; the first DTS may be negative: the MP4's edit list keeps the first frame at
    time 0)."""
    if last_dts is not None and last_pts is not None:
        return max(0, last_pts - last_dts)
    if following is not None:
        return max(0, following.pts - following.dts)
    return 0


def _mux(out: av.container.OutputContainer, stream: av.stream.Stream, data: bytes, pts: int, dts: int, key: bool,
         tb: Fraction, last_dts: int | None) -> int:
    packet = av.Packet(data)
    if last_dts is not None:
        dts = max(dts, last_dts + 1)  # MP4 needs rising DTS
    packet.pts, packet.dts, packet.time_base = max(pts, dts), dts, tb
    packet.is_keyframe = key
    packet.stream = stream
    out.mux(packet)
    return dts


def _reencode(gop: list[_Packet], inside: list[_Packet], vin: av.video.stream.VideoStream,
              tb: Fraction) -> list[tuple[bytes, int]]:
    """Decode one GOP and re-encode the frames in `inside` as a closed GOP that starts with an IDR carrying
    its SPS/PPS in band (length-prefixed). Returns (sample, pts) in presentation order."""
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = vin.codec_context.extradata
    keep = {p.pts for p in inside}
    frames: list[av.VideoFrame] = []
    for p in gop:
        packet = av.Packet(p.data)
        packet.pts, packet.dts, packet.time_base = p.pts, p.dts, tb
        frames.extend(f for f in decoder.decode(packet) if f.pts in keep)  # type: ignore[union-attr]
    frames.extend(f for f in decoder.decode(None) if f.pts in keep)  # type: ignore[union-attr]
    frames.sort(key=lambda f: f.pts or 0)
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height = vin.codec_context.width, vin.codec_context.height  # type: ignore[attr-defined]
    encoder.pix_fmt = "yuv420p"  # type: ignore[attr-defined]
    encoder.time_base = tb
    rate = vin.average_rate or Fraction(30)
    encoder.framerate = rate  # type: ignore[attr-defined]
    # No B-frames (decode order = presentation order, so the edge's timestamps need no reordering), one IDR.
    options = {"preset": "veryfast", "crf": EDGE_CRF, "tune": "zerolatency", "g": str(len(frames) + 1)}
    # The same profile as the source's avcC, which players configure their decoder from.
    extradata = vin.codec_context.extradata or b""
    profile = X264_PROFILES.get(extradata[1]) if len(extradata) > 1 and extradata[0] == 1 else None
    if profile:
        options["profile"] = profile
    encoder.options = options
    result: list[tuple[bytes, int]] = []
    for frame in frames:
        frame.pict_type = av.video.frame.PictureType.NONE
        for packet in encoder.encode(frame.reformat(format="yuv420p")):  # type: ignore[union-attr]
            assert packet.pts is not None
            result.append((to_avcc_sample(bytes(packet)), packet.pts))
    for packet in encoder.encode(None):  # type: ignore[union-attr]
        assert packet.pts is not None
        result.append((to_avcc_sample(bytes(packet)), packet.pts))
    return result
