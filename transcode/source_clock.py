"""Maps a source's millisecond timestamps (RTMP/FLV) onto the broadcast timeline, which only moves forward.

Sans-IO. Unwraps 32-bit timestamps, and treats a jump back (or far forward) as a discontinuity: the
timeline carries on one frame after the newest time already placed, for every track alike.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_WRAP = 1 << 32
_HALF_WRAP = 1 << 31

# Typical spacing of a track's timestamps (ms), until the source shows its own.
_DEFAULT_STEP_MS = {"video": 33, "audio": 21}


@dataclass
class Jump:
    """One discontinuity: where it happened on the timeline and how far the source jumped."""

    kind: str
    at: float         # timeline seconds where the jumped tag was placed
    source_delta_ms: int  # how far the source moved, relative to the newest placed time


@dataclass
class SourceClock:
    """Source ms -> timeline seconds. `start` is where this connection's first tag lands.

    A tag more than `max_backstep_ms` before its track's last time, or more than `max_gap_ms` after the
    newest placed time of any track, is a discontinuity; a smaller step back is held at its track's last
    time (never decreasing)."""

    start: float = 0.0
    max_backstep_ms: int = 500
    max_gap_ms: int = 5000
    max_jumps_kept: int = 100
    jumps: list[Jump] = field(default_factory=list)  # the latest max_jumps_kept
    jump_count: int = 0
    _last_raw: int | None = field(default=None, init=False)
    _unwrapped: int = field(default=0, init=False)
    _offset: int = field(default=0, init=False)  # timeline ms = unwrapped source ms + offset
    _high: int | None = field(default=None, init=False)  # newest placed timeline ms
    _last: dict[str, int] = field(default_factory=dict, init=False)
    _step: dict[str, int] = field(default_factory=dict, init=False)

    def _unwrap(self, raw: int) -> int:
        raw &= _WRAP - 1
        if self._last_raw is None:
            self._unwrapped = raw
        else:
            delta = raw - self._last_raw
            if delta < -_HALF_WRAP:
                delta += _WRAP
            elif delta > _HALF_WRAP:
                delta -= _WRAP
            self._unwrapped += delta
        self._last_raw = raw
        return self._unwrapped

    def place_ms(self, kind: str, raw_ms: int) -> int:
        """Timeline milliseconds (from `start`) of a tag of track `kind` with source timestamp raw_ms."""
        source = self._unwrap(raw_ms)
        if self._high is None:
            self._offset = -source
            self._high = 0
        mapped = source + self._offset
        last = self._last.get(kind)
        # Back: against the track's own last time (tracks may lead each other by a fraction of a second).
        # Forward: against the newest time of any track (one track may pause while the other goes on).
        back_limit = (last - self.max_backstep_ms) if last is not None else (self._high - self.max_gap_ms)
        if mapped < back_limit or mapped > self._high + self.max_gap_ms:
            step = self._step.get(kind, _DEFAULT_STEP_MS.get(kind, 33))
            # The track carries on one step after its own last time, so A/V keep their relationship.
            target = (last if last is not None else self._high) + step
            delta = mapped - (last if last is not None else self._high)
            self._offset += target - mapped
            self.jump_count += 1
            if self.jump_count <= 10 or self.jump_count % 100 == 0:
                log.warning("source timestamps jumped by %+d ms (%s at %d ms, jump %d); continuing the timeline at %.3f s",
                            delta, kind, raw_ms, self.jump_count, self.start + target / 1000.0)
            self.jumps.append(Jump(kind, self.start + target / 1000.0, delta))
            del self.jumps[: -self.max_jumps_kept]
            mapped = target
        if last is not None:
            if mapped < last:
                mapped = last  # a small step back inside one track: hold, never decrease
            elif 0 < mapped - last <= 1000:
                self._step[kind] = mapped - last
        mapped = max(mapped, 0)
        self._last[kind] = mapped
        self._high = max(self._high, mapped)
        return mapped

    def place(self, kind: str, raw_ms: int) -> float:
        """Timeline seconds of a tag (see place_ms)."""
        return self.start + self.place_ms(kind, raw_ms) / 1000.0
