"""Decides which renditions a source allows and at what size.

Renditions taller than the source are dropped; widths keep the source's aspect ratio, rounded to even.
"""
from __future__ import annotations

from dataclasses import dataclass

from transcode.job import RenditionSpec


@dataclass(frozen=True, slots=True)
class PlannedRendition:
    name: str
    width: int
    height: int
    video_bitrate: int
    passthrough: bool
    audio_only: bool = False  # the radio-style rung of a source without video (width = height = 0)


AUDIO_ONLY = PlannedRendition("audio", 0, 0, 0, False, audio_only=True)


def even(value: float) -> int:
    return max(2, int(round(value / 2.0)) * 2)


def plan_ladder(specs: list[RenditionSpec], source_width: int, source_height: int) -> list[PlannedRendition]:
    """The renditions to encode for this source, tallest first."""
    planned: list[PlannedRendition] = []
    for spec in specs:
        if spec.passthrough:
            planned.append(PlannedRendition(spec.name, source_width, source_height, spec.video_bitrate, True))
        elif spec.height <= source_height:
            width = even(spec.height * source_width / source_height)
            planned.append(PlannedRendition(spec.name, width, spec.height, spec.video_bitrate, False))
    if not any(not p.passthrough for p in planned) and not planned:
        # A source smaller than every rung still gets one rendition, at its own size.
        lowest = min(specs, key=lambda s: s.height)
        planned.append(
            PlannedRendition(lowest.name, even(source_width), even(source_height), lowest.video_bitrate, False)
        )
    planned.sort(key=lambda p: (p.height, p.video_bitrate), reverse=True)
    return planned
