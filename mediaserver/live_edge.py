"""The newest media of a live broadcast, in memory: init segments, the latest segments and LL-HLS parts.

Every viewer asks for the same few files at the live edge, so they are served from here as the worker
produces them (bytes ready to write, no disk read, no thread hop); the store on disk stays the record for
the DVR window and the recording. Blocking playlist reloads and preload-hinted part requests wait on one
asyncio.Condition per broadcast, woken by the worker's events (never a disk poll).
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from packager.playlist import PartEntry


@dataclass(frozen=True, slots=True)
class LivePart:
    sequence: int
    index: int
    duration: float
    independent: bool
    data: bytes


@dataclass
class RenditionEdge:
    """One rendition's newest media. Bounded: `keep_segments` segments and the parts of as many."""

    keep_segments: int = 8
    inits: dict[str, bytes] = field(default_factory=dict)  # file name (init-0.mp4) -> bytes
    segments: "OrderedDict[int, bytes]" = field(default_factory=OrderedDict)
    parts: "OrderedDict[int, list[LivePart]]" = field(default_factory=OrderedDict)
    last_complete: int = -1  # newest whole segment

    def add_init(self, name: str, data: bytes) -> None:
        self.inits[name] = data
        while len(self.inits) > 4:  # a reconnect adds one; only the newest are live
            self.inits.pop(next(iter(self.inits)))

    def add_part(self, part: LivePart) -> None:
        parts = self.parts.setdefault(part.sequence, [])
        if part.index == len(parts):
            parts.append(part)
        while len(self.parts) > self.keep_segments:
            self.parts.popitem(last=False)

    def add_segment(self, sequence: int, data: bytes | None) -> None:
        self.last_complete = max(self.last_complete, sequence)
        if data is not None:
            self.segments[sequence] = data
            while len(self.segments) > self.keep_segments:
                self.segments.popitem(last=False)

    def part(self, sequence: int, index: int) -> LivePart | None:
        parts = self.parts.get(sequence)
        return parts[index] if parts is not None and 0 <= index < len(parts) else None

    def newest_part(self) -> tuple[int, int] | None:
        """(media sequence, part index) of the newest part."""
        for sequence in reversed(self.parts):
            if self.parts[sequence]:
                return sequence, len(self.parts[sequence]) - 1
        return None

    def has(self, sequence: int, index: int | None) -> bool:
        """Whether a playlist would now show segment `sequence` complete (index None) or its part `index`.
        A part index past the last part of a complete segment means the next segment's first part
        (RFC 8216bis 6.2.5.2)."""
        if sequence <= self.last_complete:
            parts = self.parts.get(sequence)
            if index is not None and parts is not None and index >= len(parts):
                return self.has(sequence + 1, 0)
            return True
        if index is None:
            return False
        newest = self.newest_part()
        return newest is not None and (sequence, index) <= newest

    def next_part(self, segment_duration: float = 0.0, part_target: float = 0.0) -> tuple[int, int]:
        """The part a preload hint announces: the one after the newest. When the open segment's parts
        already fill its expected duration, that is the next segment's first part."""
        newest = self.newest_part()
        if newest is None:
            return self.last_complete + 1, 0
        sequence, index = newest
        if sequence <= self.last_complete:
            return sequence + 1, 0
        # Encoded rungs cut segments within half a frame of segment_duration; a source-driven (passthrough)
        # rung may run longer, and then the hint is one part early: that request is simply held longer.
        filled = sum(p.duration for p in self.parts[sequence])
        if segment_duration > 0 and segment_duration - filled < min(0.02, part_target / 2):
            return sequence + 1, 0
        return sequence, index + 1

    def part_entries(self, since_sequence: int, uri: "PartUri") -> list[PartEntry]:
        return [PartEntry(p.sequence, p.index, p.duration, uri(p.sequence, p.index), p.independent)
                for sequence, parts in self.parts.items() if sequence >= since_sequence for p in parts]


class PartUri:
    """Names a part inside a broadcast folder: {rendition}/part-{sequence}.{index}.m4s."""

    def __init__(self, rendition: str) -> None:
        self.rendition = rendition

    def __call__(self, sequence: int, index: int) -> str:
        return f"{self.rendition}/part-{sequence}.{index}.m4s"


class LiveEdge:
    """All renditions of one broadcast, and a condition per rendition its waiting requests sleep on (a new
    360p part wakes only the requests waiting on 360p)."""

    def __init__(self, keep_segments: int = 8) -> None:
        self.keep_segments = keep_segments
        self.renditions: dict[str, RenditionEdge] = {}
        self._changed: dict[str, asyncio.Condition] = {}
        self.ended = False

    def rendition(self, name: str) -> RenditionEdge:
        edge = self.renditions.get(name)
        if edge is None:
            edge = self.renditions[name] = RenditionEdge(self.keep_segments)
        return edge

    def _condition(self, rendition: str) -> asyncio.Condition:
        condition = self._changed.get(rendition)
        if condition is None:
            condition = self._changed[rendition] = asyncio.Condition()
        return condition

    async def notify(self, rendition: str) -> None:
        condition = self._condition(rendition)
        async with condition:
            condition.notify_all()

    async def end(self) -> None:
        self.ended = True
        for rendition in list(self._changed):
            await self.notify(rendition)

    async def wait_for(self, rendition: str, sequence: int, index: int | None, timeout: float) -> bool:
        """Hold until the rendition has that segment (or part), the broadcast ends, or the timeout passes;
        True if it has it."""
        edge = self.rendition(rendition)
        await self.wait_until(rendition, lambda: edge.has(sequence, index), timeout)
        return edge.has(sequence, index)

    async def wait_until(self, rendition: str, condition: Callable[[], bool], timeout: float) -> bool:
        """Hold until condition() holds (checked at every change of that rendition), the broadcast ends, or
        timeout passes."""
        if condition():
            return True
        changed = self._condition(rendition)
        try:
            async with changed:
                await asyncio.wait_for(changed.wait_for(lambda: self.ended or condition()), timeout)
        except asyncio.TimeoutError:
            return False
        return condition()
