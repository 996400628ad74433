"""Makes the live storyboard's tiles as a broadcast's segments arrive (packager/live_storyboard.py keeps them).

Only the lowest rung's segments are looked at, and only their first picture is decoded, in a thread. Bounded:
one tile in the making per broadcast and `MAX_BUSY` across the server; a segment that comes while that is full
is skipped (the tile stays due and the next segment gives it), so a slow machine never delays segment delivery.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from packager.live_storyboard import LiveStoryboard
from packager.playlist import RenditionTrack, SegmentEntry
from packager.thumbnails import first_frame_tile
from storage.local import LocalStore

log = logging.getLogger(__name__)

MAX_BUSY = 2  # tiles being made at once, server-wide (the machine's cores belong to the transcoders)
_busy = 0


class LiveTiler:
    """One broadcast's live storyboard and the making of its tiles. `window_start(rung)` says the first media
    sequence still in the DVR window; tiles before it are dropped as new segments come."""

    def __init__(self, storyboard: LiveStoryboard, window_start: Callable[[str], int | None]) -> None:
        self.storyboard = storyboard
        self.window_start = window_start
        self.rung: str | None = None
        self.working = False
        self.skipped = 0          # due tiles not made because a tile was already in the making
        self.cpu_seconds = 0.0    # thread CPU time spent on tiles (decode + scale + JPEG)
        self.made = 0

    def offer(self, tracks: dict[str, RenditionTrack], track: RenditionTrack, entry: SegmentEntry,
              segment: bytes | None, init: bytes | None, store: LocalStore, key_prefix: str) -> None:
        """A segment arrived (on the event loop: returns at once)."""
        global _busy
        lowest = min((t for t in tracks.values() if entry.period in t.formats), key=lambda t: (t.height, t.name),
                     default=None)
        if lowest is None or lowest.name != track.name:
            return
        self.rung = track.name
        first = self.window_start(track.name)
        if first is not None:
            self.storyboard.drop_before(first)
        if not self.storyboard.note_segment(entry):
            return
        if self.working or _busy >= MAX_BUSY:
            self.skipped += 1
            return
        self.working = True
        _busy += 1
        asyncio.get_running_loop().create_task(self._make(entry, segment, init, store, key_prefix))

    async def _make(self, entry: SegmentEntry, segment: bytes | None, init: bytes | None, store: LocalStore,
                    key_prefix: str) -> None:
        global _busy
        try:
            jpeg, cpu = await asyncio.to_thread(_tile, entry, segment, init, store, key_prefix,
                                                self.storyboard.width, self.storyboard.height)
            self.cpu_seconds += cpu
            if jpeg is not None:
                self.made += 1
                self.storyboard.add(entry, jpeg)
                first = self.window_start(self.rung) if self.rung else None
                if first is not None:
                    self.storyboard.drop_before(first)
        except Exception:  # an extra: never the broadcast's problem
            log.exception("live storyboard tile of %s failed", entry.uri)
        finally:
            self.working = False
            _busy -= 1

    def cpu_per_tile(self) -> float | None:
        return self.cpu_seconds / self.made if self.made else None


def _tile(entry: SegmentEntry, segment: bytes | None, init: bytes | None, store: LocalStore, key_prefix: str,
          width: int, height: int) -> tuple[bytes | None, float]:
    """The tile's JPEG and the thread CPU seconds it took (bytes from memory, else from the store)."""
    started = time.thread_time()
    try:
        if init is None:
            init = store.path_for(f"{key_prefix}/{entry.init_uri}").read_bytes()
        if segment is None:
            segment = store.path_for(f"{key_prefix}/{entry.uri}").read_bytes()
    except OSError:
        return None, time.thread_time() - started
    return first_frame_tile(init, segment, width, height), time.thread_time() - started
