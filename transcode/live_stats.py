"""What the worker measures of itself while live: each rung's transcode speed (× real time) and the source audio's
level (RMS and peak, dBFS), sent to the server as a `stats` event about once a second.

Sans-IO: plain numbers in (timestamps, sample blocks as numpy arrays), plain numbers out.
"""
from __future__ import annotations

import math
import threading
from collections import deque

import numpy as np

SPEED_WINDOW = 5.0  # seconds of wall clock the speed is measured over
LEVEL_WINDOW = 1.0  # seconds of audio the level is measured over


class SpeedMeter:
    """× real time of one rung: media seconds encoded ÷ wall seconds spent scaling and encoding them, over the
    last `window` seconds. 3.0: the rung could run three times faster than live; below 1: it falls behind.

    The rung's thread adds, the worker's main thread reads: a lock keeps the two apart."""

    def __init__(self, window: float = SPEED_WINDOW) -> None:
        self.window = window
        self._samples: deque[tuple[float, float, float]] = deque()  # (ended_at, media seconds, seconds spent)
        self._lock = threading.Lock()

    def add(self, ended_at: float, media_seconds: float, spent_seconds: float) -> None:
        with self._lock:
            self._samples.append((ended_at, media_seconds, spent_seconds))
            self._trim(ended_at)

    def speed(self, now: float) -> float | None:
        """None while nothing was encoded in the window."""
        with self._lock:
            self._trim(now)
            media = sum(m for _, m, _ in self._samples)
            spent = sum(s for _, _, s in self._samples)
        if media <= 0:
            return None
        return media / max(spent, 1e-6)

    def _trim(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()


def dbfs(value: float) -> float | None:
    """20·log10 of a linear amplitude (1.0 = full scale); None for digital zero."""
    return 20.0 * math.log10(value) if value > 0 else None


class LevelMeter:
    """RMS and peak of the last `window` seconds of audio, every channel together, in dBFS.

    RMS is 20·log10(sqrt(mean of the squared samples)): a full-scale sine reads -3 dBFS RMS and 0 dBFS peak.
    Samples are floats in [-1, 1]; each block is reduced to (sum of squares, count, peak) with numpy on arrival,
    so a read costs a sum over about fifty numbers."""

    def __init__(self, window: float = LEVEL_WINDOW) -> None:
        self.window = window
        self._blocks: deque[tuple[int, float, int, float]] = deque()  # (frames, sum of squares, values, peak)
        self._frames = 0  # frames (samples per channel) in _blocks

    def add(self, samples: np.ndarray, frames: int, sample_rate: int) -> None:
        """One decoded block: `samples` holds `frames` samples of every channel (any layout), at sample_rate."""
        if frames <= 0 or samples.size == 0:
            return
        flat = samples.reshape(-1).astype(np.float64, copy=False)
        self._blocks.append((frames, float(np.dot(flat, flat)), int(flat.size), float(np.max(np.abs(flat)))))
        self._frames += frames
        keep = max(1, int(self.window * sample_rate))
        while len(self._blocks) > 1 and self._frames - self._blocks[0][0] >= keep:
            self._frames -= self._blocks.popleft()[0]

    @property
    def measured(self) -> bool:
        return bool(self._blocks)

    def level(self) -> tuple[float | None, float | None]:
        """(RMS dBFS, peak dBFS); (None, None) for digital silence or before any audio."""
        if not self._blocks:
            return None, None
        squares = sum(b[1] for b in self._blocks)
        count = sum(b[2] for b in self._blocks)
        peak = max(b[3] for b in self._blocks)
        return dbfs(math.sqrt(squares / count)), dbfs(peak)
