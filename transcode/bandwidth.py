"""The rate limits we give x264 and the peak they promise: the BANDWIDTH of a variant is known before its
first segment exists, because a player reads the master playlist once, at the start (RFC 8216 §4.3.4.2).

x264's VBV is a leaky bucket: whatever the picture does, the bits of any stretch of `d` seconds stay within
maxrate·d + bufsize. The spec's peak is over runs of segments lasting 0.5 to 1.5 target durations; with the
buffer a quarter of a segment long, even the shortest such run stays within 1.5·maxrate, so that, plus
audio and fMP4 overhead, is the peak — and a keyframe (~10 % of a 2 s GOP's bits) still fits the buffer.
"""
from __future__ import annotations

from dataclasses import dataclass

MAXRATE_FACTOR = 1.2      # how far above the nominal rate a busy moment may go
BUFFER_SEGMENTS = 0.25    # the VBV buffer, in segment durations: room for a keyframe, little more
# fMP4 framing: a moof + trun entry per sample (~16 B video, ~8 B audio) and the segment's boxes.
VIDEO_SAMPLE_OVERHEAD = 16
AUDIO_SAMPLE_OVERHEAD = 8
SEGMENT_OVERHEAD = 1024
AAC_FRAME = 1024          # samples per AAC frame


@dataclass(frozen=True, slots=True)
class RateLimits:
    bitrate: int   # x264's average target
    maxrate: int
    bufsize: int


def rate_limits(video_bitrate: int, segment_duration: float) -> RateLimits:
    maxrate = int(video_bitrate * MAXRATE_FACTOR)
    return RateLimits(video_bitrate, maxrate, int(maxrate * segment_duration * BUFFER_SEGMENTS))


def peak_bandwidth(video_bitrate: int, audio_bitrate: int, *, segment_duration: float, frame_rate: float,
                   audio_sample_rate: int = 48_000) -> int:
    """Bits per second no run of segments of 0.5–1.5 target durations exceeds (video 0 for audio-only)."""
    shortest = 0.5 * segment_duration  # the spec's shortest run, where the buffer weighs most
    video = 0.0
    if video_bitrate:
        limits = rate_limits(video_bitrate, segment_duration)
        video = limits.maxrate + limits.bufsize / shortest + VIDEO_SAMPLE_OVERHEAD * 8 * frame_rate
    audio = 0.0
    if audio_bitrate:
        audio = audio_bitrate + AUDIO_SAMPLE_OVERHEAD * 8 * audio_sample_rate / AAC_FRAME
    return int(video + audio + SEGMENT_OVERHEAD * 8 / shortest)
