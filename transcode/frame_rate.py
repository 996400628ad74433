"""The source's frame rate, from what it declares (SPS VUI timing, onMetaData) or from its timestamps.

Sans-IO. Real encoders stamp frames unevenly, so timestamps give the median interval over about a
second, snapped to a standard rate when one is close.
"""
from __future__ import annotations

import statistics

STANDARD_RATES = (23.976, 24.0, 25.0, 29.97, 30.0, 48.0, 50.0, 59.94, 60.0)
MIN_RATE = 1.0
MAX_RATE = 120.0


def snap(rate: float, tolerance: float = 0.03) -> float:
    """The standard rate within `tolerance` (relative) of rate, else rate itself (bounded to 1..120)."""
    best = min(STANDARD_RATES, key=lambda r: abs(r - rate))
    if abs(best - rate) <= tolerance * best:
        # 29.97 and 30 are 0.1 % apart: only a declared rate tells them apart; take it when exact.
        close = [r for r in STANDARD_RATES if abs(r - rate) <= 0.002 * r]
        return min(close, key=lambda r: abs(r - rate)) if close else best
    return max(MIN_RATE, min(MAX_RATE, rate))


def declared_rate(value: object) -> float | None:
    """A declared frame rate (VUI timing, onMetaData framerate), if it is a plausible one."""
    try:
        rate = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not MIN_RATE <= rate <= MAX_RATE or rate != rate:
        return None
    return snap(rate, tolerance=0.005)


def measured_rate(timestamps_ms: list[int]) -> float | None:
    """The frame rate from frame timestamps (ms, decode order): median interval, snapped; None if too few."""
    stamps = sorted(set(timestamps_ms))
    intervals = [b - a for a, b in zip(stamps, stamps[1:]) if 0 < b - a <= 1000]
    if len(intervals) < 2:
        return None
    median = statistics.median(intervals)
    # Over a second of frames the mean is robust to millisecond rounding and to an odd late frame.
    span = [i for i in intervals if i <= 2.5 * median]
    mean = sum(span) / len(span)
    return snap(1000.0 / mean)


def choose_rate(vui: object = None, metadata: object = None, timestamps_ms: list[int] | None = None,
                default: float = 30.0) -> float:
    """VUI timing first, then onMetaData's framerate, then the timestamps, then `default`."""
    for value in (vui, metadata):
        rate = declared_rate(value)
        if rate is not None:
            return rate
    if timestamps_ms:
        rate = measured_rate(timestamps_ms)
        if rate is not None:
            return rate
    return default
