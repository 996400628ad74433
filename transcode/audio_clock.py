"""Keeps the audio sample counter on the source's timestamps: pads or drops samples when they drift apart.

Sans-IO. An encoder whose audio clock runs fast or slow, or a lost audio packet, would otherwise move
audio against video for the rest of the broadcast.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Placement:
    pad: int   # silent samples to insert before this frame
    drop: int  # samples to drop from the start of this frame (and, if more, the following ones)


@dataclass
class AudioClock:
    """Where each decoded audio frame goes on the output sample counter (output sample rate).

    `tolerance` is in samples: the counter may stray that far from the source time before it is
    corrected (half a video frame keeps lip sync inside one frame). Padding stops at `max_pad` samples:
    a longer hole is the source clock's job (a discontinuity), not silence."""

    rate: int
    floor: int = 0
    tolerance: int = 0
    max_pad: int = 0
    padded: int = field(default=0, init=False)
    dropped: int = field(default=0, init=False)
    _position: float | None = field(default=None, init=False)  # counter position of the next input sample

    def __post_init__(self) -> None:
        if self.tolerance <= 0:
            self.tolerance = self.rate // 60  # half a 30 fps frame
        if self.max_pad <= 0:
            self.max_pad = self.rate * 10

    @property
    def started(self) -> bool:
        return self._position is not None

    def place(self, source_time: float, samples: int) -> Placement:
        """A decoded frame of `samples` (counted at the output rate) that the source stamps at source_time."""
        target = max(int(round(source_time * self.rate)), self.floor)
        if self._position is None:
            self._position = float(target)
            self._position += samples
            return Placement(0, 0)
        drift = target - self._position
        pad = drop = 0
        if drift > self.tolerance:
            pad = int(min(round(drift), self.max_pad))
            self.padded += pad
            self._position += pad
        elif drift < -self.tolerance:
            drop = int(round(-drift))
            self.dropped += drop
            self._position -= drop
        self._position += samples
        return Placement(pad, drop)
