"""The storyboard of a live broadcast's DVR window: one small tile every `interval` seconds of media, each the
first picture of a segment of the lowest rung, and the WebVTT that points at them. Pure data: no decoding, no IO.

Cue times are on the broadcast's EXT-X-PROGRAM-DATE-TIME timeline, counted from an origin the VTT names in its
header (`X-PROGRAM-DATE-TIME-ORIGIN=...`): a player maps a point of its DVR bar to that time through the
playlist's own dates (hls.js gives every fragment its programDateTime), whatever its media clock starts at.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from packager.playlist import SegmentEntry, format_pdt
from packager.thumbnails import vtt_time

ORIGIN_HEADER = "X-PROGRAM-DATE-TIME-ORIGIN"


@dataclass(frozen=True, slots=True)
class LiveTile:
    sequence: int   # media sequence of the segment it shows (the same in every rung)
    pdt: float      # that segment's EXT-X-PROGRAM-DATE-TIME (unix seconds): the moment of the picture
    jpeg: bytes


class LiveStoryboard:
    """Tiles of the DVR window, oldest first. Bounded: tiles before the window are dropped (`drop_before`),
    and at most `max_tiles` are kept whatever the window."""

    def __init__(self, interval: float = 10.0, width: int = 160, height: int = 90, max_tiles: int = 2000) -> None:
        self.interval, self.width, self.height, self.max_tiles = interval, width, height, max_tiles
        self.tiles: "OrderedDict[int, LiveTile]" = OrderedDict()
        self.origin: float | None = None  # PDT of the broadcast's first segment seen: cue time 0
        self.edge: float | None = None    # where the newest segment of the rung ends (PDT): the last cue's end
        self._next_due: float = 0.0        # broadcast timeline seconds at which the next tile is due

    def note_segment(self, entry: SegmentEntry) -> bool:
        """Every new segment of the tile rung; True when a tile of it is due (then `add` it, or skip it: the
        tile stays due and a later segment gives it)."""
        if self.origin is None:
            self.origin = float(int(entry.program_date_time))  # a whole second: the header says it exactly
        self.edge = max(self.edge or 0.0, entry.program_date_time + entry.duration)
        return entry.start + 1e-6 >= self._next_due

    def add(self, entry: SegmentEntry, jpeg: bytes) -> None:
        self.tiles[entry.sequence] = LiveTile(entry.sequence, entry.program_date_time, jpeg)
        # Due again `interval` media seconds after this one, on the grid of intervals (a late tile does not
        # push the later ones later).
        steps = int((entry.start + 1e-6) // self.interval) + 1
        self._next_due = max(self._next_due, steps * self.interval)
        while len(self.tiles) > self.max_tiles:
            self.tiles.popitem(last=False)

    def drop_before(self, sequence: int) -> None:
        """Forget the tiles of segments that left the DVR window."""
        while self.tiles and next(iter(self.tiles)) < sequence:
            self.tiles.popitem(last=False)

    def tile(self, sequence: int) -> bytes | None:
        found = self.tiles.get(sequence)
        return found.jpeg if found is not None else None

    def render(self, uri: "TileUri") -> str:
        """WebVTT: one cue per tile, from its picture's time to the next tile's (the last to the live edge)."""
        lines = ["WEBVTT"]
        if self.origin is not None:
            lines.append(f"{ORIGIN_HEADER}={format_pdt(self.origin)}")
        lines.append("")
        tiles = list(self.tiles.values())
        origin = self.origin or 0.0
        for i, tile in enumerate(tiles):
            end = tiles[i + 1].pdt if i + 1 < len(tiles) else max(self.edge or tile.pdt, tile.pdt + 0.001)
            lines += [f"{vtt_time(tile.pdt - origin)} --> {vtt_time(end - origin)}",
                      f"{uri(tile.sequence)}#xywh=0,0,{self.width},{self.height}", ""]
        return "\n".join(lines)


class TileUri:
    """The URI of a tile, relative to the storyboard's own: `<broadcast>/live-storyboard/<sequence>.jpg`."""

    def __init__(self, broadcast_id: str, query: str = "") -> None:
        self.broadcast_id, self.query = broadcast_id, query

    def __call__(self, sequence: int) -> str:
        return f"{self.broadcast_id}/live-storyboard/{sequence}.jpg{self.query}"
