"""Decides which renditions a source allows, at what size, which picture each scales from, and whether the
top rung copies the source (passthrough) or is encoded; each planned rung carries a sentence saying why.

Renditions taller than the source are dropped; widths keep the source's aspect ratio, rounded to even.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from transcode.job import RenditionSpec

TOP_RUNG_MODES = ("auto", "passthrough", "encode")
# "auto" copies the source into the top rung only when its keyframes come at most this far apart: the
# passthrough rung (and so every rung) can only cut segments at the source's keyframes.
MAX_PASSTHROUGH_KEYFRAME_INTERVAL = 2.0
# Browsers play 8-bit 4:2:0 H.264 everywhere; High 10 or 4:2:2 sources are encoded instead.
PLAYABLE_PIXEL_FORMATS = ("yuv420p", "yuvj420p")
# A lower rung scales from a taller rung's picture (cheaper than from the source) only when that picture is
# at least this much taller, so the second scaling step loses nothing visible (measured: bench/transcode.py).
MIN_CASCADE_FACTOR = 1.4


@dataclass(frozen=True, slots=True)
class PlannedRendition:
    name: str
    width: int
    height: int
    video_bitrate: int
    passthrough: bool
    audio_only: bool = False  # the radio-style rung of a source without video (width = height = 0)
    note: str = ""  # a short sentence for people: passthrough or encoded, and why
    scale_from: str = ""  # the rung whose scaled picture this one scales further; "" = the decoded source


AUDIO_ONLY = PlannedRendition("audio", 0, 0, 0, False, audio_only=True, note="audio only: the source has no video")


@dataclass(frozen=True, slots=True)
class SourceVideo:
    """What the top rung's choice looks at: the first decoded picture and the first keyframes."""

    width: int
    height: int
    pixel_format: str
    interlaced: bool
    keyframe_interval: float | None  # seconds; None: no second keyframe (nor an encoder's keyint) known yet
    interval_origin: str = ""  # how keyframe_interval was learnt, for the note (e.g. "x264 keyint 60")


@dataclass(frozen=True, slots=True)
class TopRungChoice:
    passthrough: bool
    note: str


_X264_KEYINT = re.compile(rb"x264 - core .*? keyint=(\d+|infinite)", re.DOTALL)


def x264_keyint(access_unit: bytes) -> int | None:
    """The keyint x264 announces in the SEI of its first keyframe (0 = "infinite"), or None if not x264.

    That SEI is plain text ("x264 - core 164 ... keyint=60 min-keyint=6 ..."): an encoder's keyframe
    interval known from its first frame, before a second keyframe arrives."""
    match = _X264_KEYINT.search(access_unit[:8192])
    if match is None:
        return None
    value = match.group(1)
    return 0 if value == b"infinite" else int(value)


def even(value: float) -> int:
    return max(2, int(round(value / 2.0)) * 2)


def top_spec(specs: list[RenditionSpec]) -> RenditionSpec | None:
    """The rung "top_rung" is about: the tallest one, unless the ladder already has a passthrough rung."""
    if any(s.passthrough for s in specs) or not specs:
        return None
    return max(specs, key=lambda s: (s.height, s.video_bitrate))


def needs_keyframe_interval(mode: str, spec: RenditionSpec | None, width: int, height: int, pixel_format: str,
                            interlaced: bool) -> bool:
    """Whether the choice still depends on the keyframe interval (else it is known from the first picture)."""
    if mode != "auto" or spec is None:
        return False
    return height == spec.height and not interlaced and pixel_format in PLAYABLE_PIXEL_FORMATS


def choose_top_rung(mode: str, spec: RenditionSpec | None, source: SourceVideo,
                    max_interval: float = MAX_PASSTHROUGH_KEYFRAME_INTERVAL, frame_rate: float = 30.0) -> TopRungChoice:
    """Passthrough or encode for the top rung, with the reason in a sentence."""
    if mode not in TOP_RUNG_MODES:
        raise ValueError(f"top_rung must be one of {', '.join(TOP_RUNG_MODES)}, got {mode!r}")
    size = f"{source.width}x{source.height}"
    if spec is None:
        return TopRungChoice(False, "encoded: the ladder has its own passthrough rung")
    if mode == "encode":
        return TopRungChoice(False, 'encoded: transcode.top_rung is "encode"')
    if mode == "passthrough":
        return TopRungChoice(True, f'passthrough: transcode.top_rung is "passthrough" (source {size})')
    if source.height != spec.height:
        relation = "smaller" if source.height < spec.height else "taller"
        return TopRungChoice(False, f"encoded: the source ({size}) is {relation} than the {spec.name} rung")
    if source.interlaced:
        return TopRungChoice(False, "encoded: the source is interlaced (the rung is deinterlaced)")
    if source.pixel_format not in PLAYABLE_PIXEL_FORMATS:
        return TopRungChoice(False, f"encoded: the source's pixel format {source.pixel_format} "
                                    "does not play in every browser")
    interval = source.keyframe_interval
    if interval is None:
        return TopRungChoice(False, f"encoded: no second keyframe within the source's first {max_interval:g} s")
    origin = f" ({source.interval_origin})" if source.interval_origin else ""
    if math.isinf(interval):
        return TopRungChoice(False, f"encoded: the source sends a keyframe only at its start{origin}")
    # Timestamps in whole milliseconds: half a frame of slack, so "every 2 s" at 29.97 fps still counts.
    if interval > max_interval + 0.5 / max(frame_rate, 1.0):
        return TopRungChoice(False, f"encoded: the source's keyframes are {interval:.1f} s apart{origin} "
                                    f"(more than {max_interval:g} s)")
    return TopRungChoice(True, f"passthrough: the source is H.264 with keyframes every {interval:.1f} s{origin}")


def plan_ladder(specs: list[RenditionSpec], source_width: int, source_height: int,
                top: TopRungChoice | None = None) -> list[PlannedRendition]:
    """The renditions to make for this source, tallest first, each with its note and scaling source."""
    planned: list[PlannedRendition] = []
    chosen = top_spec(specs) if top is not None else None
    for spec in specs:
        if spec.passthrough:
            planned.append(PlannedRendition(spec.name, source_width, source_height, spec.video_bitrate, True,
                                            note="passthrough: the rung is set to copy the source"))
        elif spec is chosen and top is not None and top.passthrough:
            planned.append(PlannedRendition(spec.name, source_width, source_height, spec.video_bitrate, True,
                                            note=top.note))
        elif spec.height <= source_height:
            width = even(spec.height * source_width / source_height)
            planned.append(PlannedRendition(spec.name, width, spec.height, spec.video_bitrate, False))
    if not planned:
        # A source smaller than every rung still gets one rendition, at its own size.
        lowest = min(specs, key=lambda s: s.height)
        planned.append(
            PlannedRendition(lowest.name, even(source_width), even(source_height), lowest.video_bitrate, False)
        )
    planned.sort(key=lambda p: (p.height, p.video_bitrate), reverse=True)
    return _with_scaling(planned, source_height, top)


def _with_scaling(planned: list[PlannedRendition], source_height: int,
                  top: TopRungChoice | None) -> list[PlannedRendition]:
    """Each encoded rung scales from the smallest taller encoded picture that is MIN_CASCADE_FACTOR taller
    (else from the source); encoded rungs get their note here."""
    out: list[PlannedRendition] = []
    first_encoded = True
    for plan in planned:
        if plan.passthrough:
            out.append(plan)
            continue
        parents = [p for p in out if not p.passthrough and p.height >= plan.height * MIN_CASCADE_FACTOR
                   and p.height < source_height]
        parent = min(parents, key=lambda p: p.height) if parents else None
        if first_encoded and top is not None and not top.passthrough:
            note = top.note
        elif parent is not None:
            note = f"encoded: scaled from the {parent.name} picture"
        else:
            note = "encoded: scaled from the source"
        first_encoded = False
        out.append(replace(plan, note=note, scale_from=parent.name if parent is not None else ""))
    return out
